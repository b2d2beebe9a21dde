"""The Transformer VAE: the waveform cut into frames that become tokens."""

import math

import keras
from keras import layers, ops

from kvae.errors import KvaeError
from kvae.models.blocks import TransformerBlock  # noqa: F401  (kvae.models.transformer_vae.TransformerBlock, as before)
from kvae.models.vae import VAE


@keras.saving.register_keras_serializable(package="kvae")
class PositionEmbedding(layers.Layer):
    """Adds a learned position embedding to a `(batch, tokens, width)` sequence."""

    def build(self, input_shape):
        self.positions = self.add_weight(
            shape=tuple(input_shape[1:]), initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="positions",
        )
        self.built = True

    def call(self, x):
        return x + ops.expand_dims(self.positions, 0)


@keras.saving.register_keras_serializable(package="kvae")
class TransformerVAE(VAE):
    """A Transformer VAE over frames of raw audio (after Jiang et al. 2020).

    The paper made every sample a token and ran out of memory at one second.
    Here the window is cut into frames of `frame_size` samples; each frame is
    a token (so 5 s at 16 kHz with 256-sample frames is 313 tokens), with a
    learned position embedding. Each token gets its own latent vector; the
    decoder is a Transformer over the latent tokens that projects each back to
    a frame of samples.

    Args:
        frame_size: int. Samples per token. Defaults to 256.
        d_model: int. Token width. Defaults to 128.
        num_heads: int. Attention heads (must divide d_model). Defaults to 4.
        num_layers: int. Blocks in the encoder and in the decoder. Defaults to 2.
        ff_dim: int. Feed-forward width. Defaults to 256.
        **kwargs: arguments of `VAE` (`latent_dim` is the per-token latent size).

    Example:
    ```python
    model = kvae.models.TransformerVAE(sample_rate=16000, window_seconds=5.0, latent_dim=16)
    ```
    """

    def __init__(self, frame_size=256, d_model=128, num_heads=4, num_layers=2, ff_dim=256, **kwargs):
        super().__init__(**kwargs)
        if int(frame_size) <= 0 or int(num_layers) <= 0:
            raise KvaeError(f"frame_size and num_layers must be positive, got {frame_size}, {num_layers}")
        if int(d_model) % int(num_heads):
            raise KvaeError(f"d_model: must be a multiple of num_heads ({num_heads}), got {d_model}")
        self.frame_size = int(frame_size)
        self.d_model = int(d_model)
        self.num_heads = int(num_heads)
        self.num_layers = int(num_layers)
        self.ff_dim = int(ff_dim)
        tokens = math.ceil(self.window / self.frame_size)
        padded = tokens * self.frame_size
        self.tokens = tokens

        # === Encoder ===
        x = keras.Input((self.window,), name="window")
        h = layers.Reshape((self.window, 1))(x)
        if padded != self.window:
            h = layers.ZeroPadding1D((0, padded - self.window))(h)
        h = layers.Reshape((tokens, self.frame_size))(h)
        h = layers.Dense(self.d_model, name="frame_embedding")(h)
        h = PositionEmbedding(name="enc_positions")(h)
        for i in range(self.num_layers):
            h = TransformerBlock(self.d_model, self.num_heads, self.ff_dim, name=f"enc_block_{i}")(h)
        h = layers.LayerNormalization(epsilon=1e-5)(h)
        z_mean = layers.Dense(self.latent_dim, name="z_mean")(h)
        z_log_var = layers.Dense(self.latent_dim, kernel_initializer="zeros", name="z_log_var")(h)
        self.encoder = keras.Model(x, [z_mean, z_log_var], name="encoder")

        # === Decoder ===
        z = keras.Input((tokens, self.latent_dim), name="z")
        h = layers.Dense(self.d_model, name="latent_embedding")(z)
        h = PositionEmbedding(name="dec_positions")(h)
        for i in range(self.num_layers):
            h = TransformerBlock(self.d_model, self.num_heads, self.ff_dim, name=f"dec_block_{i}")(h)
        h = layers.LayerNormalization(epsilon=1e-5)(h)
        h = layers.Dense(self.frame_size, name="frames")(h)
        h = layers.Reshape((padded,))(h)
        if padded != self.window:
            h = layers.Reshape((padded, 1))(h)
            h = layers.Cropping1D((0, padded - self.window))(h)
            h = layers.Reshape((self.window,))(h)
        self.decoder = keras.Model(z, h, name="decoder")
        self._finish_build((self.window,))

    @property
    def latent_shape(self):
        return (self.tokens, self.latent_dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "frame_size": self.frame_size,
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "num_layers": self.num_layers,
            "ff_dim": self.ff_dim,
        })
        return config
