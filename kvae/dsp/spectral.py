"""The numpy twin of `kvae.dsp.ops.stft`: the same centred, periodic-window STFT, in float64.

Metrics, evaluation features and plots use it; per frame it equals what the
models and losses compute in `keras.ops` (tested against each other).
"""

import numpy as np

from kvae.dsp.filters import padded_window
from kvae.errors import KvaeError


def centred_frames(x, n_fft, hop, name="x"):
    """Frames of `(n, samples)` audio, reflect-padded by `n_fft // 2` each side: `(n, frames, n_fft)` (a view).

    Raises:
        KvaeError: if the clips are not longer than `n_fft // 2` samples
            (reflect padding needs it).
    """
    samples = x.shape[-1]
    if samples <= n_fft // 2:
        raise KvaeError(f"{name} has {samples} samples, too short for n_fft {n_fft} (needs more than {n_fft // 2})")
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode="reflect")
    return np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :]


def stft(x, n_fft, hop=None, win_length=None, window="hann", name="x"):
    """Complex centred STFT of `(n, samples)` audio: `(n, frames, n_fft // 2 + 1)`.

    Args:
        x: array `(n, samples)` (or `(samples,)`, treated as one clip).
        n_fft: int. FFT size.
        hop: int or None. Hop in samples; defaults to `n_fft // 4`.
        win_length: int or None. Window length, zero-padded to `n_fft`;
            defaults to `n_fft`.
        window: str. `"hann"` or `"hamming"` (periodic).
        name: str. Names the input in errors.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    hop = max(n_fft // 4, 1) if hop is None else int(hop)
    frames = centred_frames(x, n_fft, hop, name)
    return np.fft.rfft(frames * padded_window(window, win_length or n_fft, n_fft), axis=-1)


def power_spectrogram(x, n_fft, hop=None, name="x"):
    """`|STFT|**2` (periodic Hann window of `n_fft`) of `(n, samples)` audio: `(n, frames, bins)`."""
    spec = stft(x, n_fft, hop, name=name)
    return spec.real**2 + spec.imag**2
