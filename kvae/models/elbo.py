"""The terms of a VAE's loss, in `keras.ops`: the Gaussian likelihood, the KL and its weight (`KLWeight`: the
warm-up and the rate controller), and the spectral losses added on the audio.

`kvae.models.VAE.compute_loss` adds them up with the model's settings.
"""

import dataclasses
import math

import keras
from keras import ops

from kvae import bounds
from kvae.errors import KvaeError
from kvae.losses import MultiResolutionSTFTLoss, MultiScaleMelLoss, scaled_fft_sizes

DECODER_VARIANCES = ("fixed", "scalar", "diagonal", "optimal")
LOSS_WEIGHTS = {"reconstruction": 1.0, "stft": 0.0, "mel": 0.0}
"""The default weights of a VAE's loss terms, keyed by the names the terms are logged under (as DAC's
`lambdas`): the likelihood (`reconstruction`), the multi-resolution STFT loss (`stft`) and DAC's multi-scale
mel loss (`mel`); 0 turns a spectral term off. The KL's weight is `KLWeight`'s."""
RENAMED_WEIGHTS = {"reconstruction_weight": "reconstruction", "stft_weight": "stft", "mel_weight": "mel"}
"""kvae 0.1's model arguments for the weights, and their keys in the table."""
REDUCTIONS = ("sum", "mean")
_LOG_2PI = math.log(2.0 * math.pi)


def loss_weights(table=None):
    """The full, checked table of loss weights: `LOSS_WEIGHTS` updated by `table` (a dict or None).

    Raises:
        KvaeError: not a table, an unknown term, or a weight outside its row of `kvae.bounds` (0 to 10^6).
    """
    out = dict(LOSS_WEIGHTS)
    if table is None:
        return out
    if not isinstance(table, dict):
        raise KvaeError(f"model.loss_weights: expected a table such as {{ stft = 1.0 }}, got {table!r}")
    for name, value in table.items():
        if name not in LOSS_WEIGHTS:
            raise KvaeError(f"model.loss_weights.{name}: unknown loss term (known: {', '.join(LOSS_WEIGHTS)}; "
                            "the KL's weight is model.beta)")
        out[name] = float(bounds.check("model.loss_weights", value, f"model.loss_weights.{name}"))
    return out


def gaussian_nll(target, decoded, decoder_variance, log_sigma=None, reduction="sum"):
    """Per-example Gaussian negative log-likelihood of `target` under mean `decoded`, shape `(batch,)`.

    Args:
        target: tensor. The reconstruction target, batch first.
        decoded: tensor. The decoder's mean, of the target's shape.
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
    step count inside a training step or a Python int (`KLWeight.value`).
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


def rate_controlled_beta(beta, kl_nats, window_seconds, target_bps, gain):
    """The KL weight after one step of a rate controller that steers the information rate to `target_bps`.

    The batch's rate (`kl_nats` per window as bits per second) above the
    target raises the weight, below it lowers it, multiplicatively: `beta *
    exp(gain * e)` with `e = (rate - target) / target` clipped to [-1, 1], so
    one step moves it by at most a factor `exp(gain)`. A form of the
    constrained-optimisation view of beta (GECO, Rezende & Viola 2018) on the
    rate instead of the distortion: RAVE's "fidelity" picks a latent size, this
    picks a bitrate. No gradient flows through it.
    """
    rate = ops.convert_to_tensor(kl_nats, "float32") / math.log(2.0) / float(window_seconds)
    error = ops.clip((rate - float(target_bps)) / float(target_bps), -1.0, 1.0)
    return ops.stop_gradient(ops.clip(beta * ops.exp(float(gain) * error), 1e-8, 1e4))


KL_SCHEDULES = ("constant", "linear", "log")

KL_CONFIG = {"beta": ("model", "beta"), "schedule": ("train", "kl_schedule"),
             "warmup_steps": ("train", "kl_warmup_steps"), "start": ("train", "kl_start"),
             "bitrate_target": ("model", "bitrate_target"), "bitrate_gain": ("model", "bitrate_gain")}
"""Where a config keeps each `KLWeight` setting, `(section, key)`: the one table `KLWeight.from_config` reads."""


@dataclasses.dataclass(frozen=True)
class KLWeight:
    """The weight of a VAE's KL term (beta): its value, its warm-up and its rate controller, in one place.

    At optimizer step `t` the weight warms up from `start` to `beta` over
    `warmup_steps` steps (`schedule` "linear", or "log": geometric, as RAVE
    v2; "constant": `beta` from the first step), then, with `bitrate_target`
    > 0, a rate controller takes it over (`rate_controlled_beta`): it steers
    the model's information rate to `bitrate_target` bits per second, moving
    the weight by at most a factor `exp(bitrate_gain)` a step. The VAE owns
    one (`VAE.kl_weight`), computes the weight inside each training step from
    the optimizer's step count (no host read, which would wait for a GPU) and
    keeps it in its `beta` variable, saved, so it survives saving, loading and
    resuming. A config describes it in the rows of `KL_CONFIG`; `beta`,
    `bitrate_target` and `bitrate_gain` are the model's (saved with it), the
    warm-up is the training's.

    Args:
        beta: float. The weight (the warm-up's target). Defaults to 1.0.
        schedule: str. `"constant"`, `"linear"` or `"log"`. Defaults to "constant".
        warmup_steps: int. Warm-up length in optimizer steps (0: none). Defaults to 0.
        start: float. The weight at step 0 of a warm-up. Defaults to 1e-6.
        bitrate_target: float. Bits per second the rate controller steers to
            (0: off). Defaults to 0.0.
        bitrate_gain: float. The controller's largest log-step a training step. Defaults to 0.02.

    Raises:
        KvaeError: a setting outside its row of `kvae.bounds` (a negative
            beta, a gain outside (0, 1], ...) or an unknown schedule.
    """

    beta: float = 1.0
    schedule: str = "constant"
    warmup_steps: int = 0
    start: float = 1e-6
    bitrate_target: float = 0.0
    bitrate_gain: float = 0.02

    def __post_init__(self):
        if self.schedule not in KL_SCHEDULES:
            raise KvaeError(f"train.kl_schedule: must be one of {', '.join(KL_SCHEDULES)}, got {self.schedule!r}")
        for field, (section, key) in KL_CONFIG.items():
            if field != "schedule":
                value = bounds.check(f"{section}.{key}", getattr(self, field), f"{section}.{key}")
                object.__setattr__(self, field, int(value) if field == "warmup_steps" else float(value))

    @classmethod
    def from_config(cls, config, base=None):
        """The `KLWeight` of a resolved config: each setting from its `KL_CONFIG` row where the config has it,
        else from `base` (a model's own), else the default."""
        given = {field: config[section][key] for field, (section, key) in KL_CONFIG.items()
                 if key in config.get(section, {})}
        return dataclasses.replace(base, **given) if base is not None else cls(**given)

    @property
    def warms_up(self):
        """Whether there is a warm-up (a schedule other than constant, over at least one step)."""
        return self.schedule != "constant" and self.warmup_steps > 0

    @property
    def moves(self):
        """Whether training changes the weight (a warm-up or a rate controller): then each epoch logs it."""
        return self.warms_up or self.bitrate_target > 0

    def warmed(self, step, dtype="float32"):
        """The warm-up's weight at optimizer step `step` (a tensor or an int), as a tensor."""
        if not self.warms_up:
            return kl_warmup_weight(step, "constant", 1, self.beta, self.beta, dtype)
        return kl_warmup_weight(step, self.schedule, self.warmup_steps, self.start, self.beta, dtype)

    def value(self, step):
        """The warm-up's weight at optimizer step `step`, as a float."""
        return float(ops.convert_to_numpy(self.warmed(step, "float64")))

    def __call__(self, step, beta, kl, window_seconds):
        """The weight of a training step: the warm-up's, then the rate controller's from the current `beta`."""
        weight = self.warmed(step)
        if self.bitrate_target:
            controlled = rate_controlled_beta(beta, kl, window_seconds, self.bitrate_target, self.bitrate_gain)
            weight = ops.where(step > self.warmup_steps, controlled, weight) if self.warms_up else controlled
        return weight


class SpectralTerms:
    """The losses a VAE adds on its audio, each weighted (`VAE.loss_weights`) and logged: the multi-resolution
    STFT loss (`stft`) and DAC's multi-scale mel loss (`mel`). False when both weights are 0.

    Their metrics are set on the model as `loss_tracker_<name>`, where Keras tracks them (as the adversarial
    stage does); `model.stft_loss` is the STFT loss or None.
    """

    def __init__(self, model, weights, stft_fft_sizes):
        self.terms = []
        model.stft_loss = None
        if weights["stft"]:
            sizes = stft_fft_sizes or scaled_fft_sizes(model.sample_rate)
            model.stft_loss = MultiResolutionSTFTLoss(fft_sizes=[s for s in sizes if s <= model.window] or [min(sizes)])
            self.terms.append(("stft", weights["stft"], model.stft_loss))
        if weights["mel"]:
            self.terms.append(("mel", weights["mel"], MultiScaleMelLoss.for_sample_rate(model.sample_rate,
                                                                                            model.window)))
        for name, _, _ in self.terms:
            setattr(model, f"loss_tracker_{name}", keras.metrics.Mean(name=name))

    def __bool__(self):
        return bool(self.terms)

    def __call__(self, model, x, audio):
        """The weighted sum of the terms for target audio `x` and decoded `audio`; updates their metrics."""
        total = 0.0
        for name, weight, loss in self.terms:
            value = loss(x, audio)
            getattr(model, f"loss_tracker_{name}").update_state(value)
            total = total + weight * value
        return total
