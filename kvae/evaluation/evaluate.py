"""`kvae evaluate MODEL`: does the model sound like its training music? Measured against references.

Two tables, computed in one run from the same data and the same features:

**Realism** (can a simple classifier tell a set of clips from real training
windows?). Every row is a set of `n_clips` clips judged against one
reference set of real training windows, with clip-level features
(`kvae.evaluation.features`): the classifier two-sample test (`c2st`: 0.5 =
indistinguishable, 1.0 = always told apart), the Kernel Inception Distance
estimator on those features (`kid`), the clip-level Fréchet distance
(`frechet_clip`), the frame-level Fréchet log-mel distance
(`frechet_logmel`, blind to time: kept as one column, not the headline),
the mean temporal std of the band levels (`temporal_std`, dB: how much the
spectrum moves), the silent fraction and spectral flatness. Rows:

- `samples`: the model's prior samples;
- `reconstructions`: the model's reconstructions of held-out windows;
- `ref: real vs real`: other training windows (disjoint from the
  reference set): what real music scores, c2st near 0.5;
- `ref: held-out recordings`: windows of the test split (other pieces);
- `ref: drone`, `ref: white noise`, `ref: silence`: what failure scores
  (`kvae.evaluation.references`).

Each row gets a one-line verdict in plain words.

The realism rows also get the view of a pretrained music model where it is
installed (`kvae.evaluation.note_model`, basic-pitch): the Fréchet distance
and KID of its pooled note features (`frechet_notes`, `kid_notes`; None
where it is not installed, and the report says how to install it), and of a
pretrained music tagger's embeddings (`kvae.evaluation.music_embedding`,
musicnn rebuilt in keras.ops: `frechet_music`, `kid_music`; the same).

**Reconstruction** (how close are reconstructions to their own inputs, and
at what cost?): the model's information rate (`rate_bps`: its mean KL per
held-out window, in bits, per second of audio), the paired C2ST of the
reconstructions against the very windows they reconstruct
(`two_sample.paired_c2st`: 0.5 for a perfect autoencoder; the headline),
multi-resolution STFT distance, log-spectral distance and SI-SDR, beside the
codec ladder (`kvae.evaluation.ladder`: the same held-out windows through
noise, smearing, a low-pass, mu-law and Opus, judged the same way), silence,
white noise and the data sent through the model's rate and back (what any
model at that rate loses). The reconstructions' verdict names the nearest
ladder row ("as detectable as Opus 6 kbit/s"). Where visqol-python is
installed every row also gets ViSQOL's MOS-LQO (`kvae.evaluation.visqol`).
"""

import math

import numpy as np

from kvae import bounds
from kvae.errors import KvaeError
from kvae.evaluation import features as feats
from kvae.evaluation import frechet, ladder, metrics, music_embedding, note_model, references
from kvae.evaluation import visqol as visqol_score
from kvae.evaluation.report import REALISM_KEYS, format_report, reconstruction_verdict, verdicts, write_json
from kvae.evaluation.two_sample import Standardizer, c2st, frechet_features, kid, paired_c2st

DEFAULT_CLIPS = 256
REFERENCE_ROWS = ("ref: real vs real", "ref: held-out recordings", "ref: drone", "ref: white noise", "ref: silence")


def reconstruction_metrics(reference, estimate, sample_rate):
    """MR-STFT distance, log-spectral distance and SI-SDR of `estimate` against `reference`."""
    return {
        "mrstft": float(metrics.mrstft_distance(reference, estimate, sample_rate)),
        "lsd_db": float(metrics.log_spectral_distance(reference, estimate, sample_rate)),
        "si_sdr_db": float(metrics.si_sdr(reference, estimate)),
    }


def information_rate(model, clips, batch=64):
    """The model's information rate on windows: its mean KL(q(z|x) || N(0, I)) per window.

    Args:
        model: kvae.models.VAE.
        clips: float array `(n, window)`.
        batch: int. Windows encoded at once.

    Returns:
        `{"kl_nats": mean KL per window in nats, "rate_bps": that in bits per
        second of audio}` (`kvae.models.elbo.bits_per_second`, the
        formula `kvae fit` logs `rate_bps` with).
    """
    from keras import ops

    from kvae.models.elbo import bits_per_second

    per_window = []
    for start in range(0, len(clips), batch):
        z_mean, z_log_var = model.encode(ops.convert_to_tensor(np.asarray(clips[start:start + batch], np.float32)))
        mean = np.asarray(ops.convert_to_numpy(z_mean), np.float64).reshape(len(z_mean), -1)
        log_var = np.asarray(ops.convert_to_numpy(z_log_var), np.float64).reshape(len(z_mean), -1)
        per_window.append(-0.5 * np.sum(1.0 + log_var - mean ** 2 - np.exp(log_var), axis=1))
    kl = float(np.mean(np.concatenate(per_window)))
    return {"kl_nats": kl, "rate_bps": bits_per_second(kl, model.window_seconds)}


def windows(corpus, split, window, n, random, seed=0):
    """`n` windows of a split: random ones (training) or evenly spaced, overlapping where the split is short.

    Returns:
        `(windows, split_used)`: float32 `(n, window)`, and the split the
        windows came from (a dataset without a test split falls back to train).
    """
    from kvae.data import WindowSource

    entries = corpus.split(split)
    per_recording = max(1, math.ceil(n / max(len(entries or corpus.entries), 1)))
    source = WindowSource(corpus, split, window, batch_size=64, windows_per_recording=per_recording,
                          random=random, seed=seed)
    clips = source.read(source.plan(0))
    order = np.random.default_rng(seed).permutation(len(clips))[:n]
    return clips[np.sort(order)], (split if entries else "train")


def realism_row(clips, reference, reference_features, scale, sample_rate, seed=0, notes=None, music=None):
    """The realism metrics of one clip set against the reference set.

    `notes` is `(reference note features, their Standardizer)` where the
    note model is installed, else None (its columns are then None); `music`
    the same for the music network's embeddings (`music_embedding`).
    """
    clips = np.asarray(clips, np.float32)
    f = feats.clip_features(clips, sample_rate)
    test = c2st(reference_features, f, seed=seed)
    distance = kid(reference_features, f, scale, seed=seed)
    pretrained = {}
    for name, given, features in (("notes", notes, note_model.note_features),
                                  ("music", music, music_embedding.embeddings)):
        g = None if given is None else features(clips, sample_rate)
        pretrained[f"frechet_{name}"] = None if g is None else frechet_features(given[0], g, given[1])
        pretrained[f"kid_{name}"] = None if g is None else kid(given[0], g, given[1], seed=seed)["value"]
    return {
        "c2st": test["accuracy"], "c2st_low": test["low"], "c2st_high": test["high"],
        "kid": distance["value"], "kid_low": distance["low"], "kid_high": distance["high"],
        "frechet_clip": frechet_features(reference_features, f, scale),
        "frechet_logmel": frechet.frechet_log_mel_distance(reference, clips, sample_rate),
        "temporal_std": float(np.mean(feats.temporal_std(f))),
        "silence": float(metrics.silence_fraction(clips, sample_rate)),
        "flatness": float(metrics.spectral_flatness(clips)),
        **pretrained,
    }


def reference_sets(corpus, window, sample_rate, n_clips, seed=0):
    """The reference windows every row is judged against, and the reference rows' clip sets.

    Args:
        corpus: kvae.data.Corpus. The data at the model's rate.
        window: int. Clip length in samples.
        sample_rate: int. The corpus's rate.
        n_clips: int. Clips per set.
        seed: int. Seed of the windows and references.

    Returns:
        `(reference, rows, test, test_split)`: `n_clips` random training
        windows; a dict of the `REFERENCE_ROWS` clip sets (other training
        windows, held-out windows, drone, white noise, silence); the held-out
        windows; the split they came from.
    """
    train, _ = windows(corpus, "train", window, 2 * n_clips, random=True, seed=seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    reference, other_real = train[order[:n_clips]], train[order[n_clips:2 * n_clips]]
    test, test_split = windows(corpus, "test", window, n_clips, random=False, seed=seed)
    rows = {
        "ref: real vs real": other_real,
        "ref: held-out recordings": test,
        "ref: drone": references.drone_like(reference, sample_rate, seed=seed + 1),
        "ref: white noise": references.white_noise_like(reference, seed=seed + 2),
        "ref: silence": references.silence_like(reference),
    }
    return reference, rows, test, test_split


def judge(sets, reference, sample_rate, seed=0, progress=None, notes=None, music=None):
    """Realism rows (`realism_row`) of clip sets against the reference windows, each with its verdict.

    Args:
        sets: dict of row name to clips `(n, window)`, in table order.
        reference: the reference windows (`reference_sets`).
        sample_rate: int.
        seed: int. Seed of the two-sample tests.
        progress: callable or None. Called with a short message per row.
        notes: bool or None. Add the note model's columns; None: where it
            is installed.
        music: bool or None. Add the music network's columns
            (`music_embedding`: `frechet_music`, `kid_music`); None: where
            it is installed.

    Returns:
        dict of row name to metrics plus `verdict`.
    """
    say = progress or (lambda message: None)
    reference_features = feats.clip_features(reference, sample_rate)
    scale = Standardizer(reference_features)
    notes, music = (_optional(notes, note_model, str)[0] and note_model.note_features(reference, sample_rate),
                    _optional(music, music_embedding, str)[0] and music_embedding.embeddings(reference, sample_rate))
    notes, music = ((x, Standardizer(x)) if x is not False else None for x in (notes, music))
    realism = {}
    for name, clips in sets.items():
        say(f"judging {name}")
        realism[name] = realism_row(clips, reference, reference_features, scale, sample_rate, seed=seed,
                                    notes=notes, music=music)
    for name, text in verdicts(realism).items():
        realism[name]["verdict"] = text
    return realism


def paired_row(inputs, input_features, outputs, sample_rate, seed=0, visqol=False):
    """A reconstruction-table row: the paired C2ST of `outputs` against their `inputs`, and the distances.

    With `visqol` the row gets ViSQOL's MOS-LQO (`kvae.evaluation.visqol.visqol_columns`); else those
    columns are None.
    """
    test = paired_c2st(input_features, feats.clip_features(outputs, sample_rate), seed=seed)
    scored = (visqol_score.visqol_columns(inputs, outputs, sample_rate) if visqol else
              dict.fromkeys(("visqol", "visqol_low", "visqol_high", "visqol_clips")))
    return {"paired_c2st": test["accuracy"], "paired_c2st_low": test["low"], "paired_c2st_high": test["high"],
            **reconstruction_metrics(inputs, outputs, sample_rate), **scored}


def ladder_table(test, sample_rate, seed=0, progress=None, test_features=None, visqol=False):
    """The codec ladder's rows (`kvae.evaluation.ladder`) of the held-out windows, as reconstruction-table rows.

    Returns:
        dict `"ladder: <row>"` -> `paired_row` metrics plus `rate_bps` (and
        `coded_bps` for Opus); a row that could not be made holds only its
        `rate_bps` and a `note` saying how to make it.
    """
    say = progress or (lambda message: None)
    if test_features is None:
        test_features = feats.clip_features(test, sample_rate)
    rows = {}
    for name, (clips, info) in ladder.ladder_rows(test, sample_rate, seed=seed).items():
        say(f"ladder: {name}")
        rows[f"ladder: {name}"] = dict(info) if clips is None else {
            **paired_row(test, test_features, clips, sample_rate, seed, visqol=visqol), **info}
    return rows


def reconstruction_table(test, outputs, sample_rate, seed=0, progress=None, columns=None, visqol=None):
    """The reconstruction table of held-out windows, as `kvae evaluate` makes it, for any model's outputs.

    Each set of outputs is judged against the very windows it reconstructs
    (`paired_row`: paired C2ST, MR-STFT, LSD, SI-SDR), beside the codec
    ladder (`ladder_table`), silence and white noise, all from the same
    windows with the same features and seed; each output row gets its
    verdict (`reconstruction_verdict`: the nearest ladder row). A model
    outside kvae (benchmarks/peer_rave.py) is judged with the same function.

    Args:
        test: float array `(n, window)`. The held-out windows (`reference_sets`).
        outputs: dict of row name to float array `(n, window)`: each
            window's reconstruction, in the same order, in table order.
        sample_rate: int. The windows' rate.
        seed: int. Seed of the tests and the noise rows.
        progress: callable or None. Called with a short message per step.
        columns: dict or None. Row name to more columns of that row
            (`rate_bps`, from `information_rate`, or anything JSON-able).
        visqol: bool or None. ViSQOL's MOS-LQO columns for every row
            (`kvae.evaluation.visqol`); None: where visqol-python is
            installed (else the columns are None).

    Returns:
        dict of row name to metrics: the `outputs` rows (with `verdict`),
        the `ladder: ` rows, `ref: silence` and `ref: white noise`.

    Raises:
        KvaeError: an output's shape is not the windows' shape, or it is not finite; `visqol` is
            true and visqol-python is not installed.
    """
    test = np.asarray(test, np.float32)
    visqol = _optional(visqol, visqol_score, str)[0]
    columns = columns or {}
    for name, clips in outputs.items():
        shape = np.shape(clips)
        if shape != test.shape:
            raise KvaeError(f"{name}: outputs of shape {shape} do not match the {test.shape} windows they reconstruct")
        if not np.all(np.isfinite(clips)):
            raise KvaeError(f"{name}: outputs hold NaN or infinite samples")
    test_features = feats.clip_features(test, sample_rate)
    rows = {name: {**paired_row(test, test_features, np.asarray(clips, np.float32), sample_rate, seed, visqol),
                   **columns.get(name, {})} for name, clips in outputs.items()}
    ladder_rows = ladder_table(test, sample_rate, seed=seed, progress=progress, test_features=test_features,
                               visqol=visqol)
    noise = references.white_noise_like(test, seed=seed + 3)
    rows.update({
        **ladder_rows,
        "ref: silence": paired_row(test, test_features, np.zeros_like(test), sample_rate, seed, visqol),
        "ref: white noise": paired_row(test, test_features, noise, sample_rate, seed, visqol),
    })
    for name in outputs:
        rows[name]["verdict"] = reconstruction_verdict(rows, name)
    return rows


def _optional(wanted, module, describe):
    """`(on, settings text)` of a pretrained model's columns: on where asked, or (None) where installed."""
    ok, why = module.available()
    if wanted and not ok:
        raise KvaeError(why)
    on = ok if wanted is None else bool(wanted)
    return on, describe() if on else (f"off: {why}" if not ok else "off")


EVALUATION_ARRAYS = 16  # clips of one window held at once: the sets, the references, their features and copies


def _batched(fn, n, batch=64):
    return np.concatenate([np.asarray(fn(i, min(batch, n - i)), np.float32) for i in range(0, n, batch)])


def evaluate(model, data=None, cache=None, n_clips=DEFAULT_CLIPS, seed=0, reference_rate=16000, progress=None,
             notes=None, visqol=None, music=None):
    """Evaluate a model against real training windows and reference sets.

    Args:
        model: kvae.models.VAE. A trained model.
        data: str, Path or None. Dataset root; None is the embedded dataset.
        cache: str, Path or None. Cache folder.
        n_clips: int. Clips per set (the reference set, every row). Defaults to 256.
        seed: int. Seed of the windows, samples and references.
        reference_rate: int. Rate of the band-limit reconstruction row; skipped
            when not above the model's rate.
        progress: callable or None. Called with a short message per step.
        notes: bool or None. The note model's columns (`note_model`); None:
            where it is installed.
        visqol: bool or None. ViSQOL's column of the reconstruction table
            (`kvae.evaluation.visqol`); None: where it is installed.
        music: bool or None. The music network's columns of the realism
            table (`music_embedding`); None: where it is installed.

    Returns:
        A dict with `model`, `rate_bps` (the model's information rate on the
        held-out windows), `settings`, `data`, `realism` (row -> metrics and
        `verdict`) and `reconstruction` (row -> metrics: the reconstructions
        with their `verdict`, the ladder rows, the references), JSON-ready
        but for non-finite floats (`write_json` turns them into null).
    """
    from kvae.data import prepare, resample

    say = progress or (lambda message: None)
    n_clips, seed = bounds.check("n_clips", n_clips, "n_clips"), bounds.check("seed", seed)
    bounds.check_memory(EVALUATION_ARRAYS * 4 * n_clips * model.window, f"n_clips {n_clips}: the evaluation's clips",
                        "evaluate fewer clips (--n-clips)")
    notes, notes_text = _optional(notes, note_model, lambda: "basic-pitch (ICASSP 2022, ONNX): Fréchet distance and "
                                  f"KID of {len(note_model.NOTE_FEATURES)} pooled note features")
    visqol, visqol_text = _optional(visqol, visqol_score, visqol_score.describe)
    music, music_text = _optional(music, music_embedding, music_embedding.describe)
    rate, window = model.sample_rate, model.window
    corpus = prepare(data, sample_rate=rate, cache_dir=cache)
    reference, reference_rows, test, test_split = reference_sets(corpus, window, rate, n_clips, seed)

    say(f"sampling {n_clips} clips")
    samples = _batched(lambda i, k: model.sample(k, seed=seed + i), n_clips)
    say(f"reconstructing {len(test)} held-out windows")
    recon = _batched(lambda i, k: model.reconstruct(test[i:i + k]), len(test))
    sets = {"samples": samples, "reconstructions": recon, **reference_rows}
    realism = judge(sets, reference, rate, seed=seed, progress=say, notes=notes, music=music)
    reference_features_count = len(feats.feature_names())

    say("information rate")
    rate_info = information_rate(model, test)
    reconstruction = reconstruction_table(test, {"reconstructions": recon}, rate, seed=seed, progress=say,
                                          columns={"reconstructions": rate_info}, visqol=visqol)
    if reference_rate > rate:
        hi = prepare(data, sample_rate=reference_rate, cache_dir=cache)
        hi_window = bounds.window_samples(reference_rate, model.window_seconds)
        hi_test, _ = windows(hi, "test", hi_window, min(n_clips, 64), random=False, seed=seed)
        through = np.stack([resample(resample(w, reference_rate, rate), rate, reference_rate)[: w.shape[0]]
                            for w in hi_test])
        reconstruction[f"ref: data via {rate} Hz (at {reference_rate} Hz)"] = reconstruction_metrics(
            hi_test, through, reference_rate)
    return {
        "model": {"class": type(model).__name__, "sample_rate": rate, "window": window,
                  "window_seconds": model.window_seconds, "parameters": int(model.count_params())},
        "rate_bps": rate_info["rate_bps"],
        "settings": {"n_clips": n_clips, "seed": seed, "features": reference_features_count,
                     "c2st": "5-fold logistic regression (C=1), Wilson 95 % interval",
                     "paired_c2st": "the same, folds drawn over (input, output) pairs",
                     "kid": "cubic polynomial kernel on standardised features, 100 half-size subsets",
                     "reference": "random training windows",
                     "note_model": notes_text, "visqol": visqol_text, "music_net": music_text},
        "data": {"reference_windows": n_clips, "held_out_split": test_split, "held_out_windows": int(len(test)),
                 "recordings": len(corpus.entries)},
        "realism": realism,
        "reconstruction": reconstruction,
    }


__all__ = ["DEFAULT_CLIPS", "REALISM_KEYS", "REFERENCE_ROWS", "evaluate", "format_report", "information_rate", "judge",
           "ladder_table", "paired_row", "realism_row", "reconstruction_metrics", "reconstruction_table",
           "reference_sets", "windows"]
