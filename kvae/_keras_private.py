"""Every reach of kvae into Keras's private internals (`keras.src`, underscored names), fenced and version-checked.

kvae is written against Keras's public API. Five things it needs have no
public form in Keras 3.15; each is here, with why, so that a Keras upgrade
means checking this one file (tests/test_keras_private.py fails on any
Keras-private name used elsewhere in kvae):

- `set_global_seed`: seed Keras's global `SeedGenerator` without
  `keras.utils.set_random_seed`, which imports TensorFlow even on the torch
  backend.
- `adam_internals`: the torch fast path of Adam (`kvae.training.fast_adam`)
  replaces two methods of one optimizer instance and updates its moment
  variables in place.
- `OptimizerStepInLoss`: the optimizer's step count as a tensor inside
  `compute_loss` (the KL warm-up) on jax, whose trainer traces the step with
  the optimizer's variables as arguments and hands them only to
  `JAXTrainer.compute_loss_and_updates`.
- `BackupSaveHook`: `BackupAndRestore` saves its backup at each epoch end
  through a private method; kvae's `RunBackup` saves it atomically instead.
- `nested_layers`: every layer inside a model (`Layer._flatten_layers`), to
  set their dtype policy when `kvae.load(precision="float32")` loads a
  mixed-precision model.

Each checks `SUPPORTED` (the Keras minor version it was checked against):
on another version the first, second and fourth fall back to the stock
path, and the third and fifth raise a one-line `KvaeError` where they would be needed.
"""

import contextvars
from typing import NamedTuple

import keras

from kvae.errors import KvaeError

SUPPORTED = "3.15"  # setup.cfg pins keras>=3.15,<3.16; re-check every reach below before widening it


def supported():
    """Whether the installed Keras is the minor version these reaches were checked against."""
    return keras.version().startswith(SUPPORTED + ".")


def _unsupported(what):
    return KvaeError(f"{what} relies on Keras {SUPPORTED}.x internals (kvae._keras_private), found keras "
                     f"{keras.version()}; install keras>={SUPPORTED},<3.16")


# -- seeding without TensorFlow ----------------------------------------------------------------------------

def set_global_seed(seed):
    """Reset Keras's global seed generator to `seed`, as `keras.utils.set_random_seed` does minus its
    `tf.random.set_seed`; return False (nothing done) where the internals are not the checked ones."""
    if not supported():
        return False
    try:
        # keras.utils.set_random_seed's own two lines (keras/src/utils/rng_utils.py in 3.15)
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
    except ImportError:
        return False
    global_state.set_global_attribute("global_random_seed", seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    return True


# -- the fused Adam's hooks into one optimizer instance ----------------------------------------------------

# Methods of keras.src.backend.torch.optimizers.torch_adam.Adam (via BaseOptimizer) that the fast path
# swaps or reads: `_clip_gradients(grads)` (clipnorm/clipvalue), `_parallel_update_step(grads, variables,
# learning_rate)` (the torch Adam update), `_get_variable_index(variable)` with the slot lists
# `_momentums` and `_velocities` (Adam's m and v, one per trainable variable).
_ADAM_METHODS = ("_clip_gradients", "_parallel_update_step", "_get_variable_index")


class AdamInternals:
    """The private pieces of one torch-backend Keras Adam that `kvae.training.fast_adam` uses."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.stock_clip = optimizer._clip_gradients
        self.stock_update = optimizer._parallel_update_step

    def slots(self, variables):
        """Adam's first and second moments of `variables`, as torch tensors updated in place."""
        index = self.optimizer._get_variable_index
        return ([self.optimizer._momentums[index(v)].value for v in variables],
                [self.optimizer._velocities[index(v)].value for v in variables])

    def install(self, clip, update):
        """Replace the instance's clipping and update with `clip(grads)` and `update(grads, variables, lr)`."""
        self.optimizer._clip_gradients = clip
        self.optimizer._parallel_update_step = update


def adam_internals(optimizer):
    """`AdamInternals` of `optimizer` when it is Keras's torch Adam of the checked version, else None."""
    if not supported() or keras.backend.backend() != "torch":
        return None
    try:
        from keras.src.backend.torch.optimizers.torch_adam import Adam  # the torch backend's Adam subclass
    except ImportError:
        return None
    if not isinstance(optimizer, Adam) or not all(hasattr(optimizer, name) for name in _ADAM_METHODS):
        return None
    return AdamInternals(optimizer)


# -- the optimizer's step count inside the loss ------------------------------------------------------------

_traced_optimizer = contextvars.ContextVar("kvae_traced_optimizer_variables", default=(None, None))


class OptimizerStepInLoss:
    """Mixin for a `keras.Model`: `optimizer_step()` is the optimizer's step count as a tensor, inside the step.

    On torch and tensorflow it is `optimizer.iterations`. On jax the training
    step is a pure function traced with the optimizer's variables as
    arguments: reading `optimizer.iterations` there gives the value when it
    was traced. Keras's `JAXTrainer.train_step` passes those arguments to
    `compute_loss_and_updates(..., optimizer_variables=...)` (Keras 3.15; no
    public hook sees them), so this mixin overrides that method to keep them,
    for the length of the call, in a context variable rather than on the
    model, and `optimizer_step` picks the step count out of them.
    """

    def compute_loss_and_updates(self, *args, optimizer_variables=None, **kwargs):
        # keras.src.backend.jax.trainer.JAXTrainer.compute_loss_and_updates; only the jax trainer calls it.
        token = _traced_optimizer.set((self, optimizer_variables))
        try:
            return super().compute_loss_and_updates(*args, optimizer_variables=optimizer_variables, **kwargs)
        finally:
            _traced_optimizer.reset(token)

    def optimizer_step(self):
        """The optimizer's step count (a tensor; traced on jax) inside the training step."""
        owner, values = _traced_optimizer.get()
        if owner is not self or values is None:
            if keras.backend.backend() == "jax" and not supported():
                raise _unsupported("the KL warm-up on jax")
            return self.optimizer.iterations
        for ref, value in zip(self.optimizer.variables, values):
            if ref is self.optimizer.iterations:
                return value
        raise _unsupported("the KL warm-up on jax")


# -- the backup's save at each epoch end -------------------------------------------------------------------

# keras.callbacks.BackupAndRestore (keras/src/callbacks/backup_and_restore.py in 3.15) saves at each epoch end
# through its private `_save_model()`, from its attributes `_weights_path`, `_training_metadata_path`,
# `_current_epoch` and `_last_batch_seen`; checked on keras 3.15.1.
_BACKUP_STATE = ("_weights_path", "_training_metadata_path", "_current_epoch", "_last_batch_seen")


class BackupState(NamedTuple):
    """What `BackupAndRestore` saves at an epoch's end, and where."""

    weights_path: str
    metadata_path: str
    epoch: int
    batch: int


class BackupSaveHook:
    """Mixin for a `keras.callbacks.BackupAndRestore`: its save at each epoch end calls `save_backup(state)`.

    `state` is a `BackupState`, or None on a Keras other than the checked one,
    where `stock_save()` is Keras's own (non-atomic) save.
    """

    def _save_model(self):  # keras internal: BackupAndRestore._save_model, called at each epoch end
        if not supported() or not all(hasattr(self, name) for name in _BACKUP_STATE):
            return self.save_backup(None)
        return self.save_backup(BackupState(*(getattr(self, name) for name in _BACKUP_STATE)))

    def stock_save(self):
        """Keras's own save of the backup."""
        return super()._save_model()

    def save_backup(self, state):
        """Save the backup described by `state` (see the class docstring); to be provided."""
        raise NotImplementedError


# -- every nested layer ----------------------------------------------------------------------------------

def nested_layers(model):
    """Every layer inside `model`, itself included, at any depth (`Layer._flatten_layers` in Keras 3.15;
    there is no public form: `Model.layers` lists only the direct ones)."""
    if not supported() or not hasattr(model, "_flatten_layers"):
        raise _unsupported("listing a model's nested layers")
    return list(model._flatten_layers(include_self=True, recursive=True))
