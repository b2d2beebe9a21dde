"""Where a model's reconstructions lose energy: level of each frequency band, reconstruction minus input, in dB.

Held-out windows of a dataset (the evenly spaced test windows `kvae evaluate`
reconstructs) pass through each model; the power of each band of their
Hann-windowed spectra, summed over all windows, is compared with the
inputs'. 0 dB is a band kept at its level; -15 dB a band mostly lost, as a
low-pass filter loses it. It found what issue 23's first models did: a
squared error on the waveform made the decoder drop 6-15 dB of every band
above 200 Hz (energy it could not phase-align), and a spectral-only loss
keeps every band within a few dB.

    python benchmarks/band_levels.py runs/curves-vocos/vocos/model.keras \\
        runs/curves60-vocos-mel/vocos-mel/model.keras --data /tmp/ufoai-corpus

A diagnosis beside `kvae evaluate`, not a judge of realism. Run on demand.
"""

import argparse
import sys

import numpy as np

import kvae
from kvae.data import prepare
from kvae.dsp import spectral
from kvae.evaluation.evaluate import windows

EDGES_HZ = (0, 100, 200, 400, 600, 800, 1000, 1200, 1400)


def band_power(clips, rate, edges):
    """Power per band `(len(edges),)` (the last band reaches Nyquist) of Hann-windowed clips, summed over clips."""
    bounds = list(edges) + [rate / 2.0 + 1.0]
    return spectral.band_power(clips * np.hanning(clips.shape[1]), rate, list(zip(bounds[:-1], bounds[1:]))).sum(0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="model.keras files (or snapshots) of one sample rate and window")
    parser.add_argument("--data", help="dataset root (default: the embedded corpus)")
    parser.add_argument("--n-clips", type=int, default=128, help="held-out windows (default 128)")
    args = parser.parse_args(argv)
    models = [kvae.load(path) for path in args.models]
    rate, window = models[0].sample_rate, models[0].window
    if any((m.sample_rate, m.window) != (rate, window) for m in models):
        raise SystemExit("band_levels.py: every model must have the same sample rate and window")
    clips, split = windows(prepare(args.data, sample_rate=rate), "test", window, args.n_clips, random=False)
    edges = [e for e in EDGES_HZ if e < rate / 2]
    reference = band_power(clips, rate, edges)
    labels = [f"{lo}-{hi}" for lo, hi in zip(edges, edges[1:] + [rate // 2])]
    print(f"Band level of reconstructions minus inputs, dB ({len(clips)} {split} windows at {rate} Hz)")
    print(f"  {'model':<50} " + " ".join(f"{label:>9}" for label in labels))
    for path, model in zip(args.models, models):
        levels = 10 * np.log10(band_power(model.reconstruct(clips), rate, edges) / np.maximum(reference, 1e-30))
        print(f"  {str(path)[-50:]:<50} " + " ".join(f"{v:>+9.1f}" for v in levels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
