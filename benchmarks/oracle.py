"""The oracle: which half of the STFT, magnitude or phase, does the paired test still hear?

For held-out windows of a corpus (the evenly spaced test windows `kvae
evaluate` reconstructs) and, optionally, a trained model's reconstructions of
them, it swaps the two halves of the STFT and judges every result against
its own input with kvae evaluate's reconstruction table (paired C2ST with
its interval, MR-STFT, LSD, SI-SDR), beside the codec ladder and the
reference rows, in one table:

- `model`: the model's reconstructions as they are;
- `model mag + true phase`, `true mag + model phase`: the swaps;
- `model mag + Griffin-Lim`, `model mag + PGHI`: the model's magnitude with a
  phase made from it (fast Griffin-Lim; phase-gradient heap integration,
  `kvae.dsp.pghi`);
- `model's own mag + true phase`: for a model that decodes a magnitude
  (`MagnitudeVAE`), that decoded magnitude at the model's own STFT, before
  any phase is made, and with PGHI's phase; with `--temperatures T ...`,
  draws from its decoder's Gaussian likelihood at temperature T (T times its
  learned sigma, added to the decoded log-magnitude) with PGHI's phase
  (what `MagnitudeVAE.to_audio` plays at `decoder_temperature`);
- `true mag + Griffin-Lim`, `true mag + PGHI`, `true mag + random phase`: what a perfect
  magnitude is worth with a phase reconstruction, and with none;
- `smear N frames` / `blur N bins` + Griffin-Lim: the true magnitude
  averaged over N frames in time / N bins in frequency, a resolution ladder
  to read a model's magnitude error against;
- `linear code K x B bit` + Griffin-Lim: log-magnitude frames on their first
  K principal components (fitted on training windows), each coefficient
  quantised to B bits (`rate_bps` = K * B * frames per second): a
  rate-distortion floor any network must beat at equal bits.

Swaps use kvae's STFT (`kvae.dsp.ops`: centred, periodic Hann, `--n-fft`,
`--hop`) and its fast Griffin-Lim (`--gl-iters`, `--gl-momentum`; 0 is plain
Griffin-Lim). Without `--model` only the model-free rows are made.

    python benchmarks/oracle.py --data /tmp/ufoai-corpus --model runs/curves-vocos-mel/vocos-mel/model.keras
    python benchmarks/oracle.py --quick                     # embedded corpus, 32 windows, no model

A diagnosis beside `kvae evaluate` (docs/results.md#the-oracle), run on demand; public API only.
"""

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kvae  # noqa: E402

kvae.configure()  # before Keras is imported

import numpy as np  # noqa: E402

from kvae.dsp.pghi import pghi_batch  # noqa: E402

LOG_FLOOR = 1e-3  # under the magnitude before the log of the linear code


def stft(clips, n_fft, hop):
    """Magnitude and phase `(n, frames, bins)` of clips `(n, window)` (kvae's centred STFT)."""
    from keras import ops

    from kvae.dsp import ops as dsp

    real, imag = dsp.stft(ops.convert_to_tensor(np.asarray(clips, np.float32)), n_fft, hop)
    z = np.asarray(ops.convert_to_numpy(real), np.float64) + 1j * np.asarray(ops.convert_to_numpy(imag), np.float64)
    return np.abs(z), np.angle(z)


def istft(magnitude, phase, n_fft, hop, length):
    """Clips `(n, length)` from a magnitude and a phase (kvae's least-squares inverse STFT)."""
    from keras import ops

    from kvae.dsp import ops as dsp

    real = ops.convert_to_tensor((magnitude * np.cos(phase)).astype(np.float32))
    imag = ops.convert_to_tensor((magnitude * np.sin(phase)).astype(np.float32))
    return np.asarray(ops.convert_to_numpy(dsp.istft(real, imag, n_fft, hop, length)), np.float32)


def griffin_lim(magnitude, n_fft, hop, length, iterations, momentum, batch=64):
    """Clips `(n, length)` whose STFT magnitude approaches `magnitude`, by kvae's fast Griffin-Lim."""
    from keras import ops

    from kvae.dsp import ops as dsp

    out = []
    for start in range(0, len(magnitude), batch):
        mag = ops.convert_to_tensor(np.asarray(magnitude[start:start + batch], np.float32))
        out.append(ops.convert_to_numpy(dsp.griffin_lim(mag, n_fft, hop, length, iterations, momentum)))
    return np.concatenate(out).astype(np.float32)


def smear(magnitude, n, axis):
    """The magnitude averaged over a centred box of `n` frames (axis 1) or bins (axis 2), edges repeated."""
    if n <= 1:
        return magnitude
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(magnitude, size=n, axis=axis, mode="nearest")


def linear_code(train_magnitude, magnitude, components, bits, seed=0):
    """The magnitude through a PCA transform code of its log-magnitude frames, `bits` per coefficient.

    The principal components are fitted on the training windows' frames;
    each coefficient is quantised uniformly over +-3 of its training standard
    deviations (clipped) with `2 ** bits` levels, then decoded.
    """
    from sklearn.decomposition import PCA

    bins = magnitude.shape[-1]
    fit = np.log(train_magnitude.reshape(-1, bins) + LOG_FLOOR)
    pca = PCA(n_components=components, random_state=seed).fit(fit)
    spread = 3.0 * np.sqrt(pca.explained_variance_)
    levels = 2 ** bits - 1
    coefficients = pca.transform(np.log(magnitude.reshape(-1, bins) + LOG_FLOOR))
    unit = np.clip((coefficients + spread) / (2 * spread), 0.0, 1.0)
    decoded = np.round(unit * levels) / levels * (2 * spread) - spread
    log_mag = pca.inverse_transform(decoded).reshape(magnitude.shape)
    return np.maximum(np.exp(log_mag) - LOG_FLOOR, 0.0)


def model_rows(model, test, args, true_mag, true_phase, gl):
    """The model's rows: its reconstructions, the two swaps, its magnitude + Griffin-Lim (and its own magnitude)."""
    from keras import ops

    window = test.shape[1]
    recon = np.concatenate([model.reconstruct(test[i:i + 64]) for i in range(0, len(test), 64)])
    model_mag, model_phase = stft(recon, args.n_fft, args.hop)
    rows = {
        "model": recon,
        "model mag + true phase": istft(model_mag, true_phase, args.n_fft, args.hop, window),
        "true mag + model phase": istft(true_mag, model_phase, args.n_fft, args.hop, window),
        "model mag + Griffin-Lim": gl(model_mag),
        "model mag + PGHI": istft(model_mag, pghi_batch(model_mag, args.n_fft, args.hop), args.n_fft, args.hop, window),
    }
    if hasattr(model, "magnitude") and hasattr(model, "n_fft"):  # a model that decodes a magnitude
        decoded = []
        for start in range(0, len(test), 64):
            z_mean, _ = model.encode(ops.convert_to_tensor(test[start:start + 64]))
            decoded.append(ops.convert_to_numpy(model.decode(z_mean)))
        decoded = np.concatenate(decoded)
        own = ops.convert_to_numpy(model.magnitude(ops.convert_to_tensor(decoded)))
        _, phase = stft(test, model.n_fft, model.hop)

        def with_pghi(magnitude):
            return istft(magnitude, pghi_batch(magnitude, model.n_fft, model.hop), model.n_fft, model.hop, window)

        rows["model's own mag + true phase"] = istft(own, phase, model.n_fft, model.hop, window)
        rows["model's own mag + PGHI"] = with_pghi(own)
        sigma = float(np.exp(np.mean(ops.convert_to_numpy(model.log_sigma)))) if model.log_sigma is not None else 1.0
        for t in args.temperatures:  # draws from the decoder's own Gaussian likelihood, sigma times t
            draw = decoded + t * sigma * np.random.default_rng([args.seed, 11]).standard_normal(decoded.shape)
            rows[f"model's own draw at T={t:g} + PGHI"] = with_pghi(
                ops.convert_to_numpy(model.magnitude(ops.convert_to_tensor(draw.astype(np.float32)))))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained model (.keras file or run folder); without it, model-free rows only")
    parser.add_argument("--data", help="dataset root (default: the embedded corpus)")
    parser.add_argument("--cache", help="cache folder")
    parser.add_argument("--rate", type=int, default=3000, help="sample rate without --model (default 3000)")
    parser.add_argument("--window-seconds", type=float, default=1.0, help="window without --model (default 1.0)")
    parser.add_argument("--n-clips", type=int, default=256, help="held-out windows (default 256, as kvae evaluate)")
    parser.add_argument("--n-fft", type=int, default=256, help="FFT size of the swaps (default 256)")
    parser.add_argument("--hop", type=int, default=64, help="hop of the swaps (default 64)")
    parser.add_argument("--gl-iters", type=int, default=100, help="Griffin-Lim iterations (default 100)")
    parser.add_argument("--gl-momentum", type=float, default=0.99, help="fast Griffin-Lim momentum; 0 = plain")
    parser.add_argument("--smear", type=int, nargs="*", default=[2, 4, 8], help="frames of the time-smear ladder")
    parser.add_argument("--blur", type=int, nargs="*", default=[3, 5], help="bins of the frequency-blur ladder")
    parser.add_argument("--codes", nargs="*", default=["16x5", "32x5", "64x5"],
                        help="linear codes as COMPONENTSxBITS (default 16x5 32x5 64x5)")
    parser.add_argument("--temperatures", type=float, nargs="*", default=[],
                        help="for a model that decodes a magnitude: rows of draws from its decoder's likelihood at "
                             "these temperatures (times its learned sigma), phase by PGHI")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--no-visqol", action="store_true", help="leave out the ViSQOL column (minutes per table)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 32 windows, 8 Griffin-Lim iterations, no ViSQOL")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    codes = []
    for text in args.codes:
        try:
            k, b = (int(v) for v in text.lower().split("x"))
        except ValueError:
            parser.error(f"--codes: expected COMPONENTSxBITS such as 32x5, got {text!r}")
        if not (1 <= k <= args.n_fft // 2 + 1 and 1 <= b <= 16):
            parser.error(f"--codes: {text}: components 1 to {args.n_fft // 2 + 1}, bits 1 to 16")
        codes.append((k, b))
    if args.quick:
        args.n_clips, args.gl_iters = 32, 8
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from kvae import bounds
    from kvae.data import prepare
    from kvae.evaluation.evaluate import reconstruction_table, windows
    from kvae.evaluation.report import RECONSTRUCTION_KEYS, format_table

    started = time.perf_counter()
    model = kvae.load(args.model) if args.model else None
    rate = model.sample_rate if model else args.rate
    window = model.window if model else bounds.window_samples(rate, args.window_seconds)
    corpus = prepare(args.data, sample_rate=rate, cache_dir=args.cache)
    test, split = windows(corpus, "test", window, args.n_clips, random=False, seed=args.seed)
    train, _ = windows(corpus, "train", window, args.n_clips, random=True, seed=args.seed + 7)
    true_mag, true_phase = stft(test, args.n_fft, args.hop)
    train_mag, _ = stft(train, args.n_fft, args.hop)
    frames_per_second = rate / args.hop

    def gl(magnitude):
        return griffin_lim(magnitude, args.n_fft, args.hop, window, args.gl_iters, args.gl_momentum)

    outputs, columns = {}, {}
    if model is not None:
        outputs.update(model_rows(model, test, args, true_mag, true_phase, gl))
        from kvae.evaluation.evaluate import information_rate

        columns["model"] = information_rate(model, test)
    outputs["true mag + Griffin-Lim"] = gl(true_mag)
    outputs["true mag + PGHI"] = istft(true_mag, pghi_batch(true_mag, args.n_fft, args.hop), args.n_fft, args.hop,
                                       window)
    outputs["true mag + random phase"] = istft(
        true_mag, np.random.default_rng(args.seed).uniform(-np.pi, np.pi, true_mag.shape), args.n_fft, args.hop,
        window)
    for n in args.smear:
        outputs[f"smear {n} frames + Griffin-Lim"] = gl(smear(true_mag, n, axis=1))
    for n in args.blur:
        outputs[f"blur {n} bins + Griffin-Lim"] = gl(smear(true_mag, n, axis=2))
    for k, b in codes:
        name = f"linear code {k} x {b} bit + Griffin-Lim"
        outputs[name] = gl(linear_code(train_mag, true_mag, k, b, seed=args.seed))
        columns[name] = {"rate_bps": k * b * frames_per_second}

    rows = reconstruction_table(test, outputs, rate, seed=args.seed, columns=columns,
                                visqol=False if args.no_visqol or args.quick else None)
    what = f"model {args.model}" if model else "no model"
    print(f"Oracle: {len(test)} {split} windows of {window} samples at {rate} Hz, {what}; STFT n_fft {args.n_fft}, "
          f"hop {args.hop}; Griffin-Lim {args.gl_iters} iterations, momentum {args.gl_momentum}")
    print("\n".join(format_table(rows, RECONSTRUCTION_KEYS, "")))
    print(f"\ncommand: python benchmarks/oracle.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"total time: {time.perf_counter() - started:.0f} s")
    if args.out:
        from kvae.evaluation.report import write_json

        write_json(args.out, {"settings": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
