"""Synthetic test audio shared by the model tests."""

import numpy as np


def tones(n=16, window=750, seed=0, rate=3000):
    """Windows of decaying harmonic tones, a stand-in for music: float32 `(n, window)`."""
    rng = np.random.default_rng(seed)
    t = np.arange(window) / rate
    f0 = rng.uniform(110, 440, size=(n, 1))
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3)) * np.exp(-3 * t)
    return (0.3 * x * rng.uniform(0.5, 1.0, size=(n, 1))).astype("float32")
