"""Running a search: reading its config, guarding its folder, running the trials, writing the outputs.

`search` is the whole search (and `main` is `kvae tune`); the keras-tuner
tuners it drives are in `kvae.tuning._keras_tuner`.
"""

import contextlib
import copy
import importlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kvae.config import load_config, merge_config, read_config_file, upgrade
from kvae.errors import KvaeError
from kvae.runs import RunFolder, comparable, run_lock
from kvae.presets import find_preset
from kvae.training import make_datasets
from kvae.tuning import _keras_tuner
from kvae.tuning.hypermodel import FCVAEHyperModel
from kvae.tuning.report import format_table, last_line, plot_trials, trial_rows, write_table
from kvae.tuning.space import (DEFAULT_SEARCH_CONFIG, DEFAULT_SETTINGS, PARAMETERS, SPACE_FILE, check_settings,
                               describe, parse_space, split_search_table, write_json)


def read_search_config(config=None):
    """Read a search config: the kvae config and the `[search]` table.

    Args:
        config: str, Path, dict or None. A search config file (a bare name
            such as "tiny" is a built-in search preset, else a built-in
            experiment config), a dict (its "search" key is the search
            table), or None for the built-in "fc_depth_lr".

    Returns:
        `(kvae_config, search_table)`: the resolved kvae config and the raw
        `[search]` table (empty when the file has none).

    Raises:
        KvaeError: the file is missing (and no preset has that name) or is
            not a valid config; the message is one line.
    """
    if isinstance(config, dict):
        config = copy.deepcopy(config)
        search = config.pop("search", {}) or {}
        return load_config(config), search
    if config is None:
        config = find_preset(DEFAULT_SEARCH_CONFIG, "search")
        if config is None:
            raise KvaeError(f"{DEFAULT_SEARCH_CONFIG}: built-in search config missing; reinstall kvae")
    data = read_config_file(config, kind="search")
    search = data.pop("search", {}) or {}
    if not isinstance(search, dict):
        raise KvaeError(f"{config}: search: expected a table of settings")
    return load_config(data), search


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
        for module in ("grpc", "google.protobuf"):  # imported, not just found: a broken install fails here
            importlib.import_module(module)
    except ImportError:
        raise KvaeError("a distributed search needs grpcio and protobuf<5: pip install 'kvae[distributed]'") from None
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


# -- the folder guard --------------------------------------------------------------------


def _fingerprint(cfg):
    """The config as a resumed search compares it: without what a search may change (`kvae.runs.RESUMABLE`)."""
    return comparable(cfg, "search")


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
                            f"{describe(old.get('space', {}).get(name))} there, {describe(space.get(name))} here); "
                            "use another --dir")
        diff = _first_difference(upgrade(old.get("config", {}), where=str(path)), record["config"])
        if diff:
            raise KvaeError(f"{directory}: folder holds a search with another config ({diff[0]}: "
                            f"{diff[1]!r} there, {diff[2]!r} here); use another --dir")
        return
    if _keras_tuner.has_project(directory):
        raise KvaeError(f"{directory}: holds a keras-tuner project without {SPACE_FILE}; use another --dir")
    if role != "worker":
        write_json(path, record)


# -- the outputs -------------------------------------------------------------------------


def _retrain_best(best_cfg, best_dir, verbose):
    """Train the best configuration from scratch into `best_dir` (a kvae run folder), unless it is there."""
    from kvae.training import fit

    best = RunFolder(best_dir)
    if best.config.is_file():
        try:
            same = _fingerprint(json.loads(best.config.read_text())) == _fingerprint(load_config(best_cfg))
        except (OSError, json.JSONDecodeError):
            same = False
        if same and best.model.is_file():
            if verbose:
                print(f"best model up to date: {best.model}")
            return best.model
        if not same:  # the best trial changed (the search went on): start the folder afresh
            shutil.rmtree(best_dir)
    elif best_dir.exists() and any(best_dir.iterdir()):
        raise KvaeError(f"{best_dir}: exists and is not a kvae run folder; move it away")
    if verbose:
        print(f"retraining the best hyperparameters from scratch for {best_cfg['train']['epochs']} epochs")
    fit(config=best_cfg, run=best_dir, verbose=verbose)
    return best.model


def _write_outputs(result, tuner, hypermodel, cfg, directory, retrain, verbose):
    rows = trial_rows(tuner, cfg)
    result.rows = rows
    result.table = write_table(rows, directory / "trials.csv")
    result.plot = plot_trials(rows, directory / "trials.png", title=cfg["name"])
    best = tuner.oracle.get_best_trials(1)
    best = best[0] if best and best[0].status == "COMPLETED" else None
    all_trials = _keras_tuner.trials(tuner.oracle)
    if verbose:
        print("\n".join(format_table(rows, best.trial_id if best else None)))
        for trial in all_trials:
            if trial.status in ("FAILED", "INVALID") and trial.message:
                print(f"trial {trial.trial_id} {trial.status.lower()}: {last_line(trial.message)}")
        print(f"table:      {result.table}")
        print(f"plot:       {result.plot}")
    if best is None:
        failed = [t for t in all_trials if t.status != "COMPLETED"]
        last = last_line(failed[-1].message) if failed else ""
        raise KvaeError(f"no trial completed ({len(failed)} failed" + (f"; last error: {last}" if last else "") + ")")
    values = {k: best.hyperparameters.values[k] for k in PARAMETERS if k in best.hyperparameters.values}
    result.best_trial_id = best.trial_id
    result.best_hyperparameters = values
    result.best_val_loss = float(best.score)
    write_json(directory / "best_hyperparameters.json",
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


# -- the search --------------------------------------------------------------------------


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
            a `[search]` table; a bare name is a built-in search preset, see
            `read_search_config`), or None for the built-in "fc_depth_lr".
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
        KvaeError: a missing config, an unknown tuner, a bad range, a folder
            from another search, or no completed trial; the message is one line.

    Example:
    ```python
    from kvae.tuning import search
    result = search("tiny", directory="tuning-runs/tiny", max_trials=3)
    print(result.best_hyperparameters, result.best_model)
    ```
    """
    cfg, table = read_search_config(config)
    settings, file_space = split_search_table(table)
    given = {key: value for key, value in (("tuner", tuner), ("max_trials", max_trials), ("epochs", epochs))
             if value is not None}
    settings = {**DEFAULT_SETTINGS, **settings, **check_settings(given)}
    kind = settings["tuner"]
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
    with contextlib.ExitStack() as held:
        if role == "single":  # a distributed search's chief and workers share the folder by design
            held.enter_context(run_lock(directory, "tune"))
        return _search(directory, kind, canonical, cfg, role, settings, verbose, retrain)


def _search(directory, kind, canonical, cfg, role, settings, verbose, retrain):
    """`search` once the folder is settled (and held, for a single-process search)."""
    _guard_folder(directory, kind, canonical, cfg, role)

    hypermodel = FCVAEHyperModel(cfg, canonical)
    kt_tuner = _keras_tuner.make_tuner(kind, hypermodel, directory, settings)
    result = SearchResult(directory=directory, role=role, config=cfg, space=canonical)
    if role == "worker":
        train_ds, val_ds, train_src, steps = make_datasets(cfg, verbose=verbose)
        hypermodel.train_source = train_src
        kt_tuner.search(train_ds, validation_data=val_ds, epochs=cfg["train"]["epochs"],
                        steps_per_epoch=steps, verbose=1 if verbose else 0)
        return result

    oracle = kt_tuner.oracle
    before = sum(t.status != "RUNNING" for t in _keras_tuner.trials(oracle))
    if role == "single" and _keras_tuner.is_complete(oracle):
        result.already_complete = True
    elif role == "chief":
        if verbose:
            print(f"chief: serving the oracle on {os.environ['KERASTUNER_ORACLE_IP']}:"
                  f"{os.environ['KERASTUNER_ORACLE_PORT']} until the workers finish", flush=True)
        _keras_tuner.serve_as_chief(kt_tuner, verbose=1 if verbose else 0)  # until every worker is told to stop
        kt_tuner.save()  # keras-tuner's chief does not save the oracle after the last trial ends
    else:
        if verbose and before:
            print(f"resuming the search in {directory}: {before} of {settings['max_trials']} trials done")
        train_ds, val_ds, train_src, steps = make_datasets(cfg, verbose=verbose)
        hypermodel.train_source = train_src
        try:
            kt_tuner.search(train_ds, validation_data=val_ds, epochs=cfg["train"]["epochs"],
                            steps_per_epoch=steps, verbose=1 if verbose else 0)
        except RuntimeError as exc:  # keras-tuner: max_consecutive_failed_trials reached
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise KvaeError(f"search stopped: {lines[0][:160] if lines else exc}"
                            + (f"; last error: {lines[-1][:200]}" if len(lines) > 1 else "")) from None
    all_trials = _keras_tuner.trials(oracle)
    result.trials_run = sum(t.status != "RUNNING" for t in all_trials) - before
    if result.trials_run == 0:
        result.already_complete = True
    if verbose and result.already_complete:
        print(f"search already complete: {len(all_trials)} trials in {directory} "
              f"(raise --max-trials to run more)")
    return _write_outputs(result, kt_tuner, hypermodel, cfg, directory, retrain, verbose)
