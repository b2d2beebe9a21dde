"""What the spectral losses share: their argument check and their view of a batch of audio as signals."""

import operator

from keras import ops

from kvae.errors import KvaeError


def check_positive_int(value, name):
    try:
        if isinstance(value, bool):
            raise TypeError
        result = operator.index(value)
    except TypeError:
        raise KvaeError(f"{name} must be a positive integer, got {value!r}") from None
    if result <= 0:
        raise KvaeError(f"{name} must be a positive integer, got {value!r}")
    return int(result)


def as_signals(x):
    """Returns ``(signals, channels)`` with signals ``(n, samples)``, n = batch * channels."""
    rank = len(x.shape)
    if rank == 1:
        return ops.expand_dims(x, 0), 1
    if rank == 2:
        return x, 1
    if rank == 3:
        channels = x.shape[-1]
        if channels == 1:
            return ops.squeeze(x, axis=-1), 1
        if channels is None:
            raise KvaeError("a 3-D audio batch needs a known number of channels")
        samples = x.shape[1]
        x = ops.transpose(x, (0, 2, 1))
        return ops.reshape(x, (-1, samples)), channels
    raise KvaeError(
        f"audio must be (batch, samples) or (batch, samples, channels), got shape {tuple(x.shape)}"
    )


def safe_sqrt(s):
    """sqrt with a zero (not NaN) gradient at 0, so ``loss(x, x)`` has finite gradients."""
    positive = s > 0
    root = ops.sqrt(ops.where(positive, s, ops.ones_like(s)))
    return ops.where(positive, root, ops.zeros_like(s))
