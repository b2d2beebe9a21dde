"""Experiment configs: defaults in code, one TOML (or JSON) file per experiment, validated overrides.

A config has three sections, `data`, `model` and `train`, plus a `name`. `model.type` picks the variant;
the other `model` keys are that class's constructor arguments, checked against its signature; two of them
are tables with keys of their own: `model.loss_weights`, keyed by the logged names of the loss terms
(`kvae.models.elbo.LOSS_WEIGHTS`), and `model.adversarial`, whose keys the adversarial stage owns
(`kvae.models.adversarial.AdversarialStage`). An unknown key or a value of the wrong type is a one-line
`KvaeError` naming the key. kvae 0.1's flat adversarial keys (`adversarial_after`, `disc_capacity`, ...)
are read into the table, and its renamed keys (`data.rate`, `model.rate_target`, `model.stft_weight`,
...: `RENAMED`) under their new names, with one `FutureWarning` line per config saying so.

Files may set `base = "other.toml"` (relative to the file) to start from
another config and change a few keys, as RAVE's configs compose. A bare name
("quickstart") is a built-in preset (`kvae.presets`), also as a `base`
that is not a file beside the config.
"""

import copy
import inspect
import json
import math
import os
import tomllib
import warnings
from pathlib import Path

from kvae import bounds
from kvae._deprecated import renamed
from kvae.errors import KvaeError
from kvae.models.elbo import KL_SCHEDULES, KLWeight, loss_weights
from kvae.presets import find_preset, preset_names

DEFAULTS = {
    "name": "kvae",
    "data": {
        "path": "",  # empty: the embedded dataset
        "cache": "",  # empty: under $KVAE_HOME/cache
        "select": {},  # MusicNet metadata filter, e.g. {ensemble = "Solo Piano"}
        "sample_rate": bounds.DEFAULT_RATE,
        "window_seconds": 1.0,
        "windows_per_recording": 1,
        "val_windows_per_recording": 4,
        "normalize": "none",
        "batch_size": 32,
        "frontend": "pydataset",  # or "tf"
        "workers": 0,  # PyDataset reader threads (0: batches are read in the training loop's thread)
    },
    "model": {"type": "fc"},
    "train": {
        "epochs": 10,
        "steps_per_epoch": 0,  # 0: one pass over the windows of an epoch
        "learning_rate": 1e-3,
        "clipnorm": 1.0,
        "fused_adam": True,  # torch backend: fused clipping + Adam kernels (same update as Keras's)
        "ema_momentum": 0.0,  # 0: off; else Adam keeps an exponential moving average of the weights, and the
                              # saved model (and every snapshot) holds the average
        "jit_compile": False,  # true: compile(jit_compile=True), torch.compile on torch; false: Keras's "auto"
        "seed": 0,
        # the KL weight's warm-up: constant, linear or log over kl_warmup_steps from kl_start (models.elbo.KLWeight)
        "kl_schedule": KLWeight.schedule, "kl_warmup_steps": KLWeight.warmup_steps, "kl_start": KLWeight.start,
        "max_minutes": 0.0,  # 0: no time limit; else stop after the batch that passes it (that epoch then ends)
        "divergence_factor": 3.0,  # stop when val MR-STFT stays over this x its best for 3 epochs; 0: off
        "n_samples": 4,
        "gallery": True,  # write RUN/gallery/index.html at the end (kvae gallery)
        "tensorboard": False, "tensorboard_every": 5,  # true: events in RUN/tensorboard, audio every N epochs
        "verbose": "auto",
        "precision": "float32",  # or mixed_bfloat16, mixed_float16 (Keras dtype policies; the loss stays float32),
        # or auto: mixed_bfloat16 where the torch backend multiplies bfloat16 natively (kvae.training.precision)
        "distribution": "none",  # data_parallel: jax's keras.distribution.DataParallel (torch: launch with torchrun)
        "distributed_timeout": 600.0,  # seconds a rank waits for the others in a collective before failing
    },
}
SECTIONS = ("data", "model", "train")
RENAMED = {("data", "rate"): "sample_rate", ("model", "rate_target"): "bitrate_target",
           ("model", "rate_gain"): "bitrate_gain", ("model", "reconstruction_weight"): "loss_weights.reconstruction",
           ("model", "stft_weight"): "loss_weights.stft", ("model", "mel_weight"): "loss_weights.mel"}
"""kvae 0.1's config keys renamed in 0.2, `(section, old key)`: new key (`table.key` for a key of a table of
the section). Read as the new key, one warning line each."""
TABLES = ("adversarial", "loss_weights")
"""The model's settings that are tables (`--set model.<table>.<key>=...`)."""
CHOICES = {
    ("data", "normalize"): ("none", "peak", "rms"),
    ("data", "frontend"): ("pydataset", "tf"),
    ("train", "kl_schedule"): KL_SCHEDULES,
    ("train", "precision"): ("auto", "float32", "mixed_bfloat16", "mixed_float16"),
    ("train", "distribution"): ("none", "data_parallel"),
}


def merge_config(base, update):
    """Return `base` updated by `update`, recursively for sections (a copy; inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "select":
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_config_file(path, seen=(), kind="config"):
    """Read a config file with its `base` chain merged in, unvalidated (extra tables such as
    a search's `[search]` are kept).

    A path that is not a file but a bare name ("quickstart", "fc.toml") is
    the built-in preset of that name, of `kind` ("config", "search" or "prior") or
    of a kind it falls back to (`kvae.presets.FALLBACK`: a search to the configs).
    """
    path = Path(path)
    if not path.is_file():
        found = find_preset(path.name, kind, fallback=True) if len(path.parts) == 1 else None
        if found is None:
            raise KvaeError(f"{path}: {'is a folder, not a config file' if path.is_dir() else 'config file not found'} "
                            f"(built-in: {', '.join(preset_names(kind))})")
        path = found
    if path.resolve() in seen:
        raise KvaeError(f"{path}: config 'base' chain loops back on itself")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KvaeError(f"{path}: not a valid config file ({exc})") from None
    except OSError as exc:
        raise KvaeError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    data = upgrade(data, where=str(path))
    base = data.pop("base", None)
    if base:
        beside = path.parent / base
        # A base beside the file, else a preset by name (a copied config whose base was not copied).
        if not beside.is_file() and not find_preset(Path(base).name, kind, fallback=True):
            raise KvaeError(f"{path}: its base '{base}' is neither a file beside it nor a built-in preset")
        base_path = beside if beside.is_file() else Path(Path(base).name)
        data = merge_config(read_config_file(base_path, seen + (path.resolve(),), kind), data)
    return data


def upgrade(config, where=""):
    """A copy of a config (or of overrides) with kvae 0.1's renamed keys (`RENAMED`) under their new names.

    The old keys read say so on one line (a `FutureWarning` per config or overrides, naming every key);
    kvae 0.1's flat adversarial keys are read by `validate`.

    Raises:
        KvaeError: a section gives a setting under both its old and its new name.
    """
    out = copy.deepcopy(config)
    read = []
    for (section, old), new in RENAMED.items():
        table = out.get(section)
        if not isinstance(table, dict) or old not in table:
            continue
        inner, _, key = new.rpartition(".")
        target = table.setdefault(inner, {}) if inner else table
        if not isinstance(target, dict) or key in target:
            raise KvaeError(f"{section}.{old} and {section}.{new}: one setting given twice ({old} is its kvae 0.1 "
                            f"name); keep {section}.{new}")
        target[key] = table.pop(old)
        read.append((f"{section}.{old}", f"{section}.{new}"))
    if read:  # one line for all of them
        renamed(*(", ".join(names) for names in zip(*read)), where, stacklevel=4)
    return out


def _type_name(value):
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            dict: "a table", list: "a list"}.get(type(value), type(value).__name__)


def _check_value(key, value, default):
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise KvaeError(f"{key}: expected {_type_name(default)}, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KvaeError(f"{key}: expected {_type_name(default)}, got {value!r}")
        if not math.isfinite(value):
            raise KvaeError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    elif isinstance(default, int):
        if isinstance(value, bool) or not (isinstance(value, int) or isinstance(value, float) and value.is_integer()):
            raise KvaeError(f"{key}: expected {_type_name(default)}, got {value!r}")
        return int(value)
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise KvaeError(f"{key}: expected a list, got {value!r}")
    elif not isinstance(value, type(default)):
        raise KvaeError(f"{key}: expected {_type_name(default)}, got {value!r}")
    return value


class Schema:
    """One kind of config: the defaults, choices and bounds of its tables, checked one way for every kind.

    Experiment configs (`EXPERIMENT`: `data` and `train`; `model` is checked
    against the model class), prior configs (`kvae.training.prior_fit.PRIOR`)
    and a search config's settings (`kvae.tuning.space.SEARCH`) are schemas.
    Each key is checked the same way: an unknown key or a wrong type is one
    line naming it, a choice must be one of `choices`, and a number must lie
    within its row of `kvae.bounds.BOUNDS` (the row `<prefix><table>.<key>`).

    Args:
        kind: str. What the config is called in messages ("config", "prior config", ...).
        defaults: dict. `{table: {key: default}}`; a default's type is the key's type
            (None: any type, checked by its bounds row).
        choices: dict or None. `{(table, key): allowed values}`.
        prefix: str. Prefix of this kind's rows in `kvae.bounds.BOUNDS`.
    """

    def __init__(self, kind, defaults, choices=None, prefix=""):
        self.kind, self.defaults, self.choices, self.prefix = kind, defaults, dict(choices or {}), prefix

    def check_table(self, table, values):
        """A checked copy of the table `table` (a dict of its keys' values).

        Raises:
            KvaeError: an unknown table or key, a wrong type, a value outside its
                choices or its bounds; the message names `table.key`.
        """
        if table not in self.defaults:
            raise KvaeError(f"{table}: unknown {self.kind} section (known: {', '.join(self.defaults)})")
        if not isinstance(values, dict):
            raise KvaeError(f"{table}: expected a table of settings")
        defaults, out = self.defaults[table], {}
        for key, value in values.items():
            name = f"{table}.{key}"
            if key not in defaults:
                raise KvaeError(f"{name}: unknown {self.kind} key (known: {', '.join(defaults)})")
            if key == "verbose":
                if value not in ("auto", 0, 1, 2):
                    raise KvaeError(f"{name}: must be auto, 0, 1 or 2, got {value!r}")
                out[key] = value
                continue
            value = _check_value(name, value, defaults[key])
            choices = self.choices.get((table, key))
            if choices and value not in choices:
                raise KvaeError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
            if self.prefix + name in bounds.BOUNDS and value is not None:
                value = bounds.check(self.prefix + name, value, label=name)
            out[key] = value
        return out

    def check(self, config):
        """A checked copy of a whole config of this kind: its defaults, updated by `config`, table by table."""
        for table in config:
            if table not in self.defaults:
                raise KvaeError(f"{table}: unknown {self.kind} section (known: {', '.join(self.defaults)})")
        merged = merge_config(self.defaults, config)
        return {table: self.check_table(table, merged[table]) for table in self.defaults}


EXPERIMENT = Schema("config", {"data": DEFAULTS["data"], "train": DEFAULTS["train"]}, CHOICES)


def model_defaults(model_type):
    """Return `{argument: default}` for a model type, from its constructor and the VAE base's."""
    from kvae.models import VAE, model_class

    cls = model_class(model_type)
    out = {}
    for klass in (VAE, cls):
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if name not in ("self", "kwargs") and p.default is not inspect.Parameter.empty:
                out[name] = p.default
    return out


def validate(config):
    """Check every key and type of a config; return a normalised copy.

    Raises:
        KvaeError: an unknown section or key, a wrong type, a value out of its choices or bounds, or sizes
            that together would not fit (`kvae.bounds.check_config`); the message names the keys."""
    config = copy.deepcopy(config)
    for key in config:
        if key not in DEFAULTS:
            raise KvaeError(f"{key}: unknown config key (known: {', '.join(DEFAULTS)})")
        if key in SECTIONS and not isinstance(config[key], dict):
            raise KvaeError(f"{key}: expected a table of settings, got {config[key]!r}")
    config["name"] = _check_value("name", config.get("name", DEFAULTS["name"]), "")
    for section in ("data", "train"):
        config[section] = EXPERIMENT.check_table(section, config.get(section, {}))
    _adversarial_table(model := config.get("model", {}))
    defaults = model_defaults(model.get("type", "fc"))
    for key, value in model.items():
        if key == "type" or key == "adversarial":
            continue
        if key == "loss_weights":  # its own table, keyed by the logged names (kvae.models.elbo.LOSS_WEIGHTS)
            model[key] = {name: checked[name] for checked in [loss_weights(value)] for name in value}
            continue
        if key in ("sample_rate", "window_seconds"):
            raise KvaeError(f"model.{key}: set data.{key} instead")
        if key not in defaults:
            raise KvaeError(f"model.{key}: unknown argument for model type '{model.get('type', 'fc')}' "
                            f"(known: {', '.join(k for k in defaults if k not in ('sample_rate', 'window_seconds'))})")
        model[key] = _check_value(f"model.{key}", value, defaults[key])
        if f"model.{key}" in bounds.BOUNDS and model[key] is not None:  # sizes; the KL weight's settings
            model[key] = bounds.check(f"model.{key}", model[key])
    bounds.check_config(config)  # the rules one row cannot say: window length, products of sizes, ...
    return config


def _adversarial_table(model):
    """Check `model.adversarial` against the stage's own settings (in place); read kvae 0.1's flat keys into it."""
    from kvae.models.adversarial import LEGACY_KEYS, AdversarialStage, from_legacy

    old = [key for key in LEGACY_KEYS if key in model]
    if old:
        table = from_legacy(model)
        if table is not None:
            model["adversarial"] = merge_config(table, model.get("adversarial") or {})
        warnings.warn(f"model.{', model.'.join(old)}: moved to the model.adversarial table as "
                      f"{', '.join(LEGACY_KEYS[key] for key in old)}; read as such (update the config)",
                      FutureWarning, stacklevel=4)
    if model.get("adversarial") is not None:
        stage = AdversarialStage.from_config(model["adversarial"])
        model["adversarial"] = {key: value for key, value in stage.get_config().items()
                                if key in model["adversarial"]}


def parse_set(items, sections=SECTIONS):
    """Parse `--set key=value` strings into a nested dict (values read as TOML, else as strings).

    Args:
        items: the `key=value` strings.
        sections: the sections a key may be in (a prior config has its own).

    Raises:
        KvaeError: an item without `=` or with a key outside the sections.
    """
    out = {}
    for item in items or ():
        if "=" not in item:
            raise KvaeError(f"--set {item}: expected key=value, e.g. train.learning_rate=3e-4")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        parts = key.split(".")
        if parts[0] == "name" and len(parts) == 1:
            out["name"] = str(value)
            continue
        if parts[0] == "model" and len(parts) == 3 and parts[1] in TABLES:  # a key of one of the model's tables
            out.setdefault("model", {}).setdefault(parts[1], {})[parts[2]] = value
            continue
        if len(parts) != 2 or parts[0] not in sections:
            if tuple(sections) == SECTIONS:
                raise KvaeError(f"--set {key}: keys look like data.sample_rate, model.hidden_layers or train.epochs")
            raise KvaeError(f"--set {key}: keys look like section.key, the section one of {', '.join(sections)}")
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def load_config(config=None, overrides=None):
    """Resolve a config: defaults, then a file or dict, then overrides; validated.

    Args:
        config: str, Path, dict or None. A config file (a bare name such as
            "quickstart" is a built-in preset), a dict, or None for the
            defaults.
        overrides: dict or None. Nested overrides, e.g. `{"train": {"epochs": 3}}`.

    Returns:
        The resolved config, a dict with sections data, model and train.
    """
    if config is None:
        loaded = {}
    elif isinstance(config, dict):
        loaded = upgrade(config)
    elif isinstance(config, (str, os.PathLike)):
        loaded = read_config_file(config)
    else:
        raise KvaeError(f"config: expected a config file, a preset name (such as quickstart) or a dict, got {config!r}")
    resolved = merge_config(merge_config(DEFAULTS, loaded), upgrade(overrides or {}))
    return validate(resolved)


def split_overrides(overrides):
    """Turn `kvae.fit(**overrides)` keywords into nested overrides.

    Accepts section dicts (`train={"epochs": 2}`), dotted-free names that
    exist in exactly one section (`epochs=2`, `sample_rate=8000`) and model
    arguments (`hidden_layers=3`).
    """
    out = {}
    for key, value in overrides.items():
        if key in SECTIONS and isinstance(value, dict):
            out[key] = merge_config(out.get(key, {}), value)
        elif key == "name":
            out["name"] = value
        else:
            section = next((s for s in ("data", "train") if key in DEFAULTS[s] or (s, key) in RENAMED), "model")
            out.setdefault(section, {})[key] = value
    return out
