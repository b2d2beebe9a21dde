"""The search space and the search's settings: what `[search]` in a search config may say.

`parse_space` validates a space and puts it in canonical form, `declare`
turns one canonical entry into a keras-tuner hyperparameter, and
`split_search_table` separates a `[search]` table into settings (tuner,
max_trials, ...) and the space. The names the other files of the search
share (the objective, the folder's file names) are here too.
"""

import json
from pathlib import Path

from kvae.config import Schema
from kvae.errors import KvaeError

DEFAULT_SEARCH_CONFIG = "fc_depth_lr"  # a built-in search preset, kvae/presets/search/fc_depth_lr.toml
TUNERS = ("random", "bayesian", "hyperband")
OBJECTIVE = "val_loss"
PROJECT_NAME = "keras_tuner"  # keras-tuner's project folder inside the search folder
SPACE_FILE = "search_space.json"
TRIAL_RECORD = "kvae_trial.json"  # written into each trial_<id>/ folder

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
SEARCH = Schema("search", {"search": DEFAULT_SETTINGS}, {("search", "tuner"): TUNERS}, prefix="search/")
"""The settings' schema (the space is `parse_space`'s): ranges in the `search/` rows of `kvae.bounds`."""


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


def declare(hp, name, spec):
    """Declare one canonical entry on a keras-tuner `HyperParameters` and return its value."""
    kind = PARAMETERS[name][1]
    if "value" in spec:
        return hp.Fixed(name, spec["value"])
    if "choices" in spec:
        return hp.Choice(name, spec["choices"])
    if kind is int:
        return hp.Int(name, spec["min"], spec["max"], step=spec.get("step", 1), sampling=spec["sampling"])
    return hp.Float(name, spec["min"], spec["max"], step=spec.get("step"), sampling=spec["sampling"])


def describe(spec):
    """A canonical entry in a few characters ("1..15", "1e-05..0.01 log", "[8, 16]"), for messages."""
    if spec is None:
        return "absent"
    if "value" in spec:
        return f"{spec['value']:g}"
    if "choices" in spec:
        return "[" + ", ".join(f"{v:g}" for v in spec["choices"]) + "]"
    return f"{spec['min']:g}..{spec['max']:g}" + (" log" if spec["sampling"] == "log" else "")


def split_search_table(search):
    """Split a `[search]` table into settings (tuner, max_trials, ...; checked by `SEARCH`) and the space."""
    settings, space = {}, {}
    for key, value in search.items():
        if key in PARAMETERS:
            space[key] = value
        elif key in SEARCH_SETTINGS:
            settings[key] = value
        else:
            raise KvaeError(f"search.{key}: unknown key (known: {', '.join(list(SEARCH_SETTINGS) + list(PARAMETERS))})")
    return check_settings(settings), space


def check_settings(settings):
    """A checked copy of search settings (a tuner's name in any case)."""
    settings = dict(settings)
    if isinstance(settings.get("tuner"), str):
        settings["tuner"] = settings["tuner"].lower()
    return SEARCH.check_table("search", settings)


def write_json(path, data):
    """Write `data` as JSON through a temporary file, so a reader never sees half of it; return the path."""
    from kvae.paths import write_text

    return write_text(path, json.dumps(data, indent=2))
