"""A fuzzer: random config values and command lines over every subcommand, each outcome success or one line.

Each case is drawn from a seeded NumPy generator; the seed is printed (and
named in every failure), so a failure is replayed with `KVAE_FUZZ_SEED=<seed>`.
The default run (CI) is bounded: a few hundred configs and command lines in
well under a minute, every command stopped where its real work would start
(the data is never prepared, no model trained). `-m slow` runs ten times as
many cases from a fresh seed; `KVAE_FUZZ_CASES` sets the number.

What is asserted, for every case:

- the outcome is success, or exit code 2 with one line (`kvae: error: ...`,
  with no traceback nor Python exception name), or argparse's own usage
  error (exit code 2) for a flag it cannot parse;
- no file outside the command's output or run folder changed (the inputs:
  the model file, the WAV, the config files).
"""

import json
import math
import os
import time

import numpy as np
import pytest

from audio import wav_file
from kvae import cli
from kvae.config import DEFAULTS, load_config
from kvae.errors import KvaeError

CASES = int(os.environ.get("KVAE_FUZZ_CASES", "0")) or None
RATE = 3000


def _seed():
    return int(os.environ.get("KVAE_FUZZ_SEED") or (time.time_ns() % 2 ** 31))


class Reached(BaseException):
    """Raised where a command's real work would start: its arguments were accepted."""


def stop_at_the_work(*args, **kwargs):
    raise Reached


def number(rng):
    kind = rng.integers(12)
    return [lambda: int(rng.integers(-5, 6)), lambda: float(rng.normal() * 10 ** rng.integers(0, 4)),
            lambda: 10 ** int(rng.integers(3, 40)), lambda: -(10 ** int(rng.integers(3, 40))),
            lambda: float("nan"), lambda: float("inf"), lambda: -float("inf"), lambda: 1e-300,
            lambda: 0, lambda: 0.5, lambda: 2 ** 63, lambda: float(rng.uniform(-2, 2))][kind]()


def value(rng):
    """A config value of any kind: numbers (NaN, huge, negative), strings, lists, tables, booleans, nesting."""
    kind = rng.integers(10)
    if kind < 5:
        return number(rng)
    return [lambda: str(rng.choice(["", "x", "nan", "1e999", "-1", "fc", "none", "../../etc"])),
            lambda: [number(rng) for _ in range(int(rng.integers(0, 4)))],
            lambda: {"a": number(rng), "b": {"c": "x"}},
            lambda: bool(rng.integers(2)),
            lambda: [[1, 2], {"x": 1}]][kind - 5]()


MODEL_KEYS = ["type", "hidden_units", "hidden_layers", "latent_dim", "channels", "capacity", "ratios", "width",
              "d_model", "num_heads", "num_layers", "ff_dim", "frame_size", "n_fft", "hop", "n_bands", "beta",
              "bitrate_target", "bitrate_gain", "loss_weights", "adversarial", "decoder_variance", "free_bits",
              "kernel_sizes", "strides", "unknown_key"]
MODEL_TYPES = ["fc", "conv1d", "transformer", "rave", "vocos", "magnitude", "mel"]


def random_config(rng):
    """A small, valid-looking config with a few values replaced by anything."""
    config = {"data": {"sample_rate": RATE, "window_seconds": 0.25, "batch_size": 4},
              "model": {"type": str(rng.choice(MODEL_TYPES))}, "train": {"epochs": 1}}
    for _ in range(int(rng.integers(1, 4))):
        section = str(rng.choice(["data", "model", "train", "model", "bogus"]))
        if section == "bogus":
            config[str(rng.choice(["bogus", "name", "base"]))] = value(rng)
            continue
        keys = MODEL_KEYS if section == "model" else list(DEFAULTS[section])
        config.setdefault(section, {})[str(rng.choice(keys))] = value(rng)
    if rng.integers(8) == 0:
        config[str(rng.choice(["data", "model", "train"]))] = value(rng)  # a section that is not a table
    return config


def check_config(config, seed):
    try:
        load_config(config)
    except KvaeError as exc:
        assert "\n" not in str(exc) and str(exc), f"seed {seed}: {config!r}: {exc!r}"
    except Exception as exc:  # noqa: BLE001 (what the fuzzer is for)
        pytest.fail(f"seed {seed}: {config!r}: {type(exc).__name__}: {exc}")


def text(rng):
    """A command-line value: a number written any way, or not a number."""
    if rng.integers(3):
        return repr(number(rng)) if rng.integers(2) else str(number(rng))
    return str(rng.choice(["nan", "inf", "-inf", "-1", "0", "1e309", "3.5", "x", "", "-0.0", "1" * 25, "1_000"]))


def command(rng, where):
    """A random `kvae` command line over every subcommand, with paths inside `where`."""
    paths = {"model": where / "in" / "model.keras", "wav": where / "in" / "in.wav", "none": where / "missing",
             "config": where / "in" / "config.json", "folder": where / "in", "run": where / "out" / "run"}
    out = where / "out" / f"o{rng.integers(1000)}"

    def path(*kinds):
        return str(paths[str(rng.choice(kinds))])

    flags = {
        "prepare": {"--sample-rate": text, "--window": text, "--data": lambda r: path("none", "folder"),
                    "--cache": lambda r: str(out)},
        "fit": {"--epochs": text, "--steps-per-epoch": text, "--sample-rate": text, "--run": lambda r: str(out),
                "--config": lambda r: path("config", "none", "folder", "wav"),
                "--set": lambda r: f"{r.choice(['data', 'model', 'train', 'x'])}."
                                   f"{r.choice(MODEL_KEYS + list(DEFAULTS['train']) + list(DEFAULTS['data']))}={text(r)}"},
        "sample": {"-n": text, "--seed": text, "--out": lambda r: str(out)},
        "reconstruct": {"--block-ms": text, "--stream": None, "--overwrite": None},
        "export": {"--out": lambda r: str(out), "--no-prior": None},
        "evaluate": {"--n-clips": text, "--seed": text, "--out": lambda r: str(out) + ".json",
                     "--plot": lambda r: str(out) + ".png"},
        "gallery": {"-n": text, "--n-clips": text, "--seed": text, "--out": lambda r: str(out)},
        "prior": {"--epochs": text, "--steps-per-epoch": text, "--pieces": text, "--piece-seconds": text,
                  "--set": lambda r: f"{r.choice(['prior', 'gmm', 'train', 'x'])}.{r.choice(['width', 'epochs', 'x'])}"
                                     f"={text(r)}"},
        "generate": {"--seconds": text, "--temperature": text, "--seed": text, "-n": text,
                     "--prior": lambda r: str(r.choice(["auto", "ar", "gmm", "none", "x"])),
                     "--out": lambda r: str(out) + ".wav", "--prime": lambda r: path("wav", "none", "model")},
        "tune": {"--max-trials": text, "--epochs": text, "--dir": lambda r: str(out),
                 "--tuner": lambda r: str(r.choice(["random", "bayesian", "hyperband", "x"]))},
    }
    name = str(rng.choice(list(flags)))
    argv = {"prior": ["prior", "fit", path("model", "none", "run")],  # a prior fit writes into its run folder
            "reconstruct": ["reconstruct", path("model", "none"), path("wav", "none", "model"), str(out) + ".wav"],
            "export": ["export", path("model", "none", "folder")],
            "gallery": ["gallery", path("model", "none", "run")],  # one run's gallery goes into RUN/gallery
            "prepare": ["prepare"], "fit": ["fit"], "tune": ["tune"]}.get(name, [name, path("model", "none",
                                                                                             "folder")])
    if name == "prepare":
        argv += ["--data", path("none", "folder")]
    for flag in rng.choice(list(flags[name]), size=int(rng.integers(1, 4)), replace=True):
        make = flags[name][flag]
        argv += [flag] if make is None else [flag, make(rng)]
    return argv


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Inputs in `tmp/in` (a garbage model, a WAV, a config), outputs under `tmp/out`; the work never starts."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "model.keras").write_bytes(b"PK\x03\x04 not really a model")
    (tmp_path / "out" / "run").mkdir()
    (tmp_path / "out" / "run" / "model.keras").write_bytes(b"PK\x03\x04 not really a model")
    wav_file(tmp_path / "in" / "in.wav", (0.1 * np.sin(np.arange(RATE) / 7.0)).astype(np.float32), RATE)
    (tmp_path / "in" / "config.json").write_text(json.dumps(
        {"data": {"sample_rate": RATE, "window_seconds": 0.25}, "model": {"type": "fc", "hidden_units": 8}}))
    for target in ("kvae.training.trainer.prepare", "kvae.data.prepare", "kvae.data.cache.prepare",
                   "kvae.training.distributed.launch", "kvae.tuning.search"):
        monkeypatch.setattr(target, stop_at_the_work, raising=False)
    monkeypatch.chdir(tmp_path / "out")
    return tmp_path


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_command(argv, seed, capsys):
    try:
        code = cli.main(argv)
    except Reached:
        capsys.readouterr()
        return "accepted"
    except SystemExit as exc:  # argparse: a flag it cannot parse (its usage line, then its error)
        err = capsys.readouterr().err
        assert exc.code == 2 and "error:" in err and "Traceback" not in err, f"seed {seed}: {argv}: {err}"
        return "usage"
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"seed {seed}: kvae {' '.join(argv)}: {type(exc).__name__}: {exc}")
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("kvae: warning: ")]
    if code == 0:
        assert "Traceback" not in err, f"seed {seed}: kvae {' '.join(argv)}: {err}"
        return "success"
    assert code == 2, f"seed {seed}: kvae {' '.join(argv)}: exit code {code}: {err}"
    assert len(errors) == 1 and errors[0].startswith("kvae: error: "), f"seed {seed}: kvae {' '.join(argv)}: {err}"
    assert "Traceback" not in err and "Error:" not in errors[0][len("kvae: error: "):], f"seed {seed}: {err}"
    return "refused"


def fuzz(sandbox, capsys, configs, commands):
    seed = _seed()
    print(f"fuzz seed {seed} (replay: KVAE_FUZZ_SEED={seed})")
    rng = np.random.default_rng(seed)
    for _ in range(configs):
        check_config(random_config(rng), seed)
    inputs = snapshot(sandbox / "in")
    outcomes = {}
    for _ in range(commands):
        argv = command(rng, sandbox)
        outcome = check_command(argv, seed, capsys)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert snapshot(sandbox / "in") == inputs, f"seed {seed}: kvae {' '.join(argv)} changed an input"
    with capsys.disabled():
        print(f"\nfuzz seed {seed}: {configs} configs, {commands} command lines: {outcomes}")
    return outcomes


def test_fuzz_configs_and_command_lines(sandbox, capsys):
    start = time.perf_counter()
    outcomes = fuzz(sandbox, capsys, CASES or 300, CASES or 120)
    assert outcomes.get("refused", 0) > 0
    assert time.perf_counter() - start < 60 or CASES


@pytest.mark.slow
def test_fuzz_longer(sandbox, capsys):
    fuzz(sandbox, capsys, 10 * (CASES or 300), 10 * (CASES or 120))


def test_the_fuzzer_finds_a_traceback(sandbox, capsys, monkeypatch):
    """The fuzzer's own check: a command that ends in a traceback fails it (it is not vacuous)."""
    def broken(args):
        raise TypeError("boom")
    monkeypatch.setattr(cli, "cmd_sample", broken)
    with pytest.raises(pytest.fail.Exception, match="TypeError: boom"):
        check_command(["sample", "x"], 0, capsys)
    assert math.isnan(float("nan"))
