"""Objective audio evaluation metrics in numpy/scipy (no Keras).

Every function takes plain arrays: a 1-D clip ``(samples,)`` or a 2-D batch
``(n, samples)`` of float audio with full scale at amplitude 1.0. Inputs are
converted to float64. Empty arrays, non-numeric arrays and arrays holding NaN
or Inf raise `kvae.errors.KvaeError` naming the offending argument.

Spectra are computed like `kvae.losses` does (and like ``torch.stft`` with
``center=True``): the signal is reflect-padded by ``n_fft // 2`` on both sides,
frames of ``n_fft`` samples every ``hop`` samples are multiplied by a periodic
Hann window and transformed with ``numpy.fft.rfft``. Reflect padding needs
clips longer than ``n_fft // 2`` samples.

Functions taking ``reduce`` return a Python float for the whole input when it
is true, and an array with one value per clip (shape ``(n,)``; ``(1,)`` for a
1-D clip) when it is false.
"""

import math

import numpy as np
import scipy.linalg

from kvae.errors import KvaeError

__all__ = [
    "scaled_fft_sizes",
    "mrstft_distance",
    "log_spectral_distance",
    "si_sdr",
    "rms",
    "rms_dbfs",
    "silence_fraction",
    "spectral_flatness",
    "mel_filterbank",
    "log_mel_statistics",
    "frechet_log_mel_distance",
]

_REFERENCE_RATE = 44100
_REFERENCE_SIZES = (2048, 1024, 512, 256, 128, 64)
_MAG_EPS = 1e-8  # floor on |STFT|**2, as in kvae.losses / auraloss
_DB_FLOOR = 1e-10  # floor on powers before dB conversion
_RMS_FLOOR = 1e-10  # rms_dbfs floor: -200 dBFS
_MEL_FLOOR = 1e-5  # floor on mel power before the log


# ----------------------------------------------------------------- helpers


def scaled_fft_sizes(
    sample_rate,
    reference_rate=_REFERENCE_RATE,
    reference_sizes=_REFERENCE_SIZES,
    min_size=16,
):
    """FFT sizes covering the same durations at ``sample_rate`` as at ``reference_rate``.

    Each reference size is multiplied by ``sample_rate / reference_rate`` and
    rounded to the nearest power of two (in log2), duplicates are dropped
    (first occurrence kept, order preserved) and sizes below ``min_size`` are
    dropped. At 44.1 kHz the default gives ``[2048, 1024, 512, 256, 128, 64]``;
    at 16 kHz ``[1024, 512, 256, 128, 64, 32]``.

    Args:
        sample_rate: Sample rate of the audio in Hz.
        reference_rate: Rate in Hz at which ``reference_sizes`` apply.
        reference_sizes: FFT sizes at ``reference_rate``.
        min_size: Smallest size kept.

    Returns:
        A non-empty list of ints. If every scaled size is below ``min_size``,
        the list holds ``min_size`` rounded up to a power of two.

    Raises:
        KvaeError: If a rate or size is not positive.
    """
    sample_rate = _check_rate(sample_rate, "sample_rate")
    reference_rate = _check_rate(reference_rate, "reference_rate")
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


def _check_rate(value, name):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise KvaeError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise KvaeError(f"{name} must be a positive number, got {value!r}")
    return value


def _check_int(value, name, minimum=1):
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise KvaeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


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


def _hann(n):
    """Periodic Hann window (``torch.hann_window(n)``, ``scipy.signal.get_window('hann', n)``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _power_spectrogram(x, n_fft, hop, name="x"):
    """``|STFT|**2`` of ``(n, samples)``, centred reflect-padded frames: ``(n, frames, bins)``."""
    samples = x.shape[-1]
    if samples <= n_fft // 2:
        raise KvaeError(
            f"{name} has {samples} samples, too short for n_fft {n_fft} "
            f"(needs more than {n_fft // 2})"
        )
    padded = np.pad(x, [(0, 0), (n_fft // 2, n_fft // 2)], mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :]
    spec = np.fft.rfft(frames * _hann(n_fft), axis=-1)
    return spec.real**2 + spec.imag**2


def _reduce(values, reduce):
    values = np.asarray(values, dtype=np.float64)
    return float(np.mean(values)) if reduce else values


def _default_size(sample_rate, reference_size):
    return scaled_fft_sizes(sample_rate, reference_sizes=(reference_size,), min_size=16)[0]


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
    n_fft = _default_size(sample_rate, 2048) if n_fft is None else _check_int(n_fft, "n_fft", 2)
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
    frame = max(int(round(frame_seconds * sample_rate)), 1)
    n, samples = arr.shape
    n_frames = -(-samples // frame)
    padded = np.zeros((n, n_frames * frame))
    padded[:, :samples] = arr**2
    counts = np.full(n_frames, frame)
    counts[-1] = samples - (n_frames - 1) * frame
    power = padded.reshape(n, n_frames, frame).sum(axis=-1) / counts
    level = 10.0 * np.log10(np.maximum(power, _RMS_FLOOR**2))
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
        n_fft = min(2048, 1 << (int(arr.shape[-1]).bit_length() - 1))
    n_fft = _check_int(n_fft, "n_fft", 2)
    hop = max(n_fft // 4, 1) if hop is None else _check_int(hop, "hop")
    power = np.maximum(_power_spectrogram(arr, n_fft, hop, "x"), 1e-20)
    flatness = np.exp(np.mean(np.log(power), axis=-1)) / np.mean(power, axis=-1)
    padded = np.pad(arr, [(0, 0), (n_fft // 2, n_fft // 2)], mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :]
    frame_rms = np.sqrt(np.mean(frames**2, axis=-1))
    voiced = frame_rms >= 10.0 ** (silence_db / 20.0)
    if reduce:
        return float(np.mean(flatness[voiced])) if voiced.any() else float("nan")
    counts = voiced.sum(axis=-1)
    sums = np.where(voiced, flatness, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# ----------------------------------------------------------------- log-mel statistics


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate, n_fft, n_mels=64, fmin=0.0, fmax=None):
    """HTK-scale triangular mel filterbank, shape ``(n_mels, n_fft // 2 + 1)``.

    Mel scale ``2595 log10(1 + f / 700)``; ``n_mels + 2`` points equally
    spaced in mel from ``fmin`` to ``fmax`` define triangles of peak 1 (no
    area normalisation) evaluated at the FFT bin frequencies. Narrow low
    filters may fall between bins and be all zero when ``n_fft`` is small.

    Args:
        sample_rate: Sample rate in Hz.
        n_fft: FFT size.
        n_mels: Number of filters.
        fmin: Lowest frequency in Hz.
        fmax: Highest frequency in Hz; defaults to ``sample_rate / 2``.

    Returns:
        The filterbank as a float64 array.
    """
    sample_rate = _check_rate(sample_rate, "sample_rate")
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0 <= fmin < fmax <= sample_rate / 2.0:
        raise KvaeError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}")
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (center - lower)
    falling = (upper - freqs[None, :]) / (upper - center)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel_statistics(clips, sample_rate, n_mels=64, n_fft=None, hop=None):
    """Mean and covariance of log-mel frames over all frames of all clips.

    Each frame's power spectrum (centred Hann STFT) is projected on the
    `mel_filterbank` (HTK triangles, peak 1) and ``log(max(mel, 1e-5))``
    (natural log) is taken.

    Args:
        clips: ``(samples,)``, ``(n, samples)``, or a list of 1-D clips of any
            lengths.
        sample_rate: Sample rate in Hz.
        n_mels: Number of mel bands.
        n_fft: FFT size; defaults to 2048 at 44.1 kHz scaled to ``sample_rate``.
        hop: Hop in samples; defaults to ``n_fft // 4``.

    Returns:
        ``(mean, covariance)``: ``(n_mels,)`` and ``(n_mels, n_mels)`` arrays.

    Raises:
        KvaeError: On invalid input or fewer than two frames in total.
    """
    return _log_mel_statistics(clips, sample_rate, n_mels, n_fft, hop, "clips")


def _log_mel_statistics(clips, sample_rate, n_mels, n_fft, hop, name):
    audio = _as_audio(clips, name, allow_list=True)
    sample_rate = _check_rate(sample_rate, "sample_rate")
    n_mels = _check_int(n_mels, "n_mels")
    n_fft = _default_size(sample_rate, 2048) if n_fft is None else _check_int(n_fft, "n_fft", 2)
    hop = max(n_fft // 4, 1) if hop is None else _check_int(hop, "hop")
    bank = mel_filterbank(sample_rate, n_fft, n_mels)
    groups = [audio] if isinstance(audio, np.ndarray) else [c[None, :] for c in audio]
    frames = []
    for group in groups:
        power = _power_spectrogram(group, n_fft, hop, name)
        frames.append(np.log(np.maximum(power @ bank.T, _MEL_FLOOR)).reshape(-1, n_mels))
    frames = np.concatenate(frames, axis=0)
    if frames.shape[0] < 2:
        raise KvaeError(f"{name} gives fewer than two frames; use longer or more clips")
    return frames.mean(axis=0), np.cov(frames, rowvar=False)


def frechet_log_mel_distance(
    clips_a, clips_b, sample_rate, n_mels=64, n_fft=None, hop=None, eps=1e-6
):
    """Fréchet distance between Gaussians fitted to log-mel frames of two clip sets.

    This is a Fréchet *log-mel* distance computed on hand-made features; it is
    NOT the Fréchet Audio Distance (FAD), which needs a pretrained embedding
    network (VGGish, PANNs, ...) whose weights are not part of kvae. Values are
    only comparable with the same ``sample_rate``, ``n_mels``, ``n_fft`` and
    ``hop``.

    ``d = |mu_a - mu_b|^2 + tr(C_a + C_b - 2 sqrtm(C_a C_b))`` with
    ``eps * I`` added to both covariances (guards against singular ones). The
    trace of the matrix root is computed as ``tr sqrtm(R C_b R)`` with
    ``R = Re(scipy.linalg.sqrtm(C_a))`` (equal in exact arithmetic, and
    symmetric, so its eigenvalues are real; tiny negative ones are clipped to
    0), and the result is clipped at 0.

    Args:
        clips_a: First clip set (see `log_mel_statistics`).
        clips_b: Second clip set.
        sample_rate: Sample rate in Hz of both sets.
        n_mels: Number of mel bands.
        n_fft: FFT size; defaults to 2048 at 44.1 kHz scaled to ``sample_rate``.
        hop: Hop in samples; defaults to ``n_fft // 4``.
        eps: Diagonal offset added to the covariances.

    Returns:
        The distance as a float (0 for identical sets, larger is more different).
    """
    mu_a, cov_a = _log_mel_statistics(clips_a, sample_rate, n_mels, n_fft, hop, "clips_a")
    mu_b, cov_b = _log_mel_statistics(clips_b, sample_rate, n_mels, n_fft, hop, "clips_b")
    offset = eps * np.eye(cov_a.shape[0])
    cov_a = cov_a + offset
    cov_b = cov_b + offset
    # tr sqrtm(C_a C_b) == tr sqrtm(C_a^1/2 C_b C_a^1/2); the right-hand matrix is
    # symmetric PSD, so its root's trace comes from eigenvalues, more accurately
    # than from sqrtm of the non-symmetric product.
    root_a = np.real(scipy.linalg.sqrtm(cov_a))
    if not np.all(np.isfinite(root_a)):
        raise KvaeError("the log-mel covariance of clips_a is too ill-conditioned; raise eps")
    middle = root_a @ cov_b @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_covmean = np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None)))
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_covmean
    return float(max(value, 0.0))
