"""RAVE-style convolutional VAE: PQMF bands, dilated residual units with Snake, strided down/upsampling."""

import math

import keras
from keras import layers

from kvae.errors import KvaeError
from kvae.models.blocks import PQMF, ResidualUnit, Snake
from kvae.models.vae import VAE


def _positive_ints(values, name, allow_empty=False):
    if not isinstance(values, (list, tuple)) or (not values and not allow_empty):
        raise KvaeError(f"{name}: expected a non-empty list of positive integers, got {values!r}")
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise KvaeError(f"{name}: expected a list of positive integers, got {values!r}") from None
    if any(v <= 0 or v != float(values[i]) for i, v in enumerate(out)):
        raise KvaeError(f"{name}: expected positive integers, got {list(values)}")
    return out


@keras.saving.register_keras_serializable(package="kvae")
class RaveVAE(VAE):
    """A convolutional VAE after RAVE v2 (Caillon & Esling 2021): multiband, residual, Snake, a latent sequence.

    The window (zero-padded to a multiple of the total compression) is split
    by a PQMF into `n_bands` sub-bands, each decimated by `n_bands`. The
    encoder runs a convolution, then for each ratio `r`: residual units with
    dilations `dilations` (Snake, dilated convolution, Snake, 1x1, skip) and a
    strided convolution (kernel `2r`, stride `r`) that doubles the channels;
    a Snake and a convolution give `z_mean` and `z_log_var` per latent frame.
    The decoder mirrors it with transposed convolutions (kernel `2r`, stride
    `r`) followed by the residual units, ends with `tanh` on the bands, and
    the PQMF synthesis turns the bands back into audio. Total compression
    (samples per latent frame) is `n_bands * prod(ratios)`; a window gives
    `ceil(window / compression)` latent frames of `latent_dim` channels.

    The loss (the base's likelihood with a learned decoder variance, the
    multi-resolution STFT loss and the KL with warm-up) is `VAE`'s.

    Args:
        capacity: int. Channels after the first convolution; each ratio
            doubles them. Defaults to 32.
        ratios: list of int. Down/upsampling ratio per stage. Defaults to
            RAVE's [4, 4, 4, 2].
        n_bands: int. PQMF bands (1: no filterbank, the waveform itself).
            Defaults to 16 (RAVE's).
        kernel_size: int. Kernel of the residual units and of the latent
            convolutions (the first and last convolutions use `2k + 1`).
            Defaults to 3.
        dilations: list of int. Dilations of the residual units of every
            stage. Defaults to [1, 3, 9].
        pqmf_attenuation: float. Stop-band attenuation of the PQMF prototype
            in dB. Defaults to 100.
        latent_dim: int. Channels of the latent sequence. Defaults to 16.
        **kwargs: arguments of `VAE`.

    Example:
    ```python
    model = kvae.models.RaveVAE(sample_rate=16000, window_seconds=2.048, ratios=[4, 4, 2])
    model.latent_shape  # (64, 16): 2.048 s / (16 bands * 32) = 64 frames
    audio = model.sample(2, seed=0)  # (2, 32768)
    ```
    """

    def __init__(self, capacity=32, ratios=(4, 4, 4, 2), n_bands=16, kernel_size=3, dilations=(1, 3, 9),
                 pqmf_attenuation=100.0, latent_dim=16, **kwargs):
        super().__init__(latent_dim=latent_dim, **kwargs)
        if int(capacity) <= 0:
            raise KvaeError(f"capacity: must be positive, got {capacity}")
        if int(n_bands) <= 0:
            raise KvaeError(f"n_bands: must be positive (1: no PQMF), got {n_bands}")
        if int(kernel_size) <= 0:
            raise KvaeError(f"kernel_size: must be positive, got {kernel_size}")
        self.capacity = int(capacity)
        self.ratios = _positive_ints(ratios, "ratios")
        self.n_bands = int(n_bands)
        self.kernel_size = int(kernel_size)
        self.dilations = _positive_ints(dilations, "dilations", allow_empty=True)
        self.pqmf_attenuation = float(pqmf_attenuation)
        self.compression = self.n_bands * math.prod(self.ratios)
        self.frames = math.ceil(self.window / self.compression)
        padded = self.frames * self.compression
        k = self.kernel_size

        # === Encoder ===
        x = keras.Input((self.window,), name="window")
        h = layers.Reshape((self.window, 1))(x)
        if padded != self.window:
            h = layers.ZeroPadding1D((0, padded - self.window))(h)
        if self.n_bands > 1:
            h = PQMF(self.n_bands, self.pqmf_attenuation, name="pqmf_analysis")(h)
        channels = self.capacity
        h = layers.Conv1D(channels, 2 * k + 1, padding="same", name="enc_in")(h)
        for i, r in enumerate(self.ratios):
            for d in self.dilations:
                h = ResidualUnit(channels, k, d, name=f"enc_{i}_res_d{d}")(h)
            h = Snake(name=f"enc_{i}_snake")(h)
            channels *= 2
            h = layers.Conv1D(channels, 2 * r, strides=r, padding="same", name=f"enc_{i}_down")(h)
        h = Snake(name="enc_out_snake")(h)
        z_mean = layers.Conv1D(self.latent_dim, k, padding="same", name="z_mean")(h)
        z_log_var = layers.Conv1D(self.latent_dim, k, padding="same", kernel_initializer="zeros",
                                  name="z_log_var")(h)
        self.encoder = keras.Model(x, [z_mean, z_log_var], name="encoder")

        # === Decoder ===
        z = keras.Input((self.frames, self.latent_dim), name="z")
        h = layers.Conv1D(channels, k, padding="same", name="dec_in")(z)
        for i, r in reversed(list(enumerate(self.ratios))):
            h = Snake(name=f"dec_{i}_snake")(h)
            channels //= 2
            h = layers.Conv1DTranspose(channels, 2 * r, strides=r, padding="same", name=f"dec_{i}_up")(h)
            for d in self.dilations:
                h = ResidualUnit(channels, k, d, name=f"dec_{i}_res_d{d}")(h)
        h = Snake(name="dec_out_snake")(h)
        h = layers.Conv1D(self.n_bands, 2 * k + 1, padding="same", activation="tanh", kernel_initializer="zeros",
                          name="bands")(h)
        if self.n_bands > 1:
            h = PQMF(self.n_bands, self.pqmf_attenuation, inverse=True, name="pqmf_synthesis")(h)
        if padded != self.window:
            h = layers.Cropping1D((0, padded - self.window))(h)
        out = layers.Reshape((self.window,))(h)
        self.decoder = keras.Model(z, out, name="decoder")
        self._finish_build((self.window,))

    @property
    def latent_shape(self):
        return (self.frames, self.latent_dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "capacity": self.capacity,
            "ratios": self.ratios,
            "n_bands": self.n_bands,
            "kernel_size": self.kernel_size,
            "dilations": self.dilations,
            "pqmf_attenuation": self.pqmf_attenuation,
        })
        return config
