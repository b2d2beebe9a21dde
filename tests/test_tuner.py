"""kvae tune: the keras-tuner search over the FC VAE's depth and learning rate, resuming, bad input, distribution."""

import contextlib
import csv
import io
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from kvae.cli import main as cli
from audio import wav_file
from kvae.errors import KvaeError

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tuning" / "tiny.toml"


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    """A tiny dataset: 4 training and 2 held-out decaying tones, 1.5 s at 3000 Hz."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    t = np.arange(4500) / 3000
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            f = 110 * 2 ** (rng.integers(0, 24) / 12)
            wav_file(root / split / f"tone{i}.wav", (0.5 * np.sin(2 * np.pi * f * t) * np.exp(-t)).astype(np.float32),
                     3000)
    return root


def _tune(*argv):
    """Run `kvae tune` in-process; return (exit status, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(["tune", *map(str, argv)])
    return code, out.getvalue()


def _rows(folder):
    with open(Path(folder) / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def _trial_dirs(folder):
    return sorted(p.name for p in (Path(folder) / "keras_tuner").glob("trial_*"))


@pytest.fixture(scope="module")
def tuned(tones, tmp_path_factory):
    """One search through the CLI: 1 trial, then extended to 2, then run again unchanged."""
    folder = tmp_path_factory.mktemp("search") / "fc"
    args = ("--config", TINY, "--data", tones, "--dir", folder)
    runs = {}
    runs["first"] = _tune(*args, "--max-trials", 1)
    runs["rows_first"] = _rows(folder)
    runs["extended"] = _tune(*args, "--max-trials", 2)
    runs["rows_extended"] = _rows(folder)
    runs["trial_dirs"] = _trial_dirs(folder)
    runs["best_mtime"] = (folder / "best" / "model.keras").stat().st_mtime_ns
    runs["again"] = _tune(*args, "--max-trials", 2)
    return folder, runs


def test_search_writes_table_plot_and_best_model(tuned):
    folder, runs = tuned
    assert runs["first"][0] == 0 and runs["extended"][0] == 0
    with open(folder / "trials.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["trial_id", "status", "hidden_layers", "learning_rate", "hidden_units", "latent_dim",
                      "epochs", "val_loss", "seconds", "tuner_id"]
    rows = _rows(folder)
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "COMPLETED"
        assert 1 <= int(row["hidden_layers"]) <= 15
        assert 1e-5 <= float(row["learning_rate"]) <= 1e-2
        assert int(row["hidden_units"]) in (8, 16)
        assert math.isfinite(float(row["val_loss"])) and float(row["seconds"]) > 0
        assert row["tuner_id"] == "tuner0"
    assert (folder / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = json.loads((folder / "best_hyperparameters.json").read_text())
    assert float(best["val_loss"]) == pytest.approx(min(float(r["val_loss"]) for r in rows), rel=1e-4)
    assert "val_loss" in runs["extended"][1] and "best:" in runs["extended"][1]


def test_best_model_is_retrained_and_samples(tuned, tmp_path):
    import kvae

    folder, _ = tuned
    best = json.loads((folder / "best_hyperparameters.json").read_text())["hyperparameters"]
    saved = json.loads((folder / "best" / "config.json").read_text())
    assert saved["model"]["hidden_layers"] == best["hidden_layers"]
    assert saved["train"]["learning_rate"] == pytest.approx(best["learning_rate"])
    assert (folder / "best" / "history.csv").is_file()
    model = kvae.load(folder / "best" / "model.keras")
    assert model.hidden_layers == best["hidden_layers"]
    audio = model.sample(2, seed=0)
    assert audio.shape == (2, 750) and np.isfinite(audio).all() and np.abs(audio).max() > 1e-4
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli(["sample", str(folder / "best" / "model.keras"), "-n", "1", "--no-plots", "--out", str(tmp_path / "samples")])
    assert code == 0
    rate, clip = wavfile.read(tmp_path / "samples" / "sample_0.wav")
    assert rate == 3000 and np.abs(clip.astype(np.float64)).max() > 0


def test_raising_max_trials_runs_exactly_the_new_trials(tuned):
    _, runs = tuned
    first, extended = runs["rows_first"], runs["rows_extended"]
    assert len(first) == 1 and len(extended) == 2
    assert extended[0] == first[0]  # the finished trial was kept, not rerun
    assert "resuming the search" in runs["extended"][1]


def test_rerun_of_a_finished_search_runs_nothing(tuned):
    folder, runs = tuned
    code, out = runs["again"]
    assert code == 0
    assert "search already complete" in out
    assert "Running Trial" not in out
    assert _rows(folder) == runs["rows_extended"]
    assert _trial_dirs(folder) == runs["trial_dirs"]
    assert "best model up to date" in out
    assert (folder / "best" / "model.keras").stat().st_mtime_ns == runs["best_mtime"]


def test_folder_of_another_search_is_refused(tuned, tones):
    from kvae.tuning import search

    folder, _ = tuned
    with pytest.raises(KvaeError, match=r"another space \(search.hidden_layers: 1..15 there, 1..3 here\)"):
        search(TINY, data=tones, directory=folder, max_trials=2, space={"hidden_layers": {"min": 1, "max": 3}})
    with pytest.raises(KvaeError, match="holds a 'random' search, not 'bayesian'"):
        search(TINY, data=tones, directory=folder, tuner="bayesian", max_trials=2)
    with pytest.raises(KvaeError, match=r"another config \(train.epochs: 1 there, 2 here\)"):
        search(TINY, data=tones, directory=folder, max_trials=2, epochs=2)


def test_unknown_tuner_is_one_line_exit_2(tones, tmp_path, capsys):
    code = cli(["tune", "--config", str(TINY), "--data", str(tones), "--dir", str(tmp_path / "s"), "--tuner", "grid"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == "kvae: error: search.tuner: must be one of random, bayesian, hyperband, got 'grid'"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("settings, message", [
    ({"max_trials": 0}, "search.max_trials: must be from 1 to .*, got 0"),
    ({"factor": 1}, "search.factor: must be from 2 to 1000, got 1"),
    ({"seed": -1}, "search.seed: must be from 0"),
    ({"epochs": 2.5}, "search.epochs: expected a whole number"),
    ({"keep_checkpoints": "yes"}, "search.keep_checkpoints: expected a boolean"),
    ({"tuner": 3}, "search.tuner: expected a string"),
])
def test_search_settings_are_checked_by_the_one_schema_before_any_work(settings, message, tmp_path):
    # the same checker as the experiment and prior configs (kvae.config.Schema), its ranges in kvae.bounds
    from kvae.tuning import search

    with pytest.raises(KvaeError, match=message) as info:
        search({"search": settings}, directory=tmp_path / "s")
    assert "\n" not in str(info.value) and not (tmp_path / "s").exists()


@pytest.mark.parametrize("space, message", [
    ({"hidden_layers": {"min": 8, "max": 2}}, r"search.hidden_layers: inverted range \(min 8 > max 2\)"),
    ({"learning_rate": {"min": 1e-2, "max": 1e-5}}, r"search.learning_rate: inverted range"),
    ({"hidden_layers": {"min": 3, "max": 3}}, r"search.hidden_layers: empty range"),
    ({"hidden_units": []}, r"search.hidden_units: empty list of choices"),
    ({"hidden_layers": {"min": 0, "max": 15}}, r"search.hidden_layers: must lie within 1..15, got min 0"),
    ({"hidden_layers": {"min": 1, "max": 16}}, r"search.hidden_layers: must lie within 1..15, got max 16"),
    ({"learning_rate": {"min": 0, "max": 1e-2}}, r"search.learning_rate: must be positive"),
    ({"learning_rate": {"max": 1e-2}}, r"search.learning_rate: a range needs both min and max"),
    ({"dropout": [0.1]}, r"search.dropout: unknown search parameter"),
    ({"learning_rate": {"min": 1e-5, "max": 1e-2, "sampling": "exp"}}, r"search.learning_rate.sampling"),
])
def test_bad_space_is_a_kvae_error(space, message):
    from kvae.tuning import parse_space

    with pytest.raises(KvaeError, match=message) as info:
        parse_space(space)
    assert "\n" not in str(info.value)


def test_inverted_range_in_a_config_file_fails_before_any_work(tmp_path, tones, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(f'base = "{TINY.as_posix()}"\n[search]\n'
                      'learning_rate = { min = 1e-2, max = 1e-5, sampling = "log" }\n')
    code = cli(["tune", "--config", str(config), "--data", str(tones), "--dir", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "search.learning_rate: inverted range" in err
    assert not (tmp_path / "s").exists()
    from kvae.tuning import search

    with pytest.raises(KvaeError, match="inverted range"):
        search({"search": {"hidden_layers": {"min": 9, "max": 4}}}, directory=tmp_path / "s2")


def test_search_config_files_resolve():
    from kvae.tuning import read_search_config

    cfg, table = read_search_config(REPO / "tuning" / "fc_depth_lr.toml")
    assert cfg["name"] == "fc-depth-lr" and cfg["model"]["hidden_units"] == 1024  # from configs/quickstart.toml
    assert table["hidden_layers"] == {"min": 1, "max": 15} and table["tuner"] == "random"
    cfg, table = read_search_config("tiny")  # a bare name is a built-in preset, kvae/presets/search/
    assert cfg["data"]["window_seconds"] == 0.25 and table["max_trials"] == 3
    with pytest.raises(KvaeError, match="search.bogus: unknown key"):
        from kvae.tuning import search

        search({"search": {"bogus": 1}}, directory="unused")


def test_hypermodel_builds_a_compiled_fc_vae():
    import keras_tuner

    from kvae.models import FCVAE
    from kvae.tuning import FCVAEHyperModel

    hypermodel = FCVAEHyperModel({"data": {"window_seconds": 0.1}, "model": {"hidden_units": 8, "latent_dim": 2}},
                                 {"hidden_layers": [3], "learning_rate": 3e-4})
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert isinstance(model, FCVAE) and model.hidden_layers == 3
    assert model.optimizer is not None
    assert float(model.optimizer.learning_rate.numpy() if hasattr(model.optimizer.learning_rate, "numpy")
                 else model.optimizer.learning_rate) == pytest.approx(3e-4)
    assert hp.values == {"hidden_layers": 3, "learning_rate": 3e-4}


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_chief_and_two_workers_share_the_trials(tones, tmp_path):
    folder = tmp_path / "dist"
    cmd = [sys.executable, str(REPO / "tuning" / "distributed.py"), "--workers", "2", "--ip", "127.0.0.1",
           "--port", str(_free_port()), "--dir", str(folder), "--config", str(TINY), "--data", str(tones),
           "--max-trials", "6", "--timeout", "240"]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    rows = _rows(folder)
    assert len(rows) == 6
    assert all(r["status"] == "COMPLETED" for r in rows)
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("keras_tuner/trial_*/kvae_trial.json"))]
    assert len(records) == 6 and all(r["finished"] for r in records)
    workers = {r["tuner_id"] for r in records}
    assert workers == {"tuner0", "tuner1"}, f"trials were not shared out: {[r['tuner_id'] for r in records]}"
    assert {r["tuner_id"] for r in rows} == workers
    assert (folder / "best" / "model.keras").is_file() and (folder / "trials.png").is_file()
    assert "chief and 2 workers on 127.0.0.1" in proc.stdout
    assert elapsed < 240


def test_failed_trials_are_tabled_and_reported_on_one_line(tones, tmp_path, monkeypatch, capsys):
    from kvae.tuning import FCVAEHyperModel, search

    def broken_fit(self, hp, model, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(FCVAEHyperModel, "fit", broken_fit)
    with pytest.raises(KvaeError, match=r"^no trial completed \(2 failed; last error: RuntimeError: boom\)$"):
        search(TINY, data=tones, directory=tmp_path / "s", max_trials=2)
    assert [r["status"] for r in _rows(tmp_path / "s")] == ["FAILED", "FAILED"]
    assert "trial 0 failed: RuntimeError: boom" in capsys.readouterr().out


def test_same_search_in_two_fresh_folders_runs_the_same_trials(tones, tmp_path):
    """keras-tuner took seed 0 (the default) for no seed, so every fresh folder drew other trials."""
    from kvae.config import read_config_file
    from kvae.tuning import search

    config = read_config_file("tiny", kind="search")
    config["train"]["steps_per_epoch"] = 1
    drawn = []
    for folder in ("a", "b"):
        result = search(config, data=tones, directory=tmp_path / folder, max_trials=2, retrain=False, verbose=False)
        drawn.append([(r["hidden_layers"], r["learning_rate"], r["hidden_units"]) for r in result.rows])
    assert len(drawn[0]) == 2 and drawn[0] == drawn[1]
    with pytest.raises(KvaeError, match="search.seed: must be from 0 to"):
        search({**config, "search": {"seed": -1}}, data=tones, directory=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_a_trial_cut_short_resumes_from_its_last_epoch_on_the_shared_stack(tones, tmp_path, monkeypatch):
    # kvae fit's resumable callbacks (kvae.training.callbacks.resumable_callbacks) in the trial's own folder
    import keras

    import kvae.training.loop as hypermodel  # the skeleton whose stack a trial trains on
    from kvae.config import read_config_file
    from kvae.tuning import search

    class CutAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    shared = hypermodel.resumable_callbacks
    cut = [True]

    def stack(*args, **kwargs):
        cbs = shared(*args, **kwargs)
        return cbs + [CutAfterSecondEpoch()] if cut[0] else cbs

    monkeypatch.setattr(hypermodel, "resumable_callbacks", stack)
    config = read_config_file("tiny", kind="search")
    config["train"]["steps_per_epoch"] = 1
    folder = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        search(config, data=tones, directory=folder, max_trials=1, epochs=4, retrain=False, verbose=False)
    trial = next((folder / "keras_tuner").glob("trial_*"))
    assert (trial / "backup").is_dir() and len(list(csv.DictReader(open(trial / "history.csv")))) == 2
    cut[0] = False
    result = search(config, data=tones, directory=folder, max_trials=1, epochs=4, retrain=False, verbose=False)
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(trial / "history.csv"))]
    assert epochs == [0, 1, 2, 3]  # epochs 0 and 1 were not trained again, and none is listed twice
    assert not (trial / "backup").exists() and len(result.rows) == 1 and result.rows[0]["status"] == "COMPLETED"
