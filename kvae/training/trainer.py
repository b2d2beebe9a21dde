"""`kvae.fit`: resolve the config, prepare the data, build and compile the model, train, write the run folder."""

import json
import time
from pathlib import Path

import keras

from kvae.config import load_config, merge_config, split_overrides, upgrade
from kvae.data import WindowSource, prepare
from kvae import bounds
from kvae.errors import KvaeError
from kvae.models import model_class
from kvae.models.elbo import KLWeight
from kvae.models.vae import dtype_policy
from kvae.paths import save_error, write_text
from kvae.runs import RunFolder
from kvae.training import distributed, next_steps, tensorboard
from kvae.training.callbacks import DivergenceGuard, InformationRate, RunBackup, TimeBudget
from kvae.training.distributed import AverageLogs, barrier, broadcast_object
from kvae.training.loop import compile_model, fit_in_folder, seed_everything, write_run_extras
from kvae.training.precision import resolve_precision


def build_model(config):
    """Instantiate the model a resolved config describes (under its `train.precision` dtype policy), with the
    KL weight's warm-up of `train.kl_*` (`kvae.models.elbo.KLWeight.from_config`)."""
    model_cfg = dict(config["model"])
    cls = model_class(model_cfg.pop("type", "fc"))
    precision = resolve_precision(config["train"].get("precision", "float32"))
    with dtype_policy(precision):  # the layers keep it; the global policy is put back
        model = cls(
            sample_rate=config["data"]["sample_rate"],
            window_seconds=config["data"]["window_seconds"],
            seed=config["train"]["seed"],
            **model_cfg,
        )
    model.kl_weight = KLWeight.from_config(config, base=model.kl_weight)  # with the training's warm-up
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
            data["path"] or None, sample_rate=data["sample_rate"], cache_dir=data["cache"] or None,
            select=data["select"] or None, window_seconds=data["window_seconds"],
        )
        if verbose:
            for line in corpus.report.summary():
                print(line)
    window = bounds.window_samples(data["sample_rate"], data["window_seconds"])
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
    saved = RunFolder(run).config if run is not None else None
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
            name (`epochs=2`, `sample_rate=8000`, `hidden_layers=3`).

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
        with RunFolder(run_dir).lock("fit"):
            return _fit(cfg, run_dir, group, verbose, callbacks)
    finally:
        distributed.teardown(group)


def _fit(cfg, run_dir, group, verbose, callbacks):
    """`fit` once the config, the run folder and the process group are settled."""
    folder = RunFolder(run_dir)
    verbose = verbose and group.writes
    folder.check_model()
    folder.check_resume(cfg, upgrade=upgrade)
    _check_batch(cfg)
    if group.writes:
        folder.sweep()  # half-written files of a killed run
        try:
            write_text(folder.config, json.dumps(cfg, indent=2))
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
    # Order matters at an epoch's end: AverageLogs makes the logs the group's means and the KL weight and
    # information rate are added before the history row is written, and the row is written before the
    # backup, so a kill between the two leaves a row the resumed run drops and writes again (never a
    # trained epoch without its row). Only rank 0 writes; every rank restores from the backup.
    logs = [InformationRate()]
    if group.world > 1:
        logs.append(AverageLogs(group))
    after = [_BroadcastState(group)] if group.world > 1 else []  # the ranks start from rank 0's restored state
    budget = TimeBudget(train["max_minutes"], group=group) if train["max_minutes"] > 0 else None
    guard = DivergenceGuard(train["divergence_factor"], history=folder.history) if train["divergence_factor"] > 0 else None
    board = [tensorboard.fit_logger(cfg, run_dir, train_src.corpus)] if train["tensorboard"] and group.writes else []
    after += ([budget] if budget else []) + list(callbacks or []) + ([guard] if guard else []) + board
    if verbose:
        spent = RunBackup.spent(folder.backup)
        print(f"run:        {run_dir}")
        print(f"model:      {type(model).__name__}, {model.count_params():,} parameters, "
              f"{model.window} samples per window at {model.sample_rate} Hz, backend {keras.backend.backend()}"
              + ("" if model.dtype_policy.name == "float32" else f", {model.dtype_policy.name}"
                 + (" (train.precision = auto)" if train["precision"] == "auto" else "")))
        _print_parallelism(cfg, group)
        if spent and budget is not None:
            print(f"time:       resumed with {spent.get('wall', 0.0) / 60:,.1f} of train.max_minutes = "
                  f"{train['max_minutes']:g} already spent")
        note = stage_note(cfg)
        if note:
            print(f"note:       {note}")

    def nan_message():
        for path, count in train_src.corpus.non_finite():  # bad data, not a bad learning rate
            return (f"{path}: cached audio holds {count} NaN or Inf samples; run `kvae prepare` again "
                    "(it rebuilds such files)")
        return "training diverged (loss is NaN or Inf); lower train.learning_rate"

    # The backup stays until the model and the rest of the folder are written: a run cut short
    # there resumes from it (and, with every epoch done, only saves again).
    history = fit_in_folder(
        model, folder, train_ds, source=train_src, before_history=logs, callbacks=after, write=group.writes,
        nan_message=nan_message, save=folder.model, curves={"title": cfg["name"]},
        after_save=lambda trained: write_run_extras(trained, run_dir, cfg),
        validation_data=val_ds, epochs=train["epochs"], steps_per_epoch=steps,
        verbose=train["verbose"] if verbose else 0,
        shuffle=False,  # WindowSource already shuffles, reproducibly from the seed and epoch
    )
    if verbose and budget is not None and budget.stopped_at is not None:
        print(f"time:       train.max_minutes = {train['max_minutes']:g} spent; stopped after step {budget.stopped_at:,}")
    if verbose and group.writes:
        print("\n".join([f"saved:      {folder.model}", *next_steps.next_steps(run_dir, cfg)]))  # where to listen
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
    if table.get("freeze_encoder") is False:  # the encoder keeps learning, the KL with it
        return None
    kl_weight = KLWeight.from_config(config)
    warmup = kl_weight.warmup_steps if kl_weight.warms_up else 0
    if after is None or after >= warmup:
        return None
    return (f"model.adversarial.after = {after} freezes the encoder before the KL warm-up ends (step {warmup}); "
            "prior samples will not sound like the data (reconstructions are unaffected)")
