"""The terms of a VAE's negative ELBO, in `keras.ops`: the Gaussian likelihood, the KL and its weight's warm-up.

`kvae.models.VAE.compute_loss` adds them up with the model's settings.
"""

import math

from keras import ops

DECODER_VARIANCES = ("fixed", "scalar", "diagonal", "optimal")
REDUCTIONS = ("sum", "mean")
_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_nll(target, decoded, decoder_variance, log_sigma=None, reduction="sum"):
    """Per-example Gaussian negative log-likelihood of `target` under mean `decoded`, shape `(batch,)`.

    Args:
        target, decoded: tensors of one shape, batch first.
        decoder_variance: str. `"fixed"`: the squared error alone (unit
            variance up to constants); `"scalar"` or `"diagonal"`: the learned
            `log_sigma` (a scalar, or one per target element); `"optimal"`:
            the sigma-VAE's closed-form sigma of the batch (Rybkin et al. 2021),
            floored at log sigma -6.
        log_sigma: tensor or None. The learned log sigma.
        reduction: str. `"sum"` over an example's elements (a likelihood) or
            `"mean"` (the paper's MSE, which lets the KL win).
    """
    sq = ops.square(ops.subtract(target, decoded))
    if decoder_variance == "fixed":
        per_element = sq
    else:
        if decoder_variance == "optimal":
            log_sigma = ops.maximum(0.5 * ops.log(ops.mean(sq) + 1e-12), -6.0)
        per_element = 0.5 * sq * ops.exp(-2.0 * log_sigma) + log_sigma + 0.5 * _LOG_2PI
    reduce = ops.mean if reduction == "mean" else ops.sum
    return reduce(per_element, axis=tuple(range(1, len(sq.shape))))


def kl_divergence(z_mean, z_log_var, free_bits=0.0):
    """KL(q(z|x) || N(0, I)) summed over the latent and averaged over the batch.

    With `free_bits > 0`, each latent dimension's batch-averaged KL is
    floored at `free_bits` nats before the sum.
    """
    kl = -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
    kl = ops.reshape(kl, (ops.shape(kl)[0], -1))
    if free_bits > 0:
        return ops.sum(ops.maximum(ops.mean(kl, axis=0), free_bits))
    return ops.mean(ops.sum(kl, axis=1))


def kl_warmup_weight(step, kind, steps, start, target, dtype="float32"):
    """The KL weight at optimizer step `step` of a warm-up from `start` to `target` over `steps` steps.

    `kind` is `"constant"` (always `target`), `"linear"` or `"log"` (geometric,
    as RAVE v2). Computed with `keras.ops`, so `step` may be the optimizer's
    step count inside a training step (`VAE.kl_weight`) or a Python int
    (`kvae.training.KLSchedule.value`).
    """
    if kind == "constant":
        return ops.convert_to_tensor(target, dtype)
    t = ops.clip(ops.cast(step, dtype) / float(steps), 0.0, 1.0)
    if kind == "log":
        lo = max(start, 1e-12)
        return ops.exp(math.log(lo) + t * (math.log(max(target, lo)) - math.log(lo)))
    return start + t * (target - start)


def bits_per_second(kl_nats, window_seconds):
    """A KL per window in nats as an information rate in bits per second of audio: `kl / ln 2 / seconds`.

    The KL is what the latent costs to send (bits-back coding), so this is
    the model's rate as a codec's, beside the ladder's Opus rows.
    """
    return float(kl_nats) / math.log(2.0) / float(window_seconds)
