"""kvae's one table of bounds: every number a user can type, its range, checked in one place.

Config validation (`kvae.config`, the prior's config), the command line and
the Python API (`generate`, `sample`, `prepare`, ...) all call `check`, so a
value out of range fails at once, on one line, before any work starts (not
hours later, nor with gigabytes allocated). NaN and infinities are refused
everywhere. The table is the documentation: `kvae.bounds.describe()` prints it.
"""

import math
import numbers

from kvae.errors import KvaeError

DEFAULT_RATE = 3000  # Hz: the paper's rate, every default of kvae's (config, models, prepare, the CLI)
SEED_MAX = 2 ** 32 - 1
WINDOW_SAMPLES_MAX = 2 ** 20  # one training window; about 350 s at 3000 Hz, 24 s at 44.1 kHz

# name: (lowest, highest, integer, unit, lowest excluded)
BOUNDS = {
    "data.sample_rate": (1000, 192000, True, " Hz", False),
    "data.window_seconds": (0.01, 600.0, False, " s", False),
    "data.batch_size": (1, 65536, True, "", False),
    "data.windows_per_recording": (1, 100000, True, "", False),
    "data.val_windows_per_recording": (1, 100000, True, "", False),
    "data.workers": (0, 64, True, "", False),
    "model.beta": (0.0, 1e6, False, "", False),
    "model.loss_weights": (0.0, 1e6, False, "", False),
    "model.bitrate_target": (0.0, 1e12, False, " bit/s", False),
    "model.bitrate_gain": (0.0, 1.0, False, "", True),
    # the model's sizes (each one; their products are estimated by kvae.resources before anything is built)
    "model.latent_dim": (1, 65536, True, "", False),
    "model.hidden_units": (1, 2 ** 20, True, "", False),
    "model.capacity": (1, 65536, True, "", False),
    "model.width": (1, 65536, True, "", False),
    "model.d_model": (1, 65536, True, "", False),
    "model.ff_dim": (1, 2 ** 20, True, "", False),
    "model.num_layers": (1, 4096, True, "", False),
    "model.num_heads": (1, 1024, True, "", False),
    "model.frame_size": (1, WINDOW_SAMPLES_MAX, True, "", False),
    "model.n_bands": (1, 4096, True, "", False),
    "model.n_mels": (1, 4096, True, "", False),
    "model.n_fft": (2, 2 ** 16, True, "", False),
    "model.hop": (1, 2 ** 16, True, "", False),
    "model.hop_length": (1, 2 ** 16, True, "", False),
    "model.kernel_size": (1, 4096, True, "", False),
    "model.encoder_blocks": (0, 1024, True, "", False),
    "model.decoder_blocks": (0, 1024, True, "", False),
    "model.griffin_lim_iters": (0, 100000, True, "", False),
    "train.epochs": (1, 10 ** 7, True, "", False),
    "train.steps_per_epoch": (0, 10 ** 9, True, "", False),
    "train.learning_rate": (0.0, 10.0, False, "", True),
    "train.clipnorm": (0.0, 1e6, False, "", False),
    "train.ema_momentum": (0.0, 0.99999, False, "", False),
    "train.seed": (0, SEED_MAX, True, "", False),
    "train.kl_warmup_steps": (0, 10 ** 10, True, "", False),
    "train.kl_start": (0.0, 1e3, False, "", False),
    "train.max_minutes": (0.0, 10 ** 7, False, " min", False),
    "train.divergence_factor": (0.0, 1e6, False, "", False),  # and 0 (off) or above 1: check_config
    "train.n_samples": (0, 10000, True, "", False),
    "train.tensorboard_every": (1, 10 ** 7, True, "", False),
    "train.distributed_timeout": (0.0, 7 * 86400.0, False, " s", True),
    # a prior config (`kvae prior fit --config`), rows named "prior/<key>"
    "prior/prior.context_seconds": (0.0, 3600.0, False, " s", True),
    "prior/prior.chunk_seconds": (0.0, 3600.0, False, " s", True),
    "prior/prior.context_dropout": (0.0, 1.0, False, "", False),
    "prior/prior.context_noise": (0.0, 10.0, False, "", False),
    "prior/prior.offset_noise": (0.0, 10.0, False, "", False),
    "prior/prior.dropout": (0.0, 0.9, False, "", False),
    "prior/prior.patch_frames": (1, 64, True, "", False),
    "prior/prior.width": (1, 65536, True, "", False),
    "prior/prior.layers": (0, 10000, True, "", False),
    "prior/prior.kernel_size": (1, 4096, True, "", False),
    "prior/prior.num_heads": (1, 1024, True, "", False),
    "prior/prior.components": (1, 1024, True, "", False),
    "prior/prior.label_dropout": (0.0, 1.0, False, "", False),
    "prior/prior.flow_width": (1, 65536, True, "", False),
    "prior/prior.flow_blocks": (1, 1000, True, "", False),
    "prior/prior.flow_steps": (1, 10000, True, "", False),
    "prior/prior.flow_samples": (1, 1024, True, "", False),
    "prior/gmm.components": (1, 4096, True, "", False),
    "prior/train.epochs": (1, 10 ** 7, True, "", False),
    "prior/train.steps_per_epoch": (1, 10 ** 9, True, "", False),
    "prior/train.batch_size": (1, 65536, True, "", False),
    "prior/train.sequence_frames": (0, 10 ** 7, True, "", False),
    "prior/train.learning_rate": (0.0, 10.0, False, "", True),
    "prior/train.cooldown": (0.0, 1.0, False, "", False),
    "prior/train.max_minutes": (0.0, 10 ** 7, False, " min", False),
    "prior/train.trim_silence_db": (-300.0, 0.0, False, " dBFS", False),
    "prior/train.augment_shifts": (1, 64, True, "", False),
    "prior/train.clipnorm": (0.0, 1e6, False, "", False),
    "prior/train.ema_momentum": (0.0, 0.99999, False, "", False),
    "prior/train.input_noise": (0.0, 10.0, False, "", False),
    "prior/train.rollout": (0.0, 1.0, False, "", False),
    "prior/train.seed": (0, SEED_MAX, True, "", False),
    "prior/train.max_seconds": (0.0, 10 ** 7, False, " s", True),
    "prior/train.tensorboard_every": (1, 10 ** 7, True, "", False),
    # a search config's [search] settings (`kvae tune`), rows named "search/<key>"
    "search/search.max_trials": (1, 10 ** 6, True, "", False),
    "search/search.epochs": (1, 10 ** 7, True, "", False),
    "search/search.seed": (0, SEED_MAX - 1, True, "", False),  # keras-tuner is given seed + 1
    "search/search.factor": (2, 1000, True, "", False),
    "seed": (0, SEED_MAX, True, "", False),
    "seconds": (0.01, 4 * 3600.0, False, " s", False),
    "temperature": (0.0, 100.0, False, "", False),
    "noise_correlation": (0.0, 0.999, False, "", False),
    "guidance": (0.0, 100.0, False, "", False),
    "pieces": (1, 1024, True, "", False),
    "clips": (0, 100000, True, "", False),
    "n_clips": (10, 100000, True, "", False),  # an evaluation's clips per set
    "block_ms": (0.01, 60000.0, False, " ms", False),
}

RULES = {"train.divergence_factor": " (0: off, else above 1)"}  # what a row alone cannot say, in its message


def _number(value, integer):
    if isinstance(value, bool):
        return None
    if not isinstance(value, numbers.Real):
        try:  # numpy scalars and numeric strings from a command line
            value = float(value)
        except (TypeError, ValueError):
            return None
    value = float(value) if not isinstance(value, int) else value
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    return value


def check(name, value, label=None):
    """Return `value` (an int or a float) if it lies within `BOUNDS[name]`, else raise one line.

    Args:
        name: str. A key of `BOUNDS` ("data.sample_rate", "seconds", ...).
        value: the number given.
        label: str or None. The name in the message (`--seconds`, `n`); defaults to `name`.

    Raises:
        KvaeError: not a number, NaN or infinite, not a whole number where
            one is needed, or out of range: "seconds: must be from 0.01 to
            14400 s, got 1e-09".
    """
    low, high, integer, unit, open_low = BOUNDS[name]
    label = label or name
    number = _number(value, integer)
    if number is None:
        raise KvaeError(f"{label}: expected {'a whole number' if integer else 'a number'}, got {value!r}")
    if isinstance(number, float) and not math.isfinite(number):
        raise KvaeError(f"{label}: must be a finite number, got {value!r}")
    if integer and not isinstance(number, int):
        raise KvaeError(f"{label}: expected a whole number, got {value!r}")
    if number < low or number > high or (open_low and number == low):
        low_text = f"above {low:g}" if open_low else f"from {low:g}"
        raise KvaeError(f"{label}: must be {low_text} to {high:g}{unit}{RULES.get(name, '')}, got {value!r}")
    return number


def window_samples(rate, window_seconds):
    """The length of a window in samples: the one place it is computed (`round(rate * seconds)`)."""
    return int(round(float(rate) * float(window_seconds)))


def check_window(rate, window_seconds, label="data.window_seconds"):
    """Refuse a window longer than `WINDOW_SAMPLES_MAX` samples at `rate`; return its length in samples."""
    samples = window_samples(rate, window_seconds)
    if samples > WINDOW_SAMPLES_MAX:
        raise KvaeError(f"{label}: {window_seconds:g} s at {rate} Hz is {samples:,} samples per window; "
                        f"at most {WINDOW_SAMPLES_MAX:,} ({WINDOW_SAMPLES_MAX / float(rate):.1f} s at {rate} Hz)")
    return samples


def check_config(config):
    """The rules of a validated experiment config that its rows alone cannot say, on one line each: the window's
    length in samples, `train.divergence_factor` 0 (off) or above 1, and the memory the model and one batch take
    (`kvae.resources.check_config`).

    Raises:
        KvaeError: naming the settings that break the rule.
    """
    check_window(config["data"]["sample_rate"], config["data"]["window_seconds"])
    factor = config["train"]["divergence_factor"]
    if 0 < factor <= 1:
        raise KvaeError(f"train.divergence_factor: must be 0 (off) or above 1 (to "
                        f"{BOUNDS['train.divergence_factor'][1]:g}), got {factor!r}")
    from kvae.resources import check_config as check_resources

    check_resources(config)


def available_memory():
    """Bytes of memory available to this process now (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(needed, what, advice):
    """Refuse, before the work starts, a result that would take more than the memory available (one line)."""
    free = available_memory()
    if free is not None and needed > free:
        raise KvaeError(f"{what}: {needed / 2**30:,.1f} GiB needed, {free / 2**30:,.1f} GiB available; {advice}")


def describe():
    """The table as lines of text, for the docs and `python -m kvae.bounds`."""
    lines = []
    for name, (low, high, integer, unit, open_low) in BOUNDS.items():
        kind = "whole number" if integer else "number"
        lines.append(f"{name}: {kind} {'>' if open_low else '>='} {low:g} and <= {high:g}{unit}")
    lines.append(f"data.sample_rate x data.window_seconds: at most {WINDOW_SAMPLES_MAX:,} samples per window")
    lines.append("train.divergence_factor: 0 (off) or above 1")
    return lines


if __name__ == "__main__":
    print("\n".join(describe()))
