"""DAC's multi-scale mel loss, written in ``keras.ops`` only."""

import keras
from keras import ops

from kvae import bounds
from kvae.dsp import ops as dsp_ops
from kvae.dsp.filters import mel_filterbank
from kvae.errors import KvaeError
from kvae.losses.signals import as_signals, check_positive_int, safe_sqrt


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
                 sample_rate=bounds.DEFAULT_RATE, clamp_eps=1e-5, name=None, reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.window_lengths = [check_positive_int(w, "window_lengths") for w in window_lengths]
        self.n_mels = [check_positive_int(m, "n_mels") for m in n_mels]
        if not self.window_lengths or len(self.window_lengths) != len(self.n_mels):
            raise KvaeError(f"window_lengths and n_mels must be non-empty and of one length, got "
                            f"{len(self.window_lengths)} and {len(self.n_mels)}")
        self.sample_rate = check_positive_int(sample_rate, "sample_rate")
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
        magnitude = safe_sqrt(ops.square(re) + ops.square(im))  # a finite gradient on silent frames too
        mel = ops.matmul(magnitude, ops.convert_to_tensor(filterbank, dtype=signals.dtype))
        return ops.log10(ops.maximum(mel, self.clamp_eps))

    def per_example(self, y_true, y_pred):
        """Loss of each example, shape ``(batch,)`` (its batch mean is the loss)."""
        target, channels = as_signals(ops.convert_to_tensor(y_true, dtype=self.dtype))
        pred, _ = as_signals(ops.convert_to_tensor(y_pred, dtype=self.dtype))
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
