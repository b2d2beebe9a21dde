"""Generating from a `LatentPrior` one frame at a time, in numpy: the steppers and the mixture draw.

`LatentPrior.stepper` returns a `ConvStepper` (cached dilated convolutions,
constant time per frame, as fast WaveNet) or a `ContextStepper` (the model
over its last frames); `sample_mixture` draws one frame per piece from a
Generator, so a seed gives the same piece on every backend.
"""

import math

import numpy as np
from keras import ops


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


class ConvStepper:
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


class ContextStepper:
    """One-frame step of a transformer `LatentPrior`: the model over its last `context_length` frames."""

    def __init__(self, prior, pieces):
        self.prior = prior
        self.context = np.zeros((pieces, 0, prior.latent_dim), np.float32)

    def push(self, frame):
        frame = np.asarray(frame, np.float32)[:, None]
        self.context = np.concatenate([self.context, frame], axis=1)[:, -self.prior.context_length:]
        return self.prior.next_distribution(self.context)
