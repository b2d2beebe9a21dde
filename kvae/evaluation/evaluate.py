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

**Reconstruction** (how close are reconstructions to their own inputs?):
multi-resolution STFT distance, log-spectral distance and SI-SDR on the
held-out windows, beside silence, white noise and the data sent through the
model's rate and back (what any model at that rate loses).
"""

import math

import numpy as np

from kvae.errors import KvaeError
from kvae.evaluation import features as feats
from kvae.evaluation import frechet, metrics, references
from kvae.evaluation.report import REALISM_KEYS, format_report, verdicts, write_json
from kvae.evaluation.two_sample import Standardizer, c2st, frechet_features, kid

DEFAULT_CLIPS = 256
REFERENCE_ROWS = ("ref: real vs real", "ref: held-out recordings", "ref: drone", "ref: white noise", "ref: silence")


def reconstruction_metrics(reference, estimate, sample_rate):
    """MR-STFT distance, log-spectral distance and SI-SDR of `estimate` against `reference`."""
    return {
        "mrstft": float(metrics.mrstft_distance(reference, estimate, sample_rate)),
        "lsd_db": float(metrics.log_spectral_distance(reference, estimate, sample_rate)),
        "si_sdr_db": float(metrics.si_sdr(reference, estimate)),
    }


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


def realism_row(clips, reference, reference_features, scale, sample_rate, seed=0):
    """The realism metrics of one clip set against the reference set."""
    clips = np.asarray(clips, np.float32)
    f = feats.clip_features(clips, sample_rate)
    test = c2st(reference_features, f, seed=seed)
    distance = kid(reference_features, f, scale, seed=seed)
    return {
        "c2st": test["accuracy"], "c2st_low": test["low"], "c2st_high": test["high"],
        "kid": distance["value"], "kid_low": distance["low"], "kid_high": distance["high"],
        "frechet_clip": frechet_features(reference_features, f, scale),
        "frechet_logmel": frechet.frechet_log_mel_distance(reference, clips, sample_rate),
        "temporal_std": float(np.mean(feats.temporal_std(f))),
        "silence": float(metrics.silence_fraction(clips, sample_rate)),
        "flatness": float(metrics.spectral_flatness(clips)),
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


def judge(sets, reference, sample_rate, seed=0, progress=None):
    """Realism rows (`realism_row`) of clip sets against the reference windows, each with its verdict.

    Args:
        sets: dict of row name to clips `(n, window)`, in table order.
        reference: the reference windows (`reference_sets`).
        sample_rate: int.
        seed: int. Seed of the two-sample tests.
        progress: callable or None. Called with a short message per row.

    Returns:
        dict of row name to metrics plus `verdict`.
    """
    say = progress or (lambda message: None)
    reference_features = feats.clip_features(reference, sample_rate)
    scale = Standardizer(reference_features)
    realism = {}
    for name, clips in sets.items():
        say(f"judging {name}")
        realism[name] = realism_row(clips, reference, reference_features, scale, sample_rate, seed=seed)
    for name, text in verdicts(realism).items():
        realism[name]["verdict"] = text
    return realism


def _batched(fn, n, batch=64):
    return np.concatenate([np.asarray(fn(i, min(batch, n - i)), np.float32) for i in range(0, n, batch)])


def evaluate(model, data=None, cache=None, n_clips=DEFAULT_CLIPS, seed=0, reference_rate=16000, progress=None):
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

    Returns:
        A dict with `model`, `settings`, `data`, `realism` (row -> metrics and
        `verdict`) and `reconstruction` (row -> metrics), JSON-ready but for
        non-finite floats (`write_json` turns them into null).
    """
    from kvae.data import prepare, resample

    say = progress or (lambda message: None)
    n_clips = int(n_clips)
    if n_clips < 10:
        raise KvaeError(f"n_clips: at least 10 clips per set are needed, got {n_clips}")
    rate, window = model.sample_rate, model.window
    corpus = prepare(data, rate=rate, cache_dir=cache)
    reference, reference_rows, test, test_split = reference_sets(corpus, window, rate, n_clips, seed)

    say(f"sampling {n_clips} clips")
    samples = _batched(lambda i, k: model.sample(k, seed=seed + i), n_clips)
    say(f"reconstructing {len(test)} held-out windows")
    recon = _batched(lambda i, k: model.reconstruct(test[i:i + k]), len(test))
    sets = {"samples": samples, "reconstructions": recon, **reference_rows}
    realism = judge(sets, reference, rate, seed=seed, progress=say)
    reference_features_count = len(feats.feature_names())

    noise = references.white_noise_like(test, seed=seed + 3)
    reconstruction = {
        "reconstructions": reconstruction_metrics(test, recon, rate),
        "ref: silence": reconstruction_metrics(test, np.zeros_like(test), rate),
        "ref: white noise": reconstruction_metrics(test, noise, rate),
    }
    if reference_rate > rate:
        hi = prepare(data, rate=reference_rate, cache_dir=cache)
        hi_window = int(round(model.window_seconds * reference_rate))
        hi_test, _ = windows(hi, "test", hi_window, min(n_clips, 64), random=False, seed=seed)
        through = np.stack([resample(resample(w, reference_rate, rate), rate, reference_rate)[: w.shape[0]]
                            for w in hi_test])
        reconstruction[f"ref: data via {rate} Hz (at {reference_rate} Hz)"] = reconstruction_metrics(
            hi_test, through, reference_rate)
    return {
        "model": {"class": type(model).__name__, "sample_rate": rate, "window": window,
                  "parameters": int(model.count_params())},
        "settings": {"n_clips": n_clips, "seed": seed, "features": reference_features_count,
                     "c2st": "5-fold logistic regression (C=1), Wilson 95 % interval",
                     "kid": "cubic polynomial kernel on standardised features, 100 half-size subsets",
                     "reference": "random training windows"},
        "data": {"reference_windows": n_clips, "held_out_split": test_split, "held_out_windows": int(len(test)),
                 "recordings": len(corpus.entries)},
        "realism": realism,
        "reconstruction": reconstruction,
    }


def main(args):
    """`kvae evaluate`: print the report and optionally write it as JSON."""
    import sys

    from kvae.paths import check_output_file
    from kvae.models.loading import load

    if args.out:  # before the work, not after it
        check_output_file(args.out, [args.model], example="eval.json", overwrite=getattr(args, "overwrite", False))
    model = load(args.model, compile=False)
    progress = (lambda m: print(f"  {m}", file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    result = evaluate(model, data=args.data, cache=args.cache, n_clips=args.n_clips, seed=args.seed,
                      progress=progress)
    print(format_report(result))
    if args.out:
        path = write_json(args.out, result, refuse=[args.model])
        print(f"wrote {path}")
    return 0


__all__ = ["DEFAULT_CLIPS", "REALISM_KEYS", "REFERENCE_ROWS", "evaluate", "format_report", "judge", "main",
           "realism_row", "reconstruction_metrics", "reference_sets", "windows"]
