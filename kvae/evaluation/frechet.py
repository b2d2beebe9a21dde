"""Fréchet distances between sets of clips (numpy/scipy).

`frechet_log_mel_distance` fits a Gaussian to the log-mel *frames* of each set.
It measures average spectra and is blind to time; it is kept as one column
of the report, not as its headline.
"""

import numpy as np
import scipy.linalg

from kvae.dsp.filters import check_int as _check_int
from kvae.dsp.filters import check_rate as _check_rate
from kvae.dsp.filters import mel_filterbank, scaled_fft_size
from kvae.dsp.spectral import power_spectrogram as _power_spectrogram
from kvae.errors import KvaeError
from kvae.evaluation.metrics import _as_audio

__all__ = ["log_mel_statistics", "frechet_log_mel_distance", "gaussian_frechet"]

_MEL_FLOOR = 1e-5  # floor on mel power before the log


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
    n_fft = scaled_fft_size(sample_rate, 2048) if n_fft is None else _check_int(n_fft, "n_fft", 2)
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
    return gaussian_frechet(mu_a, cov_a, mu_b, cov_b, eps, what="log-mel")


def gaussian_frechet(mu_a, cov_a, mu_b, cov_b, eps=1e-6, what="feature"):
    """Fréchet distance between two Gaussians, `|mu_a - mu_b|^2 + tr(C_a + C_b - 2 sqrtm(C_a C_b))`.

    `eps * I` is added to both covariances; the trace of the matrix root is
    taken as `tr sqrtm(R C_b R)` with `R = Re(sqrtm(C_a))` (equal in exact
    arithmetic, symmetric, so its eigenvalues are real; tiny negative ones are
    clipped to 0), and the result is clipped at 0.
    """
    offset = eps * np.eye(np.shape(cov_a)[0])
    cov_a = np.asarray(cov_a) + offset
    cov_b = np.asarray(cov_b) + offset
    root_a = np.real(scipy.linalg.sqrtm(cov_a))
    if not np.all(np.isfinite(root_a)):
        raise KvaeError(f"the {what} covariance of the first set is too ill-conditioned; raise eps")
    middle = root_a @ cov_b @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_covmean = np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None)))
    diff = np.asarray(mu_a) - np.asarray(mu_b)
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_covmean
    return float(max(value, 0.0))
