"""Objective audio evaluation metrics in numpy/scipy (no Keras).

Every function takes plain arrays: a 1-D clip ``(samples,)`` or a 2-D batch
``(n, samples)`` of float audio with full scale at amplitude 1.0. Inputs are
converted to float64. Empty arrays, non-numeric arrays and arrays holding NaN
or Inf raise `kvae.errors.KvaeError` naming the offending argument.

Spectra come from `kvae.dsp.spectral`, the numpy twin of the STFT that
`kvae.losses` and the models use (centred, reflect-padded by ``n_fft // 2``
on both sides, periodic Hann window, like ``torch.stft`` with
``center=True``). Reflect padding needs clips longer than ``n_fft // 2``
samples.

Functions taking ``reduce`` return a Python float for the whole input when it
is true, and an array with one value per clip (shape ``(n,)``; ``(1,)`` for a
1-D clip) when it is false.
"""

import numpy as np

from kvae.dsp.filters import check_int as _check_int
from kvae.dsp.filters import check_rate as _check_rate
from kvae.dsp.filters import fitting_fft_size, scaled_fft_size, scaled_fft_sizes
from kvae.dsp.spectral import block_levels_db, centred_frames
from kvae.dsp.spectral import power_spectrogram as _power_spectrogram
from kvae.errors import KvaeError

__all__ = [
    "mrstft_distance",
    "log_spectral_distance",
    "si_sdr",
    "rms",
    "rms_dbfs",
    "silence_fraction",
    "spectral_flatness",
]

_MAG_EPS = 1e-8  # floor on |STFT|**2, as in kvae.losses / auraloss
_DB_FLOOR = 1e-10  # floor on powers before dB conversion
_RMS_FLOOR = 1e-10  # rms_dbfs floor: -200 dBFS


# ----------------------------------------------------------------- helpers


def _as_audio(x, name, allow_list=False):
    """Validates audio and returns a float64 array of shape ``(n, samples)``.

    With ``allow_list``, a list of 1-D clips of different lengths is accepted
    and returned as a list of 1-D arrays.
    """
    if allow_list and isinstance(x, (list, tuple)) and x and all(np.ndim(c) == 1 for c in x):
        lengths = {len(c) for c in x}
        if len(lengths) > 1:
            return [_as_audio(c, f"{name}[{i}]")[0] for i, c in enumerate(x)]
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise KvaeError(f"{name} must be a numeric array") from None
    if arr.size == 0:
        raise KvaeError(f"{name} is empty")
    if arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim != 2:
        raise KvaeError(f"{name} must be 1-D (samples,) or 2-D (n, samples), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise KvaeError(f"{name} contains NaN or Inf values")
    return arr


def _as_pair(reference, estimate):
    ref = _as_audio(reference, "reference")
    est = _as_audio(estimate, "estimate")
    if ref.shape != est.shape:
        raise KvaeError(
            f"reference and estimate shapes differ: {np.shape(reference)} vs {np.shape(estimate)}"
        )
    return ref, est


def _reduce(values, reduce):
    values = np.asarray(values, dtype=np.float64)
    return float(np.mean(values)) if reduce else values


# ----------------------------------------------------------------- distances


def mrstft_distance(reference, estimate, sample_rate, fft_sizes=None, reduce=True):
    """Multi-resolution STFT distance (spectral convergence + log-magnitude L1).

    For each FFT size (hop ``size // 4``, Hann window of the full size) and
    each clip: ``||R - E||_F / ||R||_F + mean|log R - log E|`` with ``R``/``E``
    the magnitudes ``sqrt(max(|STFT|**2, 1e-8))`` of reference/estimate; the
    result is averaged over resolutions. Per clip this equals
    ``kvae.losses.MultiResolutionSTFTLoss(fft_sizes).per_example`` (float64
    instead of float32). 0 for identical inputs; larger is worse.

    Args:
        reference: Reference audio, ``(samples,)`` or ``(n, samples)``.
        estimate: Estimated audio, same shape.
        sample_rate: Sample rate in Hz; picks the default sizes.
        fft_sizes: FFT sizes. Defaults to ``scaled_fft_sizes(sample_rate)``
            keeping only sizes whose half is shorter than the clips.
        reduce: Mean over clips (float) if true, else per-clip array.

    Returns:
        The distance, float or ``(n,)`` array.

    Raises:
        KvaeError: On invalid input or clips too short for an explicit size.
    """
    ref, est = _as_pair(reference, estimate)
    sample_rate = _check_rate(sample_rate, "sample_rate")
    samples = ref.shape[-1]
    if fft_sizes is None:
        fft_sizes = [s for s in scaled_fft_sizes(sample_rate) if s // 2 < samples]
        if not fft_sizes:
            raise KvaeError(f"reference has {samples} samples, too short for an STFT distance")
    else:
        fft_sizes = [_check_int(s, "fft_sizes", minimum=2) for s in fft_sizes]
        if not fft_sizes:
            raise KvaeError("fft_sizes must not be empty")
    total = np.zeros(ref.shape[0])
    for size in fft_sizes:
        hop = max(size // 4, 1)
        r = np.sqrt(np.maximum(_power_spectrogram(ref, size, hop, "reference"), _MAG_EPS))
        e = np.sqrt(np.maximum(_power_spectrogram(est, size, hop, "estimate"), _MAG_EPS))
        sc = np.sqrt(np.sum((r - e) ** 2, axis=(1, 2))) / np.sqrt(np.sum(r**2, axis=(1, 2)))
        log_mag = np.mean(np.abs(np.log(r) - np.log(e)), axis=(1, 2))
        total += sc + log_mag
    return _reduce(total / len(fft_sizes), reduce)


def log_spectral_distance(reference, estimate, sample_rate, n_fft=None, hop=None, reduce=True):
    """Log-spectral distance in dB.

    Per frame: ``sqrt(mean_f (10 * log10(P_ref / P_est))**2)`` with powers
    floored at 1e-10 (-100 dB); then the mean over frames. 0 for identical
    inputs.

    Args:
        reference: Reference audio, ``(samples,)`` or ``(n, samples)``.
        estimate: Estimated audio, same shape.
        sample_rate: Sample rate in Hz; picks the default ``n_fft``.
        n_fft: FFT size; defaults to 2048 at 44.1 kHz scaled to ``sample_rate``
            (a power of two, e.g. 1024 at 16 kHz).
        hop: Hop in samples; defaults to ``n_fft // 4``.
        reduce: Mean over clips (float) if true, else per-clip array.

    Returns:
        LSD in dB, float or ``(n,)`` array.
    """
    ref, est = _as_pair(reference, estimate)
    sample_rate = _check_rate(sample_rate, "sample_rate")
    n_fft = scaled_fft_size(sample_rate, 2048) if n_fft is None else _check_int(n_fft, "n_fft", 2)
    hop = max(n_fft // 4, 1) if hop is None else _check_int(hop, "hop")
    p_ref = _power_spectrogram(ref, n_fft, hop, "reference")
    p_est = _power_spectrogram(est, n_fft, hop, "estimate")
    diff = 10.0 * (np.log10(np.maximum(p_ref, _DB_FLOOR)) - np.log10(np.maximum(p_est, _DB_FLOOR)))
    per_frame = np.sqrt(np.mean(diff**2, axis=-1))
    return _reduce(np.mean(per_frame, axis=-1), reduce)


def si_sdr(reference, estimate, reduce=True, eps=1e-10):
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019).

    Both signals are made zero-mean; the reference is scaled by
    ``a = <est, ref> / <ref, ref>`` (``a`` may be negative, so the polarity
    of the estimate does not matter either) and ``SI-SDR = 10 log10(|a ref|^2 /
    (|est - a ref|^2 + eps |a ref|^2))``. The ``eps`` term (relative, so the
    result stays scale invariant) caps the value at ``10 log10(1 / eps)``
    (100 dB by default), which identical inputs reach. A clip whose reference
    is constant (zero energy after removing the mean) has no defined value and
    gives ``nan``; an estimate orthogonal to the reference (or constant) gives
    ``-inf``. Larger is better.

    Args:
        reference: Reference audio, ``(samples,)`` or ``(n, samples)``.
        estimate: Estimated audio, same shape.
        reduce: If true, the mean over the clips with a defined value
            (``nan`` if none has one); else the per-clip array.
        eps: Relative floor on the distortion energy.

    Returns:
        SI-SDR in dB, float or ``(n,)`` array.
    """
    ref, est = _as_pair(reference, estimate)
    ref = ref - ref.mean(axis=-1, keepdims=True)
    est = est - est.mean(axis=-1, keepdims=True)
    ref_energy = np.sum(ref**2, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.sum(est * ref, axis=-1) / ref_energy
        target = alpha[:, None] * ref
        t_energy = np.sum(target**2, axis=-1)
        n_energy = np.sum((est - target) ** 2, axis=-1)
        values = 10.0 * np.log10(t_energy / (n_energy + eps * t_energy))
    values = np.where(t_energy > 0, values, -np.inf)
    values = np.where(ref_energy > 0, values, np.nan)
    if not reduce:
        return values
    defined = values[~np.isnan(values)]
    return float(np.mean(defined)) if defined.size else float("nan")


# ----------------------------------------------------------------- levels


def rms(x):
    """Root mean square over the last axis.

    Args:
        x: Audio, ``(samples,)`` or ``(n, samples)``.

    Returns:
        A float for a 1-D clip, a ``(n,)`` array for a batch.
    """
    arr = _as_audio(x, "x")
    values = np.sqrt(np.mean(arr**2, axis=-1))
    return float(values[0]) if np.ndim(x) == 1 else values


def rms_dbfs(x):
    """RMS level in dBFS: ``20 log10(rms)``, full scale = amplitude 1.0.

    A full-scale square wave is 0 dBFS and a full-scale sine -3.01 dBFS (no
    AES-17 +3 dB offset). Silence is floored at -200 dBFS.

    Args:
        x: Audio, ``(samples,)`` or ``(n, samples)``.

    Returns:
        A float for a 1-D clip, a ``(n,)`` array for a batch.
    """
    values = 20.0 * np.log10(np.maximum(rms(x), _RMS_FLOOR))
    return float(values) if np.ndim(values) == 0 else values


def silence_fraction(x, sample_rate, frame_seconds=0.02, threshold_db=-60.0, reduce=True):
    """Fraction of samples lying in silent frames.

    The audio is cut into consecutive non-overlapping frames of
    ``round(frame_seconds * sample_rate)`` samples (at least 1; a shorter last
    frame counts as a frame); a frame is silent if its RMS is below
    ``threshold_db`` dBFS. The result is the number of samples in silent frames
    divided by the number of samples, so all zeros give 1.0 and a -20 dBFS
    sine gives 0.0.

    Args:
        x: Audio, ``(samples,)`` or ``(n, samples)``.
        sample_rate: Sample rate in Hz.
        frame_seconds: Frame length in seconds.
        threshold_db: Silence threshold in dBFS.
        reduce: Fraction over all samples of all clips (float) if true, else
            per-clip array.

    Returns:
        A fraction in [0, 1], float or ``(n,)`` array.
    """
    arr = _as_audio(x, "x")
    sample_rate = _check_rate(sample_rate, "sample_rate")
    frame_seconds = _check_rate(frame_seconds, "frame_seconds")
    n, samples = arr.shape
    level, counts = block_levels_db(arr, max(int(round(frame_seconds * sample_rate)), 1), floor=_RMS_FLOOR**2)
    silent_samples = np.sum((level < threshold_db) * counts, axis=-1)
    if reduce:
        return float(np.sum(silent_samples) / (n * samples))
    return silent_samples / samples


def spectral_flatness(x, n_fft=None, hop=None, silence_db=-120.0, reduce=True):
    """Spectral flatness: geometric over arithmetic mean of each frame's power spectrum.

    Frames are Hann-windowed centred STFT frames; powers are floored at 1e-20
    before the geometric mean. White noise scores about ``exp(-0.5772) = 0.56``
    (the periodogram of noise is exponentially distributed), a pure tone close
    to 0. Silent frames (time-domain RMS below ``silence_db`` dBFS) have no
    meaningful flatness and are skipped; if every frame is silent the result is
    ``nan``.

    Args:
        x: Audio, ``(samples,)`` or ``(n, samples)``.
        n_fft: FFT size (frame length); defaults to 2048, or the largest
            power of two that fits a shorter clip.
        hop: Hop in samples; defaults to ``n_fft // 4``.
        silence_db: Frames quieter than this (dBFS) are skipped.
        reduce: Mean over the non-silent frames of all clips (float) if true,
            else per-clip mean (``nan`` for an all-silent clip).

    Returns:
        Flatness in (0, 1], float or ``(n,)`` array.
    """
    arr = _as_audio(x, "x")
    if n_fft is None:
        n_fft = fitting_fft_size(arr.shape[-1])
    n_fft = _check_int(n_fft, "n_fft", 2)
    hop = max(n_fft // 4, 1) if hop is None else _check_int(hop, "hop")
    power = np.maximum(_power_spectrogram(arr, n_fft, hop, "x"), 1e-20)
    flatness = np.exp(np.mean(np.log(power), axis=-1)) / np.mean(power, axis=-1)
    frames = centred_frames(arr, n_fft, hop)
    frame_rms = np.sqrt(np.mean(frames**2, axis=-1))
    voiced = frame_rms >= 10.0 ** (silence_db / 20.0)
    if reduce:
        return float(np.mean(flatness[voiced])) if voiced.any() else float("nan")
    counts = voiced.sum(axis=-1)
    sums = np.where(voiced, flatness, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
