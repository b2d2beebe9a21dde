"""`kvae.fit`: resolve the config, prepare the data, build and compile the model, train, write the run folder."""

import json
import shutil
import time
import zipfile
from pathlib import Path

import keras
import numpy as np

from kvae._keras_private import set_global_seed
from kvae.config import load_config, merge_config, split_overrides
from kvae.data import WindowSource, prepare
from kvae import bounds
from kvae.errors import KvaeError
from kvae.models import model_class
from kvae.paths import atomic_path, disk_full, remove_stale_temporaries, run_lock, save_error
from kvae.training import distributed, next_steps, tensorboard
from kvae.training.callbacks import (DivergenceGuard, InformationRate, KLSchedule, RunBackup, TimeBudget,
                                     resumable_callbacks)
from kvae.training.distributed import AverageLogs, barrier, broadcast_object
from kvae.training.runs import finish_run


def seed_everything(seed, frontend="pydataset"):
    """Seed Python, NumPy, the backend and Keras's global seed generator.

    `keras.utils.set_random_seed` also seeds TensorFlow, which imports it
    (about 350 MB and a second or two) even on the torch backend; only the
    tf.data front end needs that.
    """
    if frontend == "tf":
        keras.utils.set_random_seed(seed)
        return
    import random

    if not set_global_seed(seed):  # another Keras version: pay for the TensorFlow import
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def build_model(config):
    """Instantiate the model a resolved config describes (under its `train.precision` dtype policy)."""
    model_cfg = dict(config["model"])
    cls = model_class(model_cfg.pop("type", "fc"))
    precision = config["train"].get("precision", "float32")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)  # the layers keep it; the global policy is put back
    try:
        return cls(
            sample_rate=config["data"]["rate"],
            window_seconds=config["data"]["window_seconds"],
            seed=config["train"]["seed"],
            **model_cfg,
        )
    finally:
        keras.config.set_dtype_policy(previous)


def compile_model(model, config):
    """Compile with Adam at the config's learning rate and gradient clipping (and weight EMA).

    With `train.ema_momentum` > 0 Adam keeps an exponential moving average
    of the weights (Keras's `use_ema`); `fit` ends by writing the average
    into the model, so `model.keras` holds it, and `Snapshots` save it too.

    On the torch backend with `train.fused_adam` (the default) the optimizer
    clips and updates with fused kernels (`kvae.training.fast_adam`): the
    same update, class and saved form as `keras.optimizers.Adam`, about half
    the time of a small model's step on a CPU. Other backends get the stock
    optimizer. `train.jit_compile = true` asks Keras for `torch.compile` on
    torch (slower than eager for kvae's models on a CPU: see docs/benchmarks.md).
    """
    train = config["train"]
    clipnorm = train["clipnorm"] or None
    ema = {"use_ema": True, "ema_momentum": train["ema_momentum"]} if train["ema_momentum"] > 0 else {}
    optimizer = keras.optimizers.Adam(train["learning_rate"], clipnorm=clipnorm, **ema)
    if train["fused_adam"] and keras.backend.backend() == "torch":
        from kvae.training.fast_adam import fuse_adam

        fuse_adam(optimizer)
    # jit_compile false keeps Keras's "auto" (XLA on jax and tensorflow, eager on torch)
    model.compile(optimizer=optimizer, **({"jit_compile": True} if train["jit_compile"] else {}))
    return model


def make_datasets(config, corpus=None, verbose=True, shards=1, shard=0):
    """Prepare (or reuse) the cache and return `(train, val, train_source, steps_per_epoch)`.

    Args:
        shards, shard: int. Data-parallel ranks and this one's rank: the
            training windows of every global batch of `batch_size * shards`
            are split between the ranks (see `WindowSource`); validation is
            not split.
    """
    data = config["data"]
    if corpus is None:
        corpus = prepare(
            data["path"] or None, rate=data["rate"], cache_dir=data["cache"] or None,
            select=data["select"] or None, window_seconds=data["window_seconds"],
        )
        if verbose:
            for line in corpus.report.summary():
                print(line)
    window = bounds.window_samples(data["rate"], data["window_seconds"])
    steps = config["train"]["steps_per_epoch"] or None
    common = dict(window=window, batch_size=data["batch_size"], seed=config["train"]["seed"],
                  normalize=data["normalize"], multiple_of=_devices(config))
    train_src = WindowSource(corpus, "train", windows_per_recording=data["windows_per_recording"],
                             random=True, batches_per_epoch=steps, shards=shards, shard=shard, **common)
    val_src = WindowSource(corpus, "test", windows_per_recording=data["val_windows_per_recording"],
                           random=False, **common)
    if data["frontend"] == "tf":
        return train_src.tf_dataset(), val_src.tf_dataset(), train_src, train_src.num_batches
    # Reader threads, not processes: WindowEpochs sets the epoch on the dataset object itself.
    workers = dict(workers=data["workers"], use_multiprocessing=False) if data["workers"] > 1 else {}
    return train_src.py_dataset(**workers), val_src.py_dataset(**workers), train_src, None


def _resolve_run(config, overrides, run):
    """Pick the run folder and config; a folder with a saved config resumes with it."""
    saved = Path(run) / "config.json" if run is not None else None
    if saved is not None and saved.is_file() and config is None:
        return load_config(saved, overrides), Path(run)
    cfg = load_config(config, overrides)
    return cfg, Path(run) if run is not None else Path("runs") / f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}"


def fit(config=None, data=None, run=None, verbose=True, callbacks=None, settings=None, **overrides):
    """Train a VAE and write its run folder.

    Args:
        config: str, Path, dict or None. A config file or name in `configs/`
            (e.g. "quickstart"), a dict, or None for the defaults.
        data: str, Path or None. Dataset root; overrides `data.path`. None
            and no path in the config means the embedded dataset.
        run: str, Path or None. Run folder. A folder left by an interrupted
            run (killed while training, or while saving: the backup is kept
            until `model.keras` and the rest of the folder are written)
            resumes where it stopped (its saved config is used unless
            `config` is given). Defaults to `runs/<name>-<time>`.
        verbose: bool. Print the data summary and Keras's progress bar.
        callbacks: list or None. Extra Keras callbacks.
        settings: dict or None. Nested overrides, as `--set` gives them:
            `{"train": {"epochs": 2}, "model": {"hidden_layers": 3}}`.
        **overrides: config values, by section (`train={"epochs": 2}`) or by
            name (`epochs=2`, `rate=8000`, `hidden_layers=3`).

    Returns:
        `(model, history)`: the trained model and a dict of the logs of the
        epochs this call trained (empty when a resumed run had none left).
        `history.csv` in the run folder lists every epoch the model went
        through, once each.

    Raises:
        KvaeError: a bad config; a folder that holds a finished model, or an
            unreadable `model.keras` and no backup; training diverged; a
            write failed (a full disk: "free space and rerun the same
            command to resume"). Every file is written atomically, so a
            failed or killed write leaves the previous state to resume from.

    Example:
    ```python
    import kvae
    model, history = kvae.fit("quickstart", epochs=2)
    audio = model.sample(4, seed=0)
    ```
    """
    nested = merge_config(settings or {}, split_overrides(overrides))
    if data is not None:
        nested.setdefault("data", {})["path"] = str(data)
    cfg, run_dir = _resolve_run(config, nested, run)
    group = distributed.setup(cfg["train"])
    try:
        run_dir = broadcast_object(group, run_dir)
        if not group.writes:  # rank 0 holds the run folder for the group
            return _fit(cfg, run_dir, group, verbose, callbacks)
        with run_lock(run_dir, "fit"):
            return _fit(cfg, run_dir, group, verbose, callbacks)
    finally:
        distributed.teardown(group)


def _fit(cfg, run_dir, group, verbose, callbacks):
    """`fit` once the config, the run folder and the process group are settled."""
    model_path, backup = run_dir / "model.keras", run_dir / "backup"
    verbose = verbose and group.writes
    _check_run_folder(run_dir, model_path, backup)
    _check_resume(run_dir, cfg, backup)
    _check_batch(cfg)
    if group.writes:
        for folder in (run_dir, backup, run_dir / "samples"):  # half-written files of a killed run
            remove_stale_temporaries(folder)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(run_dir / "config.json") as tmp:
                tmp.write_text(json.dumps(cfg, indent=2))
        except OSError as exc:
            raise save_error(exc, run_dir, "writing the run folder") from None

    seed_everything(cfg["train"]["seed"], cfg["data"]["frontend"])
    if group.world > 1 and not group.writes:
        barrier(group)  # rank 0 prepares the cache first; the others then find it ready
    train_ds, val_ds, train_src, steps = make_datasets(cfg, verbose=verbose, shards=group.world, shard=group.rank)
    if group.world > 1 and group.writes:
        barrier(group)
    model = compile_model(build_model(cfg), cfg)
    train = cfg["train"]
    # Order matters at an epoch's end: AverageLogs makes the logs the group's means and KLSchedule adds
    # `beta` before the history row is written, and the row is written before the backup, so a kill
    # between the two leaves a row the resumed run drops and writes again (never a trained epoch
    # without its row). Only rank 0 writes; every rank restores from the backup.
    logs = []
    if train["kl_schedule"] != "constant" and train["kl_warmup_steps"] > 0:
        logs.append(KLSchedule(train["kl_warmup_steps"], train["kl_schedule"], train["kl_start"]))
    logs.append(InformationRate())  # rate_bps beside the KL, before the history row is written
    if group.world > 1:
        logs.append(AverageLogs(group))
    cbs = resumable_callbacks(train_ds, train_src, run_dir, write=group.writes, before_history=logs)
    if group.world > 1:
        cbs.append(_BroadcastState(group))  # after RunBackup: the ranks start from rank 0's (restored) state
    budget = TimeBudget(train["max_minutes"], group=group) if train["max_minutes"] > 0 else None
    guard = (DivergenceGuard(train["divergence_factor"], history=run_dir / "history.csv")
             if train["divergence_factor"] > 0 else None)
    board = [tensorboard.fit_logger(cfg, run_dir, train_src.corpus)] if train["tensorboard"] and group.writes else []
    cbs += ([budget] if budget else []) + list(callbacks or []) + ([guard] if guard else []) + board
    spent = RunBackup.spent(backup)  # a resumed run's budget and snapshots go on from the backup's clocks
    for cb in cbs:
        if hasattr(cb, "carry_over"):
            cb.carry_over(spent)
    if verbose:
        print(f"run:        {run_dir}")
        print(f"model:      {type(model).__name__}, {model.count_params():,} parameters, "
              f"{model.window} samples per window at {model.sample_rate} Hz, backend {keras.backend.backend()}"
              + ("" if train["precision"] == "float32" else f", {train['precision']}"))
        _print_parallelism(cfg, group)
        if spent and budget is not None:
            print(f"time:       resumed with {spent.get('wall', 0.0) / 60:,.1f} of train.max_minutes = "
                  f"{train['max_minutes']:g} already spent")
        note = stage_note(cfg)
        if note:
            print(f"note:       {note}")
    try:
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=train["epochs"], steps_per_epoch=steps,
            callbacks=cbs, verbose=train["verbose"] if verbose else 0,
            shuffle=False,  # WindowSource already shuffles, reproducibly from the seed and epoch
        )
    except OSError as exc:
        if not disk_full(exc):
            raise
        raise save_error(exc, run_dir, "training") from None
    if verbose and budget is not None and budget.stopped_at is not None:
        print(f"time:       train.max_minutes = {train['max_minutes']:g} spent; stopped after step {budget.stopped_at:,}")
    blown_up = guard is not None and guard.tripped is not None
    if blown_up or not np.isfinite(history.history.get("loss", [0.0])[-1:]).all():
        if group.writes:
            shutil.rmtree(backup, ignore_errors=True)  # it holds the diverged weights: a rerun starts afresh
        if blown_up:
            raise KvaeError(guard.message())
        for path, count in train_src.corpus.non_finite():  # bad data, not a bad learning rate
            raise KvaeError(f"{path}: cached audio holds {count} NaN or Inf samples; run `kvae prepare` again "
                           "(it rebuilds such files)")
        raise KvaeError("training diverged (loss is NaN or Inf); lower train.learning_rate")
    if not group.writes:
        return model, history.history
    # The backup stays until the model and the rest of the folder are written: a run cut short
    # here resumes from it (and, with every epoch done, only saves again).
    try:
        with atomic_path(model_path, durable=True) as tmp:
            model.save(tmp)
    except OSError as exc:
        raise save_error(exc, model_path, "saving the model") from None
    try:
        finish_run(model, run_dir, cfg)
    except OSError as exc:
        raise save_error(exc, run_dir, "writing the loss curves and samples") from None
    shutil.rmtree(backup, ignore_errors=True)
    if verbose:
        print("\n".join([f"saved:      {model_path}", *next_steps.next_steps(run_dir, cfg)]))  # where to listen
    return model, history.history


class _BroadcastState(keras.callbacks.Callback):
    """At the start of training (after the backup is restored), every rank takes rank 0's state."""

    def __init__(self, group):
        super().__init__()
        self.group = group

    def on_train_begin(self, logs=None):
        distributed.broadcast_state(self.model, self.group)


def _devices(cfg):
    """The devices a jax data-parallel batch is split over; 1 otherwise."""
    if keras.backend.backend() != "jax" or cfg["train"]["distribution"] != "data_parallel":
        return 1
    return len(keras.distribution.list_devices())


def _check_batch(cfg):
    """A jax data-parallel batch must split evenly over the devices (one line otherwise)."""
    devices = _devices(cfg)
    if cfg["data"]["batch_size"] % devices:
        raise KvaeError(f"data.batch_size: {cfg['data']['batch_size']} does not split over the {devices} devices "
                        "of train.distribution = data_parallel; make it a multiple")


def _print_parallelism(cfg, group):
    batch = cfg["data"]["batch_size"]
    if group.world > 1:
        import torch.distributed as dist

        print(f"parallel:   {group.world} ranks ({dist.get_backend()}), global batch {batch * group.world} = "
              f"{batch} per rank x {group.world}; gradients averaged every step")
    elif keras.backend.backend() == "jax" and cfg["train"]["distribution"] == "data_parallel":
        devices = keras.distribution.list_devices()
        print(f"parallel:   keras.distribution.DataParallel over {len(devices)} devices, global batch {batch} = "
              f"{batch // len(devices)} per device x {len(devices)}")


def stage_note(config):
    """A warning when the adversarial stage starts before the KL warm-up ends, else None.

    The switch freezes the encoder: frozen while the KL weight is still small,
    its posterior stays far from N(0, I), and prior samples do not decode to
    anything like the data (measured for rave-3k: docs/results.md).
    """
    table = config["model"].get("adversarial") or {}
    after = table.get("after")
    train = config["train"]
    if table.get("freeze_encoder") is False:  # the encoder keeps learning, the KL with it
        return None
    warmup = train["kl_warmup_steps"] if train["kl_schedule"] != "constant" else 0
    if after is None or after >= warmup:
        return None
    return (f"model.adversarial.after = {after} freezes the encoder before the KL warm-up ends (step {warmup}); "
            "prior samples will not sound like the data (reconstructions are unaffected)")


RESUMABLE = {("train", "epochs"), ("train", "max_minutes"), ("train", "verbose"), ("train", "n_samples"),
             ("train", "gallery"), ("train", "tensorboard"), ("train", "tensorboard_every"), ("train", "distributed_timeout"), ("data", "path"), ("data", "cache"),
             ("data", "workers")}
"""The settings a run may change when it resumes from its backup (how long, where the data is, what it prints)."""


def _check_resume(run_dir, cfg, backup):
    """Refuse to resume a backup with settings it was not trained with, before anything is written.

    The saved `config.json` stays as it was, so the plain `kvae fit --run DIR` still resumes.
    """
    saved = run_dir / "config.json"
    if not backup.exists() or not saved.is_file():
        return
    try:
        before = json.loads(saved.read_text())
    except (OSError, ValueError):
        return  # unreadable: the backup decides (RunBackup says what to do)
    changed = []
    for section in ("data", "model", "train"):
        old, new = before.get(section), cfg.get(section)
        if not isinstance(old, dict) or not isinstance(new, dict):
            continue
        for key in sorted(set(old) & set(new)):  # a key only one side knows is a default of another version
            if (section, key) not in RESUMABLE and old[key] != new[key]:
                changed.append(f"{section}.{key} {old.get(key)!r} -> {new.get(key)!r}")
    if changed:
        raise KvaeError(f"{run_dir}: an interrupted run resumes with the settings it was trained with, but "
                        f"{', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}; drop those --set "
                        "(only train.epochs, train.max_minutes and where the data is may change) or choose another --run")


def _readable_model(path):
    """True when `path` looks like a complete `.keras` archive (a zip holding config.json and weights)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return "config.json" in names and any(n.endswith(".h5") for n in names)


def _check_run_folder(run_dir, model_path, backup):
    """Refuse a finished run, and a run whose model is unreadable with no backup to resume from."""
    if model_path.exists() and not backup.exists():
        if model_path.is_dir():
            raise KvaeError(f"{model_path}: is a folder; move it away or choose another --run")
        if _readable_model(model_path):
            raise KvaeError(f"{run_dir}: run folder already holds a finished model; choose another --run")
        raise KvaeError(f"{model_path}: unreadable model (a save cut short?) and no backup/ to resume from; "
                        "delete it and rerun the same command to train the run again")
