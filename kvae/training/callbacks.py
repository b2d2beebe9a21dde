"""Keras callbacks of kvae's training loop: the epoch of the window plan, the information rate and KL
weight, the history file and the backup a cut-short run resumes from. The time budget
and the snapshots live in `kvae.training.time_budget` and are importable from here too."""

import errno
import json
import math
import os

import keras
import numpy as np

from kvae._keras_private import BackupSaveHook
from kvae.errors import KvaeError
from kvae.models.elbo import bits_per_second
from kvae.paths import atomic_path, save_error
from kvae.runs import RunFolder
from kvae.runs.history import read_history, truncate_history
from kvae.training.time_budget import _CLOCKS, Snapshots, TimeBudget, averaged_weights  # noqa: F401 (public here too)

__all__ = ["RunBackup", "EpochHistory", "DivergenceGuard", "WindowEpochs", "InformationRate", "TimeBudget", "Snapshots",
           "averaged_weights", "truncate_history", "resumable_callbacks"]


class RunBackup(BackupSaveHook, keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore` as kvae's run folders need it.

    - The backup is kept when training ends (`delete_checkpoint=False`):
      `kvae.fit` deletes it only once `model.keras` and the rest of the run
      folder are safely written, so a run cut short while saving resumes.
    - Each backup is written atomically (weights, then the epoch count, each
      to a temporary file renamed into place), so a kill or a full disk
      while backing up leaves the previous backup usable.
    - A write error is a one-line `KvaeError` (disk full: free space and
      rerun); an unreadable backup is one too, saying what to do.

    Args:
        backup_dir: str or Path. The backup folder (`<run>/backup`).
        write: bool. Write backups (every rank of a data-parallel run restores
            from the backup; only rank 0 writes it). Defaults to True.
    """

    def __init__(self, backup_dir, write=True):
        super().__init__(str(backup_dir), delete_checkpoint=False)
        self.write = bool(write)
        self._clock_start = {}  # clock name -> its reading when training began, less the time spent before

    @staticmethod
    def spent(backup_dir):
        """The training time spent up to the backup in `backup_dir`, per clock: `{"cpu": s, "wall": s}`.

        Empty when there is no backup, or one written before kvae kept the
        clocks. A resumed run's `TimeBudget` and `Snapshots` count from here.
        """
        path = os.path.join(str(backup_dir), "training_metadata.json")
        try:
            with open(path) as f:
                spent = json.load(f).get("spent", {})
        except (OSError, ValueError, AttributeError):
            return {}
        return {k: float(v) for k, v in spent.items() if k in _CLOCKS and isinstance(v, (int, float))}

    def on_train_begin(self, logs=None):
        before = self.spent(self.backup_dir)
        self._clock_start = {name: clock() - before.get(name, 0.0) for name, clock in _CLOCKS.items()}
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise KvaeError(f"{self.backup_dir}: cannot resume from this backup ({type(exc).__name__}: {first}); "
                            "delete the folder to train the run again from its start") from None

    def save_backup(self, state):
        """Write the backup of an epoch's end atomically: the weights, then the epoch count and clocks."""
        if not self.write:
            return
        try:
            if state is None:  # another Keras: its own (non-atomic) save
                return self.stock_save()
            os.makedirs(self.backup_dir, exist_ok=True)
            self._check_room()
            with atomic_path(state.weights_path, durable=True) as tmp:
                self.model.save_weights(str(tmp), overwrite=True)
            with atomic_path(state.metadata_path, durable=True) as tmp:
                spent = {name: clock() - self._clock_start[name] for name, clock in _CLOCKS.items()
                         if name in self._clock_start}
                tmp.write_text(json.dumps({"epoch": state.epoch, "batch": state.batch, "spent": spent}))
        except OSError as exc:
            raise save_error(exc, self.backup_dir, "backing up the run") from None

    def _check_room(self):
        """Refuse a backup that will not fit on the disk before h5py starts writing it.

        HDF5 cannot be stopped cleanly halfway: a write that runs out of space
        leaves objects that fail again when they are freed (tracebacks, and a
        segfault at exit). So the room for the weights and the optimizer state
        (their bytes, plus HDF5's overhead) is checked first.
        """
        import shutil

        variables = list(self.model.weights) + list(getattr(self.model.optimizer, "variables", []) or [])
        needed = sum(int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
                     for v in variables)
        needed = int(needed * 1.05) + 2 ** 20
        free = shutil.disk_usage(self.backup_dir).free
        if needed > free:
            raise OSError(errno.ENOSPC, f"No space left on device (the backup needs about {needed / 2**20:,.1f} MiB, "
                                        f"{free / 2**20:,.1f} MiB free)")


class EpochHistory(keras.callbacks.CSVLogger):
    """Keras's `CSVLogger` (appending), whose file lists exactly the epochs the model went through.

    A run that resumes from its backup at epoch `e` (or starts afresh, `e` =
    0, after a divergence) first drops the rows of epoch `e` and later that
    the cut-short run had written, so no epoch is listed twice. The file is
    opened at the first epoch's start, when that epoch is known whatever the
    callbacks' order. A write error is a one-line `KvaeError`.

    Args:
        filename: str or Path. The CSV file (`<run>/history.csv`).
    """

    def __init__(self, filename):
        super().__init__(str(filename), append=True)
        self._started = False

    def on_train_begin(self, logs=None):
        self._started = False  # opened in on_epoch_begin, once the first epoch is known

    def on_epoch_begin(self, epoch, logs=None):
        if self._started:
            return
        try:
            truncate_history(self.filename, epoch)
            super().on_train_begin(logs)
        except OSError as exc:
            raise save_error(exc, self.filename, "writing the history") from None
        self._started = True

    def on_epoch_end(self, epoch, logs=None):
        try:
            super().on_epoch_end(epoch, logs)
        except OSError as exc:
            raise save_error(exc, self.filename, "writing the history") from None

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._started = False


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


class InformationRate(keras.callbacks.Callback):
    """Logs what the KL costs: `rate_bps` (and `val_rate_bps`), bits per second, and the KL weight `beta`.

    The rate is each epoch's logged KL per window (nats) in bits, divided by
    the window's seconds (`bits_per_second`): what the latent costs per second
    of audio, the number codec papers put beside a codec's bitrate. With
    `model.free_bits` > 0 the logged KL is the floored one the loss pays, an
    upper bound of the true KL. When training moves the KL weight (a warm-up
    or a rate controller: `model.kl_weight.moves`) the weight of the epoch's
    last step, `beta`, is logged too; this is the one place it is logged.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        kl_weight = getattr(self.model, "kl_weight", None)
        if kl_weight is not None and kl_weight.moves:
            logs["beta"] = float(keras.ops.convert_to_numpy(self.model.beta))
        for prefix in ("", "val_"):
            if f"{prefix}kl" in logs:
                logs[f"{prefix}rate_bps"] = bits_per_second(logs[f"{prefix}kl"], self.model.window_seconds)


class DivergenceGuard(keras.callbacks.Callback):
    """Stops a run whose validation MR-STFT distance has blown up, instead of training a broken model on.

    A model whose loss jumps without becoming NaN passes `TerminateOnNaN`
    and trains on, broken (a measured case, and how far healthy runs stray
    from their best: `docs/guides/reliability.md#divergence`). The likelihood
    can be negative, so the loss itself has no scale to compare with; the
    MR-STFT term (`val_stft`, logged by every model with `loss_weights.stft` > 0)
    does. When the term is over `factor`
    times its best for `patience` epochs in a row, training stops after the
    epoch and `kvae.fit` raises a one-line error. Models without the term are
    not watched. A resumed run first replays the epochs its `history.csv`
    lists before the one it resumes at, so a blow-up is judged against the
    best of the whole run.

    Args:
        factor: float. How many times the best value counts as blown up
            (above 1).
        patience: int. Epochs in a row over it before stopping. Defaults to 3.
        monitor: str. The logged value watched. Defaults to "val_stft".
        history: str or Path or None. The run's `history.csv`, replayed when
            a run resumes. Defaults to None.
    """

    def __init__(self, factor, patience=3, monitor="val_stft", history=None):
        super().__init__()
        if not factor > 1:
            raise KvaeError(f"train.divergence_factor: must be 0 (off) or above 1, got {factor}")
        self.factor, self.patience, self.monitor = float(factor), max(int(patience), 1), monitor
        self.history = history
        self.best, self.over, self.tripped, self._first = math.inf, 0, None, True

    def on_train_begin(self, logs=None):
        self.best, self.over, self.tripped, self._first = math.inf, 0, None, True

    def on_epoch_begin(self, epoch, logs=None):
        if not self._first:
            return
        self._first = False
        if epoch > 0 and self.history is not None:
            for value in read_history(self.history, before=epoch).get(self.monitor, []):
                self._judge(value)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and self._judge(value) and self.tripped is None:
            self.tripped = (epoch, value, self.best)
            self.model.stop_training = True

    def _judge(self, value):
        """Count one epoch's value; whether it is `patience` epochs in a row over `factor` x the best."""
        if not math.isfinite(value):
            return False
        self.over = self.over + 1 if value > self.factor * self.best else 0
        self.best = min(self.best, value)
        return self.over >= self.patience

    def message(self):
        """The one-line error for a tripped guard."""
        epoch, value, best = self.tripped
        return (f"training diverged at epoch {epoch}: {self.monitor} {value:.3g} has been over "
                f"{self.factor:g} x its best ({best:.3g}) for {self.patience} epochs; lower "
                "train.learning_rate and train again (train.divergence_factor = 0 turns this check off)")


def resumable_callbacks(dataset, source, folder, write=True, before_history=()):
    """The callback stack every resumable training in kvae uses (`kvae fit`, `kvae prior fit`).

    In order: `WindowEpochs` (the epoch's windows), `TerminateOnNaN`, the
    callbacks in `before_history` (those that add to an epoch's logs), then
    `EpochHistory` (`<folder>/history.csv`, each epoch once) and `RunBackup`
    (`<folder>/backup`, kept until the caller has saved everything). The row
    is written before the backup, so a kill between the two leaves a row the
    resumed run drops and writes again, never a trained epoch without its row.

    Args:
        dataset: the training dataset, for `WindowEpochs`.
        source: the training data's window source, for `WindowEpochs`.
        folder: Path or `kvae.runs.RunFolder`. The folder holding `history.csv` and `backup/`.
        write: bool. Write the history and backups (only rank 0 of a
            data-parallel run does; every rank restores).
        before_history: callbacks placed before the history file.
    """
    folder = RunFolder(folder)
    cbs = [WindowEpochs(dataset, source), keras.callbacks.TerminateOnNaN(), *before_history]
    if write:
        cbs.append(EpochHistory(folder.history))
    cbs.append(RunBackup(folder.backup, write=write))
    return cbs
