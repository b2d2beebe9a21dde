"""Sampling from a trained VAE: prior noise, decoding it in batches, and the ex-post latent mixture."""

import numpy as np
from keras import ops

from kvae.errors import KvaeError
from kvae.models.gmm import LatentGMM
from kvae.models.noise import prior_noise


class Sampling:
    """Mixin of `kvae.models.VAE`: `sample` and its parts. Needs `latent_shape`, `decode`, `to_audio`."""

    def prior_noise(self, n, seed=None, temperature=1.0, batch_size=None):
        """Latents from N(0, temperature^2 I), the same for a seed on any backend (`kvae.models.noise.prior_noise`)."""
        return prior_noise(n, self.latent_shape, seed, temperature, batch_size)

    def decode_audio(self, z):
        """Audio `(n, window)` float32 of latents `z` `(n, *latent_shape)`: `decode`, then `to_audio`."""
        return np.asarray(ops.convert_to_numpy(self.to_audio(self.decode(ops.convert_to_tensor(z)))), dtype=np.float32)

    def sample_batches(self, n, seed=None, temperature=1.0, batch_size=256):
        """Decode `n` prior samples a batch at a time, `(batch, window)` float32 arrays: the clips
        `sample(n, seed, temperature)` gives, in the same order, with memory that does not grow with `n`."""
        for z in self.prior_noise(n, seed, temperature, batch_size):
            yield self.decode_audio(z)

    def sample(self, n=1, seed=None, temperature=1.0, prior=None):
        """Decode `n` latents drawn from the prior into audio: a float32 array `(n, window)` at `sample_rate`.

        Args:
            n: int. Number of clips. Defaults to 1.
            seed: int or None. The same seed gives the same clips on every backend (see `prior_noise`).
            temperature: float. Scale of the prior's standard deviation. Defaults to 1.0.
            prior: str or None. `None` or `"normal"`: N(0, I); `"gmm"`: the fitted latent mixture
                (`set_latent_gmm`), drawn with numpy from the seed.
        """
        if prior == "gmm":
            return self.decode_audio(self.sample_latents_gmm(n, np.random.default_rng(seed), temperature))
        if prior not in (None, "normal"):
            raise KvaeError(f"prior: must be normal or gmm, got {prior!r}")
        return np.concatenate(list(self.sample_batches(n, seed, temperature, batch_size=None)))

    def set_latent_gmm(self, gmm):
        """Attach an ex-post Gaussian mixture over the latents (a `LatentGMM`, its config, or None)."""
        gmm = None if gmm is None else LatentGMM.from_config(gmm)
        size = int(np.prod(self.latent_shape))
        if gmm is not None and gmm.dim != size:
            raise KvaeError(f"latent_gmm: the mixture has {gmm.dim} dimensions, the latent {size}")
        self.latent_gmm = gmm

    def sample_latents_gmm(self, n, rng, temperature=1.0):
        """`n` latents `(n, *latent_shape)` drawn from the latent mixture with a numpy Generator."""
        if int(n) <= 0:
            raise KvaeError(f"n: must be a positive number of samples, got {n}")
        if self.latent_gmm is None:
            raise KvaeError("prior gmm: this model has no latent mixture; run `kvae prior fit` on its run folder")
        return self.latent_gmm.sample(int(n), rng, temperature).reshape((int(n),) + tuple(self.latent_shape))
