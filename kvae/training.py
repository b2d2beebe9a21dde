"""Training, run folders, loading and sampling: what `kvae.fit`, `kvae.load` and the CLI call.

A run folder holds::

    config.json        the fully resolved config (a run can be redone from it)
    model.keras        the trained model (weights, config, sample rate)
    history.csv        one row per epoch (loss, reconstruction, kl, val_*)
    loss_curves.png    total, reconstruction and KL against epoch
    samples/           sample_<i>.wav and sample_<i>.png (waveform + spectrogram)
    backup/            Keras BackupAndRestore state while training runs; an
                       interrupted `kvae fit --run DIR` resumes from it
"""

import json
import math
import time
from pathlib import Path

import keras
import numpy as np

from kvae.config import load_config, merge_config, split_overrides
from kvae.data import WindowSource, prepare, write_wav
from kvae.errors import KvaeError
from kvae.models import model_class


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


def write_samples(model, folder, n=4, seed=0, plots=True):
    """Write `n` prior samples as WAV (and waveform-spectrogram PNG) files; return the WAV paths."""
    from kvae.plots import plot_audio

    folder = Path(folder)
    clips = model.sample(n, seed=seed) if n else np.zeros((0, model.window), np.float32)
    paths = []
    for i, clip in enumerate(clips):
        path = write_wav(folder / f"sample_{i}.wav", clip, model.sample_rate)
        if plots:
            plot_audio(clip, model.sample_rate, path.with_suffix(".png"), title=f"{path.name} (seed {seed})")
        paths.append(path)
    return paths


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
        raise KvaeError("training diverged (loss is NaN or Inf); lower train.learning_rate")
    model.save(run_dir / "model.keras")
    finish_run(model, run_dir, cfg)
    if verbose:
        print(f"saved:      {run_dir / 'model.keras'}")
    return model, history.history


def finish_run(model, run_dir, config):
    """Write the loss curves and samples of a trained run."""
    from kvae.plots import plot_history, read_history

    history_csv = Path(run_dir) / "history.csv"
    if history_csv.is_file():
        plot_history(read_history(history_csv), Path(run_dir) / "loss_curves.png", title=config["name"])
    write_samples(model, Path(run_dir) / "samples", n=config["train"]["n_samples"], seed=config["train"]["seed"])


def load(path, compile=True):
    """Load a kvae model from a `.keras` file or a run folder.

    Args:
        path: str or Path. A `.keras` file, or a run folder holding `model.keras`.
        compile: bool. Also restore the optimizer. Use False to load a model
            saved on another backend (its optimizer state is backend-specific),
            then `compile` it again.

    Returns:
        The model (a `kvae.models.VAE` subclass).
    """
    import kvae.models  # noqa: F401  (registers the classes for deserialisation)

    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise KvaeError(f"{path}: no such model file")
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as exc:  # keras raises many types for a bad archive
        raise KvaeError(f"{path}: cannot load model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def reconstruct_audio(model, audio):
    """Reconstruct a clip of any length window by window, with 50% overlap-add.

    Args:
        model: VAE. A trained model.
        audio: array-like. Mono audio at the model's rate, any length.

    Returns:
        A float32 array of the same length.
    """
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    w = model.window
    hop = max(w // 2, 1)
    n_frames = max(1, math.ceil(max(len(x) - w, 0) / hop) + 1)
    padded = np.zeros((n_frames - 1) * hop + w, np.float32)
    padded[: len(x)] = x
    frames = np.stack([padded[i * hop:i * hop + w] for i in range(n_frames)])
    out_frames = np.concatenate([model.reconstruct(frames[i:i + 64]) for i in range(0, n_frames, 64)])
    taper = np.hanning(w + 2)[1:-1].astype(np.float32) if n_frames > 1 else np.ones(w, np.float32)
    out = np.zeros_like(padded)
    norm = np.zeros_like(padded)
    for i, frame in enumerate(out_frames):
        out[i * hop:i * hop + w] += frame * taper
        norm[i * hop:i * hop + w] += taper
    return (out / np.maximum(norm, 1e-3))[: len(x)]
