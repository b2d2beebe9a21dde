"""The magnitude-first VAE: it encodes and decodes the log-magnitude spectrogram at a fine hop; phase comes after.

The oracle of `benchmarks/oracle.py` says where a spectral VAE loses on the
paired test: with the input's true STFT magnitude, plain Griffin-Lim phase
is already good, while a model's magnitude is wrong whatever phase it gets
(the figures: docs/results.md#the-oracle). So this model spends all of its capacity and all of its loss on the
magnitude: its target is the log-magnitude of a centred STFT at a fine hop
(32 samples, 10.7 ms at 3000 Hz), its likelihood is on that target, and the
phase is made afterwards, outside the training step: by phase-gradient heap
integration (`kvae.dsp.pghi`, the default) or by fast Griffin-Lim
(`kvae.dsp.ops.griffin_lim`). No waveform is synthesised while training, so a
step costs no inverse STFT and no loss on audio.

Its networks are the Vocos VAE's (ConvNeXt blocks at the frame rate, a
strided convolution down to the latent frame rate); only the ends differ.
"""

import math

import keras
import numpy as np
from keras import layers, ops

from kvae.dsp import ops as dsp
from kvae.dsp.filters import centred_frame_count
from kvae.dsp.pghi import pghi_batch
from kvae.errors import KvaeError
from kvae.models.blocks import ConvNeXtBlock
from kvae.models.vae import VAE

_INPUT_SCALE = 0.2  # the encoder sees the log-magnitude times this (it spans about 10 nats)
PHASES = ("pghi", "griffin-lim")  # how to_audio makes the phase
_MAX_LOG_MAGNITUDE = 8.0  # decoded log-magnitudes are clipped here before exp() (x3000)


@keras.saving.register_keras_serializable(package="kvae")
class LogMagnitude(layers.Layer):
    """Windows `(batch, window)` to log-magnitude spectrograms `(batch, frames, n_fft // 2 + 1)`.

    `log(|STFT(x)| + floor)`: a centred STFT with a periodic Hann window, the
    magnitude, an absolute floor (1e-3 is about -96 dB below a full-scale
    sinusoid's peak bin at n_fft 256) so that silence has a finite log and
    the likelihood does not spend itself on inaudible detail.

    Args:
        n_fft: int. FFT size.
        hop: int. Hop in samples.
        floor: float. Added to the magnitude before the log.
    """

    def __init__(self, n_fft, hop, floor, **kwargs):
        super().__init__(**kwargs)
        self.n_fft, self.hop, self.floor = int(n_fft), int(hop), float(floor)

    def call(self, x):
        real, imag = dsp.stft(ops.cast(x, self.compute_dtype), self.n_fft, self.hop)
        return ops.log(dsp.magnitude(real, imag, eps=1e-12) + self.floor)

    def compute_output_shape(self, input_shape):
        frames = centred_frame_count(int(input_shape[-1]), self.n_fft, self.hop)
        return (input_shape[0], frames, self.n_fft // 2 + 1)

    def get_config(self):
        return {**super().get_config(), "n_fft": self.n_fft, "hop": self.hop, "floor": self.floor}


@keras.saving.register_keras_serializable(package="kvae")
class MagnitudeVAE(VAE):
    """A VAE on the fine-hop log-magnitude spectrogram; audio through fast Griffin-Lim.

    Encoder: log-magnitude frames -> a 1x1 embedding -> ConvNeXt blocks -> a
    strided convolution down to one latent frame per `downsample` STFT
    frames. Decoder: a transposed convolution back to the frame rate ->
    ConvNeXt blocks -> one log-magnitude per bin. The likelihood
    (`decoder_variance`, summed) is on the log-magnitude, in nats; with
    `bitrate_target` the KL weight is steered to a bitrate, as `vocos-mel`'s is.
    `to_audio` takes `exp`, removes the floor and makes the phase: with
    `phase="pghi"` (the default) the phase the magnitude implies, by
    phase-gradient heap integration (`kvae.dsp.pghi`, numpy, one pass); with
    `phase="griffin-lim"` fast Griffin-Lim from a fixed pseudo-random phase.
    On the ufoai corpus PGHI is the better of the two on this model's
    magnitude (paired C2ST 0.895 against 0.955; Griffin-Lim iterations after
    PGHI make it worse: docs/results.md#pghi). With `decoder_temperature`
    above 0 the log-magnitude played is a draw from the decoder's own
    Gaussian likelihood (its learned sigma times the temperature, a fixed
    seeded draw) instead of its mean: at 0.5 it helps on ufoai (0.895 ->
    0.869 at 60 CPU-minutes) and hurts on the embedded corpus (0.896 ->
    0.959), so the default plays the mean. Either way `sample` and `reconstruct` return
    waveforms `(n, window)` and are deterministic. The latent rate is
    `sample_rate / (hop * downsample)` frames of `latent_dim` per second.

    Losses on audio (`loss_weights` `stft`, `mel`) are refused: they would run
    Griffin-Lim inside every training step.

    Args:
        n_fft: int. FFT size. Defaults to 256 (85 ms at 3 kHz).
        hop: int. Hop in samples, at most `n_fft // 2`. Defaults to 32.
        log_floor: float. Absolute floor under the magnitude before the log.
            Defaults to 1e-3.
        width: int. Channels of the ConvNeXt blocks. Defaults to 128.
        encoder_blocks: int. ConvNeXt blocks in the encoder. Defaults to 3.
        decoder_blocks: int. ConvNeXt blocks in the decoder. Defaults to 6.
        downsample: int. STFT frames per latent frame. Defaults to 2.
        kernel_size: int. Depthwise kernel of the blocks. Defaults to 7.
        phase: str. How `to_audio` makes the phase: `"pghi"` or `"griffin-lim"`.
            Defaults to `"pghi"`.
        decoder_temperature: float. `to_audio` plays the decoded
            log-magnitude plus `decoder_temperature` times the learned sigma
            (`decoder_variance` scalar or diagonal) times a fixed standard
            normal draw (seed 0). Defaults to 0: the mean.
        griffin_lim_iters: int. Griffin-Lim iterations in `to_audio` with
            `phase="griffin-lim"`. Defaults to 64.
        griffin_lim_momentum: float. Fast Griffin-Lim momentum in [0, 1). Defaults to 0.99.
        **kwargs: arguments of `VAE`.

    Example:
    ```python
    model = kvae.models.MagnitudeVAE(sample_rate=3000, window_seconds=1.0, latent_dim=32)
    model.compile(optimizer="adam")
    audio = model.sample(2, seed=0)  # (2, 3000), phase by PGHI
    ```
    """

    refused_losses = dict.fromkeys(("stft", "mel"), "has no loss on audio (it would run Griffin-Lim in every "
                                   "training step); its likelihood is already on the log-magnitude")

    def __init__(self, n_fft=256, hop=32, log_floor=1e-3, width=128, encoder_blocks=3, decoder_blocks=6,
                 downsample=2, kernel_size=7, phase="pghi", decoder_temperature=0.0, griffin_lim_iters=64,
                 griffin_lim_momentum=0.99, **kwargs):
        kwargs.setdefault("init_log_sigma", 0.0)  # the target is in nats of log-magnitude, not in samples
        super().__init__(**kwargs)
        for name, value in (("n_fft", n_fft), ("hop", hop), ("width", width), ("downsample", downsample),
                            ("kernel_size", kernel_size)):
            if int(value) <= 0:
                raise KvaeError(f"{name}: must be positive, got {value}")
        if not 2 * int(hop) <= int(n_fft) <= self.window:
            raise KvaeError(f"n_fft, hop: need 2 * hop <= n_fft <= the window ({self.window} samples) for "
                            f"Griffin-Lim, got {n_fft}, {hop}")
        if not 0.0 < float(log_floor) < 1.0:
            raise KvaeError(f"log_floor: must be in (0, 1), got {log_floor}")
        if phase not in PHASES:
            raise KvaeError(f"phase: must be one of {', '.join(PHASES)}, got {phase!r}")
        learned_sigma = self.decoder_variance in ("scalar", "diagonal")
        if not 0.0 <= float(decoder_temperature) <= 2.0:
            raise KvaeError(f"decoder_temperature: must be in [0, 2], got {decoder_temperature}")
        if float(decoder_temperature) and not learned_sigma:
            raise KvaeError(f"decoder_temperature: needs a learned sigma (decoder_variance scalar or diagonal), "
                            f"got decoder_variance {self.decoder_variance!r}; use 0")
        self.decoder_temperature = float(decoder_temperature)
        if int(griffin_lim_iters) < 0:
            raise KvaeError(f"griffin_lim_iters: must be 0 or more, got {griffin_lim_iters}")
        if not 0.0 <= float(griffin_lim_momentum) < 1.0:
            raise KvaeError(f"griffin_lim_momentum: must be in [0, 1), got {griffin_lim_momentum}")
        self.n_fft, self.hop, self.log_floor, self.width = int(n_fft), int(hop), float(log_floor), int(width)
        self.encoder_blocks, self.decoder_blocks = int(encoder_blocks), int(decoder_blocks)
        self.downsample, self.kernel_size = int(downsample), int(kernel_size)
        self.phase = phase
        self.griffin_lim_iters, self.griffin_lim_momentum = int(griffin_lim_iters), float(griffin_lim_momentum)
        self.frames = centred_frame_count(self.window, self.n_fft, self.hop)
        self.bins = self.n_fft // 2 + 1
        steps = math.ceil(self.frames / self.downsample)
        self._latent_shape = (steps, self.latent_dim)
        self._initial_phase = dsp.random_phase(self.frames, self.bins, seed=0)

        # === Layers ===
        # The STFT stays in float32 under a mixed precision policy (no bfloat16 FFT); the ConvNeXt layers cast.
        self.log_magnitude = LogMagnitude(self.n_fft, self.hop, self.log_floor, dtype="float32", name="log_magnitude")
        mean_log = math.log(10 * self.log_floor)  # the decoder starts quiet: near 20 dB over the floor, small weights

        # === Encoder ===
        x = keras.Input((self.window,), name="window")
        h = layers.Rescaling(_INPUT_SCALE, name="scale_input")(self.log_magnitude(x))
        h = layers.Dense(self.width, name="embed")(h)
        for i in range(self.encoder_blocks):
            h = ConvNeXtBlock(self.width, self.kernel_size, name=f"enc_block_{i}")(h)
        h = layers.LayerNormalization(epsilon=1e-6, name="enc_norm")(h)
        h = layers.Conv1D(self.width, self.downsample, strides=self.downsample, padding="same", name="down")(h)
        z_mean = layers.Dense(self.latent_dim, name="z_mean")(h)
        z_log_var = layers.Dense(self.latent_dim, kernel_initializer="zeros", name="z_log_var")(h)
        self.encoder = keras.Model(x, [z_mean, z_log_var], name="encoder")

        # === Decoder ===
        z = keras.Input(self._latent_shape, name="z")
        h = layers.Conv1DTranspose(self.width, self.downsample, strides=self.downsample, padding="same", name="up")(z)
        if steps * self.downsample != self.frames:
            h = layers.Cropping1D((0, steps * self.downsample - self.frames), name="crop")(h)
        for i in range(self.decoder_blocks):
            h = ConvNeXtBlock(self.width, self.kernel_size, name=f"dec_block_{i}")(h)
        h = layers.LayerNormalization(epsilon=1e-6, name="dec_norm")(h)
        h = layers.Dense(self.bins, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                         bias_initializer=keras.initializers.Constant(mean_log * _INPUT_SCALE),
                         name="dec_log_magnitude")(h)
        out = layers.Rescaling(1.0 / _INPUT_SCALE, name="unscale")(h)
        self.decoder = keras.Model(z, out, name="decoder")
        self._finish_build((self.frames, self.bins))

    # -- spectrogram in, audio out ---------------------------------------------------

    def target(self, x):
        """Log-magnitude spectrogram `(batch, frames, n_fft // 2 + 1)` of windows `(batch, window)`."""
        return self.log_magnitude(x)

    def magnitude(self, decoded):
        """Linear STFT magnitudes from decoded log-magnitudes: `exp`, the floor removed (gradients stop)."""
        log_mag = ops.minimum(ops.stop_gradient(ops.cast(decoded, "float32")), _MAX_LOG_MAGNITUDE)
        return ops.relu(ops.exp(log_mag) - self.log_floor)

    def to_audio(self, decoded):
        """Waveforms `(batch, window)` from log-magnitudes, the phase by PGHI or fast Griffin-Lim (`phase`)."""
        if self.decoder_temperature:
            decoded = ops.convert_to_tensor(decoded, dtype="float32")
            draw = np.random.default_rng(0).standard_normal(tuple(decoded.shape)).astype("float32")
            sigma = ops.exp(ops.stop_gradient(ops.cast(self.log_sigma, "float32")))
            decoded = decoded + self.decoder_temperature * sigma * ops.convert_to_tensor(draw)
        magnitude = self.magnitude(decoded)
        if self.phase == "griffin-lim":
            return self.griffin_lim(magnitude)
        phase = pghi_batch(ops.convert_to_numpy(magnitude), self.n_fft, self.hop)
        real = ops.convert_to_tensor(np.cos(phase), dtype="float32") * magnitude
        imag = ops.convert_to_tensor(np.sin(phase), dtype="float32") * magnitude
        return dsp.istft(real, imag, self.n_fft, self.hop, self.window)

    def griffin_lim(self, magnitude, iterations=None):
        """Fast Griffin-Lim on linear magnitudes `(batch, frames, bins)`: waveforms `(batch, window)`."""
        iterations = self.griffin_lim_iters if iterations is None else int(iterations)
        return dsp.griffin_lim(magnitude, self.n_fft, self.hop, self.window, iterations, self.griffin_lim_momentum,
                               self._initial_phase)

    @property
    def latent_shape(self):
        return self._latent_shape

    @property
    def latent_rate(self):
        """Latent frames per second of audio."""
        return self.sample_rate / (self.hop * self.downsample)

    def get_config(self):
        config = super().get_config()
        config.update({"n_fft": self.n_fft, "hop": self.hop, "log_floor": self.log_floor, "width": self.width,
                       "encoder_blocks": self.encoder_blocks, "decoder_blocks": self.decoder_blocks,
                       "downsample": self.downsample, "kernel_size": self.kernel_size,
                       "phase": self.phase, "decoder_temperature": self.decoder_temperature,
                       "griffin_lim_iters": self.griffin_lim_iters,
                       "griffin_lim_momentum": self.griffin_lim_momentum})
        return config
