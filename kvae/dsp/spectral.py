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


def autocorrelation(frames, max_lag):
    """Linear (not circular) autocorrelation of each frame over the last axis, lags `0..max_lag-1`.

    Computed through a zero-padded FFT of twice the frame length; the mean is not removed.
    """
    frames = np.asarray(frames)
    size = frames.shape[-1]
    spectrum = np.fft.rfft(frames, n=2 * size, axis=-1)
    return np.fft.irfft(spectrum.real**2 + spectrum.imag**2, axis=-1)[..., :max_lag]


def band_power(signals, rate, bands, min_freq=None):
    """Power of `signals` (over the last axis, sampled at `rate` Hz) in each `[low, high)` Hz band.

    The signals are zero-padded, when short, to a length whose spectrum has a bin at `min_freq` Hz
    (default: the lowest band edge), and the power is normalised by the squared length of the
    unpadded signal. Returns an array of shape `signals.shape[:-1] + (len(bands),)`.
    """
    signals = np.asarray(signals)
    frames = signals.shape[-1]
    lowest = min(lo for lo, _ in bands) if min_freq is None else min_freq
    length = max(frames, int(np.ceil(rate / lowest))) if lowest > 0 else frames
    spectrum = np.fft.rfft(signals, n=length, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2) / frames**2
    freqs = np.fft.rfftfreq(length, d=1.0 / rate)
    return np.stack([power[..., (freqs >= lo) & (freqs < hi)].sum(axis=-1) for lo, hi in bands], axis=-1)


def block_levels_db(x, block, merge_tail=False, floor=1e-30):
    """Power level in dBFS of consecutive blocks of `block` samples of `x` `(n, samples)`, and each block's length.

    A shorter last block is a block of its own, or with `merge_tail` part of the one before it (a signal
    shorter than a block is one block either way). The power is floored at `floor` before the logarithm.
    Returns `(levels (n, blocks), lengths (blocks,))`: what silence detection and trimming read.
    """
    x = np.asarray(x, np.float64)
    samples = x.shape[-1]
    count = max(samples // block, 1) if merge_tail else max(-(-samples // block), 1)
    edges = np.append(np.arange(count) * block, samples)
    lengths = np.diff(edges)
    power = np.add.reduceat(np.square(x), edges[:-1], axis=-1) / np.maximum(lengths, 1)
    return 10.0 * np.log10(np.maximum(power, floor)), lengths
