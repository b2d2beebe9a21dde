"""The Conv1D VAE: strided 1-D convolutions over the waveform, and a mirrored decoder."""

import math

import keras
from keras import layers

from kvae.errors import KvaeError
from kvae.models.vae import VAE


def _as_list(value, n, name):
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise KvaeError(f"{name}: expected {n} values (one per layer), got {len(values)}")
    if any(int(v) <= 0 for v in values):
        raise KvaeError(f"{name}: values must be positive, got {values}")
    return [int(v) for v in values]


@keras.saving.register_keras_serializable(package="kvae")
class Conv1DVAE(VAE):
    """A VAE of strided 1-D convolutions down to a latent sequence (or vector).

    The encoder halves (or divides by its stride) the time axis at every
    layer; the decoder mirrors it with transposed convolutions. The window is
    zero-padded to a multiple of the total stride and the output cropped back.
    The paper's version gave silent samples; with the base's summed
    likelihood and learned decoder variance this one does not.

    Args:
        channels: list of int. Channels of each encoder layer (the decoder
            mirrors them). Defaults to [32, 64, 128, 128].
        kernel_sizes: int or list of int. Kernel size per layer. Defaults to 9.
        strides: int or list of int. Stride per layer. Defaults to 4.
        latent: str. `"sequence"` (one latent vector per output step of the
            encoder) or `"vector"` (one per window). Defaults to "sequence".
        activation: str. Hidden activation. Defaults to "gelu".
        **kwargs: arguments of `VAE`.

    Example:
    ```python
    model = kvae.models.Conv1DVAE(sample_rate=3000, window_seconds=1.0, latent_dim=16)
    model.compile(optimizer="adam")
    audio = model.sample(2, seed=0)  # (2, 3000)
    ```
    """

    def __init__(self, channels=(32, 64, 128, 128), kernel_sizes=9, strides=4, latent="sequence",
                 activation="gelu", **kwargs):
        super().__init__(**kwargs)
        channels = _as_list(channels, len(channels) if isinstance(channels, (list, tuple)) else 1, "channels")
        n = len(channels)
        self.channels = channels
        self.kernel_sizes = _as_list(kernel_sizes, n, "kernel_sizes")
        self.strides = _as_list(strides, n, "strides")
        if latent not in ("sequence", "vector"):
            raise KvaeError(f"latent: must be 'sequence' or 'vector', got '{latent}'")
        self.latent = latent
        self.activation = activation
        hop = math.prod(self.strides)
        padded = math.ceil(self.window / hop) * hop
        steps = padded // hop

        # === Encoder ===
        x = keras.Input((self.window,), name="window")
        h = layers.Reshape((self.window, 1))(x)
        if padded != self.window:
            h = layers.ZeroPadding1D((0, padded - self.window))(h)
        for i, (c, k, s) in enumerate(zip(self.channels, self.kernel_sizes, self.strides)):
            h = layers.Conv1D(c, k, strides=s, padding="same", activation=activation, name=f"enc_conv_{i}")(h)
        if latent == "vector":
            h = layers.Flatten()(h)
        z_mean = layers.Dense(self.latent_dim, name="z_mean")(h)
        z_log_var = layers.Dense(self.latent_dim, kernel_initializer="zeros", name="z_log_var")(h)
        self.encoder = keras.Model(x, [z_mean, z_log_var], name="encoder")

        # === Decoder ===
        self._latent_shape = (steps, self.latent_dim) if latent == "sequence" else (self.latent_dim,)
        z = keras.Input(self._latent_shape, name="z")
        h = z
        if latent == "vector":
            h = layers.Dense(steps * self.channels[-1], activation=activation)(h)
            h = layers.Reshape((steps, self.channels[-1]))(h)
        else:
            h = layers.Conv1D(self.channels[-1], 1, activation=activation, name="dec_in")(h)
        for i, (c, k, s) in reversed(list(enumerate(zip(self.channels, self.kernel_sizes, self.strides)))):
            out_c = self.channels[i - 1] if i > 0 else self.channels[0]
            h = layers.Conv1DTranspose(out_c, k, strides=s, padding="same", activation=activation,
                                       name=f"dec_conv_{i}")(h)
        h = layers.Conv1D(1, 7, padding="same", name="audio")(h)
        if padded != self.window:
            h = layers.Cropping1D((0, padded - self.window))(h)
        out = layers.Reshape((self.window,))(h)
        self.decoder = keras.Model(z, out, name="decoder")
        self._finish_build((self.window,))

    @property
    def latent_shape(self):
        return self._latent_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "channels": self.channels,
            "kernel_sizes": self.kernel_sizes,
            "strides": self.strides,
            "latent": self.latent,
            "activation": self.activation,
        })
        return config
