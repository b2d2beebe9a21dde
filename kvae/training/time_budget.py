"""Time budgets and learning-curve snapshots: callbacks that read a clock, carried over when a run resumes.

`TimeBudget` stops training once its minutes are spent, `Snapshots` saves the
model as each mark of the clock passes; both count from the minutes a resumed
run's backup had spent (`RunBackup.spent`, which reads the clocks defined here).
`averaged_weights` lends the model its optimizer's weight average for a save.
"""

import contextlib
import math
import os
import time

import keras

from kvae.errors import KvaeError
from kvae.paths import atomic_path

_CLOCKS = {"wall": time.monotonic, "cpu": time.process_time}  # what TimeBudget and Snapshots can count


def _clock(name, what):
    """The clock called `name`: "wall" (elapsed time) or "cpu" (this process's CPU time, all threads)."""
    if name not in _CLOCKS:
        raise KvaeError(f"{what} clock: must be wall or cpu, got '{name}'")
    return _CLOCKS[name]


class _Clocked(keras.callbacks.Callback):
    """A callback that reads a clock from the start of training, carried over when a run resumes.

    `kvae.fit` calls `carry_over` with the time its backup had spent
    (`RunBackup.spent`), so a run killed and resumed counts its minutes as one
    uninterrupted run would (the part of an epoch redone after the kill is
    counted again: it is spent again).
    """

    def __init__(self, clock, what):
        super().__init__()
        self.clock = _clock(clock, what)
        self.clock_name = clock
        self.carried = 0.0  # seconds spent before this call to fit
        self.start = None

    def carry_over(self, spent):
        """Count `spent[self.clock_name]` seconds (a `RunBackup.spent` dict) as already spent."""
        self.carried = float(spent.get(self.clock_name, 0.0))

    def on_train_begin(self, logs=None):
        self.start = self.clock() - self.carried

    def elapsed(self):
        """Seconds of the clock spent training, earlier calls to fit included."""
        return self.clock() - self.start


class TimeBudget(_Clocked):
    """Stops training once a time budget is spent, after the batch that spends it.

    Keras then ends the epoch as usual (validation, the history row, the
    backup), so the run finishes and saves like one that ran all its epochs.
    A run that `kvae.fit` resumes from its backup continues the budget: the
    time spent up to the backup counts.

    Args:
        minutes: float. The budget.
        clock: str. `"wall"` (elapsed time, what `train.max_minutes` uses) or
            `"cpu"` (this process's CPU time over all its threads: a budget
            that other jobs on the machine do not eat into, for fair
            comparisons). Defaults to "wall".
        group: kvae.training.distributed.Group or None. In a data-parallel
            run rank 0's clock decides, after every batch, for all ranks (a
            one-element broadcast), so they stop at the same step.
    """

    def __init__(self, minutes, clock="wall", group=None):
        super().__init__(clock, "time budget")
        if not minutes > 0:
            raise KvaeError(f"time budget: must be a positive number of minutes, got {minutes}")
        self.seconds = 60.0 * float(minutes)
        self.stopped_at = None  # the optimizer step training stopped at, when the budget ended it
        self.group = group

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.stopped_at = None

    def on_train_batch_end(self, batch, logs=None):
        over = self.elapsed() >= self.seconds
        if self.group is not None and self.group.world > 1:
            from kvae.training.distributed import agreed_stop

            over = agreed_stop(self.group, over)
        if self.stopped_at is None and over:
            self.model.stop_training = True
            self.stopped_at = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))


class Snapshots(_Clocked):
    """Saves the model as each mark of a clock passes: one run gives a whole learning curve.

    `<folder>/<clock>-<minutes>min.keras` is written (atomically) after the
    batch that passes each mark, so a snapshot at 7.5 minutes of a 60-minute
    run is the model a 7.5-minute run would have saved (the schedules count
    optimizer steps, not minutes). Like `TimeBudget`, a run `kvae.fit`
    resumes continues the clock; the marks it had passed are not saved again.
    With weight EMA (`train.ema_momentum`) a snapshot holds the average, as
    the final model does. The optimizer state is saved too; the snapshot
    loads with `kvae.load` and is evaluated like any model.

    Args:
        folder: str or Path. Where the snapshots go.
        minutes: list of float. The marks, in minutes of the clock.
        clock: str. `"wall"` or `"cpu"` (this process's CPU time, as
            `TimeBudget`). Defaults to "wall".
    """

    def __init__(self, folder, minutes, clock="wall"):
        super().__init__(clock, "snapshot")
        marks = sorted(float(m) for m in minutes)
        if not marks or not all(math.isfinite(m) and m > 0 for m in marks):
            raise KvaeError(f"snapshots: need positive finite minutes, got {list(minutes)}")
        self.folder, self.marks = folder, marks
        self.saved = {}  # mark -> (path, optimizer step)

    @staticmethod
    def name(minutes, clock):
        """The file name of the snapshot at `minutes` of `clock`."""
        return f"{clock}-{minutes:g}min.keras"

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.carried:  # a resumed run: the marks it passed (or saved) before the kill stay as they were
            self.marks = [m for m in self.marks if m * 60.0 > self.carried
                          and not os.path.exists(os.path.join(self.folder, self.name(m, self.clock_name)))]

    def on_train_batch_end(self, batch, logs=None):
        elapsed = self.elapsed() / 60.0
        while self.marks and elapsed >= self.marks[0]:
            mark = self.marks.pop(0)
            path = os.path.join(self.folder, self.name(mark, self.clock_name))
            started = self.clock()
            with atomic_path(path) as tmp, averaged_weights(self.model):
                self.model.save(tmp)
            self.start += self.clock() - started  # saving is not training time
            self.saved[mark] = (path, int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))


@contextlib.contextmanager
def averaged_weights(model):
    """Within the block the model holds its optimizer's weight average (Keras's `use_ema`), as `fit`
    leaves it at its end; the training weights come back after. Without an average, nothing changes."""
    optimizer = getattr(model, "optimizer", None)
    if not getattr(optimizer, "use_ema", False) or not optimizer.built:
        yield model
        return
    variables = model.trainable_variables
    raw = [keras.ops.copy(v.value) for v in variables]
    optimizer.finalize_variable_values(variables)
    try:
        yield model
    finally:
        for v, value in zip(variables, raw):
            v.assign(value)


def cooldown(learning_rate, fraction, epochs, budget=None):
    """Keras's `LearningRateScheduler` for a constant learning rate that falls linearly to 0 over the last
    `fraction` of training (the warmup-stable-decay schedule's cooldown, Hägele et al. 2024), set each epoch.

    Training's progress is the share of `budget`'s minutes spent when a `TimeBudget` ends it (a run stopped by
    its clock cools down as its clock runs out), else the middle of the epoch over `epochs`. A resumed run's progress
    carries over with its clock and epochs.
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise KvaeError(f"cooldown: the share of training must be in (0, 1], got {fraction}")

    def schedule(epoch, lr):
        progress = (budget.elapsed() / budget.seconds if budget is not None
                    else (epoch + 0.5) / max(int(epochs), 1))  # the middle of the epoch
        return float(learning_rate) * min(1.0, max(0.0, (1.0 - progress) / float(fraction)))

    return keras.callbacks.LearningRateScheduler(schedule)
