"""The Vocos VAE: an encoder on STFT frames and a frame-rate decoder with an inverse-STFT head.

Every network here runs at the STFT's frame rate, never at the sample rate:
there is no upsampling stack, which is what makes Vocos (Siuzdenko et al.
2023) an order of magnitude cheaper than sample-rate decoders at the same
quality. The decoder predicts each frame's log-magnitude and phase; the
waveform is their inverse STFT (`kvae.dsp.ops.istft`, the least-squares
inverse of the STFT every kvae loss uses). Its ConvNeXt blocks and iSTFT head
are `kvae.models.blocks`', where any decoder can use them.
"""

import math

import keras
from keras import layers, ops

from kvae.dsp import ops as dsp
from kvae.dsp.filters import centred_frame_count
from kvae.errors import KvaeError
from kvae.models.blocks import ConvNeXtBlock, ISTFTHead  # noqa: F401  (kvae.models.vocos_vae.ConvNeXtBlock, as in 0.1)
from kvae.models.vae import VAE


@keras.saving.register_keras_serializable(package="kvae")
class STFTFeatures(layers.Layer):
    """Windows to STFT frames: log-magnitude and the phase as its cosine and sine, `(batch, frames, 3 * bins)`.

    Args:
        n_fft: int. FFT size.
        hop: int. Hop in samples.
    """

    def __init__(self, n_fft, hop, **kwargs):
        super().__init__(**kwargs)
        self.n_fft = int(n_fft)
        self.hop = int(hop)

    def call(self, x):
        real, imag = dsp.stft(x, self.n_fft, self.hop)
        mag = dsp.magnitude(real, imag, eps=1e-10)
        return ops.concatenate([ops.log(mag + 1e-5), real / (mag + 1e-5), imag / (mag + 1e-5)], axis=-1)

    def compute_output_shape(self, input_shape):
        frames = centred_frame_count(int(input_shape[-1]), self.n_fft, self.hop)
        return (input_shape[0], frames, 3 * (self.n_fft // 2 + 1))

    def get_config(self):
        return {**super().get_config(), "n_fft": self.n_fft, "hop": self.hop}


@keras.saving.register_keras_serializable(package="kvae")
class VocosVAE(VAE):
    """A VAE whose networks run at the STFT frame rate, with an inverse-STFT head (Vocos) as its decoder's end.

    Encoder: STFT frames of the window (log-magnitude, phase as cosine and
    sine) -> a 1x1 embedding -> ConvNeXt blocks -> a strided convolution
    down to one latent frame per `downsample` STFT frames. Decoder: a
    transposed convolution back to the frame rate -> ConvNeXt blocks ->
    log-magnitude and phase per bin -> inverse STFT. The latent rate is
    `sample_rate / (hop * downsample)` frames of `latent_dim` per second.

    Args:
        n_fft: int. FFT size of the frames. Defaults to 128 (43 ms at 3 kHz).
        hop: int. Hop of the frames in samples. Defaults to 32.
        width: int. Channels of the ConvNeXt blocks. Defaults to 128.
        encoder_blocks: int. ConvNeXt blocks in the encoder. Defaults to 3.
        decoder_blocks: int. ConvNeXt blocks in the decoder. Defaults to 6.
        downsample: int. STFT frames per latent frame. Defaults to 4.
        kernel_size: int. Depthwise kernel of the blocks. Defaults to 7.
        **kwargs: arguments of `VAE`.

    Example:
    ```python
    model = kvae.models.VocosVAE(sample_rate=3000, window_seconds=1.0, latent_dim=16)
    model.compile(optimizer="adam")
    audio = model.sample(2, seed=0)  # (2, 3000)
    ```
    """

    def __init__(self, n_fft=128, hop=32, width=128, encoder_blocks=3, decoder_blocks=6, downsample=4,
                 kernel_size=7, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("n_fft", n_fft), ("hop", hop), ("width", width), ("downsample", downsample),
                            ("kernel_size", kernel_size)):
            if int(value) <= 0:
                raise KvaeError(f"{name}: must be positive, got {value}")
        if int(hop) > int(n_fft) or int(n_fft) > self.window:
            raise KvaeError(f"n_fft, hop: need hop <= n_fft <= the window ({self.window} samples), got {n_fft}, {hop}")
        self.n_fft, self.hop, self.width = int(n_fft), int(hop), int(width)
        self.encoder_blocks, self.decoder_blocks = int(encoder_blocks), int(decoder_blocks)
        self.downsample, self.kernel_size = int(downsample), int(kernel_size)
        frames = centred_frame_count(self.window, self.n_fft, self.hop)
        steps = math.ceil(frames / self.downsample)
        self.frames = frames
        self._latent_shape = (steps, self.latent_dim)

        # === Encoder ===
        x = keras.Input((self.window,), name="window")
        h = STFTFeatures(self.n_fft, self.hop, dtype="float32", name="stft")(x)  # no bfloat16 FFT: float32 always
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
        if steps * self.downsample != frames:
            h = layers.Cropping1D((0, steps * self.downsample - frames))(h)
        for i in range(self.decoder_blocks):
            h = ConvNeXtBlock(self.width, self.kernel_size, name=f"dec_block_{i}")(h)
        h = layers.LayerNormalization(epsilon=1e-6, name="dec_norm")(h)
        out = ISTFTHead(self.n_fft, self.hop, self.window, dtype="float32", name="istft")(h)
        self.decoder = keras.Model(z, out, name="decoder")
        self._finish_build((self.window,))

    @property
    def latent_shape(self):
        return self._latent_shape

    @property
    def latent_rate(self):
        """Latent frames per second of audio."""
        return self.sample_rate / (self.hop * self.downsample)

    def get_config(self):
        config = super().get_config()
        config.update({"n_fft": self.n_fft, "hop": self.hop, "width": self.width,
                       "encoder_blocks": self.encoder_blocks, "decoder_blocks": self.decoder_blocks,
                       "downsample": self.downsample, "kernel_size": self.kernel_size})
        return config
