"""The fully connected VAE, the paper's one model that made sound."""

import keras
from keras import layers

from kvae.errors import KvaeError
from kvae.models.vae import VAE


@keras.saving.register_keras_serializable(package="kvae")
class FCVAE(VAE):
    """A VAE whose encoder and decoder are stacks of dense layers over one window.

    The paper scaled this model from 1 to 15 hidden layers; the decoder mirrors
    the encoder. Loss, metrics, sampling and saving come from `VAE`.

    Args:
        hidden_layers: int. Dense layers in the encoder (and in the decoder),
            1 to 15. Defaults to 2.
        hidden_units: int. Width of each hidden layer. Defaults to 512.
        activation: str. Activation of the hidden layers. Defaults to "gelu".
        **kwargs: arguments of `VAE` (sample_rate, window_seconds,
            latent_dim, decoder_variance, ...).

    Example:
    ```python
    model = kvae.models.FCVAE(sample_rate=3000, window_seconds=1.0, hidden_layers=3)
    model.compile(optimizer="adam")
    audio = model.sample(4, seed=0)  # (4, 3000) float32
    ```
    """

    def __init__(self, hidden_layers=2, hidden_units=512, activation="gelu", **kwargs):
        super().__init__(**kwargs)
        if not 1 <= int(hidden_layers) <= 15:
            raise KvaeError(f"hidden_layers: must be 1 to 15 (the paper's range), got {hidden_layers}")
        if int(hidden_units) <= 0:
            raise KvaeError(f"hidden_units: must be positive, got {hidden_units}")
        self.hidden_layers = int(hidden_layers)
        self.hidden_units = int(hidden_units)
        self.activation = activation

        # === Layers ===
        x = keras.Input((self.window,), name="window")
        h = x
        for i in range(self.hidden_layers):
            h = layers.Dense(self.hidden_units, activation=activation, name=f"enc_dense_{i}")(h)
        z_mean = layers.Dense(self.latent_dim, name="z_mean")(h)
        z_log_var = layers.Dense(self.latent_dim, name="z_log_var", kernel_initializer="zeros")(h)
        self.encoder = keras.Model(x, [z_mean, z_log_var], name="encoder")

        z = keras.Input((self.latent_dim,), name="z")
        h = z
        for i in range(self.hidden_layers):
            h = layers.Dense(self.hidden_units, activation=activation, name=f"dec_dense_{i}")(h)
        out = layers.Dense(self.window, name="audio")(h)
        self.decoder = keras.Model(z, out, name="decoder")
        self._finish_build((self.window,))

    def get_config(self):
        config = super().get_config()
        config.update({
            "hidden_layers": self.hidden_layers,
            "hidden_units": self.hidden_units,
            "activation": self.activation,
        })
        return config
