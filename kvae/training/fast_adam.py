"""A torch-only fast path for Keras's Adam: per-weight `clipnorm` and the update as fused kernels.

Keras's Adam on the torch backend updates with `torch._foreach_*` ops that
allocate five parameter-sized temporaries a step, and its `clipnorm` runs six
ops per weight. On a CPU, where a step of a small model is memory-bound, that is
a large share of a training step (`benchmarks/profile_step.py` measures it; the
figures are in docs/benchmarks.md). `fuse_adam`
swaps, on one optimizer instance, those two methods for:

- the clipping as four in-place `torch._foreach_*` ops over all gradients
  (`g * clipnorm / max(|g|, clipnorm)` per weight, Keras's formula);
- the update as torch's fused Adam kernel (`torch._fused_adam_`, what
  `torch.optim.Adam(fused=True)` runs), on Keras's own moment variables.

The result is Keras's update: torch adds epsilon to the bias-corrected
`sqrt(v_hat)`, Keras to `sqrt(v)`, so the kernel gets `epsilon /
sqrt(1 - beta_2 ** t)`, which makes the two the same (tests/test_fast_adam.py
checks it against the stock optimizer step by step). The optimizer's class,
config, variables and saved form do not change: a model trained with it
saves and loads as one trained with `keras.optimizers.Adam`, on any backend.

The fused kernel runs where every weight is a float32 CPU tensor; elsewhere
(a GPU, where reading the step count would be a host sync; mixed precision;
amsgrad, weight decay, gradient accumulation; a step under
`torch.compile`) the stock methods run. Weight EMA (`use_ema`) is Keras's
own, applied after the update by the base optimizer, on either path.
Other backends never import this module (`kvae.training.compile_model`
checks the backend first). The optimizer's private methods and slots are
reached through `kvae._keras_private.adam_internals` (None on another Keras
version: the stock optimizer then runs).
"""

import math

import torch

from kvae._keras_private import adam_internals


def _compiling():
    """Under `torch.compile` (`jit_compile=True`) the stock methods run: dynamo cannot trace the fused kernel."""
    return torch.compiler.is_compiling()


def can_fuse(optimizer):
    """Whether `fuse_adam` supports this optimizer (Keras's torch Adam, plain settings)."""
    return _internals(optimizer) is not None


def _internals(optimizer):
    internals = adam_internals(optimizer)
    if internals is None or not hasattr(torch, "_fused_adam_") or optimizer.amsgrad or optimizer.weight_decay \
            or optimizer.gradient_accumulation_steps or optimizer.global_clipnorm is not None \
            or optimizer.clipvalue is not None:
        return None
    return internals


def fuse_adam(optimizer):
    """Install the fused clipping and update on `optimizer` (in place); return whether it was installed."""
    internals = _internals(optimizer)
    if internals is None:
        return False
    stock_clip, stock_update = internals.stock_clip, internals.stock_update

    def clip(grads):
        clipnorm = optimizer.clipnorm
        if not clipnorm or _compiling() or not all(isinstance(g, torch.Tensor) for g in grads):
            return stock_clip(grads)
        norms = torch._foreach_norm(grads)
        torch._foreach_clamp_min_(norms, float(clipnorm))
        torch._foreach_div_(grads, norms)
        if clipnorm != 1.0:
            torch._foreach_mul_(grads, float(clipnorm))
        return grads

    def update(grads, variables, learning_rate):
        params = [v.value for v in variables]
        if _compiling() or not all(p.device.type == "cpu" and p.dtype == torch.float32 and g.dtype == torch.float32
                   for p, g in zip(params, grads)):
            return stock_update(grads, variables, learning_rate)
        m, v2 = internals.slots(variables)
        step = float(optimizer.iterations.value) + 1.0  # a CPU tensor: no device sync
        step_tensor = torch.tensor(step, dtype=torch.float32)
        eps = float(optimizer.epsilon) / math.sqrt(1.0 - float(optimizer.beta_2) ** step)
        torch._fused_adam_(params, list(grads), m, v2, [], [step_tensor] * len(params),
                           lr=float(learning_rate), beta1=float(optimizer.beta_1), beta2=float(optimizer.beta_2),
                           weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)

    internals.install(clip, update)
    return True
