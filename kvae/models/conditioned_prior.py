"""A latent prior conditioned on a label per sequence: `ConditionedPrior`, and its guided generation steps.

`ConditionedPrior` is a `LatentPrior` with a vocabulary of labels (a
composer, an ensemble, a recording, ...). A learned embedding of the
sequence's label is added to every frame's input embedding, for the
convolutional and the transformer kinds alike. Id 0 is "unconditional":
trained by replacing a crop's label with it at random (`prior.label_dropout`,
classifier-free dropout), so the same prior also generates without a label.
The vocabulary (`labels`) is saved in the prior's config.

The model's input is `(frames, label_ids)`; plain `frames` are unconditional.

Guidance (`guided_stepper`): with a scale `g` other than 1, each step runs
the prior twice, with the label and unconditionally, and extrapolates the
mixture's parameters from the unconditional towards the conditional ones:
`logits_u + g (logits_c - logits_u)`, the same for every component's means
and log scales (clipped to the prior's range); the weights are the softmax of
the guided logits. `g = 1` is the plain conditional prior, `g = 0` the
unconditional one, `g > 1` leans further towards the label.
"""

import keras
import numpy as np
from keras import ops

from kvae.errors import KvaeError
from kvae.models.latent_prior import _LOG_SCALE_RANGE, LatentPrior
from kvae.models.prior_steppers import ContextStepper, ConvStepper, _np

UNCONDITIONAL = 0
_LISTED = 50  # labels an unknown value's error lists


class LabelVocabulary:
    """A prior's vocabulary of labels (id 0 unconditional, label `labels[i]` id `i + 1`), mixed in before the
    prior class: `ConditionedPrior`, and `kvae.models.chunk_prior.ConditionedChunkPrior`.

    Its `label_embed` (one vector of the prior's `width` per id) is made by `add_label_layers`.
    """

    def __init__(self, latent_dim, labels=(), **kwargs):
        labels = [str(v) for v in labels]
        if not labels or len(set(labels)) != len(labels):
            raise KvaeError(f"prior.condition: needs distinct labels, got {labels}")
        self._vocabulary = labels
        super().__init__(latent_dim, **kwargs)

    @property
    def labels(self):
        """The vocabulary: label `labels[i]` has id `i + 1`."""
        return list(self._vocabulary)

    def add_label_layers(self):
        self.label_embed = keras.layers.Embedding(len(self._vocabulary) + 1, self.width, name="label_embed")

    def label_vectors(self, ids, batch):
        """The label embeddings `(batch, width)` of ids `(batch,)` (None: unconditional)."""
        ids = ops.zeros((batch,), "int32") if ids is None else ops.cast(ids, "int32")
        return self.label_embed(ids)

    def label_ids(self, values, what="condition"):
        """Ids of label values (None: unconditional); an unknown value is one line listing the known ones."""
        index = {v: i + 1 for i, v in enumerate(self.labels)}
        out = []
        for value in values:
            if value is None:
                out.append(UNCONDITIONAL)
            elif str(value) in index:
                out.append(index[str(value)])
            else:
                known = ", ".join(self.labels[:_LISTED])
                more = f", ... {len(self.labels)} in all: the prior's .labels" if len(self.labels) > _LISTED else ""
                raise KvaeError(f"{what}: unknown value {str(value)!r} (known: {known}{more})")
        return np.asarray(out, np.int32)

    def get_config(self):
        config = super().get_config()
        config["labels"] = list(self.labels)
        return config


@keras.saving.register_keras_serializable(package="kvae")
class ConditionedPrior(LabelVocabulary, LatentPrior):
    """A `LatentPrior` with a learned embedding of a label per sequence (see the module docstring).

    Args:
        latent_dim: int. Channels of one latent frame.
        labels: list of str. The vocabulary; label `labels[i]` has id `i + 1`
            (id 0 is unconditional).
        **kwargs: the arguments of `LatentPrior`.
    """

    def add_input_layers(self):
        self.add_label_layers()

    def embed_inputs(self, x):
        frames, ids = x if isinstance(x, (tuple, list)) else (x, None)
        h = self.embed(frames)
        return h + ops.expand_dims(self.label_vectors(ids, ops.shape(h)[0]), 1)

    def next_distribution(self, context, ids=None):
        """`LatentPrior.next_distribution`, given the pieces' label ids `(n,)` (None: unconditional)."""
        context = np.asarray(context, np.float32)[:, -self.context_length:]
        ids = np.zeros(len(context), np.int32) if ids is None else np.asarray(ids, np.int32)
        params = self((ops.convert_to_tensor(context), ops.convert_to_tensor(ids)), training=False)[:, -1]
        return self._mixture(np.asarray(ops.convert_to_numpy(params), np.float64))

    def stepper(self, pieces, ids=None):
        """`LatentPrior.stepper` for pieces with label ids `(pieces,)` (None: unconditional)."""
        ids = np.zeros(int(pieces), np.int32) if ids is None else np.asarray(ids, np.int32).reshape(int(pieces))
        if self.kind == "conv":
            step = ConvStepper(self, pieces)
            kernel, bias = step.embed  # the label's embedding is a per-piece bias of the input embedding
            step.embed = (kernel, bias + _np(self.label_embed.embeddings)[ids])
            return step
        return _LabelledContextStepper(self, pieces, ids)


class _LabelledContextStepper(ContextStepper):
    """`ContextStepper` of a conditioned transformer prior: the model over its context with the labels."""

    def __init__(self, prior, pieces, ids):
        super().__init__(prior, pieces)
        self.ids = ids

    def push(self, frame):
        frame = np.asarray(frame, np.float32)[:, None]
        self.context = np.concatenate([self.context, frame], axis=1)[:, -self.prior.context_length:]
        return self.prior.next_distribution(self.context, self.ids)


class GuidedStepper:
    """Steps a conditioned prior with guidance scale `guidance` (see the module docstring): `push(frame)` -> mixture."""

    def __init__(self, prior, ids, guidance):
        ids = np.asarray(ids, np.int32)
        self.n, self.guidance = len(ids), float(guidance)
        self.step = prior.stepper(2 * self.n, np.concatenate([ids, np.full_like(ids, UNCONDITIONAL)]))

    def push(self, frame):
        frame = np.asarray(frame, np.float32)
        mixture = self.step.push(np.concatenate([frame, frame]))
        if not (isinstance(mixture, tuple) and len(mixture) == 3):
            raise KvaeError("guidance: only a Gaussian-mixture prior can be guided; use guidance 1")
        weights, means, scales = mixture
        g, n = self.guidance, self.n
        logits = np.log(np.maximum(weights, 1e-300))
        log_scales = np.log(scales)
        guided = [u + g * (c - u) for c, u in ((a[:n], a[n:]) for a in (logits, means, log_scales))]
        logits = guided[0] - guided[0].max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        return (weights / weights.sum(axis=-1, keepdims=True), guided[1],
                np.exp(np.clip(guided[2], *_LOG_SCALE_RANGE)))


def condition_ids(prior, pieces, condition=None, guidance=1.0):
    """The label ids `(pieces,)` of a condition for a prior (None for a prior fitted without one).

    Args:
        prior: a `LatentPrior`, `ChunkPrior` or one with labels (`LabelVocabulary`).
        pieces: int.
        condition: None (unconditional), a label, or a list of `pieces` labels (None entries unconditional).
        guidance: float. Classifier-free guidance scale (1: the conditional prior as trained).

    Raises:
        KvaeError: a condition or a guidance for a prior fitted without a condition; an unknown label (the
            known ones listed).
    """
    guided, towards_context = float(guidance) != 1.0, getattr(prior, "guides_context", False)
    ids = None
    if not isinstance(prior, LabelVocabulary):
        if condition is not None:
            raise KvaeError("condition: this prior was fitted without a condition "
                            "(fit one with `kvae prior fit RUN --condition COLUMN`)")
        if guided and not towards_context:
            raise KvaeError("guidance: only with a prior fitted with a condition (`kvae prior fit RUN "
                            "--condition`) or a chunk prior (guidance towards its context)")
    else:
        if guided and getattr(prior, "head_kind", "mog") not in ("mog", "chunk"):
            raise KvaeError(f"guidance: only a Gaussian-mixture prior (prior.head = mog) can be guided; this one's "
                            f"head is {prior.head_kind}: use guidance 1")
        values = list(condition) if isinstance(condition, (list, tuple)) else [condition] * int(pieces)
        if len(values) != int(pieces):
            raise KvaeError(f"condition: give one label or one per piece ({pieces}), got {len(values)}")
        ids = prior.label_ids(values)
    if guided and towards_context and (ids is None or not ids.all()):
        prior.check_guidance(guidance)  # a chunk prior's unlabelled pieces are guided towards their context
    return ids


def conditioned_stepper(prior, pieces, condition=None, guidance=1.0):
    """The generation stepper of `pieces` pieces of a prior, for a condition and a guidance scale.

    The arguments and errors are `condition_ids`'s; a conditioned prior without a
    condition generates unconditionally.
    """
    ids = condition_ids(prior, pieces, condition, guidance)
    if getattr(prior, "guides_context", False):  # a chunk prior: guidance towards the label, else the context
        return prior.stepper(int(pieces), guidance=guidance, ids=ids)
    if ids is None:
        return prior.stepper(int(pieces))
    if float(guidance) == 1.0 or not ids.any():
        return prior.stepper(int(pieces), ids)
    return GuidedStepper(prior, ids, guidance)
