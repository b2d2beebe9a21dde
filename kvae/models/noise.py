"""Seeded noise for a VAE's latents: the prior's, drawn with NumPy, and the posterior's torch fast path."""

import keras
import numpy as np
from keras import ops

from kvae import bounds
from kvae.errors import KvaeError


def prior_noise(n, shape, seed=None, temperature=1.0, batch_size=None):
    """Latents drawn from N(0, temperature^2 I), in batches.

    With a seed the draw is NumPy's (`np.random.default_rng(seed)`, standard
    normals in float64 cast to float32), so the same seed gives the same
    latents on every Keras backend, and the batching does not change them:
    batch after batch continue one stream. Without a seed it is
    `keras.random.normal`, governed by `keras.utils.set_random_seed`.

    Args:
        n: int. Number of latents.
        shape: tuple. Shape of one latent.
        seed: int or None. A non-negative seed.
        temperature: float. Scale of the standard deviation. Defaults to 1.0.
        batch_size: int or None. Latents per batch; None for one batch.

    Yields:
        float32 numpy arrays of shape `(batch, *shape)`, `n` rows in all.
    """
    n = bounds.check("clips", n, "n")  # a whole number in range: sample(2.5) is refused, not rounded
    if n <= 0:
        raise KvaeError(f"n: must be a positive number of samples, got {n}")
    temperature = bounds.check("temperature", temperature)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise KvaeError(f"seed: must be a non-negative integer, got {seed!r}")
    batch = n if batch_size is None else max(int(batch_size), 1)
    rng = np.random.default_rng(int(seed)) if seed is not None else None
    shape = tuple(shape)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        if rng is not None:
            z = rng.standard_normal((m,) + shape) * float(temperature)
        else:
            z = ops.convert_to_numpy(keras.random.normal((m,) + shape)) * float(temperature)
        yield np.asarray(z, dtype=np.float32)


class TorchNoise:
    """Standard normal draws on torch from a `torch.Generator` on the tensor's device, seeded once.

    Keras's seeded torch draw reads its seed back to the host at every call,
    which on a GPU waits for the device at every step; this generator is
    seeded from `seed` and `stream` (e.g. a data-parallel rank) when first
    used on a device. Not saved: a resumed run draws fresh noise. Without a
    seed it draws from torch's global generator.

    Args:
        seed: int or None. The model's seed.
        stream: int. Stream of that seed (0 is the seed's own).
    """

    def __init__(self, seed=None, stream=0):
        self.seed = seed
        self.stream = int(stream)
        self.generator = None

    def normal(self, like):
        """Noise shaped like the torch tensor `like`, on its device and in its dtype."""
        import torch

        if like.device.type == "meta" or self.seed is None:  # Keras's symbolic build; or torch's global seed
            return torch.randn(like.shape, device=like.device, dtype=like.dtype)
        if self.generator is None or self.generator.device != like.device:
            self.generator = torch.Generator(device=like.device)
            self.generator.manual_seed((int(self.seed) + 1_000_003 * self.stream) % 2 ** 63)
        return torch.randn(like.shape, device=like.device, dtype=like.dtype, generator=self.generator)
