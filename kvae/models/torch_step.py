"""The torch training step of kvae's VAEs: plain, data-parallel and adversarial, in one place.

On the torch backend `VAE.train_step` runs `train_step` here; the other
backends run Keras's stock step, which calls the same `VAE.compute_loss`.
It is Keras's torch step, as the guide "Customizing what happens in fit()
with PyTorch" writes it on the public hooks (`model(x, training=True)`,
`compute_loss`, `loss.backward()`, `optimizer.apply`, the `loss` metric of
`model.metrics`, `compute_metrics`), with two additions:

- Data parallel. Keras 3.15's torch trainer has no DistributedDataParallel
  of its own. When a `torch.distributed` process group of more than one rank
  is initialised (as `kvae.fit` does under `torchrun`), `reduce_gradients`
  runs between the backward pass and the update: every gradient, flattened
  into one bucket with the step's loss, is summed over the ranks by one
  `all_reduce` and divided by the number of ranks (gloo has no AVG). Each
  rank's loss is a mean over its batch, so the averaged gradient is the
  gradient of the mean over the global batch, as with DDP. The loss rides
  along so that every rank logs (and `TerminateOnNaN` stops on) the same
  global loss, and no rank leaves the loop a step before the others. Without
  a process group it is a no-op.
- The adversarial stage (`kvae.models.adversarial`): from the stage's `after`
  step on, the encoder is frozen (unless `freeze_encoder` is false) and,
  after the generator's update, the
  discriminators step on their own loss with their own optimizer (a second
  backward pass), their gradients reduced the same way.

Nothing here imports torch until a step runs on the torch backend.
"""

import keras
from keras import ops

from kvae.errors import KvaeError


class HostState:
    """What the torch step keeps on the host between the steps of one `fit` (not saved; reset by `new_fit`).

    Attributes:
        step: int or None. The optimizer's step count, read from the device
            once per `fit` / `train_on_batch` call and then counted here, so
            that choosing the stage does not wait for a GPU every step.
        loss_metric: the `loss` metric of `model.metrics`, looked up once.
    """

    def __init__(self):
        self.step = None
        self.loss_metric = None


def new_fit(model):
    """Forget the host state of the last `fit`: the step count is read afresh, the metrics looked up again."""
    model.host_state = HostState()


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
    if world == 1:
        return None if loss is None else loss.detach()
    present = [g for g in grads if g is not None]
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


def _host_step(model, state):
    """The optimizer step this step is, on the host (see `HostState.step`).

    A loss-scaling optimizer (mixed_float16) may skip a step, so under it the
    step is read from the device every time.
    """
    step = state.step
    if step is None or isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        step = int(ops.convert_to_numpy(model.optimizer.iterations))
    state.step = step + 1
    return step


def _loss_metric(model, state):
    if state.loss_metric is None:
        state.loss_metric = next(m for m in model.metrics if m.name == "loss")
    return state.loss_metric


def train_step(model, data):
    """One torch training step of `model` (a `kvae.models.VAE`); returns the logs, as Keras's step does."""
    import torch

    state = model.host_state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    stage = model.adversarial
    adversarial = stage is not None and stage.active(_host_step(model, state))
    frozen = adversarial and stage.freeze_encoder
    trainable = model.trainable_weights
    if stage is not None:  # the discriminators step on their own loss; in RAVE's phase 2 the encoder is frozen
        skip = model.discriminator.trainable_weights + (model.encoder.trainable_weights if frozen else [])
        skip = {id(v) for v in skip}
        trainable = [v for v in trainable if id(v) not in skip]

    model.zero_grad()
    if frozen:
        with torch.no_grad():
            z_mean, z_log_var = model.encode(x)
        y_pred = (model.decode(model.posterior_sample(z_mean, z_log_var)), z_mean, z_log_var)
    else:
        y_pred = model(x, training=True)
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    if adversarial:
        real, fake = stage.sub_batch(x), stage.sub_batch(model.to_audio(y_pred[0]))
        with torch.no_grad():
            real_outputs = model.discriminator(real)
        loss = loss + stage.generator_loss(model, real_outputs, model.discriminator(fake))
    if trainable:
        model.optimizer.scale_loss(loss).backward()
        grads = [v.value.grad for v in trainable]
        loss = reduce_gradients(grads, loss)  # averaged over the ranks under torchrun; else as is
        with torch.no_grad():
            model.optimizer.apply(grads, trainable)
    batch = next(t for t in keras.tree.flatten(x) if t is not None).shape[0]
    _loss_metric(model, state).update_state(loss, sample_weight=batch)

    if adversarial:  # the discriminators, on the generated audio before this step's update
        disc_vars = model.discriminator.trainable_weights
        for v in disc_vars:
            v.value.grad = None
        real_outputs = model.discriminator(real)
        fake_outputs = model.discriminator(ops.stop_gradient(fake))
        stage.discriminator_loss(model, real_outputs, fake_outputs).backward()
        grads = [v.value.grad for v in disc_vars]
        reduce_gradients(grads)
        with torch.no_grad():
            model.disc_optimizer.apply(grads, disc_vars)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
