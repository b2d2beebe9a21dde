"""Objective evaluation of a trained model: `kvae evaluate MODEL`.

Reconstruction metrics on the test split's fixed windows (multi-resolution
STFT distance, log-spectral distance, SI-SDR) and sample metrics (silence,
spectral flatness, Fréchet log-mel distance to the test windows), beside
reference rows that give them a scale:

- silence and white noise at the data's RMS: what failure looks like;
- training windows: real music judged like samples (the best a sampler can do);
- the data through the model's rate and back, measured at a higher rate: what
  any model at that rate loses to the band limit.
"""

import json
import math
from pathlib import Path

import numpy as np

from kvae import metrics

COLUMNS = (
    ("mrstft", "MR-STFT dist", "{:.3f}"),
    ("lsd_db", "LSD dB", "{:.2f}"),
    ("si_sdr_db", "SI-SDR dB", "{:.2f}"),
    ("silence", "silence", "{:.3f}"),
    ("flatness", "flatness", "{:.3f}"),
    ("frechet_logmel", "Fréchet log-mel", "{:.1f}"),
)


def reconstruction_metrics(reference, estimate, sample_rate):
    """MR-STFT distance, log-spectral distance and SI-SDR of `estimate` against `reference`."""
    return {
        "mrstft": float(metrics.mrstft_distance(reference, estimate, sample_rate)),
        "lsd_db": float(metrics.log_spectral_distance(reference, estimate, sample_rate)),
        "si_sdr_db": float(metrics.si_sdr(reference, estimate)),
    }


def sample_metrics(clips, reference, sample_rate):
    """Silence fraction, spectral flatness and Fréchet log-mel distance of clips to reference clips."""
    return {
        "silence": float(metrics.silence_fraction(clips, sample_rate)),
        "flatness": float(metrics.spectral_flatness(clips)),
        "frechet_logmel": float(metrics.frechet_log_mel_distance(reference, clips, sample_rate)),
    }


def _windows(corpus, split, window, per_recording, random, seed=0):
    from kvae.data import WindowSource

    source = WindowSource(corpus, split, window, batch_size=64, windows_per_recording=per_recording,
                          random=random, seed=seed)
    return source.read(source.plan(0))


def evaluate(model, data=None, cache=None, n_samples=32, seed=0, windows_per_recording=8,
             reference_rate=16000):
    """Evaluate a model on the test split of a dataset.

    Args:
        model: kvae.models.VAE. A trained model.
        data: str, Path or None. Dataset root; None is the embedded dataset.
        cache: str, Path or None. Cache folder for the model's rate.
        n_samples: int. Prior samples to judge. Defaults to 32.
        seed: int. Sampling seed. Defaults to 0.
        windows_per_recording: int. Fixed test windows per recording.
        reference_rate: int. Rate at which the band-limit reference row is
            measured. Defaults to 16000.

    Returns:
        A dict: `model` (path-free description), `rows` (`{row name: {metric: value}}`).
    """
    from kvae.data import prepare, resample

    rate, window = model.sample_rate, model.window
    corpus = prepare(data, rate=rate, cache_dir=cache)
    test = _windows(corpus, "test", window, windows_per_recording, random=False)
    train = _windows(corpus, "train", window, max(1, math.ceil(n_samples / max(len(corpus.split("train")), 1))),
                     random=True, seed=seed)[:n_samples]
    rng = np.random.default_rng(seed)
    data_rms = float(np.sqrt(np.mean(test ** 2)))
    noise = rng.normal(0.0, data_rms, test.shape).astype(np.float32)
    silence = np.zeros_like(test)

    recon = np.concatenate([model.reconstruct(test[i:i + 64]) for i in range(0, len(test), 64)])
    clips = model.sample(n_samples, seed=seed)
    rows = {
        "model": {**reconstruction_metrics(test, recon, rate), **sample_metrics(clips, test, rate)},
        "silence": {**reconstruction_metrics(test, silence, rate),
                    **sample_metrics(silence[:n_samples], test, rate)},
        "white noise": {**reconstruction_metrics(test, noise, rate), **sample_metrics(noise[:n_samples], test, rate)},
        "training windows": sample_metrics(train, test, rate),
    }
    if reference_rate > rate:
        hi = prepare(data, rate=reference_rate)
        hi_test = _windows(hi, "test", int(round(model.window_seconds * reference_rate)), windows_per_recording,
                           random=False)
        through = np.stack([resample(resample(w, reference_rate, rate), rate, reference_rate)[: w.shape[0]]
                            for w in hi_test])
        rows[f"data via {rate} Hz (at {reference_rate} Hz)"] = reconstruction_metrics(hi_test, through,
                                                                                       reference_rate)
    return {
        "model": {"class": type(model).__name__, "sample_rate": rate, "window": window,
                  "parameters": int(model.count_params())},
        "test_windows": int(len(test)),
        "n_samples": int(n_samples),
        "rows": rows,
    }


def format_table(result):
    """Format an `evaluate` result as an aligned text table."""
    header = ["", *[title for _, title, _ in COLUMNS]]
    lines = []
    for name, values in result["rows"].items():
        cells = [name]
        for key, _, fmt in COLUMNS:
            value = values.get(key)
            cells.append("-" if value is None else (str(value) if not np.isfinite(value) else fmt.format(value)))
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    fmt_row = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                    for i, (c, w) in enumerate(zip(row, widths)))
    out = [fmt_row(header), fmt_row(["-" * w for w in widths])]
    out += [fmt_row(row) for row in lines]
    return "\n".join(out)


def main(args):
    """`kvae evaluate`: print the table and optionally write JSON."""
    from kvae.training import load

    model = load(args.model, compile=False)
    result = evaluate(model, data=args.data, cache=args.cache, n_samples=args.n_samples, seed=args.seed)
    print(f"{result['model']['class']} at {result['model']['sample_rate']} Hz, "
          f"{result['test_windows']} test windows, {result['n_samples']} samples")
    print(format_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        finite = {name: {k: (v if np.isfinite(v) else None) for k, v in row.items()}
                  for name, row in result["rows"].items()}  # JSON has no inf or nan
        Path(args.out).write_text(json.dumps({**result, "rows": finite}, indent=2))
        print(f"wrote {args.out}")
    return 0
