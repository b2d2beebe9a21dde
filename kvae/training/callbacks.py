"""Keras callbacks of kvae's training loop: the epoch of the window plan, the KL warm-up."""

import math

import keras

from kvae.errors import KvaeError


class WindowEpochs(keras.callbacks.Callback):
    """Tells the training windows which epoch it is, so a resumed run draws the windows it would have."""

    def __init__(self, dataset, source):
        super().__init__()
        self.dataset = dataset
        self.source = source
        self._first = True

    def __deepcopy__(self, memo):
        # keras-tuner deep-copies callbacks: the copy must still drive the real dataset.
        return type(self)(self.dataset, self.source)

    def on_epoch_begin(self, epoch, logs=None):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        elif self._first:  # tf.data: its counter starts at 0 when the iterator is made
            self.source.epoch_offset = epoch
        self._first = False


class KLSchedule(keras.callbacks.Callback):
    """Warms the KL weight (`model.beta`) up from `start` to the model's beta over `steps` steps.

    The weight is a function of `optimizer.iterations`, which BackupAndRestore
    restores, and it lives in a non-trainable variable saved with the model,
    so the schedule survives saving, loading and resuming.

    Args:
        steps: int. Warm-up length in optimizer steps.
        kind: str. `"linear"` or `"log"` (geometric, as RAVE v2). Defaults to "linear".
        start: float. Weight at step 0 (log warm-up needs > 0). Defaults to 1e-6.
    """

    def __init__(self, steps, kind="linear", start=1e-6):
        super().__init__()
        if kind not in ("linear", "log"):
            raise KvaeError(f"kl_schedule: must be constant, linear or log, got '{kind}'")
        self.steps = max(int(steps), 1)
        self.kind = kind
        self.start = float(start)

    def value(self, step, target):
        """The KL weight at an optimizer step."""
        t = min(max(step / self.steps, 0.0), 1.0)
        if self.kind == "log":
            lo = max(self.start, 1e-12)
            return float(math.exp(math.log(lo) + t * (math.log(max(target, lo)) - math.log(lo))))
        return float(self.start + t * (target - self.start))

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.model.beta.assign(self.value(step, self.model.initial_beta))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["beta"] = float(keras.ops.convert_to_numpy(self.model.beta))
