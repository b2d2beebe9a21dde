"""The STFT, its inverse and Griffin-Lim in `keras.ops`: the same numbers on torch, tensorflow and jax.

`stft` is the transform of `kvae.dsp.spectral.stft` (centred, periodic
window zero-padded to `n_fft`), so losses, models and metrics agree.
`istft` is written here instead of using `keras.ops.istft`: on the
tensorflow backend that one divides by the steady-state window sum, which
attenuates the first and last `n_fft // 2` samples, so the backends would
disagree. Griffin-Lim is the fast variant (Perraudin et al. 2013, as in
librosa) from a given initial phase, so it is deterministic.
"""

import math

import numpy as np
from keras import ops

from kvae.dsp.filters import centred_frame_count, periodic_window

_GL_EPS = 1e-12  # keeps Griffin-Lim's phase normalisation finite where a bin is zero


def stft(x, n_fft, hop=None, win_length=None, window="hann"):
    """Centred STFT of `(batch, samples)` signals.

    Args:
        x: tensor `(batch, samples)`, longer than `n_fft // 2` samples.
        n_fft: int. FFT size.
        hop: int or None. Hop in samples; defaults to `n_fft // 4`.
        win_length: int or None. Window length, at most `n_fft`; defaults to `n_fft`.
        window: str. `"hann"` or `"hamming"` (periodic).

    Returns:
        `(real, imag)`, each `(batch, frames, n_fft // 2 + 1)`.
    """
    hop = max(n_fft // 4, 1) if hop is None else int(hop)
    win_length = win_length or n_fft
    # keras.ops.stft pads a window of `sequence_length` samples to `fft_length`, as torch.stft does.
    return ops.stft(x, sequence_length=win_length, sequence_stride=hop, fft_length=n_fft,
                    window=ops.convert_to_tensor(periodic_window(window, win_length), dtype=x.dtype), center=True)


def magnitude(real, imag, eps=0.0):
    """`sqrt(max(real**2 + imag**2, eps))`."""
    power = ops.square(real) + ops.square(imag)
    return ops.sqrt(ops.maximum(power, eps) if eps else power)


def overlap_envelope(frames, n_fft, hop, window="hann"):
    """`1 / sum of squared windows` over a centred signal of `frames` frames (0 where nothing covers)."""
    square = periodic_window(window, n_fft) ** 2
    envelope = np.zeros((frames - 1) * hop + n_fft)
    for k in range(frames):
        envelope[k * hop:k * hop + n_fft] += square
    return np.where(envelope > 1e-8, 1.0 / np.maximum(envelope, 1e-8), 0.0)


def istft(real, imag, n_fft, hop, length, window="hann"):
    """Least-squares inverse of `stft` (as `torch.istft`): `(batch, length)` signals.

    The inverse FFT of every frame is windowed, the frames are overlap-added
    and the sum is divided by the summed squared window that actually covers
    each sample; the centring padding is removed. The frame count must be
    known statically (it is in every kvae model).

    Args:
        real: tensor `(batch, frames, n_fft // 2 + 1)`, the real parts.
        imag: tensor of the same shape, the imaginary parts.
        n_fft: int. FFT size of the forward transform.
        hop: int. Its hop.
        length: int. Samples to return from the start of the signal (the
            frames cover `(frames - 1) * hop` samples after un-centring).
        window: str. The forward transform's window.
    """
    count = int(real.shape[1])
    frames = ops.irfft((real, imag), fft_length=n_fft)
    frames = frames * ops.convert_to_tensor(periodic_window(window, n_fft), dtype=frames.dtype)
    block = math.gcd(n_fft, hop)
    stride, per_frame = hop // block, n_fft // block
    total = (count - 1) * stride + per_frame  # blocks in the overlap-added signal
    frames = ops.reshape(frames, (-1, count, per_frame, block))
    signal = 0.0
    for j in range(per_frame):  # overlap-add by shifted sums of block columns (no scatter op needed)
        piece = frames[:, :, j, :]
        if stride > 1:
            piece = ops.pad(ops.expand_dims(piece, 2), ((0, 0), (0, 0), (0, stride - 1), (0, 0)))
            piece = ops.reshape(piece, (-1, count * stride, block))[:, : (count - 1) * stride + 1]
        signal = signal + ops.pad(piece, ((0, 0), (j, total - j - ((count - 1) * stride + 1)), (0, 0)))
    signal = ops.reshape(signal, (-1, total * block))
    envelope = overlap_envelope(count, n_fft, hop, window)
    signal = signal * ops.convert_to_tensor(envelope, dtype=signal.dtype)
    start = n_fft // 2
    return signal[:, start:start + int(length)]


def griffin_lim(magnitudes, n_fft, hop, length, iterations=32, momentum=0.99, initial_phase=None, window="hann"):
    """Fast Griffin-Lim: waveforms whose centred STFT magnitude approaches `magnitudes`.

    Args:
        magnitudes: tensor `(batch, frames, n_fft // 2 + 1)` of linear STFT magnitudes.
        n_fft: int. FFT size.
        hop: int. Hop between frames.
        length: int. Samples of the signal the frames describe
            (`centred_frame_count(length, n_fft, hop)` must equal `frames`).
        iterations: int. Iterations. Defaults to 32.
        momentum: float. Fast Griffin-Lim momentum in [0, 1); 0 is plain
            Griffin-Lim. Defaults to 0.99.
        initial_phase: `(cos, sin)` arrays `(frames, bins)`, or None for a
            fixed pseudo-random phase (seed 0). The same phase gives the same
            audio on every backend.
        window: str. The STFT window.

    Returns:
        Waveforms `(batch, length)`; not differentiable (gradients stop).
    """
    magnitudes = ops.stop_gradient(ops.convert_to_tensor(magnitudes, dtype="float32"))
    frames, bins = int(magnitudes.shape[1]), int(magnitudes.shape[2])
    if centred_frame_count(length, n_fft, hop) != frames:
        raise ValueError(f"{length} samples give {centred_frame_count(length, n_fft, hop)} frames, not {frames}")
    if initial_phase is None:
        initial_phase = random_phase(frames, bins)
    alpha = momentum / (1.0 + momentum)
    real = ops.convert_to_tensor(initial_phase[0]) * ops.ones_like(magnitudes)
    imag = ops.convert_to_tensor(initial_phase[1]) * ops.ones_like(magnitudes)
    prev_real = prev_imag = None
    for _ in range(int(iterations)):
        signal = istft(magnitudes * real, magnitudes * imag, n_fft, hop, length, window)
        new_real, new_imag = stft(signal, n_fft, hop, window=window)
        real, imag = new_real, new_imag
        if prev_real is not None and alpha:
            real = real - alpha * prev_real
            imag = imag - alpha * prev_imag
        prev_real, prev_imag = new_real, new_imag
        norm = ops.sqrt(ops.square(real) + ops.square(imag)) + _GL_EPS
        real, imag = real / norm, imag / norm
    return istft(magnitudes * real, magnitudes * imag, n_fft, hop, length, window)


def random_phase(frames, bins, seed=0):
    """A fixed pseudo-random phase `(cos, sin)`, float32 arrays `(frames, bins)`."""
    phase = np.random.default_rng(seed).uniform(0.0, 2.0 * np.pi, size=(frames, bins))
    return np.cos(phase).astype("float32"), np.sin(phase).astype("float32")
