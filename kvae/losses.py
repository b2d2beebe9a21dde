"""Spectral reconstruction losses for raw audio, written in ``keras.ops`` only.

The module is longer than 400 lines because each loss carries its exact
reference definition (auraloss's, DAC's) beside its code, and the three
share their checks and signal handling here.

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

import operator

import keras
from keras import ops

from kvae import bounds
from kvae.dsp import ops as dsp_ops
from kvae.dsp.filters import WINDOWS, mel_filterbank, scaled_fft_sizes
from kvae.errors import KvaeError

__all__ = [
    "STFTLoss",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelLoss",
    "scaled_fft_sizes",
]


def _check_positive_int(value, name):
    try:
        if isinstance(value, bool):
            raise TypeError
        result = operator.index(value)
    except TypeError:
        raise KvaeError(f"{name} must be a positive integer, got {value!r}") from None
    if result <= 0:
        raise KvaeError(f"{name} must be a positive integer, got {value!r}")
    return int(result)


def _as_signals(x):
    """Returns ``(signals, channels)`` with signals ``(n, samples)``, n = batch * channels."""
    rank = len(x.shape)
    if rank == 1:
        return ops.expand_dims(x, 0), 1
    if rank == 2:
        return x, 1
    if rank == 3:
        channels = x.shape[-1]
        if channels == 1:
            return ops.squeeze(x, axis=-1), 1
        if channels is None:
            raise KvaeError("a 3-D audio batch needs a known number of channels")
        samples = x.shape[1]
        x = ops.transpose(x, (0, 2, 1))
        return ops.reshape(x, (-1, samples)), channels
    raise KvaeError(
        f"audio must be (batch, samples) or (batch, samples, channels), got shape {tuple(x.shape)}"
    )


def _safe_sqrt(s):
    """sqrt with a zero (not NaN) gradient at 0, so ``loss(x, x)`` has finite gradients."""
    positive = s > 0
    root = ops.sqrt(ops.where(positive, s, ops.ones_like(s)))
    return ops.where(positive, root, ops.zeros_like(s))


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
        self.fft_size = _check_positive_int(fft_size, "fft_size")
        self.hop_size = _check_positive_int(
            max(self.fft_size // 4, 1) if hop_size is None else hop_size, "hop_size"
        )
        self.win_length = _check_positive_int(
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
        target, channels = _as_signals(y_true)
        pred, _ = _as_signals(y_pred)
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
            num = _safe_sqrt(ops.sum(ops.square(y_mag - x_mag)))
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
            num = _safe_sqrt(ops.sum(ops.square(y_mag - x_mag), axis=(1, 2)))
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


@keras.saving.register_keras_serializable(package="kvae")
class MultiScaleMelLoss(keras.losses.Loss):
    """DAC's multi-scale mel loss: L1 between log10 mel magnitudes at several window sizes, summed over scales.

    Follows ``dac.nn.loss.MelSpectrogramLoss`` as DAC's training config sets
    it (``mag_weight 0``, ``log_weight 1``, ``pow 1``, ``clamp_eps 1e-5``): per
    scale, the mel magnitudes ``M = |STFT| @ filterbank`` (hop a quarter of the
    window, centred frames, a Hann window) give ``mean(|log10 max(M_true, eps)
    - log10 max(M_pred, eps)|)``; the loss is the sum over scales. DAC uses
    windows 32 ... 2048 with 5 ... 320 mels at 44.1 kHz; `for_sample_rate`
    keeps its mels-per-window ratio with the windows that fit a kvae window.
    The filters are `kvae.dsp.filters.mel_filterbank`'s (HTK, peak 1), not
    librosa's area-normalised Slaney ones, so values differ from DAC's by a
    per-band scale the L1 of logs cancels.

    Args:
        window_lengths: Window (and FFT) sizes in samples.
        n_mels: Mel filters per scale, one per window length.
        sample_rate: Sample rate in Hz (places the mel filters).
        clamp_eps: Floor on the mel magnitude before the log.
        name: Name of the loss.
        reduction: Keras reduction (the loss is already a scalar, so it changes nothing).
        dtype: Dtype of the loss computation.
    """

    def __init__(self, window_lengths=(32, 64, 128, 256, 512), n_mels=(5, 10, 20, 40, 80),
                 sample_rate=bounds.DEFAULT_RATE, clamp_eps=1e-5, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.window_lengths = [_check_positive_int(w, "window_lengths") for w in window_lengths]
        self.n_mels = [_check_positive_int(m, "n_mels") for m in n_mels]
        if not self.window_lengths or len(self.window_lengths) != len(self.n_mels):
            raise KvaeError(f"window_lengths and n_mels must be non-empty and of one length, got "
                            f"{len(self.window_lengths)} and {len(self.n_mels)}")
        self.sample_rate = _check_positive_int(sample_rate, "sample_rate")
        self.clamp_eps = float(clamp_eps)
        if not self.clamp_eps > 0:
            raise KvaeError(f"clamp_eps must be positive, got {clamp_eps!r}")
        # (bins, mels) matrices, constants of the graph.
        self._filterbanks = [mel_filterbank(self.sample_rate, w, m).T.astype("float32")
                             for w, m in zip(self.window_lengths, self.n_mels)]

    @classmethod
    def for_sample_rate(cls, sample_rate, samples, **kwargs):
        """DAC's scales (window 32 with 5 mels, doubling both) up to the largest window below `samples` // 2."""
        windows = [w for w in (32, 64, 128, 256, 512, 1024, 2048) if w // 2 < samples]
        return cls(window_lengths=windows, n_mels=[5 * w // 32 for w in windows], sample_rate=sample_rate, **kwargs)

    def _log_mel(self, signals, window, filterbank):
        re, im = dsp_ops.stft(signals, window, max(window // 4, 1))
        magnitude = _safe_sqrt(ops.square(re) + ops.square(im))  # a finite gradient on silent frames too
        mel = ops.matmul(magnitude, ops.convert_to_tensor(filterbank, dtype=signals.dtype))
        return ops.log10(ops.maximum(mel, self.clamp_eps))

    def per_example(self, y_true, y_pred):
        """Loss of each example, shape ``(batch,)`` (its batch mean is the loss)."""
        target, channels = _as_signals(ops.convert_to_tensor(y_true, dtype=self.dtype))
        pred, _ = _as_signals(ops.convert_to_tensor(y_pred, dtype=self.dtype))
        if target.shape[-1] is not None and target.shape[-1] <= min(self.window_lengths) // 2:
            raise KvaeError(f"audio of {target.shape[-1]} samples is too short for window {min(self.window_lengths)}")
        loss = 0.0
        for window, filterbank in zip(self.window_lengths, self._filterbanks):
            diff = self._log_mel(target, window, filterbank) - self._log_mel(pred, window, filterbank)
            loss = loss + ops.mean(ops.abs(diff), axis=(1, 2))
        if channels > 1:
            loss = ops.mean(ops.reshape(loss, (-1, channels)), axis=1)
        return loss

    def call(self, y_true, y_pred):
        """Returns the scalar loss of the batch."""
        return ops.mean(self.per_example(y_true, y_pred))

    def get_config(self):
        return {**super().get_config(), "window_lengths": self.window_lengths, "n_mels": self.n_mels,
                "sample_rate": self.sample_rate, "clamp_eps": self.clamp_eps}
