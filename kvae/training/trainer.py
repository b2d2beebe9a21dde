"""`kvae.fit`: resolve the config, prepare the data, build and compile the model, train, write the run folder."""

import json
import time
from pathlib import Path

import keras
import numpy as np

from kvae.config import load_config, merge_config, split_overrides
from kvae.data import WindowSource, prepare
from kvae.errors import KvaeError
from kvae.models import model_class
from kvae.training.callbacks import KLSchedule, WindowEpochs
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

    try:  # what set_random_seed does, minus TensorFlow
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
    except ImportError:  # a Keras without these internals: pay for the TensorFlow import
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute("global_random_seed", seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def build_model(config):
    """Instantiate the model a resolved config describes."""
    model_cfg = dict(config["model"])
    cls = model_class(model_cfg.pop("type", "fc"))
    return cls(
        sample_rate=config["data"]["rate"],
        window_seconds=config["data"]["window_seconds"],
        seed=config["train"]["seed"],
        **model_cfg,
    )


def compile_model(model, config):
    """Compile with Adam at the config's learning rate and gradient clipping."""
    train = config["train"]
    clipnorm = train["clipnorm"] or None
    model.compile(optimizer=keras.optimizers.Adam(train["learning_rate"], clipnorm=clipnorm))
    return model


def make_datasets(config, corpus=None, verbose=True):
    """Prepare (or reuse) the cache and return `(train, val, train_source, steps_per_epoch)`."""
    data = config["data"]
    if corpus is None:
        corpus = prepare(
            data["path"] or None, rate=data["rate"], cache_dir=data["cache"] or None,
            select=data["select"] or None, window_seconds=data["window_seconds"],
        )
        if verbose:
            for line in corpus.report.summary():
                print(line)
    window = int(round(data["rate"] * data["window_seconds"]))
    steps = config["train"]["steps_per_epoch"] or None
    common = dict(window=window, batch_size=data["batch_size"], seed=config["train"]["seed"],
                  normalize=data["normalize"])
    train_src = WindowSource(corpus, "train", windows_per_recording=data["windows_per_recording"],
                             random=True, batches_per_epoch=steps, **common)
    val_src = WindowSource(corpus, "test", windows_per_recording=data["val_windows_per_recording"],
                           random=False, **common)
    if data["frontend"] == "tf":
        return train_src.tf_dataset(), val_src.tf_dataset(), train_src, train_src.num_batches
    return train_src.py_dataset(), val_src.py_dataset(), train_src, None


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
            run resumes where it stopped (its saved config is used unless
            `config` is given). Defaults to `runs/<name>-<time>`.
        verbose: bool. Print the data summary and Keras's progress bar.
        callbacks: list or None. Extra Keras callbacks.
        settings: dict or None. Nested overrides, as `--set` gives them:
            `{"train": {"epochs": 2}, "model": {"hidden_layers": 3}}`.
        **overrides: config values, by section (`train={"epochs": 2}`) or by
            name (`epochs=2`, `rate=8000`, `hidden_layers=3`).

    Returns:
        `(model, history)`: the trained model and a dict of per-epoch logs.

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
    if (run_dir / "model.keras").is_file() and not (run_dir / "backup").exists():
        raise KvaeError(f"{run_dir}: run folder already holds a finished model; choose another --run")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    except OSError as exc:
        raise KvaeError(f"{run_dir}: cannot write run folder ({exc.strerror or exc})") from None

    seed_everything(cfg["train"]["seed"], cfg["data"]["frontend"])
    train_ds, val_ds, train_src, steps = make_datasets(cfg, verbose=verbose)
    model = compile_model(build_model(cfg), cfg)
    train = cfg["train"]
    cbs = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        WindowEpochs(train_ds, train_src),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]
    if train["kl_schedule"] != "constant" and train["kl_warmup_steps"] > 0:
        cbs.insert(1, KLSchedule(train["kl_warmup_steps"], train["kl_schedule"], train["kl_start"]))
    cbs += list(callbacks or [])
    if verbose:
        print(f"run:        {run_dir}")
        print(f"model:      {type(model).__name__}, {model.count_params():,} parameters, "
              f"{model.window} samples per window at {model.sample_rate} Hz, backend {keras.backend.backend()}")
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=train["epochs"], steps_per_epoch=steps,
        callbacks=cbs, verbose=train["verbose"] if verbose else 0,
        shuffle=False,  # WindowSource already shuffles, reproducibly from the seed and epoch
    )
    if not np.isfinite(history.history.get("loss", [0.0])[-1:]).all():
        for path, count in train_src.corpus.non_finite():  # bad data, not a bad learning rate
            raise KvaeError(f"{path}: cached audio holds {count} NaN or Inf samples; run `kvae prepare` again")
        raise KvaeError("training diverged (loss is NaN or Inf); lower train.learning_rate")
    model.save(run_dir / "model.keras")
    finish_run(model, run_dir, cfg)
    if verbose:
        print(f"saved:      {run_dir / 'model.keras'}")
    return model, history.history
