"""The multi-resolution STFT loss (auraloss's), written in ``keras.ops`` only.

The losses here run unchanged on the torch, tensorflow and jax backends and are
differentiable. Their definitions follow ``auraloss.freq`` (Steinmetz & Reiss)
term for term, so that with the same settings the values agree with
``auraloss.freq.STFTLoss`` / ``auraloss.freq.MultiResolutionSTFTLoss`` to float32
precision:

* STFT: `kvae.dsp.ops.stft`, centred frames (the signal is reflect-padded by
  ``fft_size // 2`` on both sides), a periodic window of ``win_length`` samples
  zero-padded symmetrically to ``fft_size``, no window normalisation, as
  ``torch.stft`` and ``keras.ops.stft`` do with ``center=True``.
* Magnitude: ``sqrt(max(re**2 + im**2, eps))`` (the clamp is on the power, so
  the smallest magnitude is ``sqrt(eps)``).
* Spectral convergence: ``||Y - X||_F / ||Y||_F`` with the Frobenius norms
  taken over the whole batch at once (not per example), ``Y`` the target
  (``y_true``) magnitudes and ``X`` the prediction's.
* Log magnitude: ``mean(|log Y - log X|)`` over batch, frequency and frames.
* A resolution's loss is ``w_sc * SC + w_log_mag * logmag``; the
  multi-resolution loss is the mean over resolutions.

Inputs are ``(batch, samples)``; ``(batch, samples, channels)`` (channels
last, the Keras convention) is accepted too, each channel being treated as its
own signal like auraloss does with ``(batch, channels, samples)``. A 1-D input
is one signal. The signal must be longer than ``fft_size // 2`` samples
(reflect padding needs it).
"""

import keras
from keras import ops

from kvae.dsp import ops as dsp_ops
from kvae.dsp.filters import WINDOWS, scaled_fft_sizes
from kvae.errors import KvaeError
from kvae.losses.signals import as_signals, check_positive_int, safe_sqrt

__all__ = ["STFTLoss", "MultiResolutionSTFTLoss", "scaled_fft_sizes"]


@keras.saving.register_keras_serializable(package="kvae")
class STFTLoss(keras.losses.Loss):
    """Single-resolution STFT loss: spectral convergence plus log-magnitude L1.

    Matches ``auraloss.freq.STFTLoss(fft_size, hop_size, win_length,
    window + "_window", w_sc, w_log_mag, eps=eps)`` called as
    ``auraloss_loss(y_pred, y_true)`` (auraloss normalises the spectral
    convergence by its second argument, the target).

    Args:
        fft_size: FFT size in samples.
        hop_size: Hop between frames in samples. Defaults to ``fft_size // 4``.
        win_length: Window length in samples, at most ``fft_size``; a shorter
            window is zero-padded symmetrically to ``fft_size``. Defaults to
            ``fft_size``.
        window: ``"hann"`` or ``"hamming"`` (periodic, as ``torch.hann_window``).
        w_sc: Weight of the spectral convergence term.
        w_log_mag: Weight of the log-magnitude term.
        eps: Floor on the power ``re**2 + im**2`` before the square root.
        name: Name of the loss.
        reduction: Keras reduction. The loss is already a scalar, so it has no
            effect; a ``sample_weight`` passed to ``__call__`` merely scales
            the loss by the mean weight (use `per_example` for real weighting).
        dtype: Computation dtype; defaults to ``keras.backend.floatx()``.

    Call ``loss(y_true, y_pred)`` for the scalar loss of the batch, or
    ``loss.per_example(y_true, y_pred)`` for a ``(batch,)`` tensor.
    """

    def __init__(
        self,
        fft_size=1024,
        hop_size=None,
        win_length=None,
        window="hann",
        w_sc=1.0,
        w_log_mag=1.0,
        eps=1e-8,
        name=None,
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fft_size = check_positive_int(fft_size, "fft_size")
        self.hop_size = check_positive_int(
            max(self.fft_size // 4, 1) if hop_size is None else hop_size, "hop_size"
        )
        self.win_length = check_positive_int(
            self.fft_size if win_length is None else win_length, "win_length"
        )
        if self.win_length > self.fft_size:
            raise KvaeError(
                f"win_length ({self.win_length}) must not exceed fft_size ({self.fft_size})"
            )
        if window not in WINDOWS:
            raise KvaeError(f"window must be one of {WINDOWS}, got {window!r}")
        self.window = window
        self.w_sc = float(w_sc)
        self.w_log_mag = float(w_log_mag)
        self.eps = float(eps)
        if not self.eps > 0:
            raise KvaeError(f"eps must be positive, got {eps!r}")

    def _magnitudes(self, y_true, y_pred):
        y_true = ops.convert_to_tensor(y_true, dtype=self.dtype)
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
        if true_shape != pred_shape and None not in true_shape + pred_shape:
            raise KvaeError(f"y_true and y_pred shapes differ: {true_shape} vs {pred_shape}")
        target, channels = as_signals(y_true)
        pred, _ = as_signals(y_pred)
        samples = target.shape[-1]
        if samples is not None and samples <= self.fft_size // 2:
            raise KvaeError(
                f"audio of {samples} samples is too short for fft_size {self.fft_size} "
                f"(needs more than {self.fft_size // 2})"
            )
        return self._magnitude(target), self._magnitude(pred), channels

    def _magnitude(self, signals):
        """``sqrt(max(|STFT|**2, eps))`` of ``(n, samples)``, shape ``(n, frames, bins)``."""
        re, im = dsp_ops.stft(signals, self.fft_size, self.hop_size, self.win_length, self.window)
        return dsp_ops.magnitude(re, im, eps=self.eps)

    def call(self, y_true, y_pred):
        """Returns the scalar loss of the batch (auraloss's definition)."""
        y_mag, x_mag, _ = self._magnitudes(y_true, y_pred)
        loss = 0.0
        if self.w_sc:
            num = safe_sqrt(ops.sum(ops.square(y_mag - x_mag)))
            den = ops.sqrt(ops.sum(ops.square(y_mag)))
            loss = loss + self.w_sc * (num / den)
        if self.w_log_mag:
            loss = loss + self.w_log_mag * ops.mean(ops.abs(ops.log(y_mag) - ops.log(x_mag)))
        return ops.convert_to_tensor(loss, dtype=self.dtype)

    def per_example(self, y_true, y_pred):
        """Loss of each example, shape ``(batch,)``.

        The log-magnitude term is exact: its batch mean equals the batch
        loss's term. The spectral convergence term is computed per example
        (``||Y_b - X_b||_F / ||Y_b||_F``), so the batch mean of this tensor
        differs from ``loss(y_true, y_pred)`` in the SC part whenever the
        examples differ in loudness. With channels, an example's value is the
        mean over its channels.

        Args:
            y_true: Target audio, ``(batch, samples)`` or ``(batch, samples, channels)``.
            y_pred: Predicted audio of the same shape.

        Returns:
            A ``(batch,)`` tensor (``(1,)`` for 1-D input).
        """
        y_mag, x_mag, channels = self._magnitudes(y_true, y_pred)
        loss = 0.0
        if self.w_sc:
            num = safe_sqrt(ops.sum(ops.square(y_mag - x_mag), axis=(1, 2)))
            den = ops.sqrt(ops.sum(ops.square(y_mag), axis=(1, 2)))
            loss = loss + self.w_sc * (num / den)
        if self.w_log_mag:
            loss = loss + self.w_log_mag * ops.mean(
                ops.abs(ops.log(y_mag) - ops.log(x_mag)), axis=(1, 2)
            )
        loss = ops.convert_to_tensor(loss, dtype=self.dtype)
        if channels > 1:
            loss = ops.mean(ops.reshape(loss, (-1, channels)), axis=1)
        return loss

    def get_config(self):
        """Returns the constructor arguments (JSON-serialisable)."""
        config = super().get_config()
        config.update(
            fft_size=self.fft_size,
            hop_size=self.hop_size,
            win_length=self.win_length,
            window=self.window,
            w_sc=self.w_sc,
            w_log_mag=self.w_log_mag,
            eps=self.eps,
        )
        return config


@keras.saving.register_keras_serializable(package="kvae")
class MultiResolutionSTFTLoss(keras.losses.Loss):
    """Mean of `STFTLoss` over several resolutions.

    Matches ``auraloss.freq.MultiResolutionSTFTLoss(fft_sizes, hop_sizes,
    win_lengths, window + "_window", w_sc, w_log_mag, eps=eps)`` called as
    ``auraloss_loss(y_pred, y_true)``. Unlike auraloss, the default hops are a
    quarter and the default windows the whole of each FFT size.

    Args:
        fft_sizes: FFT sizes in samples.
        hop_sizes: Hop per resolution; defaults to ``fft_size // 4`` each.
        win_lengths: Window length per resolution; defaults to ``fft_size`` each.
        window: ``"hann"`` or ``"hamming"``.
        w_sc: Weight of the spectral convergence terms.
        w_log_mag: Weight of the log-magnitude terms.
        eps: Floor on the power before the square root.
        name: Name of the loss.
        reduction: Keras reduction; no effect, the loss is already a scalar
            (see `STFTLoss`).
        dtype: Computation dtype; defaults to ``keras.backend.floatx()``.
    """

    def __init__(
        self,
        fft_sizes=(1024, 2048, 512),
        hop_sizes=None,
        win_lengths=None,
        window="hann",
        w_sc=1.0,
        w_log_mag=1.0,
        eps=1e-8,
        name=None,
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        fft_sizes = list(fft_sizes)
        if not fft_sizes:
            raise KvaeError("fft_sizes must not be empty")
        n = len(fft_sizes)
        hop_sizes = [None] * n if hop_sizes is None else list(hop_sizes)
        win_lengths = [None] * n if win_lengths is None else list(win_lengths)
        if len(hop_sizes) != n or len(win_lengths) != n:
            raise KvaeError(
                f"fft_sizes, hop_sizes and win_lengths must have the same length "
                f"({n}, {len(hop_sizes)}, {len(win_lengths)})"
            )
        self.stft_losses = [
            STFTLoss(
                fft_size=f,
                hop_size=h,
                win_length=w,
                window=window,
                w_sc=w_sc,
                w_log_mag=w_log_mag,
                eps=eps,
                dtype=dtype,
            )
            for f, h, w in zip(fft_sizes, hop_sizes, win_lengths)
        ]
        self.fft_sizes = [l.fft_size for l in self.stft_losses]
        self.hop_sizes = [l.hop_size for l in self.stft_losses]
        self.win_lengths = [l.win_length for l in self.stft_losses]
        self.window = window
        self.w_sc = float(w_sc)
        self.w_log_mag = float(w_log_mag)
        self.eps = float(eps)

    @classmethod
    def for_sample_rate(
        cls,
        sample_rate,
        reference_rate=44100,
        reference_sizes=(2048, 1024, 512, 256, 128, 64),
        min_size=16,
        **kwargs,
    ):
        """Builds the loss with FFT sizes scaled to ``sample_rate``.

        The sizes are ``scaled_fft_sizes(sample_rate, reference_rate,
        reference_sizes, min_size)``, so each resolution covers about the same
        duration in seconds as ``reference_sizes`` does at ``reference_rate``.

        Args:
            sample_rate: Sample rate of the audio in Hz.
            reference_rate: Rate at which ``reference_sizes`` apply.
            reference_sizes: FFT sizes at ``reference_rate``.
            min_size: Smallest FFT size kept.
            **kwargs: Other constructor arguments (``w_sc``, ``window``, ...).

        Returns:
            A `MultiResolutionSTFTLoss`.
        """
        sizes = scaled_fft_sizes(sample_rate, reference_rate, reference_sizes, min_size)
        return cls(fft_sizes=sizes, **kwargs)

    def call(self, y_true, y_pred):
        """Returns the scalar loss of the batch (mean over resolutions)."""
        total = 0.0
        for loss in self.stft_losses:
            total = total + loss.call(y_true, y_pred)
        return total / len(self.stft_losses)

    def per_example(self, y_true, y_pred):
        """Mean over resolutions of `STFTLoss.per_example`, shape ``(batch,)``.

        Args:
            y_true: Target audio, ``(batch, samples)`` or ``(batch, samples, channels)``.
            y_pred: Predicted audio of the same shape.

        Returns:
            A ``(batch,)`` tensor.
        """
        total = 0.0
        for loss in self.stft_losses:
            total = total + loss.per_example(y_true, y_pred)
        return total / len(self.stft_losses)

    def get_config(self):
        """Returns the constructor arguments (JSON-serialisable)."""
        config = super().get_config()
        config.update(
            fft_sizes=list(self.fft_sizes),
            hop_sizes=list(self.hop_sizes),
            win_lengths=list(self.win_lengths),
            window=self.window,
            w_sc=self.w_sc,
            w_log_mag=self.w_log_mag,
            eps=self.eps,
        )
        return config
