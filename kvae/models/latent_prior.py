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
"""

import math

import keras
import numpy as np
from keras import layers, ops

from kvae.errors import KvaeError
from kvae.models.blocks import TransformerBlock
from kvae.models.flow_head import FlowHead, FlowSampler

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


@keras.saving.register_keras_serializable(package="kvae")
class LatentPrior(keras.Model):
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
        frame_rate: float or None. Frames per second of audio (kept for reports).
        latent_shape: list or None. The VAE's latent shape the prior was fitted
            for (checked when generating).
        **kwargs: arguments of `keras.Model`.
    """

    def __init__(self, latent_dim, kind="conv", context_frames=64, width=64, layers=0, kernel_size=3, num_heads=4,
                 components=4, frame_rate=None, latent_shape=None, head="mog", flow_width=64, flow_blocks=3,
                 flow_steps=16, flow_samples=4, **kwargs):
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
        self.latent_mean = self.add_weight(shape=(self.latent_dim,), initializer="zeros", trainable=False,
                                           name="latent_mean")
        self.latent_std = self.add_weight(shape=(self.latent_dim,), initializer="ones", trainable=False,
                                          name="latent_std")
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
        h = self.embed_inputs(x)
        if self.positions is not None:
            h = h + ops.expand_dims(self.positions[: ops.shape(h)[1]], 0)
        for block in self.blocks:
            h = block(h)
        h = self.hidden(self.final_norm(h))
        return h if self.flow is not None else self.head(h)

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
        return _ConvStepper(self, pieces) if self.kind == "conv" else _ContextStepper(self, pieces)

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
            **{f"flow_{k}": v for k, v in self.flow_settings.items()},
        })
        return config


def sample_mixture(weights, means, scales, rngs, temperature=1.0):
    """One draw per piece from per-piece diagonal Gaussian mixtures, piece i with Generator `rngs[i]`.

    `temperature` scales the chosen component's spread (0: its mean). Returns float32 `(n, c)`.
    """
    out = np.empty(means.shape[0:1] + means.shape[2:], np.float32)
    for i, rng in enumerate(rngs):
        k = rng.choice(len(weights[i]), p=weights[i])
        out[i] = means[i, k] + float(temperature) * scales[i, k] * rng.standard_normal(means.shape[-1])
    return out


def _np(variable):
    return np.asarray(ops.convert_to_numpy(variable), np.float32)


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


class _ConvStepper:
    """Cached one-frame step of a conv `LatentPrior`, in numpy (the same arithmetic as `call`)."""

    def __init__(self, prior, pieces):
        self.prior = prior
        self.embed = (_np(prior.embed.kernel), _np(prior.embed.bias))
        self.blocks = [(_np(b.kernel), _np(b.bias), _np(b.project.kernel), _np(b.project.bias), b.dilation)
                       for b in prior.blocks]
        self.history = [np.zeros((pieces, (prior.kernel_size - 1) * b.dilation + 1, prior.width), np.float32)
                        for b in prior.blocks]
        norm = prior.final_norm
        self.norm = (_np(norm.gamma), _np(norm.beta), norm.epsilon)
        self.hidden = (_np(prior.hidden.kernel), _np(prior.hidden.bias))
        self.head = None if prior.head is None else (_np(prior.head.kernel), _np(prior.head.bias))

    def push(self, frame):
        h = np.asarray(frame, np.float32) @ self.embed[0] + self.embed[1]
        width = self.prior.width
        for (kernel, bias, project, project_bias, dilation), past in zip(self.blocks, self.history):
            past[:, :-1] = past[:, 1:]
            past[:, -1] = h
            a = bias + sum(past[:, -1 - j * dilation] @ kernel[j] for j in range(len(kernel)))
            gate = np.tanh(a[:, :width]) / (1.0 + np.exp(-a[:, width:]))
            h = h + gate @ project + project_bias
        gamma, beta, eps = self.norm
        h = (h - h.mean(axis=-1, keepdims=True)) / np.sqrt(h.var(axis=-1, keepdims=True) + eps) * gamma + beta
        h = _gelu(h @ self.hidden[0] + self.hidden[1])
        return self.prior._mixture((h if self.head is None else h @ self.head[0] + self.head[1]).astype(np.float64))


class _ContextStepper:
    """One-frame step of a transformer `LatentPrior`: the model over its last `context_length` frames."""

    def __init__(self, prior, pieces):
        self.prior = prior
        self.context = np.zeros((pieces, 0, prior.latent_dim), np.float32)

    def push(self, frame):
        frame = np.asarray(frame, np.float32)[:, None]
        self.context = np.concatenate([self.context, frame], axis=1)[:, -self.prior.context_length:]
        return self.prior.next_distribution(self.context)
