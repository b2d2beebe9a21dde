"""Data-parallel training on the torch backend: the gradient all-reduce of kvae's torch training steps.

Keras 3.15's torch trainer has no DistributedDataParallel of its own. When a
`torch.distributed` process group of more than one rank is initialised (as
`kvae.fit` does under `torchrun`), the VAE trains with `torch_train_step`:
Keras's stock torch step (forward, `compute_loss`, `backward`,
`optimizer.apply`) with one addition between the backward pass and the
update, `reduce_gradients`: every gradient, flattened into one bucket with
the step's loss, is summed over the ranks by one `torch.distributed.all_reduce`
and divided by the number of ranks (gloo has no AVG). Each rank's loss is a
mean over its batch, so the averaged gradient is the gradient of the mean over
the global batch, as with DDP. The loss rides along so that every rank logs
(and `TerminateOnNaN` stops on) the same global loss, and no rank leaves the
loop a step before the others. The adversarial step (`kvae.models.adversarial`)
reduces its generator and discriminator gradients the same way.

Nothing here imports torch until a step runs on the torch backend; without a
process group every function is a no-op and the stock Keras step runs.
"""

import keras

from kvae.errors import KvaeError


def world_size():
    """The ranks of the initialised `torch.distributed` process group; 1 when there is none (or not on torch)."""
    if keras.backend.backend() != "torch":
        return 1
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def collective_error(exc, what):
    """A one-line `KvaeError` for a collective that failed (another rank died or timed out)."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else "?"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return KvaeError(f"rank {rank}: lost the other ranks while {what} ({type(exc).__name__}: {first}); "
                     "a rank failed, was killed or timed out: rerun the same command to resume from the run folder")


def reduce_gradients(grads, loss=None):
    """Average `grads` (torch tensors or None, in place) and `loss` over the ranks, in one bucket.

    Args:
        grads: list of torch tensors or None (a weight without a gradient;
            the same on every rank, as every rank runs the same model).
        loss: a scalar torch tensor or None.

    Returns:
        The averaged loss (detached), or None.
    """
    import torch
    import torch.distributed as dist

    world = world_size()
    present = [g for g in grads if g is not None]
    if world == 1:
        return None if loss is None else loss.detach()
    extra = [] if loss is None else [loss.detach().reshape(1).to(present[0].dtype if present else torch.float32)]
    tensors = present + extra
    if not tensors:
        return None
    flat = torch.cat([t.reshape(-1) for t in tensors])
    try:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    except (RuntimeError, ValueError) as exc:  # DistBackendError is a RuntimeError
        raise collective_error(exc, "averaging gradients") from None
    flat.div_(world)
    offset = 0
    for g in present:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n
    return flat[offset].to(loss.dtype) if loss is not None else None


def torch_train_step(model, data):
    """Keras's stock torch train step with the gradients (and loss) averaged over the ranks.

    The same as `keras.src.backend.torch.trainer.TorchTrainer.train_step` of
    Keras 3.15 (checked against 3.15.1) but for `reduce_gradients` between
    `backward` and `optimizer.apply`, and the loss tracker fed the averaged loss.
    """
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = model(x, training=True)
    model.zero_grad()
    loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    scaled = model.optimizer.scale_loss(loss)
    trainable = model.trainable_weights[:]
    if trainable:
        scaled.backward()
        grads = [v.value.grad for v in trainable]
        loss = reduce_gradients(grads, loss)
        with torch.no_grad():
            model.optimizer.apply(grads, trainable)
    batch = next(t for t in keras.tree.flatten(x) if t is not None).shape[0]
    model._loss_tracker.update_state(loss, sample_weight=batch)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
