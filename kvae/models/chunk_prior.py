"""A flow-matching prior over whole chunks of latent frames: `ChunkPrior` (`prior.kind = "chunk"`).

`LatentPrior` draws a piece one frame at a time, each frame with noise of
its own: given the true past its draws are close to the data, but the
frame-to-frame noise is a jitter the decoder plays as noise, and over a
free-running piece the errors compound (docs/results.md#prior-draws).
`ChunkPrior` draws `chunk_frames` frames (seconds of music) jointly, by
rectified flow (as latent audio diffusion does, e.g. Stable Audio, with
flow matching instead of a noise schedule): a non-causal network
`v(x_s, s, context)` learns the velocity that carries a chunk of Gaussian
noise to a chunk of normalised latent frames, given the `context_frames`
frames before it.

- Training (`compute_loss`): a crop of `context_frames + chunk_frames`
  frames is split into the context and the chunk `x_1`; with
  `x_0 ~ N(0, I)`, `s ~ U(0, 1)`, `x_s = (1 - s) x_0 + s x_1`, the loss is
  `mean |v(x_s, s, context) - (x_1 - x_0)|^2`. A share `context_dropout`
  of the crops is trained without their context (it is zeroed and its
  marker channel off): the first chunk of a piece has none.
- Sampling (`stepper`, `sampler`, the interface `kvae.inference.generate`
  streams with): each piece's Generator draws the chunk's starting noise
  `x_0` (times the temperature), `flow_steps` Euler steps of the ODE carry
  it to a chunk, its frames are handed out one by one, and the next chunk
  is drawn given the last `context_frames` frames (overlap by context, so
  a piece of any length continues seamlessly). Guidance above 1 (`kvae
  generate --guidance`) leans each chunk further towards its context
  (classifier-free); with `context_noise` the context gets noise of the
  level `sample_noise` it was trained to be told; `play_frames` plays only
  a chunk's first frames before the next is drawn.

The network: the context and the noisy chunk side by side in time, a
marker channel saying which frames are context, projected to `width`;
`layers` residual blocks of a dilated convolution (dilations 1, 2, 4, ...,
32, repeated) and a pointwise MLP, each on a layer-normalised input that
the flow time shifts, scales and gates (adaLN, zero-initialised gates);
a zero-initialised output projection, read on the chunk's frames. With
`patch_frames = P` above 1 the network runs on patches of P frames (as a
latent diffusion transformer patchifies, e.g. DiT): the context is padded on
the left and the chunk on the right to whole patches (a channel marks the
padding), P frames side by side are one step of the sequence, and the output
is unfolded back to frames, so a training step costs about 1/P as much.
"""

import keras
import numpy as np
from keras import ops

from kvae.errors import KvaeError
from kvae.models.flow_head import _VALIDATION_SEED, _layer_norm, _time_features
from kvae.models.conditioned_prior import LabelVocabulary
from kvae.models.latent_prior import LatentStatistics

_MAX_DILATION_POWER = 6  # dilations 1 ... 32, then again


@keras.saving.register_keras_serializable(package="kvae")
class ChunkPrior(LatentStatistics, keras.Model):
    """Flow matching over chunks of latent frames given the frames before them (see the module docstring).

    Args:
        latent_dim: int. Channels of one latent frame.
        context_frames: int. Frames of context a chunk is drawn given. Defaults to 47.
        chunk_frames: int. Frames drawn jointly. Defaults to 94.
        width: int. Hidden width. Defaults to 64.
        layers: int. Residual blocks (0: 12). Defaults to 0.
        kernel_size: int. The blocks' convolution kernel. Defaults to 3.
        flow_steps: int. Euler steps per chunk when generating. Defaults to 16.
        context_dropout: float. Share of training crops without their context. Defaults to 0.1.
        context_noise: float. Training crops' context gets Gaussian noise of a level drawn from
            `U(0, context_noise)` (normalised units), the level an input of the network; 0: none. Defaults to 0.
        sample_noise: float or None. The noise level put on the context when generating (at most
            `context_noise`); None: `context_noise / 4`. Defaults to None.
        play_frames: int or None. Frames of each drawn chunk played before the next chunk is drawn (given
            them); None: the whole chunk. Defaults to None.
        offset_noise: float. The starting noise gets a constant per chunk and channel of this std beside its
            per-frame N(0, 1) (offset noise, as Guttenberg's for image diffusion), so a chunk's mean, which
            i.i.d. noise barely moves (its std is 1/sqrt(chunk_frames)), has a source of its own; 0: none.
            Defaults to 0.
        flow_time: str. How training draws flow times: `"uniform"` on [0, 1], or `"logit-normal"`
            (`sigmoid(N(0, 1))`, more of the middle times, as Stable Diffusion 3). Defaults to "uniform".
        patch_frames: int. Frames per step of the network's sequence (1: every frame its own). Defaults to 1.
        dropout: float. Dropout on each block's residual branch in training (against a small corpus's
            overfitting, as DDPM's on CIFAR-10); validation and generation use the whole network. Defaults to 0.
        frame_rate: float or None. Frames per second of audio (kept for reports).
        latent_shape: list or None. The VAE's latent shape the prior was fitted for.
        **kwargs: arguments of `keras.Model`.
    """

    kind = "chunk"
    head_kind = "chunk"
    guides_context = True  # kvae generate's guidance: classifier-free guidance towards the context
    default_temperature = 1.0  # kvae generate's (trained for 40 CPU-minutes, its pieces were best at 1)

    def __init__(self, latent_dim, context_frames=47, chunk_frames=94, width=64, layers=0, kernel_size=3,
                 flow_steps=16, context_dropout=0.1, context_noise=0.0, sample_noise=None, play_frames=None,
                 flow_time="uniform", patch_frames=1, offset_noise=0.0, dropout=0.0, frame_rate=None, latent_shape=None,
                 **kwargs):
        super().__init__(**kwargs)
        for name, value, low in (("latent_dim", latent_dim, 1), ("context_frames", context_frames, 1),
                                 ("chunk_frames", chunk_frames, 1), ("width", width, 1), ("layers", layers, 0),
                                 ("kernel_size", kernel_size, 2), ("flow_steps", flow_steps, 1),
                                 ("patch_frames", patch_frames, 1)):
            if int(value) < low:
                raise KvaeError(f"prior.{name}: must be at least {low}, got {value}")
        if not 0.0 <= float(context_dropout) <= 1.0:
            raise KvaeError(f"prior.context_dropout: must be in [0, 1], got {context_dropout}")
        self.latent_dim, self.context_frames = int(latent_dim), int(context_frames)
        self.chunk_frames = int(chunk_frames)
        self.width, self.layers_count, self.kernel_size = int(width), int(layers), int(kernel_size)
        self.flow_steps, self.context_dropout = int(flow_steps), float(context_dropout)
        if not 0.0 <= float(context_noise) <= 10.0:
            raise KvaeError(f"prior.context_noise: must be in [0, 10], got {context_noise}")
        self.context_noise = float(context_noise)
        if sample_noise is not None and not 0.0 <= float(sample_noise) <= self.context_noise:
            raise KvaeError(f"prior.sample_noise: must be in [0, prior.context_noise = {self.context_noise:g}] "
                            f"(the levels it was trained with), got {sample_noise}")
        self.sample_noise = None if sample_noise is None else float(sample_noise)
        if play_frames is not None and not 1 <= int(play_frames) <= self.chunk_frames:
            raise KvaeError(f"prior.play_frames: must be in [1, prior.chunk_frames = {self.chunk_frames}], "
                            f"got {play_frames}")
        self.play_frames = None if play_frames is None else int(play_frames)
        if flow_time not in ("uniform", "logit-normal"):
            raise KvaeError(f"prior.flow_time: must be uniform or logit-normal, got {flow_time!r}")
        self.flow_time = flow_time
        if not 0.0 <= float(offset_noise) <= 10.0:
            raise KvaeError(f"prior.offset_noise: must be in [0, 10], got {offset_noise}")
        self.offset_noise = float(offset_noise)
        if not 0.0 <= float(dropout) <= 0.9:
            raise KvaeError(f"prior.dropout: must be in [0, 0.9], got {dropout}")
        self.dropout = float(dropout)
        self.patch_frames = int(patch_frames)
        self.frame_rate = None if frame_rate is None else float(frame_rate)
        self.latent_shape = None if latent_shape is None else [int(d) for d in latent_shape]
        self.seed_generator = keras.random.SeedGenerator(0, name="flow_seeds")

        # === Layers ===
        w = self.width
        self.project_in = keras.layers.Dense(w, name="project_in")
        self.time_in = keras.layers.Dense(w, activation="silu", name="time_in")  # the flow time (and noise level)
        self.time_out = keras.layers.Dense(w, name="time_out")
        count = self.layers_count or 12
        self.dilations = [2 ** (i % _MAX_DILATION_POWER) for i in range(count)]
        self.convs = [keras.layers.Conv1D(w, self.kernel_size, dilation_rate=d, padding="same", name=f"conv_{i}")
                      for i, d in enumerate(self.dilations)]
        self.fc1 = [keras.layers.Dense(2 * w, activation="gelu", name=f"fc1_{i}") for i in range(count)]
        self.fc2 = [keras.layers.Dense(w, name=f"fc2_{i}") for i in range(count)]
        self.modulations = [keras.layers.Dense(3 * w, kernel_initializer="zeros", name=f"modulation_{i}")
                            for i in range(count)]
        self.final_modulation = keras.layers.Dense(2 * w, kernel_initializer="zeros", name="final_modulation")
        self.project_out = keras.layers.Dense(self.latent_dim * self.patch_frames, kernel_initializer="zeros",
                                              name="project_out")
        self.add_label_layers()
        self.add_statistics()
        c = self.latent_dim
        self.velocity(np.zeros((1, 2, c), np.float32), np.zeros((1, 1), np.float32),
                      np.zeros((1, 1, c), np.float32), np.ones((1, 1), np.float32),
                      np.zeros((1, 1), np.float32))  # build every weight now
        self.built = True

    @property
    def context_length(self):
        """Frames of context a chunk is drawn given."""
        return self.context_frames

    @property
    def crop_frames(self):
        """Frames of one training crop: the context and the chunk."""
        return self.context_frames + self.chunk_frames

    @property
    def generation_noise(self):
        """The noise level put on the context when generating."""
        return self.context_noise / 4 if self.sample_noise is None else self.sample_noise

    def add_label_layers(self):
        """Layers of a label's embedding (`ConditionedChunkPrior`); none here."""

    def label_vectors(self, ids, batch):
        """What a label adds to the flow-time features (`ConditionedChunkPrior`); None here."""
        return None

    def velocity(self, x, s, context, has_context, level=None, ids=None, training=False):
        """The velocity at noisy chunks `x` `(b, k, c)`, flow times `s` `(b, 1)`, given `context` `(b, m, c)`.

        `has_context` `(b, 1)`: 1 where the context is real, 0 where there is none (it is then zeros).
        `level` `(b, 1)`: the noise level the context carries (with `context_noise`; None: 0).
        `ids` `(b,)`: label ids of a `ConditionedChunkPrior` (None: unconditional). `training`: each block's
        residual branch dropped out at the rate `dropout` (training only).
        """
        x, s, has_context = (ops.convert_to_tensor(a, "float32") for a in (x, s, has_context))
        context = ops.convert_to_tensor(context, "float32") * ops.expand_dims(has_context, -1)
        h, start = self._patches(context, x, has_context)
        h = self.project_in(h)
        features = _time_features(s)
        if self.context_noise:  # the context's noise level, scaled to [0, 1], beside the flow time
            level = ops.zeros_like(s) if level is None else ops.convert_to_tensor(level, "float32")
            features = ops.concatenate([features, _time_features(level / self.context_noise)], axis=-1)
        y = self.time_out(self.time_in(features))
        label = self.label_vectors(ids, ops.shape(y)[0])
        y = ops.expand_dims(ops.silu(y if label is None else y + label), 1)  # a label joins the time (as DiT's class)
        w = self.width
        for conv, fc1, fc2, modulation in zip(self.convs, self.fc1, self.fc2, self.modulations):
            mod = modulation(y)
            z = _layer_norm(h) * (1.0 + mod[..., w:2 * w]) + mod[..., :w]
            branch = fc2(fc1(conv(z)))
            if training and self.dropout:
                branch = keras.random.dropout(branch, self.dropout, seed=self.seed_generator)
            h = h + mod[..., 2 * w:] * branch
        mod = self.final_modulation(y)
        out = self.project_out(_layer_norm(h) * (1.0 + mod[..., w:]) + mod[..., :w])
        b, steps = ops.shape(out)[0], ops.shape(out)[1]
        out = ops.reshape(out, (b, steps * self.patch_frames, self.latent_dim))  # patches unfolded to frames
        return out[:, start:start + ops.shape(x)[1]]

    def _patches(self, context, x, has_context):
        """The network's input sequence from the context and the noisy chunk, and where the chunk starts in it.

        Each frame gets a marker channel (1: a real context frame); with `patch_frames` above 1 the context is
        padded on the left and the chunk on the right to whole patches, a second channel marking the padding,
        and each patch of frames is one step of the sequence.
        """
        m, k, p = ops.shape(context)[1], ops.shape(x)[1], self.patch_frames
        marker = ops.concatenate([ops.ones_like(context[..., :1]) * ops.expand_dims(has_context, -1),
                                  ops.zeros_like(x[..., :1])], axis=1)
        frames = ops.concatenate([ops.concatenate([context, x], axis=1), marker], axis=-1)
        if p == 1:
            return frames, m
        b, left, right = ops.shape(frames)[0], -m % p, -k % p
        total = left + m + k + right
        is_pad = np.zeros((1, total, 1), np.float32)
        is_pad[:, :left], is_pad[:, left + m + k:] = 1.0, 1.0
        padded = ops.concatenate([ops.pad(frames, ((0, 0), (left, right), (0, 0))),
                                  ops.broadcast_to(ops.convert_to_tensor(is_pad), (b, total, 1))], axis=-1)
        return ops.reshape(padded, (b, total // p, p * (self.latent_dim + 2))), left + m

    def call(self, x, training=False):
        """The crops themselves: the network is `velocity`, and `compute_loss` draws its noise and times."""
        return x

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        frames = ops.cast(y, "float32")  # the crop's true frames (LatentCrops' targets)
        m = min(self.context_frames, int(ops.shape(frames)[1]) - 1)
        context, x1 = frames[:, :m], frames[:, m:]
        b = ops.shape(frames)[0]
        seeds = (self.seed_generator,) * 6 if training else tuple(_VALIDATION_SEED + i for i in range(6))
        x0 = keras.random.normal(ops.shape(x1), seed=seeds[0])
        if self.offset_noise:  # one draw per chunk and channel, on every frame
            x0 = x0 + self.offset_noise * keras.random.normal((b, 1, self.latent_dim), seed=seeds[5])
        if self.flow_time == "logit-normal":
            s = ops.sigmoid(keras.random.normal((b, 1), seed=seeds[1]))
        else:
            s = keras.random.uniform((b, 1), seed=seeds[1])
        dropout = self.context_dropout if training else 0.0
        has_context = ops.cast(keras.random.uniform((b, 1), seed=seeds[2]) >= dropout, "float32")
        level = None
        if self.context_noise:  # noise augmentation: the network learns to trust its context by the level given
            level = keras.random.uniform((b, 1), maxval=self.context_noise, seed=seeds[3])
            context = context + level[:, :, None] * keras.random.normal(ops.shape(context), seed=seeds[4])
        ids = x[1] if isinstance(x, (tuple, list)) else None  # a conditioned prior's crops come with label ids
        v = self.velocity((1.0 - s[:, :, None]) * x0 + s[:, :, None] * x1, s, context, has_context, level, ids,
                          training=training)
        return ops.mean(ops.square(v - (x1 - x0)))

    def draw_chunk(self, context, rngs, temperature=1.0, guidance=1.0, ids=None):
        """A chunk `(n, chunk_frames, c)` of normalised frames per piece given `context` `(n, m, c)` (m may be 0).

        The starting noise of piece i (and the noise put on its context, with `context_noise`) comes from
        `rngs[i]`, so a seed gives the same chunk. `guidance`: classifier-free guidance (the velocity without
        the condition plus `guidance` times the difference with it; 1: as trained) towards the piece's label
        (`ids`, a `ConditionedChunkPrior`'s), or for a piece without one towards its context.
        """
        n, c = len(rngs), self.latent_dim
        x = np.stack([self._start_noise(rng) for rng in rngs]).astype(np.float32) * float(temperature)
        given = bool(context.shape[1])
        if not given:
            context = np.zeros((n, self.context_frames, c), np.float32)  # as trained without one
        context, level = np.asarray(context, np.float32), np.zeros((n, 1), np.float32)
        if given and self.context_noise:  # as trained: the context carries noise of a known level
            level += self.generation_noise
            context = context + self.generation_noise * np.stack(
                [rng.standard_normal(context.shape[1:]) for rng in rngs]).astype(np.float32)
        ids = np.zeros(n, np.int32) if ids is None else np.asarray(ids, np.int32).reshape(n)
        guided = (given or ids.any()) and float(guidance) != 1.0
        has = np.ones((n, 1), np.float32) * given
        if guided:  # the velocity without the condition (the label, else the context) beside it, in one batch
            context, has, level, ids = (np.concatenate([a, a]) for a in (context, has, level, ids))
            has[n:] *= (ids[n:] != 0)[:, None]  # a labelled piece keeps its context and loses its label
            ids[n:] = 0
        context_t, has_t, level_t, ids_t = (ops.convert_to_tensor(a) for a in (context, has, level, ids))
        for step in range(self.flow_steps):
            s = ops.convert_to_tensor(np.full((len(has), 1), step / self.flow_steps, np.float32))
            v = np.asarray(ops.convert_to_numpy(self.velocity(ops.convert_to_tensor(
                np.concatenate([x, x]) if guided else x), s, context_t, has_t, level_t, ids_t)), np.float32)
            if guided:
                v = v[n:] + float(guidance) * (v[:n] - v[n:])
            x = x + v / self.flow_steps
        return x

    def _start_noise(self, rng):
        """One chunk's starting noise `(chunk_frames, c)` from `rng`, as training draws `x_0`."""
        x = rng.standard_normal((self.chunk_frames, self.latent_dim))
        if self.offset_noise:
            x = x + self.offset_noise * rng.standard_normal((1, self.latent_dim))
        return x

    def check_guidance(self, guidance):
        """A one-line error where guidance has nothing to guide from (a prior trained always with its context)."""
        if float(guidance) != 1.0 and not self.context_dropout:
            raise KvaeError(f"guidance: this chunk prior was trained with prior.context_dropout = 0, so it never "
                            f"learned to draw without a context to guide from; use guidance 1, not {guidance:g}")

    def stepper(self, pieces, guidance=1.0, ids=None):
        """The generation state of `pieces` pieces: `push(frame)` takes each frame as it is played.

        `guidance`: each chunk's classifier-free guidance (`draw_chunk`); `ids`: the pieces' label ids
        (`ConditionedChunkPrior`; None: unconditional).
        """
        return ChunkStepper(self, pieces, guidance, ids)

    def sampler(self):
        """`draw(state, rngs, temperature)`: the next normalised frame of each piece (a new chunk when needed)."""
        return lambda state, rngs, temperature=1.0: state.next_frame(rngs, temperature)

    def get_config(self):
        config = super().get_config()
        config.update({
            "latent_dim": self.latent_dim, "context_frames": self.context_frames, "chunk_frames": self.chunk_frames,
            "width": self.width, "layers": self.layers_count, "kernel_size": self.kernel_size,
            "flow_steps": self.flow_steps, "context_dropout": self.context_dropout,
            "context_noise": self.context_noise, "sample_noise": self.sample_noise, "play_frames": self.play_frames,
            "flow_time": self.flow_time, "patch_frames": self.patch_frames, "offset_noise": self.offset_noise,
            "dropout": self.dropout, "frame_rate": self.frame_rate,
            "latent_shape": self.latent_shape,
        })
        return config


@keras.saving.register_keras_serializable(package="kvae")
class ConditionedChunkPrior(LabelVocabulary, ChunkPrior):
    """A `ChunkPrior` conditioned on a label per sequence (`kvae prior fit RUN --config chunk --condition ...`).

    The label's learned embedding is added to the flow-time features that shift, scale and gate every block
    (as DiT adds its class embedding to the timestep's); id 0 is unconditional, trained on the share
    `prior.label_dropout` of the crops. Generation's guidance leans each labelled piece's chunks towards its
    label, the context kept (`draw_chunk`).

    Args:
        latent_dim: int. Channels of one latent frame.
        labels: list of str. The vocabulary; label `labels[i]` has id `i + 1` (id 0 is unconditional).
        **kwargs: the arguments of `ChunkPrior`.
    """


class ChunkStepper:
    """`ChunkPrior`'s generation state: the frames played so far and the rest of the current chunk.

    The first push is the zero start frame `kvae.inference.generate` begins every autoregressive piece with; a
    chunk prior has no start frame (its first chunk is drawn without context), so that push is not kept.
    """

    def __init__(self, prior, pieces, guidance=1.0, ids=None):
        self.prior, self.pieces, self.guidance, self.ids = prior, int(pieces), float(guidance), ids
        self.history = np.zeros((self.pieces, 0, prior.latent_dim), np.float32)
        self.chunk, self.next, self.started = None, 0, False

    def push(self, frame):
        if self.started:
            frame = np.asarray(frame, np.float32)[:, None]
            self.history = np.concatenate([self.history, frame], axis=1)[:, -self.prior.context_frames:]
        self.started = True
        return self

    def next_frame(self, rngs, temperature=1.0):
        if self.chunk is None or self.next == (self.prior.play_frames or self.chunk.shape[1]):
            self.chunk = self.prior.draw_chunk(self.history, rngs, temperature, self.guidance, self.ids)
            self.next = 0
        self.next += 1
        return self.chunk[:, self.next - 1]


def check_chunk_settings(cfg):
    """One-line errors for what a chunk prior does not do, and its settings on another prior (before any work).

    `cfg`: a resolved prior config (sections prior and train).
    """
    p = cfg["prior"]
    if p["kind"] != "chunk":
        for key, off in (("context_noise", 0), ("patch_frames", 1), ("offset_noise", 0), ("dropout", 0)):
            if p.get(key, off) != off:
                raise KvaeError(f"prior.{key}: only for a chunk prior (prior.kind = chunk), not {p['kind']}")
        return
    if p["head"] != "mog":
        raise KvaeError("prior.head: a chunk prior is its own flow-matching model; leave prior.head = mog")
    if cfg["train"]["rollout"]:
        raise KvaeError("prior.train.rollout: only for the frame-by-frame priors (conv, transformer)")
