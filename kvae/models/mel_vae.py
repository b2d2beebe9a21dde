"""The log-mel VAE: 2-D convolutions on a log-mel spectrogram, audio back through Griffin-Lim."""

import keras
import numpy as np
from keras import layers, ops

from kvae import dsp
from kvae.dsp import ops as dsp_ops
from kvae.errors import KvaeError
from kvae.models.vae import VAE

_ABS_EPS = 1e-10  # absolute floor under the per-example one, so exact silence has a finite log
_GL_EPS = 1e-12  # keeps the NNLS refinement finite where a bin is zero
_LOG_MEL_RANGE = (-60.0, 30.0)  # decoded log-mels are clipped to this before exp()
_INPUT_SCALE = 0.1  # the encoder sees the log-mel times this
_NNLS_ITERS = 10  # multiplicative non-negative least-squares refinements of the mel inversion


@keras.saving.register_keras_serializable(package="kvae")
class _LogMelSpectrogram(layers.Layer):
    """Windows `(batch, window)` to log-mel spectrograms `(batch, frames, n_mels)`.

    Centred STFT (reflect padding, periodic Hann window of `n_fft`, no
    normalisation), magnitude, projection on a triangular HTK mel filterbank
    (peak 1), then `log(mel + log_floor * max(mel) + 1e-10)` where the max is
    over this example's frames and bands only. The window is zero-padded at
    its end so that the frame count is a multiple of `frame_multiple`.
    The filterbank is recomputed from these arguments: it has no weight.
    """

    def __init__(self, sample_rate, window, n_fft, hop_length, n_mels, fmin, fmax,
                 log_floor, frame_multiple=1, **kwargs):
        super().__init__(**kwargs)
        self.sample_rate = int(sample_rate)
        self.window = int(window)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.fmin = float(fmin)
        self.fmax = None if fmax is None else float(fmax)
        self.log_floor = float(log_floor)
        self.frame_multiple = int(frame_multiple)
        self.filterbank = dsp.mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)
        natural = self._frames_of(self.window)
        self.frames = -(-natural // self.frame_multiple) * self.frame_multiple
        # Samples whose centred STFT has exactly `frames` frames (at least the window).
        self.padded_length = max(
            self.window, (self.frames - 1) * self.hop_length + self.n_fft - 2 * (self.n_fft // 2)
        )
        if self._frames_of(self.padded_length) != self.frames:  # pragma: no cover - arithmetic guard
            raise KvaeError(f"internal: {self.padded_length} samples do not give {self.frames} frames")

    def _frames_of(self, samples):
        return dsp.centred_frame_count(samples, self.n_fft, self.hop_length)

    def stft(self, x):
        """Centred STFT of `(batch, padded_length)` signals: `(real, imag)`, each `(batch, frames, bins)`."""
        return dsp_ops.stft(x, self.n_fft, self.hop_length)

    def istft(self, real, imag):
        """Least-squares inverse of `stft`: `(batch, padded_length)` signals (`kvae.dsp.ops.istft`)."""
        return dsp_ops.istft(real, imag, self.n_fft, self.hop_length, self.padded_length)

    def magnitude(self, x):
        """Linear STFT magnitude of windows `(batch, window)`: `(batch, frames, n_fft // 2 + 1)`."""
        x = ops.cast(x, self.compute_dtype)
        pad = self.padded_length - self.window
        if pad:
            x = ops.pad(x, ((0, 0), (0, pad)))
        return dsp_ops.magnitude(*self.stft(x))

    def call(self, x):
        mel = ops.matmul(self.magnitude(x), ops.convert_to_tensor(self.filterbank.T, dtype=self.compute_dtype))
        floor = self.log_floor * ops.max(mel, axis=(1, 2), keepdims=True)
        return ops.log(mel + floor + _ABS_EPS)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.frames, self.n_mels)

    def get_config(self):
        config = super().get_config()
        config.update({
            "sample_rate": self.sample_rate, "window": self.window, "n_fft": self.n_fft,
            "hop_length": self.hop_length, "n_mels": self.n_mels, "fmin": self.fmin, "fmax": self.fmax,
            "log_floor": self.log_floor, "frame_multiple": self.frame_multiple,
        })
        return config


@keras.saving.register_keras_serializable(package="kvae")
class MelVAE(VAE):
    """A VAE on log-mel spectrograms that still samples audio, through Griffin-Lim.

    The paper dropped its spectrogram model because it could not get audio
    back. Here the log-mel spectrogram is computed inside the model from the
    raw window (`target`), encoded and decoded with 2-D convolutions, and
    `to_audio` inverts it: `exp`, the per-example floor removed, the mel
    bands spread back onto the linear FFT bins with the filterbank's
    pseudo-inverse (clipped at 0, refined by a few non-negative
    least-squares steps), then (fast) Griffin-Lim written in
    `keras.ops` from a fixed pseudo-random initial phase, so `sample` and
    `reconstruct` return `(n, window)` waveforms like every other variant and
    are deterministic for a seed on every backend.

    Spectrogram: centred STFT with a periodic Hann window of `n_fft`, the
    magnitude (not the power), HTK triangular mel filters of peak 1 (from
    `kvae.dsp.mel_filterbank`, recomputed from the config, so nothing is
    stored), then `log(mel + log_floor * max(mel) + 1e-10)` with the max taken
    over each example alone: a quiet window in a batch with a loud one gets
    the same target as on its own. Nothing is subtracted, so the absolute
    level survives and the audio comes back about as loud as the data. The
    window is zero-padded at its end so the frame count is a multiple of
    `2 ** len(channels)`; the mel axis is padded and cropped inside the
    networks, so any `n_mels` works.

    The reconstruction likelihood (`decoder_variance`, `reduction`) is on the
    log-mel target, in nats of log magnitude, so a learned sigma starts at 1
    (`init_log_sigma=0.0`, not the waveform models' -2: the log-mel's large
    initial error would otherwise blow up the first steps). The encoder sees
    the log-mel times 0.1 and the decoder's last convolution is scaled by 10,
    so the networks work near unit scale and the decoder reaches the data's
    level (around -5 nats for quiet music) in few steps. `loss_weights.stft >
    0` is refused: that loss would run Griffin-Lim inside every training step.

    Args:
        n_fft: int or None. FFT size. None picks the next power of two of
            85 ms of audio (256 at 3000 Hz, 2048 at 22050 Hz), halved while
            it is longer than the window. Defaults to None.
        hop_length: int or None. Hop between frames, at most `n_fft // 2`
            (Griffin-Lim needs overlap). Defaults to `n_fft // 4`.
        n_mels: int. Mel bands, at most `n_fft // 2 + 1`. Defaults to 64.
        fmin: float. Lowest mel frequency in Hz. Defaults to 0.
        fmax: float or None. Highest mel frequency in Hz. Defaults to
            `sample_rate / 2`.
        log_floor: float. Floor added to the mel magnitudes before the log,
            relative to the example's own maximum (1e-5 is -100 dB).
            Defaults to 1e-5.
        channels: list of int. Channels of the stride-2 Conv2D layers of the
            encoder; the decoder mirrors them with Conv2DTranspose layers.
            Defaults to `[32, 64, 128]`.
        kernel_size: int. Kernel size of every convolution. Defaults to 3.
        activation: str. Activation of the hidden layers. Defaults to "gelu".
        griffin_lim_iters: int. Griffin-Lim iterations in `to_audio`.
            Defaults to 32.
        griffin_lim_momentum: float. Momentum of fast Griffin-Lim (Perraudin
            et al. 2013, as in librosa); 0 is plain Griffin-Lim. Defaults to
            0.99.
        **kwargs: arguments of `VAE` (sample_rate, window_seconds,
            latent_dim, decoder_variance, ...).

    Example:
    ```python
    model = kvae.models.MelVAE(sample_rate=3000, window_seconds=1.0, latent_dim=32)
    model.compile(optimizer="adam")
    model.fit(windows, epochs=10, batch_size=32)  # windows: (n, 3000) float32
    audio = model.sample(4, seed=0)  # (4, 3000) float32, via Griffin-Lim
    log_mel = model.target(windows[:2])  # (2, 48, 64)
    ```
    """

    refused_losses = {"stft": "does not support the STFT loss (it would run Griffin-Lim in every training step); "
                              "its reconstruction loss is already spectral (log-mel)"}

    def __init__(self, n_fft=None, hop_length=None, n_mels=64, fmin=0.0, fmax=None, log_floor=1e-5,
                 channels=(32, 64, 128), kernel_size=3, activation="gelu", griffin_lim_iters=32,
                 griffin_lim_momentum=0.99, **kwargs):
        kwargs.setdefault("init_log_sigma", 0.0)
        super().__init__(**kwargs)
        channels = [int(c) for c in channels]
        if not channels or min(channels) <= 0:
            raise KvaeError(f"channels: must be a non-empty list of positive ints, got {channels}")
        if int(kernel_size) <= 0:
            raise KvaeError(f"kernel_size: must be positive, got {kernel_size}")
        if int(griffin_lim_iters) < 0:
            raise KvaeError(f"griffin_lim_iters: must be 0 or more, got {griffin_lim_iters}")
        if not 0.0 <= float(griffin_lim_momentum) < 1.0:
            raise KvaeError(f"griffin_lim_momentum: must be in [0, 1), got {griffin_lim_momentum}")
        if not 0.0 < float(log_floor) < 1.0:
            raise KvaeError(f"log_floor: must be in (0, 1), got {log_floor}")
        self.n_fft = None if n_fft is None else int(n_fft)
        self.hop_length = None if hop_length is None else int(hop_length)
        fft_size = self.n_fft or dsp.fft_size_for_duration(self.sample_rate, 0.085, max_samples=self.window)
        hop = self.hop_length or max(1, fft_size // 4)
        if fft_size < 2 or fft_size // 2 >= self.window:
            raise KvaeError(
                f"n_fft: must be at least 2 and n_fft // 2 shorter than the window ({self.window} samples), "
                f"got {fft_size}"
            )
        if not 1 <= hop <= fft_size // 2:
            raise KvaeError(f"hop_length: must be 1 to n_fft // 2 ({fft_size // 2}), got {hop}")
        if not 1 <= int(n_mels) <= fft_size // 2 + 1:
            raise KvaeError(f"n_mels: must be 1 to n_fft // 2 + 1 ({fft_size // 2 + 1}), got {n_mels}")
        self.n_mels = int(n_mels)
        self.fmin = float(fmin)
        self.fmax = None if fmax is None else float(fmax)
        self.log_floor = float(log_floor)
        self.channels = channels
        self.kernel_size = int(kernel_size)
        self.activation = activation
        self.griffin_lim_iters = int(griffin_lim_iters)
        self.griffin_lim_momentum = float(griffin_lim_momentum)
        multiple = 2 ** len(channels)

        # === Layers ===
        self.log_mel = _LogMelSpectrogram(
            self.sample_rate, self.window, fft_size, hop, self.n_mels, self.fmin, self.fmax,
            self.log_floor, frame_multiple=multiple, name="log_mel",
        )
        frames = self.log_mel.frames
        mel_pad = -(-self.n_mels // multiple) * multiple - self.n_mels
        bins = fft_size // 2 + 1
        filterbank = self.log_mel.filterbank
        self._filterbank = filterbank.astype("float32")
        self._inverse_filterbank = np.linalg.pinv(filterbank).T.astype("float32")
        self._filterbank_gram = (filterbank.T @ filterbank).astype("float32")
        self._initial_phase = dsp_ops.random_phase(frames, bins, seed=0)

        # === Functional wiring ===
        x = keras.Input((self.window,), name="window")
        h = layers.Reshape((frames, self.n_mels, 1), name="add_channel")(self.log_mel(x))
        h = layers.Rescaling(_INPUT_SCALE, name="scale_log_mel")(h)  # log-mels span ~12 nats; bring them near 1
        if mel_pad:
            h = layers.ZeroPadding2D(((0, 0), (0, mel_pad)), name="pad_mels")(h)
        for i, c in enumerate(channels):
            h = layers.Conv2D(c, self.kernel_size, strides=2, padding="same", activation=activation,
                              name=f"enc_conv_{i}")(h)
        h = layers.Flatten(name="flatten")(h)
        z_mean = layers.Dense(self.latent_dim, name="z_mean")(h)
        z_log_var = layers.Dense(self.latent_dim, name="z_log_var", kernel_initializer="zeros")(h)
        self.encoder = keras.Model(x, [z_mean, z_log_var], name="encoder")

        bottom = (frames // multiple, (self.n_mels + mel_pad) // multiple, channels[-1])
        z = keras.Input((self.latent_dim,), name="z")
        h = layers.Dense(int(np.prod(bottom)), activation=activation, name="dec_dense")(z)
        h = layers.Reshape(bottom, name="unflatten")(h)
        for i, c in enumerate(reversed(channels)):
            h = layers.Conv2DTranspose(c, self.kernel_size, strides=2, padding="same", activation=activation,
                                       name=f"dec_deconv_{i}")(h)
        h = layers.Conv2D(1, self.kernel_size, padding="same", name="dec_log_mel")(h)
        h = layers.Rescaling(1.0 / _INPUT_SCALE, name="unscale_log_mel")(h)
        if mel_pad:
            h = layers.Cropping2D(((0, 0), (0, mel_pad)), name="crop_mels")(h)
        out = layers.Reshape((frames, self.n_mels), name="log_mel_out")(h)
        self.decoder = keras.Model(z, out, name="decoder")
        self._finish_build((frames, self.n_mels))

    # -- spectrogram in, audio out ---------------------------------------------------

    def target(self, x):
        """Log-mel spectrogram `(batch, frames, n_mels)` of windows `(batch, window)`."""
        return self.log_mel(x)

    def to_audio(self, decoded):
        """Waveforms `(batch, window)` from log-mel spectrograms `(batch, frames, n_mels)`.

        Inverts `target`: `exp`, minus the per-example floor, the mel bands
        spread onto the FFT bins (`mel_to_magnitude`), then `griffin_lim`. Not differentiable (gradients stop).
        """
        log_mel = ops.clip(ops.stop_gradient(ops.cast(decoded, "float32")), *_LOG_MEL_RANGE)
        mel = ops.exp(log_mel)
        peak = ops.max(mel, axis=(1, 2), keepdims=True)
        mel = ops.relu(mel - self.log_floor / (1.0 + self.log_floor) * peak - _ABS_EPS)
        return self.griffin_lim(self.mel_to_magnitude(mel))

    def mel_to_magnitude(self, mel):
        """Linear STFT magnitudes `(batch, frames, n_fft // 2 + 1)` from mel magnitudes `(batch, frames, n_mels)`.

        The pseudo-inverse of the filterbank, clipped at 0, refined by a few
        multiplicative non-negative least-squares updates (Lee & Seung).
        """
        mel = ops.convert_to_tensor(mel, dtype="float32")
        magnitude = ops.relu(ops.matmul(mel, ops.convert_to_tensor(self._inverse_filterbank))) + _ABS_EPS
        numerator = ops.matmul(mel, ops.convert_to_tensor(self._filterbank))
        gram = ops.convert_to_tensor(self._filterbank_gram)
        for _ in range(_NNLS_ITERS):
            magnitude = magnitude * numerator / (ops.matmul(magnitude, gram) + _GL_EPS)
        return magnitude

    def griffin_lim(self, magnitude, iterations=None):
        """Fast Griffin-Lim phase reconstruction in `keras.ops`.

        Args:
            magnitude: tensor `(batch, frames, n_fft // 2 + 1)` of linear STFT
                magnitudes (as `log_mel.magnitude` computes them).
            iterations: int or None. Defaults to `griffin_lim_iters`.

        Returns:
            Waveforms `(batch, window)`.
        """
        iterations = self.griffin_lim_iters if iterations is None else int(iterations)
        signal = dsp_ops.griffin_lim(magnitude, self.log_mel.n_fft, self.log_mel.hop_length,
                                     self.log_mel.padded_length, iterations, self.griffin_lim_momentum,
                                     self._initial_phase)
        return signal[:, : self.window]

    def get_config(self):
        config = super().get_config()
        config.update({
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "log_floor": self.log_floor,
            "channels": list(self.channels),
            "kernel_size": self.kernel_size,
            "activation": self.activation,
            "griffin_lim_iters": self.griffin_lim_iters,
            "griffin_lim_momentum": self.griffin_lim_momentum,
        })
        return config
