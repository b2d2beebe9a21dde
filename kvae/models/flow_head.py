"""A flow-matching output head for `LatentPrior`: each latent frame drawn by a small ODE, not a mixture.

MAR's "diffusion loss" (Li et al. 2024, autoregressive image generation
without vector quantization) with rectified flow: the causal trunk of the
prior (conv or transformer, unchanged) gives a context vector `c_t` per
frame, and a small residual MLP `v(x_s, s, c_t)` learns the velocity that
carries noise to the next frame. Training (`FlowHead.loss`): with
`x_0 ~ N(0, I)`, `x_1` the true normalised frame, `s ~ U(0, 1)` and
`x_s = (1 - s) x_0 + s x_1`, the loss is `mean |v - (x_1 - x_0)|^2` over
the frame's dimensions, `samples` draws of `(x_0, s)` per frame and step.
It is a regression error, not a log-likelihood: it is not comparable in
nats with the mixture head's loss.

Sampling (`FlowSampler`, numpy, so a seed gives the same piece on every
backend): `x_0 ~ N(0, temperature^2 I)` from each piece's Generator, then
`steps` Euler steps of the ODE `dx/ds = v(x, s, c_t)` from s = 0 to 1.
Temperature 0 follows the ODE from the origin (a typical frame, with no
spread).

The MLP follows MAR's: the frame is projected to `width`, then `blocks`
residual blocks, each a two-layer SiLU MLP on a layer-normalised input
that `s` and `c_t` shift, scale and gate (adaLN, with zero-initialised
gates so every block starts as the identity), and a zero-initialised
output projection.
"""

import contextlib
import math

import keras
import numpy as np
from keras import layers, ops

_FREQUENCIES = 32  # sinusoidal features of s: 2 x 32
_VALIDATION_SEED = 20240  # the fixed noise of the validation loss (lower variance, comparable epoch to epoch)


def _time_features(s, xp=ops):
    """Sinusoidal features `(..., 64)` of flow times `s` `(..., 1)` in [0, 1] (periods from 1/1000 to 10)."""
    freqs = np.exp(-math.log(10000.0) * np.arange(_FREQUENCIES) / _FREQUENCIES).astype(np.float32)
    angle = 1000.0 * s * (ops.convert_to_tensor(freqs) if xp is ops else freqs)
    return xp.concatenate([xp.cos(angle), xp.sin(angle)], axis=-1)


def _layer_norm(x, xp=ops, eps=1e-6):
    if xp is np:  # np.add.reduce: np.mean's overhead is most of the work for one row
        d = x - np.add.reduce(x, axis=-1, keepdims=True) * (1.0 / x.shape[-1])
        return d / np.sqrt(np.add.reduce(d * d, axis=-1, keepdims=True) * (1.0 / x.shape[-1]) + eps)
    mean = ops.mean(x, axis=-1, keepdims=True)
    return (x - mean) / ops.sqrt(ops.mean(ops.square(x - mean), axis=-1, keepdims=True) + eps)


@keras.saving.register_keras_serializable(package="kvae")
class FlowHead(layers.Layer):
    """The velocity MLP `v(x_s, s, c)` of the flow-matching head, and its training loss (module docstring).

    Args:
        latent_dim: int. Channels of a frame.
        width: int. Hidden width. Defaults to 64.
        blocks: int. Residual blocks. Defaults to 3.
        samples: int. Draws of (noise, time) per frame in a training step. Defaults to 4.
        seed: int. Seed of the training noise. Defaults to 0.
        **kwargs: arguments of `keras.layers.Layer`.
    """

    def __init__(self, latent_dim, width=64, blocks=3, samples=4, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.width, self.blocks_count = int(latent_dim), int(width), int(blocks)
        self.samples, self.seed = int(samples), int(seed)
        zeros = "zeros"
        self.condition = layers.Dense(self.width, name="condition")
        self.time_in = layers.Dense(self.width, activation="silu", name="time_in")
        self.time_out = layers.Dense(self.width, name="time_out")
        self.project_in = layers.Dense(self.width, name="project_in")
        self.modulations = [layers.Dense(3 * self.width, kernel_initializer=zeros, name=f"modulation_{i}")
                            for i in range(self.blocks_count)]
        self.fc1 = [layers.Dense(self.width, activation="silu", name=f"fc1_{i}") for i in range(self.blocks_count)]
        self.fc2 = [layers.Dense(self.width, name=f"fc2_{i}") for i in range(self.blocks_count)]
        self.final_modulation = layers.Dense(2 * self.width, kernel_initializer=zeros, name="final_modulation")
        self.project_out = layers.Dense(self.latent_dim, kernel_initializer=zeros, name="project_out")
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def build(self, cond_shape):
        lead = tuple(cond_shape[:-1])
        w = lead + (self.width,)
        self.condition.build(cond_shape)
        self.time_in.build(lead + (2 * _FREQUENCIES,))
        self.time_out.build(w)
        self.project_in.build(lead + (self.latent_dim,))
        for layer in self.modulations + self.fc1 + self.fc2 + [self.final_modulation, self.project_out]:
            layer.build(w)
        self.built = True

    def velocity(self, x, s, cond):
        """The velocity at frames `x` `(n, c)`, flow times `s` `(n, 1)`, trunk contexts `cond` `(n, d)`."""
        y = ops.silu(self.condition(cond) + self.time_out(self.time_in(_time_features(s))))
        h = self.project_in(x)
        w = self.width
        for modulation, fc1, fc2 in zip(self.modulations, self.fc1, self.fc2):
            m = modulation(y)
            z = _layer_norm(h) * (1.0 + m[:, w:2 * w]) + m[:, :w]
            h = h + m[:, 2 * w:] * fc2(fc1(z))
        m = self.final_modulation(y)
        return self.project_out(_layer_norm(h) * (1.0 + m[:, w:]) + m[:, :w])

    def call(self, inputs):
        x, s, cond = inputs
        return self.velocity(x, s, cond)

    def loss(self, frames, cond, training=True):
        """The flow-matching loss of normalised `frames` `(..., c)` given the trunk's `cond` `(..., d)`.

        Training draws new noise each step (the layer's seed generator);
        validation (`training=False`) the same noise every time.
        """
        y = ops.reshape(ops.cast(frames, "float32"), (-1, self.latent_dim))
        cond = ops.reshape(cond, (-1, ops.shape(cond)[-1]))
        if self.samples > 1:
            y, cond = ops.tile(y, (self.samples, 1)), ops.tile(cond, (self.samples, 1))
        n = ops.shape(y)[0]
        seeds = (self.seed_generator, self.seed_generator) if training else (_VALIDATION_SEED, _VALIDATION_SEED + 1)
        x0 = keras.random.normal((n, self.latent_dim), seed=seeds[0])
        s = keras.random.uniform((n, 1), seed=seeds[1])
        v = self.velocity((1.0 - s) * x0 + s * y, s, cond)
        return ops.mean(ops.square(v - (y - x0)))

    def get_config(self):
        config = super().get_config()
        config.update({"latent_dim": self.latent_dim, "width": self.width, "blocks": self.blocks_count,
                       "samples": self.samples, "seed": self.seed})
        return config


def loss_name(prior):
    """What a `LatentPrior`'s loss (history.csv's loss, val_loss) measures: nats, or the flow head's error."""
    if getattr(prior, "head_kind", "mog") in ("flow", "chunk"):
        return "flow-matching loss (squared velocity error per dimension, not nats)"
    return "negative log-likelihood (nats per frame)"


def head_text(prior):
    """A `LatentPrior`'s output head in words, for the prior fit's printout."""
    if getattr(prior, "head_kind", "mog") == "chunk":
        return (f"flow matching over chunks of {prior.chunk_frames} frames ({len(prior.dilations)} blocks of "
                f"{prior.width}, {prior.flow_steps} steps per chunk; its loss is a squared velocity error, not nats)")
    if getattr(prior, "head_kind", "mog") == "flow":
        flow = prior.flow_settings
        return (f"flow-matching head ({flow['blocks']} blocks of {flow['width']}, {prior.flow_steps} steps per "
                f"frame; its loss is a squared velocity error, not nats)")
    return f"{prior.components} mixture components"


def _dense(layer):
    return (np.asarray(ops.convert_to_numpy(layer.kernel), np.float32),
            np.asarray(ops.convert_to_numpy(layer.bias), np.float32))


def _silu(x):
    return x / (1.0 + np.exp(-x))


class FlowSampler:
    """Draws frames from a `FlowHead` in numpy: its weights as they are now, Euler steps of its ODE.

    Args:
        head: FlowHead.
        steps: int. Euler steps from noise to a frame (network evaluations per frame).
    """

    def __init__(self, head, steps):
        self.steps = int(steps)
        self.latent_dim, self.width = head.latent_dim, head.width
        self.condition, self.time_in = _dense(head.condition), _dense(head.time_in)
        self.time_out = _dense(head.time_out)
        self.project_in, self.project_out = _dense(head.project_in), _dense(head.project_out)
        self.blocks = [(_dense(m), _dense(a), _dense(b)) for m, a, b in zip(head.modulations, head.fc1, head.fc2)]
        self.final_modulation = _dense(head.final_modulation)
        times = (np.arange(self.steps, dtype=np.float32) / self.steps)[:, None]
        t = _time_features(times, np)  # the time embedding of each step, the same for every frame
        self.time_embedding = (_silu(t @ self.time_in[0] + self.time_in[1]) @ self.time_out[0]
                               + self.time_out[1]).astype(np.float32)

    def modulations(self, step, cond_embedding):
        """Each block's (shift, scale, gate) and the output's (shift, scale) at Euler step(s) `step`."""
        y = _silu(cond_embedding + self.time_embedding[step])
        lead, y = y.shape[:-1], y.reshape(-1, self.width)  # one product for every step and piece

        def dense(kernel, bias):
            return (y @ kernel + bias).reshape(lead + (-1,))

        return [dense(*m) for m, _, _ in self.blocks], dense(*self.final_modulation)

    def velocity(self, x, step, cond_embedding, modulations=None):
        """The velocity at `x` `(n, c)` at Euler step `step`, given the `condition` layer's output."""
        blocks, final = modulations or self.modulations(step, cond_embedding)
        h = x @ self.project_in[0] + self.project_in[1]
        w = self.width
        for m, (_, (k1, b1), (k2, b2)) in zip(blocks, self.blocks):
            z = _layer_norm(h, np) * (1.0 + m[..., w:2 * w]) + m[..., :w]
            h = h + m[..., 2 * w:] * (_silu(z @ k1 + b1) @ k2 + b2)
        out = _layer_norm(h, np) * (1.0 + final[..., w:]) + final[..., :w]
        return out @ self.project_out[0] + self.project_out[1]

    def __call__(self, cond, rngs, temperature=1.0):
        """One normalised frame per piece `(n, c)` float32 given trunk contexts `cond` `(n, d)`; piece i: `rngs[i]`."""
        with _one_blas_thread():
            cond = np.asarray(cond, np.float32)
            embedding = cond @ self.condition[0] + self.condition[1]
            # the modulations of every step at once: they depend on the frame's context and the step, not on x
            blocks, final = self.modulations(np.arange(self.steps)[:, None], embedding[None])
            x = np.stack([rng.standard_normal(self.latent_dim) for rng in rngs]).astype(np.float32)
            x *= float(temperature)
            for step in range(self.steps):
                x = x + self.velocity(x, step, None, ([m[step] for m in blocks], final[step])) / self.steps
            return x.astype(np.float32)


_BLAS = []


def _one_blas_thread():
    """A context in which numpy's BLAS runs on one thread.

    The sampler's products are tiny (one row per piece): a threaded
    matrix-vector product costs its threads' wake-up, milliseconds on a busy
    machine, for microseconds of work.
    """
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController  # scikit-learn's dependency

            _BLAS.append(ThreadpoolController().select(user_api="blas"))
        except Exception:  # noqa: BLE001 - without it the products are only slower
            _BLAS.append(None)
    return _BLAS[0].limit(limits=1) if _BLAS[0] is not None else contextlib.nullcontext()
