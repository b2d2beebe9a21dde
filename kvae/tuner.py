"""Hyperparameter search for the fully connected VAE with keras-tuner: depth and learning rate.

The paper scaled its FC VAE from 1 to 15 hidden layers and tried "a large
range of learning rates" by hand; `search` (and `kvae tune`) does that with
keras-tuner. The objective is the validation negative ELBO, `val_loss`.

A search config is a kvae config (it may start from another one with `base`,
a plain config or another search config) plus a `[search]` table::

    base = "../configs/quickstart.toml"

    [search]
    tuner = "random"          # random, bayesian or hyperband
    max_trials = 20
    epochs = 5                # per trial (hyperband: the most epochs of one model)
    hidden_layers = {min = 1, max = 15}
    learning_rate = {min = 1e-5, max = 1e-2, sampling = "log"}
    hidden_units = [256, 512, 1024]   # a list: choices
    latent_dim = 32                   # a number: fixed

A search folder holds::

    search_space.json         the space, tuner and base config (guards a resume)
    keras_tuner/              keras-tuner's project: oracle.json, trial_<id>/
    trials.csv                one row per trial (depth, learning rate, val_loss, time)
    trials.png                val_loss against depth and against learning rate
    best_hyperparameters.json the best trial
    best/                     a kvae run folder: the best hyperparameters retrained
                              from scratch (model.keras, config.json, samples/)

Running the same search again resumes it (keras-tuner's `overwrite=False`): a
trial cut short is run again, finished ones are kept, and a finished search
only rewrites its outputs. With `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`
and `KERASTUNER_ORACLE_PORT` set it runs as keras-tuner's distributed chief
(serves the oracle, then writes the outputs) or as a worker (runs trials);
`tuning/distributed.py` starts one chief and N workers on one machine.
"""

import copy
import csv
import datetime
import json
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import keras_tuner
import numpy as np

from kvae.config import load_config, merge_config, read_config_file
from kvae.errors import KvaeError
from kvae.training import KLSchedule, WindowEpochs, build_model, compile_model, make_datasets

TUNING_DIR = Path(__file__).resolve().parent.parent / "tuning"
DEFAULT_SEARCH_CONFIG = "fc_depth_lr.toml"
TUNERS = ("random", "bayesian", "hyperband")
OBJECTIVE = "val_loss"
PROJECT_NAME = "keras_tuner"
SPACE_FILE = "search_space.json"
TRIAL_RECORD = "kvae_trial.json"
TABLE_COLUMNS = ("trial_id", "status", "hidden_layers", "learning_rate", "hidden_units", "latent_dim",
                 "epochs", "val_loss", "seconds", "tuner_id")

# Searchable values: where each lives in a kvae config, its type and its bounds.
PARAMETERS = {
    "hidden_layers": ("model", int, 1, 15),
    "learning_rate": ("train", float, 0.0, None),  # lower bound exclusive
    "hidden_units": ("model", int, 1, None),
    "latent_dim": ("model", int, 1, None),
}
DEFAULT_SPACE = {
    "hidden_layers": {"min": 1, "max": 15},
    "learning_rate": {"min": 1e-5, "max": 1e-2, "sampling": "log"},
}
SEARCH_SETTINGS = {"tuner": str, "max_trials": int, "epochs": int, "seed": int, "factor": int,
                   "keep_checkpoints": bool}
DEFAULT_SETTINGS = {"tuner": "random", "max_trials": 10, "epochs": None, "seed": 0, "factor": 3,
                    "keep_checkpoints": False}
_IGNORED_FOR_RESUME = (("data", "cache"), ("train", "verbose"), ("train", "n_samples"))


# -- the search space -----------------------------------------------------------------


def _number(name, key, value, kind):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KvaeError(f"search.{name}.{key}: expected a number, got {value!r}")
    if kind is int:
        if not float(value).is_integer():
            raise KvaeError(f"search.{name}.{key}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


def _check_bounds(name, key, value):
    _, kind, low, high = PARAMETERS[name]
    if kind is float and value <= low:
        raise KvaeError(f"search.{name}: must be positive, got {key} {value:g}")
    if kind is int and (value < low or (high is not None and value > high)):
        span = f"{low}..{high}" if high is not None else f"at least {low}"
        raise KvaeError(f"search.{name}: must lie within {span}, got {key} {value}")


def parse_space(space):
    """Validate a search space and return it in canonical form.

    Each entry is a number (fixed), a list (choices), or a table with `min`
    and `max` (and optional `step`, `sampling = "linear" | "log"`); a table
    `{choices = [...]}` or `{value = x}` also works. Missing `hidden_layers`
    and `learning_rate` get the paper's ranges (1 to 15 layers, 1e-5 to 1e-2
    on a log scale).

    Args:
        space: dict or None. `{parameter: spec}` for hidden_layers,
            learning_rate, hidden_units and latent_dim.

    Returns:
        A dict `{parameter: {"min", "max", "step", "sampling"} | {"choices"} | {"value"}}`.

    Raises:
        KvaeError: an unknown parameter, an empty or inverted range, a value
            out of bounds (hidden_layers outside 1..15, a learning rate <= 0),
            or an empty list of choices; the message names the parameter.
    """
    merged = dict(DEFAULT_SPACE)
    merged.update(space or {})
    out = {}
    for name, spec in merged.items():
        if name not in PARAMETERS:
            raise KvaeError(f"search.{name}: unknown search parameter (known: {', '.join(PARAMETERS)})")
        kind = PARAMETERS[name][1]
        if isinstance(spec, dict) and set(spec) <= {"value"} and spec:
            spec = spec["value"]
        if isinstance(spec, dict) and set(spec) <= {"choices"} and spec:
            spec = list(spec["choices"])
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            value = _number(name, "value", spec, kind)
            _check_bounds(name, "value", value)
            out[name] = {"value": value}
        elif isinstance(spec, (list, tuple)):
            if not spec:
                raise KvaeError(f"search.{name}: empty list of choices")
            values = [_number(name, "choices", v, kind) for v in spec]
            for v in values:
                _check_bounds(name, "choice", v)
            if len(set(values)) != len(values):
                raise KvaeError(f"search.{name}: repeated choices {values}")
            out[name] = {"choices": values}
        elif isinstance(spec, dict):
            unknown = set(spec) - {"min", "max", "step", "sampling"}
            if unknown:
                raise KvaeError(f"search.{name}.{sorted(unknown)[0]}: unknown key (known: min, max, step, sampling)")
            if "min" not in spec or "max" not in spec:
                raise KvaeError(f"search.{name}: a range needs both min and max")
            lo = _number(name, "min", spec["min"], kind)
            hi = _number(name, "max", spec["max"], kind)
            _check_bounds(name, "min", lo)
            _check_bounds(name, "max", hi)
            if lo > hi:
                raise KvaeError(f"search.{name}: inverted range (min {lo:g} > max {hi:g})")
            if lo == hi:
                raise KvaeError(f"search.{name}: empty range (min = max = {lo:g}); write `{name} = {lo:g}` to fix it")
            sampling = spec.get("sampling", "linear")
            if sampling not in ("linear", "log"):
                raise KvaeError(f"search.{name}.sampling: must be linear or log, got {sampling!r}")
            entry = {"min": lo, "max": hi, "sampling": sampling}
            if "step" in spec:
                step = _number(name, "step", spec["step"], kind)
                if step <= 0:
                    raise KvaeError(f"search.{name}.step: must be positive, got {step:g}")
                entry["step"] = step
            elif kind is int:
                entry["step"] = 1
            out[name] = entry
        else:
            raise KvaeError(f"search.{name}: expected a number, a list of choices or a {{min, max}} table, "
                            f"got {spec!r}")
    return out


def _declare(hp, name, spec):
    """Declare one parameter on a keras-tuner `HyperParameters` and return its value."""
    kind = PARAMETERS[name][1]
    if "value" in spec:
        return hp.Fixed(name, spec["value"])
    if "choices" in spec:
        return hp.Choice(name, spec["choices"])
    if kind is int:
        return hp.Int(name, spec["min"], spec["max"], step=spec.get("step", 1), sampling=spec["sampling"])
    return hp.Float(name, spec["min"], spec["max"], step=spec.get("step"), sampling=spec["sampling"])


def _describe(spec):
    if spec is None:
        return "absent"
    if "value" in spec:
        return f"{spec['value']:g}"
    if "choices" in spec:
        return "[" + ", ".join(f"{v:g}" for v in spec["choices"]) + "]"
    return f"{spec['min']:g}..{spec['max']:g}" + (" log" if spec["sampling"] == "log" else "")


# -- the hypermodel ---------------------------------------------------------------------


class FCVAEHyperModel(keras_tuner.HyperModel):
    """A keras-tuner `HyperModel` for `kvae.models.FCVAE`.

    `build(hp)` substitutes the searched values (hidden_layers, learning_rate
    and optionally hidden_units and latent_dim) into a kvae config and returns
    the compiled model `kvae.training.build_model`/`compile_model` make of it.
    `fit` trains with kvae's callbacks (window epochs, NaN guard, KL warm-up)
    and returns the metrics of the best epoch plus `seconds`, the training
    time, which keras-tuner records with the trial.

    Args:
        config: dict, str or Path. A kvae config (resolved or not); its
            `model.type` must be "fc".
        space: dict or None. The search space, see `parse_space`.
        train_source: kvae.data.WindowSource or None. The training windows'
            source, needed with the tf.data front end to tell it the epoch.
        name: str. Name of the hypermodel. Defaults to "fc_vae".

    Example:
    ```python
    import keras_tuner
    from kvae.tuner import FCVAEHyperModel

    hypermodel = FCVAEHyperModel("quickstart", {"hidden_layers": {"min": 1, "max": 4}})
    tuner = keras_tuner.RandomSearch(hypermodel, objective="val_loss", max_trials=3)
    ```
    """

    def __init__(self, config=None, space=None, train_source=None, name="fc_vae"):
        super().__init__(name=name, tunable=True)
        self.config = load_config(config)
        if self.config["model"].get("type", "fc") != "fc":
            raise KvaeError(f"model.type: the search is for the FC VAE ('fc'), got '{self.config['model']['type']}'")
        self.space = parse_space(space)
        self.train_source = train_source

    def config_for(self, hp):
        """Return the kvae config of one point of the space.

        Args:
            hp: keras_tuner.HyperParameters or dict. Declares the space (an
                `HyperParameters`) or just gives values (a dict).

        Returns:
            A resolved kvae config dict.
        """
        cfg = copy.deepcopy(self.config)
        for name, spec in self.space.items():
            if isinstance(hp, dict):
                if name not in hp:
                    continue
                value = hp[name]
            else:
                value = _declare(hp, name, spec)
            section, kind = PARAMETERS[name][:2]
            cfg[section][name] = kind(value)
        return cfg

    def build(self, hp):
        cfg = self.config_for(hp)
        keras.utils.set_random_seed(cfg["train"]["seed"])
        return compile_model(build_model(cfg), cfg)

    def fit(self, hp, model, *args, callbacks=None, verbose=1, **kwargs):
        """Train one trial's model; return the best epoch's metrics and `seconds`."""
        train = self.config_for(dict(hp.values))["train"]
        x = args[0] if args else kwargs.get("x")
        cbs = list(callbacks or [])
        if hasattr(x, "set_epoch") or self.train_source is not None:
            cbs.insert(0, WindowEpochs(x, self.train_source))
        if train["kl_schedule"] != "constant" and train["kl_warmup_steps"] > 0:
            cbs.insert(0, KLSchedule(train["kl_warmup_steps"], train["kl_schedule"], train["kl_start"]))
        cbs.append(keras.callbacks.TerminateOnNaN())
        start = time.perf_counter()
        history = model.fit(*args, callbacks=cbs, verbose=train["verbose"] if verbose else 0, **kwargs)
        return _best_epoch_metrics(history.history, time.perf_counter() - start)


def _best_epoch_metrics(history, seconds):
    """The metrics of the epoch with the lowest finite `val_loss` (NaN when there is none)."""
    val = np.asarray(history.get(OBJECTIVE, []), dtype=np.float64)
    finite = np.isfinite(val)
    if not finite.any():
        return {OBJECTIVE: float("nan"), "seconds": float(seconds)}
    best = int(np.argmin(np.where(finite, val, np.inf)))
    out = {}
    for key, values in history.items():
        if best < len(values) and np.isfinite(values[best]):
            out[key] = float(values[best])
    out["best_epoch"] = float(best + 1)
    out["seconds"] = float(seconds)
    return out


# -- tuners that leave a record per trial ------------------------------------------------


class _TrialRecords:
    """Mixin for keras-tuner tuners: writes who ran each trial and how long it took.

    `trial_<id>/kvae_trial.json` holds the tuner id (`KERASTUNER_TUNER_ID`:
    "tuner0" alone, the worker's id in a distributed search), host, process
    id and wall time. Unless `keep_checkpoints`, the trial's weight
    checkpoint is deleted afterwards: kvae retrains the best trial instead of
    reusing it, and a deep, wide model's checkpoints add up to gigabytes.
    """

    keep_checkpoints = False

    def run_trial(self, trial, *args, **kwargs):
        record = {"trial_id": trial.trial_id, "tuner_id": self.tuner_id, "host": socket.gethostname(),
                  "pid": os.getpid(), "started": datetime.datetime.now().isoformat(timespec="seconds")}
        start = time.perf_counter()
        ok = False
        try:
            results = super().run_trial(trial, *args, **kwargs)
            ok = True
            return results
        finally:
            record.update(seconds=round(time.perf_counter() - start, 3), finished=ok)
            trial_dir = Path(self.get_trial_dir(trial.trial_id))
            _write_json(trial_dir / TRIAL_RECORD, record)
            if not self.keep_checkpoints:
                for path in trial_dir.glob("checkpoint*"):
                    path.unlink(missing_ok=True)


class KvaeRandomSearch(_TrialRecords, keras_tuner.RandomSearch):
    """keras-tuner's `RandomSearch` with kvae's per-trial records."""


class KvaeBayesianOptimization(_TrialRecords, keras_tuner.BayesianOptimization):
    """keras-tuner's `BayesianOptimization` with kvae's per-trial records."""


class KvaeHyperband(_TrialRecords, keras_tuner.Hyperband):
    """keras-tuner's `Hyperband` with kvae's per-trial records (it keeps checkpoints: rounds resume from them)."""

    keep_checkpoints = True


# -- resolving a search -----------------------------------------------------------------


def _find_search_config(config):
    """A path for `--config`: a file, or a name in `tuning/` (then `configs/`, by load_config)."""
    if config is None:
        default = TUNING_DIR / DEFAULT_SEARCH_CONFIG
        return default if default.is_file() else None
    path = Path(config)
    if path.is_file():
        return path
    if len(path.parts) == 1:
        for candidate in (TUNING_DIR / path.name, TUNING_DIR / f"{path.name}.toml"):
            if candidate.is_file():
                return candidate
    return path  # load_config looks in configs/ or says it is not found


def read_search_config(config=None):
    """Read a search config: the kvae config and the `[search]` table.

    Args:
        config: str, Path, dict or None. A search config file (a bare name
            such as "tiny" is looked up in `tuning/`, then `configs/`), a dict
            (its "search" key is the search table), or None for
            `tuning/fc_depth_lr.toml`.

    Returns:
        `(kvae_config, search_table)`: the resolved kvae config and the raw
        `[search]` table (empty when the file has none).
    """
    if isinstance(config, dict):
        config = copy.deepcopy(config)
        search = config.pop("search", {}) or {}
        return load_config(config), search
    path = _find_search_config(config)
    if path is None:
        return load_config("quickstart"), {}
    if not path.is_file():
        return load_config(path), {}  # a name in configs/, or a one-line "not found"
    return _read_search_file(path)


def _read_search_file(path):
    """Resolve a search config file and its `base` chain: `(kvae_config, search_table)`."""
    data = read_config_file(path)
    search = data.pop("search", {}) or {}
    if not isinstance(search, dict):
        raise KvaeError(f"{path}: search: expected a table of settings")
    return load_config(data), search


def _split_search_table(search):
    """Split a `[search]` table into settings (tuner, max_trials, ...) and the space."""
    settings, space = {}, {}
    for key, value in search.items():
        if key in SEARCH_SETTINGS:
            kind = SEARCH_SETTINGS[key]
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            if not ok:
                raise KvaeError(f"search.{key}: expected {kind.__name__}, got {value!r}")
            settings[key] = value
        elif key in PARAMETERS:
            space[key] = value
        else:
            raise KvaeError(f"search.{key}: unknown key (known: {', '.join(list(SEARCH_SETTINGS) + list(PARAMETERS))})")
    return settings, space


@dataclass
class SearchResult:
    """What `search` did and wrote.

    Attributes:
        directory: Path. The search folder.
        role: str. "single", "chief" or "worker".
        already_complete: bool. The search had no trial left to run.
        trials_run: int. Trials that ended during this call.
        rows: list of dict. The trials table (`TABLE_COLUMNS`).
        best_trial_id: str or None. The trial with the lowest val_loss.
        best_hyperparameters: dict. Its searched values.
        best_val_loss: float or None.
        best_model: Path or None. The retrained best model (`best/model.keras`).
        table: Path or None. `trials.csv`.
        plot: Path or None. `trials.png`.
        config: dict. The resolved base kvae config.
        space: dict. The canonical search space.
    """

    directory: Path
    role: str = "single"
    already_complete: bool = False
    trials_run: int = 0
    rows: list = field(default_factory=list)
    best_trial_id: str = None
    best_hyperparameters: dict = field(default_factory=dict)
    best_val_loss: float = None
    best_model: Path = None
    table: Path = None
    plot: Path = None
    config: dict = field(default_factory=dict)
    space: dict = field(default_factory=dict)


def _role():
    """'single', 'chief' or 'worker', from keras-tuner's distribution variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    for var in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(var):
            raise KvaeError(f"{var}: must be set with KERASTUNER_ORACLE_IP for a distributed search")
    try:
        import grpc  # noqa: F401
        from google import protobuf  # noqa: F401
    except ImportError:
        raise KvaeError("a distributed search needs grpcio and protobuf<5: pip install 'kvae[distributed]'") from None
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def _fingerprint(cfg):
    out = copy.deepcopy(cfg)
    out.pop("name", None)
    for section, key in _IGNORED_FOR_RESUME:
        out.get(section, {}).pop(key, None)
    return json.loads(json.dumps(out))


def _first_difference(old, new, prefix=""):
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}", a, b
    return None


def _guard_folder(directory, tuner, space, cfg, role):
    """Write `search_space.json` on first use; on resume, refuse a folder made by another search."""
    record = {"tuner": tuner, "space": space, "config": _fingerprint(cfg)}
    record = json.loads(json.dumps(record))
    path = directory / SPACE_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise KvaeError(f"{path}: unreadable ({exc}); use another --dir") from None
        if old.get("tuner") != tuner:
            raise KvaeError(f"{directory}: folder holds a '{old.get('tuner')}' search, not '{tuner}'; "
                            "use another --dir")
        diff = _first_difference(old.get("space", {}), record["space"])
        if diff:
            name = diff[0].split(".")[0]
            raise KvaeError(f"{directory}: folder holds a search over another space (search.{name}: "
                            f"{_describe(old.get('space', {}).get(name))} there, {_describe(space.get(name))} here); "
                            "use another --dir")
        diff = _first_difference(old.get("config", {}), record["config"])
        if diff:
            raise KvaeError(f"{directory}: folder holds a search with another config ({diff[0]}: "
                            f"{diff[1]!r} there, {diff[2]!r} here); use another --dir")
        return
    if (directory / PROJECT_NAME / "oracle.json").is_file():
        raise KvaeError(f"{directory}: holds a keras-tuner project without {SPACE_FILE}; use another --dir")
    if role != "worker":
        _write_json(path, record)


def _make_tuner(kind, hypermodel, directory, settings):
    reloading = (Path(directory) / PROJECT_NAME / "oracle.json").is_file()
    common = dict(objective=keras_tuner.Objective(OBJECTIVE, "min"), seed=settings["seed"],
                  directory=str(directory), project_name=PROJECT_NAME, overwrite=False,
                  max_consecutive_failed_trials=max(3, settings["max_trials"]))
    try:
        if kind == "random":
            tuner = KvaeRandomSearch(hypermodel, max_trials=settings["max_trials"], **common)
        elif kind == "bayesian":
            tuner = KvaeBayesianOptimization(hypermodel, max_trials=settings["max_trials"], **common)
        else:
            tuner = KvaeHyperband(hypermodel, max_epochs=hypermodel.config["train"]["epochs"],
                                  factor=settings["factor"], hyperband_iterations=None, **common)
            tuner.oracle.max_trials = settings["max_trials"]  # cap it like the other tuners
    except ImportError as exc:  # bayesian needs scikit-learn and scipy
        raise KvaeError(f"tuner '{kind}': {exc}") from None
    except (RuntimeError, KeyError, ValueError) as exc:
        if not reloading:
            raise
        raise KvaeError(f"{directory}: cannot reload the keras-tuner project ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]}); use another --dir") from None
    if kind != "hyperband":
        tuner.keep_checkpoints = settings["keep_checkpoints"]
    if not isinstance(tuner.oracle, keras_tuner.Oracle):  # a worker's client to the chief
        return tuner
    _drop_finished_retries(tuner.oracle)
    return tuner


def _drop_finished_retries(oracle):
    """Keep a reloaded oracle from rerunning trials that had finished.

    keras-tuner's `Oracle.end_trial` saves its state before it removes the
    trial from `ongoing_trials`, and in a distributed search nothing saves it
    again after the last trial, so `oracle.json` lists that finished trial as
    running and a reload queues it to run again. A trial whose own
    `trial.json` says COMPLETED or FAILED has finished: drop it from the queue.
    """
    queue = getattr(oracle, "_retry_queue", None)
    if queue:
        oracle._retry_queue = [t for t in queue if oracle.trials[t].status not in ("COMPLETED", "FAILED")]


def _serve_as_chief(tuner, verbose=1, poll=0.5):
    """Serve the oracle to the workers until they are all done: keras-tuner's chief, checking more often.

    This is what `BaseTuner.search` does on the chief (`oracle_chief.start_server`),
    except that it checks for the end every `poll` seconds instead of every
    20, says so when the port is taken, and stops the gRPC server afterwards.
    """
    try:
        from concurrent import futures

        import grpc
        from keras_tuner.src import protos
        from keras_tuner.src.distribute import oracle_chief
    except ImportError:  # another keras-tuner layout: its own loop
        tuner.search(verbose=verbose)
        return
    oracle = tuner.oracle
    oracle.verbose = verbose
    tuner.save()
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise KvaeError(f"{address}: the chief cannot listen there (address not local, or port in use)")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll)
    finally:
        server.stop(grace=2)


def _is_complete(oracle):
    """True when a (reloaded) oracle has no trial left: none running, none to retry, max_trials reached."""
    return (not oracle.ongoing_trials and not oracle._retry_queue
            and bool(oracle.max_trials) and len(oracle.trials) >= oracle.max_trials)


# -- outputs ----------------------------------------------------------------------------


def _write_json(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _last_line(message):
    """The last non-empty line of a trial's message (a traceback's exception line), shortened."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _metric(trial, name):
    if trial.metrics.exists(name):
        value = trial.metrics.get_last_value(name)
        return float(value) if value is not None else None
    return None


def trial_rows(tuner, base_config):
    """The trials table: one dict per trial, in start order, with `TABLE_COLUMNS` keys."""
    oracle = tuner.oracle
    order = list(oracle.start_order) + [t for t in oracle.trials if t not in oracle.start_order]
    rows = []
    for trial_id in order:
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        record_path = Path(oracle._project_dir) / f"trial_{trial_id}" / TRIAL_RECORD
        record = {}
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text())
            except (OSError, json.JSONDecodeError):
                record = {}
        score = trial.score if trial.status == "COMPLETED" else None
        seconds = _metric(trial, "seconds")
        rows.append({
            "trial_id": trial_id,
            "status": trial.status,
            "hidden_layers": int(values.get("hidden_layers", base_config["model"].get("hidden_layers", 2))),
            "learning_rate": float(values.get("learning_rate", base_config["train"]["learning_rate"])),
            "hidden_units": int(values.get("hidden_units", base_config["model"].get("hidden_units", 512))),
            "latent_dim": int(values.get("latent_dim", base_config["model"].get("latent_dim", 64))),
            "epochs": int(values.get("tuner/epochs", base_config["train"]["epochs"])),
            "val_loss": float(score) if score is not None and math.isfinite(score) else None,
            "seconds": record.get("seconds", seconds),  # the whole trial; the fit alone across machines
            "tuner_id": record.get("tuner_id", ""),
        })
    return rows


def _fmt(key, value):
    if value is None:
        return ""
    if key == "learning_rate":
        return f"{value:.3g}"
    if key == "val_loss":
        return f"{value:.6g}"
    if key == "seconds":
        return f"{value:.1f}"
    return str(value)


def write_table(rows, path):
    """Write the trials table as CSV; return the path."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(k, row[k]) for k in TABLE_COLUMNS})
    return Path(path)


def format_table(rows, best_trial_id=None):
    """The trials table as aligned text lines (the best trial marked with `*`)."""
    headers = ["trial", "status", "layers", "lr", "units", "latent", "epochs", "val_loss", "seconds", "tuner"]
    body = [[_fmt(k, row[k]) for k in TABLE_COLUMNS] for row in rows]
    for line, row in zip(body, rows):
        if row["trial_id"] == best_trial_id:
            line[0] += " *"
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return lines


def plot_trials(rows, path, title=None):
    """Plot val_loss against depth and against learning rate (log scale); return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["val_loss"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    best = min(done, key=lambda r: r["val_loss"]) if done else None
    for ax, key, label in ((axes[0], "hidden_layers", "hidden layers (encoder = decoder depth)"),
                           (axes[1], "learning_rate", "learning rate")):
        xs = [r[key] for r in done]
        ys = [r["val_loss"] for r in done]
        ax.scatter(xs, ys, s=22, alpha=0.8, label="trial")
        if best is not None:
            ax.scatter([best[key]], [best["val_loss"]], marker="*", s=160, color="C3", label="best")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        if key == "learning_rate":
            ax.set_xscale("log")
        else:
            ax.set_xticks(sorted(set(xs)) if len(set(xs)) <= 15 else ax.get_xticks())
    axes[0].set_ylabel("val_loss (validation negative ELBO)")
    if best is not None:
        axes[1].legend(fontsize=8)
    if not done:
        for ax in axes:
            ax.text(0.5, 0.5, "no completed trial", ha="center", va="center", transform=ax.transAxes)
    n_failed = sum(r["status"] != "COMPLETED" for r in rows)
    fig.suptitle((title or "search") + f": {len(done)} trials" + (f", {n_failed} not completed" if n_failed else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _retrain_best(best_cfg, best_dir, verbose):
    """Train the best configuration from scratch into `best_dir` (a kvae run folder), unless it is there."""
    from kvae.training import fit

    saved = best_dir / "config.json"
    if saved.is_file():
        try:
            same = _fingerprint(json.loads(saved.read_text())) == _fingerprint(load_config(best_cfg))
        except (OSError, json.JSONDecodeError):
            same = False
        if same and (best_dir / "model.keras").is_file():
            if verbose:
                print(f"best model up to date: {best_dir / 'model.keras'}")
            return best_dir / "model.keras"
        if not same:  # the best trial changed (the search went on): start the folder afresh
            shutil.rmtree(best_dir)
    elif best_dir.exists() and any(best_dir.iterdir()):
        raise KvaeError(f"{best_dir}: exists and is not a kvae run folder; move it away")
    if verbose:
        print(f"retraining the best hyperparameters from scratch for {best_cfg['train']['epochs']} epochs")
    fit(config=best_cfg, run=best_dir, verbose=verbose)
    return best_dir / "model.keras"


def _write_outputs(result, tuner, hypermodel, cfg, directory, retrain, verbose):
    rows = trial_rows(tuner, cfg)
    result.rows = rows
    result.table = write_table(rows, directory / "trials.csv")
    result.plot = plot_trials(rows, directory / "trials.png", title=cfg["name"])
    best = tuner.oracle.get_best_trials(1)
    best = best[0] if best and best[0].status == "COMPLETED" else None
    if verbose:
        print("\n".join(format_table(rows, best.trial_id if best else None)))
        for trial in tuner.oracle.trials.values():
            if trial.status in ("FAILED", "INVALID") and trial.message:
                print(f"trial {trial.trial_id} {trial.status.lower()}: {_last_line(trial.message)}")
        print(f"table:      {result.table}")
        print(f"plot:       {result.plot}")
    if best is None:
        failed = [t for t in tuner.oracle.trials.values() if t.status != "COMPLETED"]
        last = _last_line(failed[-1].message) if failed else ""
        raise KvaeError(f"no trial completed ({len(failed)} failed" + (f"; last error: {last}" if last else "") + ")")
    values = {k: best.hyperparameters.values[k] for k in PARAMETERS if k in best.hyperparameters.values}
    result.best_trial_id = best.trial_id
    result.best_hyperparameters = values
    result.best_val_loss = float(best.score)
    _write_json(directory / "best_hyperparameters.json",
                {"trial_id": best.trial_id, "val_loss": float(best.score), "hyperparameters": values})
    if verbose:
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        print(f"best:       trial {best.trial_id}, val_loss {best.score:.6g} ({shown})")
    if retrain:
        best_cfg = hypermodel.config_for(values)
        best_cfg["name"] = f"{cfg['name']}-best"
        result.best_model = _retrain_best(best_cfg, directory / "best", verbose)
        if verbose:
            print(f"best model: {result.best_model}")
    return result


# -- the search -------------------------------------------------------------------------


def search(config=None, data=None, directory="tuning-runs/fc", tuner=None, max_trials=None, epochs=None,
           space=None, cache=None, retrain=True, verbose=True):
    """Search the FC VAE's depth and learning rate (and optionally width and latent size) with keras-tuner.

    Running it again on the same folder resumes the search; a finished search
    runs no trial and only rewrites its outputs. With keras-tuner's
    distribution variables set (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`,
    `KERASTUNER_ORACLE_PORT`) it runs as the chief (serves the oracle until
    the workers are done, then writes the outputs) or as a worker (runs
    trials, writes no outputs).

    Args:
        config: str, Path, dict or None. A search config (a kvae config plus
            a `[search]` table; a bare name is looked up in `tuning/`), or
            None for `tuning/fc_depth_lr.toml`.
        data: str, Path or None. Dataset root; overrides `data.path`.
        directory: str or Path. The search folder. Defaults to "tuning-runs/fc".
        tuner: str or None. "random", "bayesian" or "hyperband"; overrides
            `search.tuner` (default "random").
        max_trials: int or None. Overrides `search.max_trials` (default 10).
            Raising it on a finished search runs the extra trials.
        epochs: int or None. Epochs per trial (hyperband: the most for one
            model); overrides `search.epochs`, then `train.epochs`.
        space: dict or None. Search-space entries over the config's, see
            `parse_space`.
        cache: str, Path or None. Cache folder; overrides `data.cache`.
        retrain: bool. Retrain the best hyperparameters into `best/`.
            Defaults to True.
        verbose: bool. Print keras-tuner's progress and the table.

    Returns:
        A `SearchResult`.

    Raises:
        KvaeError: an unknown tuner, a bad range, a folder from another search,
            or no completed trial; the message is one line.

    Example:
    ```python
    from kvae.tuner import search
    result = search("tiny", directory="tuning-runs/tiny", max_trials=3)
    print(result.best_hyperparameters, result.best_model)
    ```
    """
    cfg, table = read_search_config(config)
    settings, file_space = _split_search_table(table)
    settings = {**DEFAULT_SETTINGS, **settings}
    for key, value in (("tuner", tuner), ("max_trials", max_trials), ("epochs", epochs)):
        if value is not None:
            settings[key] = value
    kind = str(settings["tuner"]).lower()
    if kind not in TUNERS:
        raise KvaeError(f"tuner: unknown tuner '{settings['tuner']}' (choose random, bayesian or hyperband)")
    if int(settings["max_trials"]) < 1:
        raise KvaeError(f"max_trials: must be at least 1, got {settings['max_trials']}")
    if settings["factor"] < 2:
        raise KvaeError(f"search.factor: must be at least 2, got {settings['factor']}")
    overrides = {}
    if settings["epochs"] is not None:
        overrides.setdefault("train", {})["epochs"] = int(settings["epochs"])
    if data is not None:
        overrides.setdefault("data", {})["path"] = str(Path(data).expanduser().resolve())
    if cache is not None:
        overrides.setdefault("data", {})["cache"] = str(cache)
    cfg = load_config(merge_config(cfg, overrides))
    canonical = parse_space({**file_space, **(space or {})})

    role = _role()
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KvaeError(f"{directory}: cannot create search folder ({exc.strerror or exc})") from None
    _guard_folder(directory, kind, canonical, cfg, role)

    hypermodel = FCVAEHyperModel(cfg, canonical)
    kt_tuner = _make_tuner(kind, hypermodel, directory, settings)
    result = SearchResult(directory=directory, role=role, config=cfg, space=canonical)
    if role == "worker":
        train_ds, val_ds, train_src, steps = make_datasets(cfg, verbose=verbose)
        hypermodel.train_source = train_src
        kt_tuner.search(train_ds, validation_data=val_ds, epochs=cfg["train"]["epochs"],
                        steps_per_epoch=steps, verbose=1 if verbose else 0)
        return result

    oracle = kt_tuner.oracle
    before = sum(t.status != "RUNNING" for t in oracle.trials.values())
    if role == "single" and _is_complete(oracle):
        result.already_complete = True
    elif role == "chief":
        if verbose:
            print(f"chief: serving the oracle on {os.environ['KERASTUNER_ORACLE_IP']}:"
                  f"{os.environ['KERASTUNER_ORACLE_PORT']} until the workers finish", flush=True)
        _serve_as_chief(kt_tuner, verbose=1 if verbose else 0)  # until every worker is told to stop
        kt_tuner.save()  # keras-tuner's chief does not save the oracle after the last trial ends
    else:
        if verbose and before:
            print(f"resuming the search in {directory}: {before} of {settings['max_trials']} trials done")
        train_ds, val_ds, train_src, steps = make_datasets(cfg, verbose=verbose)
        hypermodel.train_source = train_src
        try:
            kt_tuner.search(train_ds, validation_data=val_ds, epochs=cfg["train"]["epochs"],
                            steps_per_epoch=steps, verbose=1 if verbose else 0)
        except RuntimeError as exc:  # keras-tuner: too many consecutive failed trials
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise KvaeError(f"search stopped: {lines[0][:160] if lines else exc}"
                            + (f"; last error: {lines[-1][:200]}" if len(lines) > 1 else "")) from None
    result.trials_run = sum(t.status != "RUNNING" for t in oracle.trials.values()) - before
    if result.trials_run == 0:
        result.already_complete = True
    if verbose and result.already_complete:
        print(f"search already complete: {len(oracle.trials)} trials in {directory} "
              f"(raise --max-trials to run more)")
    return _write_outputs(result, kt_tuner, hypermodel, cfg, directory, retrain, verbose)


def main(args):
    """`kvae tune`: run (or resume) a search and print its table; return the exit status."""
    result = search(config=args.config, data=args.data, directory=args.dir, tuner=args.tuner,
                    max_trials=args.max_trials, epochs=args.epochs, cache=getattr(args, "cache", None),
                    verbose=True)
    if result.role == "worker":
        print(f"worker {os.environ.get('KERASTUNER_TUNER_ID')}: no trial left")
    return 0
