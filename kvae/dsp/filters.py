"""Windows, the mel filterbank and FFT sizes, in numpy (shared by `kvae.dsp.spectral` and `kvae.dsp.ops`)."""

import math

import numpy as np

from kvae.errors import KvaeError

WINDOWS = ("hann", "hamming")
REFERENCE_RATE = 44100
REFERENCE_SIZES = (2048, 1024, 512, 256, 128, 64)  # RAVE's multiscale STFT sizes at 44.1 kHz


def check_rate(value, name):
    """A positive, finite number as float, or a one-line `KvaeError` naming `name`."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise KvaeError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise KvaeError(f"{name} must be a positive number, got {value!r}")
    return value


def check_int(value, name, minimum=1):
    """An int of at least `minimum`, or a one-line `KvaeError` naming `name`."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise KvaeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def periodic_window(name, length):
    """Periodic window of `length` samples, as `torch.hann_window` / `torch.hamming_window` make it.

    Built here rather than by name in `keras.ops.stft`: the tensorflow
    backend's `tf.signal.hann_window(n, periodic=True)` is only periodic for
    even `n` and returns the symmetric window for odd `n`.

    Args:
        name: str. `"hann"` or `"hamming"`.
        length: int. Window length in samples.

    Returns:
        A float64 array of shape `(length,)`.
    """
    if name not in WINDOWS:
        raise KvaeError(f"window must be one of {WINDOWS}, got {name!r}")
    phase = 2.0 * np.pi * np.arange(length) / length
    if name == "hann":
        return 0.5 - 0.5 * np.cos(phase)
    return 0.54 - 0.46 * np.cos(phase)


def padded_window(name, win_length, n_fft):
    """`periodic_window(name, win_length)` zero-padded symmetrically to `n_fft` (as torch.stft does)."""
    window = periodic_window(name, win_length)
    left = (n_fft - win_length) // 2
    return np.pad(window, (left, n_fft - win_length - left))


def crossfade_window(length):
    """A Hann taper without zero end points (`np.hanning(length + 2)[1:-1]`), for overlap-adding windows."""
    return np.hanning(length + 2)[1:-1]


def centred_frame_count(samples, n_fft, hop):
    """Frames of a centred STFT (reflect padding of `n_fft // 2` each side) of `samples` samples."""
    return 1 + (samples + 2 * (n_fft // 2) - n_fft) // hop


def scaled_fft_sizes(sample_rate, reference_rate=REFERENCE_RATE, reference_sizes=REFERENCE_SIZES, min_size=16):
    """FFT sizes covering the same durations at `sample_rate` as at `reference_rate`.

    Each reference size is multiplied by `sample_rate / reference_rate` and
    rounded to the nearest power of two (in log2), duplicates are dropped
    (first occurrence kept, order preserved) and sizes below `min_size` are
    dropped. At 44.1 kHz the default gives `[2048, 1024, 512, 256, 128, 64]`;
    at 16 kHz `[1024, 512, 256, 128, 64, 32]`.

    Args:
        sample_rate: Sample rate of the audio in Hz.
        reference_rate: Rate in Hz at which `reference_sizes` apply.
        reference_sizes: FFT sizes at `reference_rate`.
        min_size: Smallest size kept.

    Returns:
        A non-empty list of ints. If every scaled size is below `min_size`,
        the list holds `min_size` rounded up to a power of two.

    Raises:
        KvaeError: If a rate or size is not positive.
    """
    sample_rate = check_rate(sample_rate, "sample_rate")
    reference_rate = check_rate(reference_rate, "reference_rate")
    if not reference_sizes or any(not s > 0 for s in reference_sizes):
        raise KvaeError(f"reference_sizes must be positive sizes, got {reference_sizes!r}")
    if not min_size > 0:
        raise KvaeError(f"min_size must be positive, got {min_size!r}")
    ratio = sample_rate / reference_rate
    sizes = []
    for size in reference_sizes:
        scaled = 2 ** int(round(math.log2(size * ratio)))
        if scaled >= min_size and scaled not in sizes:
            sizes.append(scaled)
    if not sizes:
        sizes.append(2 ** int(math.ceil(math.log2(min_size))))
    return sizes


def scaled_fft_size(sample_rate, reference_size):
    """One FFT size: `reference_size` at 44.1 kHz scaled to `sample_rate` (at least 16)."""
    return scaled_fft_sizes(sample_rate, reference_sizes=(reference_size,), min_size=16)[0]


def fitting_fft_size(samples, largest=2048):
    """The largest power of two that is at most `largest` and at most `samples` (at least 2)."""
    return max(2, min(int(largest), 1 << (int(samples).bit_length() - 1)))


def fft_size_for_duration(sample_rate, seconds, max_samples=None, smallest=8):
    """The next power of two of `seconds` of audio, halved while longer than `max_samples`.

    E.g. 85 ms gives 256 at 3000 Hz and 2048 at 22050 Hz.
    """
    n_fft = 2 ** max(int(math.log2(smallest)), math.ceil(math.log2(seconds * sample_rate)))
    while max_samples is not None and n_fft > smallest and n_fft > max_samples:
        n_fft //= 2
    return n_fft


def hz_to_mel(f):
    """HTK mel scale: `2595 log10(1 + f / 700)`."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of `hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate, n_fft, n_mels=64, fmin=0.0, fmax=None):
    """HTK-scale triangular mel filterbank, shape `(n_mels, n_fft // 2 + 1)`.

    `n_mels + 2` points equally spaced in mel from `fmin` to `fmax` define
    triangles of peak 1 (no area normalisation) evaluated at the FFT bin
    frequencies. Narrow low filters may fall between bins and be all zero
    when `n_fft` is small.

    Args:
        sample_rate: Sample rate in Hz.
        n_fft: FFT size.
        n_mels: Number of filters.
        fmin: Lowest frequency in Hz.
        fmax: Highest frequency in Hz; defaults to `sample_rate / 2`.

    Returns:
        The filterbank as a float64 array.
    """
    sample_rate = check_rate(sample_rate, "sample_rate")
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0 <= fmin < fmax <= sample_rate / 2.0:
        raise KvaeError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}")
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (center - lower)
    falling = (upper - freqs[None, :]) / (upper - center)
    return np.maximum(0.0, np.minimum(rising, falling))
