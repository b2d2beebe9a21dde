"""An autoregressive prior over a VAE's latent sequence: `LatentPrior`.

Decoding independent N(0, I) draws ties nothing in one moment of a piece to
the next. Like RAVE's prior, `LatentPrior` is a causal model over the
sequence of latent frames of contiguous audio (`kvae.inference.latents`):
from the frames so far it predicts the distribution of the next one, and a
piece is generated frame by frame.

- `kind="conv"`: a stack of gated, residual, causal dilated 1-D convolutions
  (WaveNet / RAVE's prior), dilations 1, 2, 4, ... until the receptive field
  covers `context_frames`.
- `kind="transformer"`: pre-norm Transformer blocks with a causal mask and
  learned positions over at most `context_frames` frames.

The output distribution (`head="mog"`) is a mixture of `components`
diagonal Gaussians per frame, so a frame can have several modes (a note on
or off, one chord or another) where a single Gaussian would average them. The model works on
normalised frames: `latent_mean` and `latent_std` (non-trainable weights,
saved with it) are the training frames' statistics; `normalize` and
`denormalize` convert. Sampling (`sample_next`) is numpy from a Generator,
so a seed gives the same piece on every backend.

With `head="flow"` the trunk's features condition a small flow-matching
MLP instead (`kvae.models.flow_head`): each frame is drawn by `flow_steps`
Euler steps of an ODE from Gaussian noise, with no assumption on its shape.

Trained with teacher forcing: inputs are the frames shifted by one with a
zero "start" frame in front (`shift_inputs`); the loss is the negative
log-likelihood of each frame, in nats per frame (the flow head: its
flow-matching error, not comparable in nats).

With `rollout` above 0 (mixture head) a training step runs the model twice:
first, without gradients, on the true past, drawing every frame from its
prediction; then on inputs where each frame is, with probability
`rollout`, replaced by that draw (parallel scheduled sampling, Duckworth et
al. 2019). The loss is still the true next frame's likelihood: the prior
learns to continue from a past that holds its own draws, as it does when it
generates (docs/results.md#prior-draws).
"""

import math

import keras
import numpy as np
from keras import layers, ops

from kvae.errors import KvaeError
from kvae.models.blocks import TransformerBlock
from kvae.models.flow_head import FlowHead, FlowSampler
from kvae.models.prior_steppers import ContextStepper, ConvStepper, sample_mixture

KINDS = ("conv", "transformer")
HEADS = ("mog", "flow")
_LOG_SCALE_RANGE = (-7.0, 3.0)
_LOG_2PI = math.log(2.0 * math.pi)


@keras.saving.register_keras_serializable(package="kvae")
class CausalConvBlock(layers.Layer):
    """A gated residual block: causal dilated convolution, tanh x sigmoid gate, 1x1 projection, residual add.

    The convolution is written as `kernel_size` shifted matrix products
    (`y[t] = b + sum_j x[t - j * dilation] @ kernel[j]`) rather than a
    dilated `Conv1D`: torch's CPU kernel for dilated convolutions is several
    times slower than a plain one, and the same weights then drive the cached
    one-frame-at-a-time step of generation (`LatentPrior.stepper`).
    """

    def __init__(self, width, kernel_size, dilation, **kwargs):
        super().__init__(**kwargs)
        self.width = int(width)
        self.kernel_size = int(kernel_size)
        self.dilation = int(dilation)
        self.project = layers.Dense(self.width, name="project")

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(self.kernel_size, self.width, 2 * self.width),
                                      initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(2 * self.width,), initializer="zeros", name="bias")
        self.project.build(tuple(input_shape[:-1]) + (self.width,))
        self.built = True

    def call(self, x):
        span = (self.kernel_size - 1) * self.dilation
        t = ops.shape(x)[1]
        padded = ops.pad(x, ((0, 0), (span, 0), (0, 0)))
        h = self.bias
        for j in range(self.kernel_size):  # tap j looks j * dilation frames back
            lag = span - j * self.dilation
            h = h + ops.matmul(padded[:, lag:lag + t], self.kernel[j])
        gate = ops.tanh(h[..., : self.width]) * ops.sigmoid(h[..., self.width:])
        return x + self.project(gate)

    def get_config(self):
        config = super().get_config()
        config.update({"width": self.width, "kernel_size": self.kernel_size, "dilation": self.dilation})
        return config


@keras.saving.register_keras_serializable(package="kvae")
class CausalTransformerBlock(TransformerBlock):
    """`TransformerBlock` whose attention only looks back (a causal mask)."""

    def call(self, x):
        h = self.norm1(x)
        x = x + self.attention(h, h, use_causal_mask=True)
        return x + self.ff2(self.ff1(self.norm2(x)))


class LatentStatistics:
    """The training frames' per-channel mean and std, kept as non-trainable weights, for a Keras prior model."""

    def add_statistics(self):
        """Create `latent_mean` and `latent_std` (call in `__init__`, once `latent_dim` is set)."""
        self.latent_mean = self.add_weight(shape=(self.latent_dim,), initializer="zeros", trainable=False,
                                           name="latent_mean")
        self.latent_std = self.add_weight(shape=(self.latent_dim,), initializer="ones", trainable=False,
                                          name="latent_std")

    def set_statistics(self, mean, std):
        """Store the per-channel mean and std (floored at 1e-2) of the training frames."""
        self.latent_mean.assign(np.asarray(mean, np.float32).reshape(self.latent_dim))
        self.latent_std.assign(np.maximum(np.asarray(std, np.float32).reshape(self.latent_dim), 1e-2))

    def normalize(self, frames):
        """Latent frames to the prior's normalised units (numpy)."""
        mean = np.asarray(ops.convert_to_numpy(self.latent_mean))
        std = np.asarray(ops.convert_to_numpy(self.latent_std))
        return ((np.asarray(frames, np.float32) - mean) / std).astype(np.float32)

    def denormalize(self, frames):
        """Normalised frames back to latent units (numpy)."""
        mean = np.asarray(ops.convert_to_numpy(self.latent_mean))
        std = np.asarray(ops.convert_to_numpy(self.latent_std))
        return (np.asarray(frames, np.float32) * std + mean).astype(np.float32)


@keras.saving.register_keras_serializable(package="kvae")
class LatentPrior(LatentStatistics, keras.Model):
    """A causal model of a VAE's latent frames with a Gaussian-mixture output (see the module docstring).

    Args:
        latent_dim: int. Channels of one latent frame.
        kind: str. `"conv"` (causal dilated convolutions) or `"transformer"`.
            Defaults to "conv".
        context_frames: int. Frames of context: the receptive field the conv
            stack is grown to, or the transformer's attention span. Defaults to 64.
        width: int. Hidden width. Defaults to 64.
        layers: int. Conv blocks (0: as many as `context_frames` needs) or
            transformer blocks (0: 2). Defaults to 0.
        kernel_size: int. Conv kernel size. Defaults to 3.
        num_heads: int. Attention heads (transformer). Defaults to 4.
        components: int. Mixture components per frame. Defaults to 4.
        head: str. `"mog"` (the Gaussian mixture) or `"flow"` (flow matching,
            `kvae.models.flow_head`). Defaults to "mog".
        flow_width: int. The flow head's width. Defaults to 64.
        flow_blocks: int. The flow head's residual blocks. Defaults to 3.
        flow_steps: int. Euler steps per generated frame (flow head). Defaults to 16.
        flow_samples: int. (noise, time) draws per frame in a training step (flow head). Defaults to 4.
        rollout: float. Share of training input frames replaced by the
            model's own draws (see the module docstring; mixture head only).
            Defaults to 0 (teacher forcing).
        frame_rate: float or None. Frames per second of audio (kept for reports).
        latent_shape: list or None. The VAE's latent shape the prior was fitted
            for (checked when generating).
        **kwargs: arguments of `keras.Model`.
    """

    def __init__(self, latent_dim, kind="conv", context_frames=64, width=64, layers=0, kernel_size=3, num_heads=4,
                 components=4, frame_rate=None, latent_shape=None, head="mog", flow_width=64, flow_blocks=3,
                 flow_steps=16, flow_samples=4, rollout=0.0, **kwargs):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise KvaeError(f"prior.kind: must be one of {', '.join(KINDS)}, got {kind!r}")
        if head not in HEADS:
            raise KvaeError(f"prior.head: must be one of {', '.join(HEADS)}, got {head!r}")
        for name, value, low in (("latent_dim", latent_dim, 1), ("context_frames", context_frames, 1),
                                 ("width", width, 1), ("layers", layers, 0), ("kernel_size", kernel_size, 2),
                                 ("num_heads", num_heads, 1), ("components", components, 1),
                                 ("flow_width", flow_width, 1), ("flow_blocks", flow_blocks, 1),
                                 ("flow_steps", flow_steps, 1), ("flow_samples", flow_samples, 1)):
            if int(value) < low:
                raise KvaeError(f"prior.{name}: must be at least {low}, got {value}")
        if not 0.0 <= float(rollout) <= 1.0:
            raise KvaeError(f"prior.train.rollout: must be in [0, 1], got {rollout}")
        if float(rollout) and head != "mog":
            raise KvaeError(f"prior.train.rollout: needs prior.head = mog (the draws are the mixture's), got {head!r}")
        if kind == "transformer" and int(width) % int(num_heads):
            raise KvaeError(f"prior.width: must be a multiple of num_heads ({num_heads}), got {width}")
        self.latent_dim = int(latent_dim)
        self.kind = kind
        self.context_frames = int(context_frames)
        self.width = int(width)
        self.layers_count = int(layers)
        self.kernel_size = int(kernel_size)
        self.num_heads = int(num_heads)
        self.components = int(components)
        self.frame_rate = None if frame_rate is None else float(frame_rate)
        self.latent_shape = None if latent_shape is None else [int(d) for d in latent_shape]
        self.head_kind, self.flow_steps = head, int(flow_steps)
        self.flow_settings = {"width": int(flow_width), "blocks": int(flow_blocks), "samples": int(flow_samples)}
        self.rollout = float(rollout)
        # Only a rollout prior holds a seed generator, so priors saved before it load unchanged.
        self.rollout_seeds = keras.random.SeedGenerator(0, name="rollout_seeds") if self.rollout else None

        # === Layers ===
        self.embed = keras.layers.Dense(self.width, name="embed")
        if kind == "conv":
            self.dilations = []
            while (self.layers_count and len(self.dilations) < self.layers_count) or (
                    not self.layers_count and self.receptive_field < self.context_frames):
                self.dilations.append(2 ** len(self.dilations))
            self.blocks = [CausalConvBlock(self.width, self.kernel_size, d, name=f"block_{i}")
                           for i, d in enumerate(self.dilations)]
            self.positions = None
        else:
            self.dilations = []
            self.blocks = [CausalTransformerBlock(self.width, self.num_heads, 2 * self.width, name=f"block_{i}")
                           for i in range(self.layers_count or 2)]
            self.positions = self.add_weight(
                shape=(self.context_frames, self.width), initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="positions")
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")
        self.hidden = keras.layers.Dense(self.width, activation="gelu", name="hidden")
        self.head = self.flow = None
        if head == "mog":
            self.head = keras.layers.Dense(self.components * (1 + 2 * self.latent_dim), kernel_initializer="zeros",
                                           name="head")
        else:  # the trunk's features go to the flow head (in the loss, and when sampling)
            self.flow = FlowHead(self.latent_dim, **self.flow_settings, name="flow_head")
            self.flow.build((None, self.width))
        self.add_statistics()
        self.add_input_layers()
        self(np.zeros((1, 2, self.latent_dim), np.float32))  # create every weight now, as the VAEs do

    # -- shape of the context ------------------------------------------------------

    @property
    def receptive_field(self):
        """Frames the prediction of the next frame depends on (the conv stack's receptive field)."""
        if self.kind == "transformer":
            return self.context_frames
        return 1 + (self.kernel_size - 1) * sum(getattr(self, "dilations", []))

    @property
    def context_length(self):
        """Frames of context `sample_next` uses (the last ones)."""
        return self.receptive_field

    # -- the network ------------------------------------------------------------------

    def call(self, x, training=False):
        if training and self.rollout:
            x = self.rolled_out(x)
        return self.predict_params(x)

    def predict_params(self, x):
        """The per-frame outputs for teacher-forcing inputs `x` (mixture parameters, or the flow head's features)."""
        h = self.embed_inputs(x)
        if self.positions is not None:
            h = h + ops.expand_dims(self.positions[: ops.shape(h)[1]], 0)
        for block in self.blocks:
            h = block(h)
        h = self.hidden(self.final_norm(h))
        return h if self.flow is not None else self.head(h)

    def rolled_out(self, x):
        """`x` with each input frame (but the start frame), with probability `rollout`, replaced by a draw
        from the model's prediction of it given the true past (no gradient flows through the draws)."""
        frames, rest = (x[0], tuple(x[1:])) if isinstance(x, (tuple, list)) else (x, None)
        logits, means, log_scales = self.split(ops.stop_gradient(self.predict_params(x)))
        b, t = ops.shape(frames)[0], ops.shape(frames)[1]
        k = self.components
        choice = keras.random.categorical(ops.reshape(logits, (-1, k)), 1, seed=self.rollout_seeds)
        pick = ops.expand_dims(ops.one_hot(ops.reshape(choice, (b, t)), k, dtype=means.dtype), -1)
        mean, scale = ops.sum(means * pick, axis=-2), ops.sum(ops.exp(log_scales) * pick, axis=-2)
        draws = mean + scale * keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.rollout_seeds)
        # The draw at position i is of target frame i, which is input frame i + 1 (the start frame stays).
        drawn = ops.concatenate([frames[:, :1], ops.cast(draws[:, :-1], frames.dtype)], axis=1)
        swap = keras.random.uniform((b, t, 1), seed=self.rollout_seeds) < self.rollout
        frames = ops.stop_gradient(ops.where(swap, drawn, frames))
        return frames if rest is None else (frames, *rest)

    def add_input_layers(self):
        """Create more input layers before the weights are built (`kvae.models.ConditionedPrior`'s label embedding)."""

    def embed_inputs(self, x):
        """The per-frame inputs in the hidden width (`kvae.models.ConditionedPrior` adds its label's embedding)."""
        return self.embed(x)

    def split(self, params):
        """Mixture logits `(..., k)`, means and log scales `(..., k, latent_dim)` from `call`'s output."""
        k, c = self.components, self.latent_dim
        lead = tuple(ops.shape(params)[:-1])
        logits = params[..., :k]
        means = ops.reshape(params[..., k:k + k * c], lead + (k, c))
        log_scales = ops.clip(ops.reshape(params[..., k + k * c:], lead + (k, c)), *_LOG_SCALE_RANGE)
        return logits, means, log_scales

    def log_likelihood(self, y, params):
        """Log density of normalised frames `y` `(b, t, latent_dim)` under `params`: `(b, t)` nats."""
        logits, means, log_scales = self.split(params)
        z = (ops.expand_dims(y, -2) - means) * ops.exp(-log_scales)
        per_component = ops.sum(-0.5 * ops.square(z) - log_scales - 0.5 * _LOG_2PI, axis=-1)
        return ops.logsumexp(ops.log_softmax(logits, axis=-1) + per_component, axis=-1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.flow is not None:
            return self.flow.loss(y, y_pred, training)
        return -ops.mean(self.log_likelihood(ops.cast(y, "float32"), y_pred))

    @staticmethod
    def shift_inputs(frames):
        """Teacher-forcing inputs of normalised frames `(b, t, c)`: a zero start frame, then frames[:, :-1]."""
        frames = np.asarray(frames, np.float32)
        return np.concatenate([np.zeros_like(frames[:, :1]), frames[:, :-1]], axis=1)

    # -- using it ------------------------------------------------------------------------

    def next_distribution(self, context):
        """Distribution of the frame after `context` (normalised inputs `(n, t, c)`, start frame included).

        One full forward pass over the last `context_length` frames. Returns
        numpy `(weights (n, k), means (n, k, c), scales (n, k, c))`, or with
        the flow head the trunk's features `(n, width)` that condition it.
        """
        context = np.asarray(context, np.float32)[:, -self.context_length:]
        params = self(ops.convert_to_tensor(context), training=False)[:, -1]
        return self._mixture(np.asarray(ops.convert_to_numpy(params), np.float64))

    def _mixture(self, params):
        if self.flow is not None:
            return params.astype(np.float32)
        k, c = self.components, self.latent_dim
        logits = params[:, :k] - params[:, :k].max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        means = params[:, k:k + k * c].reshape(-1, k, c)
        scales = np.exp(np.clip(params[:, k + k * c:].reshape(-1, k, c), *_LOG_SCALE_RANGE))
        return weights / weights.sum(axis=-1, keepdims=True), means, scales

    def stepper(self, pieces):
        """A frame-at-a-time generator state for `pieces` pieces: `push(frame)` returns the next frame's distribution.

        For `kind="conv"` it caches each block's last inputs and computes one
        frame per push in numpy (constant time and memory per frame, as fast
        WaveNet); for `kind="transformer"` it keeps the last `context_length`
        frames and runs the model over them.
        """
        return ConvStepper(self, pieces) if self.kind == "conv" else ContextStepper(self, pieces)

    def sampler(self):
        """`draw(distribution, rngs, temperature)`: one normalised frame per piece from what `push` returns."""
        if self.flow is not None:
            return FlowSampler(self.flow, self.flow_steps)
        return lambda mixture, rngs, temperature=1.0: sample_mixture(*mixture, rngs, temperature)

    def sample_next(self, context, rngs, temperature=1.0):
        """Draw the next normalised frame of each piece `(n, c)` given a context (see `next_distribution`)."""
        return self.sampler()(self.next_distribution(context), rngs, temperature)

    def get_config(self):
        config = super().get_config()
        config.update({
            "latent_dim": self.latent_dim, "kind": self.kind, "context_frames": self.context_frames,
            "width": self.width, "layers": self.layers_count, "kernel_size": self.kernel_size,
            "num_heads": self.num_heads, "components": self.components, "frame_rate": self.frame_rate,
            "latent_shape": self.latent_shape, "head": self.head_kind, "flow_steps": self.flow_steps,
            **{f"flow_{k}": v for k, v in self.flow_settings.items()}, "rollout": self.rollout,
        })
        return config
