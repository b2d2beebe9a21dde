"""kvae.runs: one owner of a run folder's names, its resume check and its history file; the one fit skeleton."""

import re
from pathlib import Path

import numpy as np
import pytest

import kvae
from kvae.errors import KvaeError
from kvae.runs import RESUMABLE, RunFolder, read_history, resumable, truncate_history

PACKAGE = Path(kvae.__file__).resolve().parent
RATE = 3000
TINY = {"data": {"sample_rate": RATE, "window_seconds": 0.25, "windows_per_recording": 2, "batch_size": 8},
        "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 16, "latent_dim": 4},
        "train": {"epochs": 1, "steps_per_epoch": 2, "n_samples": 0, "verbose": 0, "gallery": False}}


def test_a_run_folder_names_every_file_and_its_prior_folder_is_one_too(tmp_path):
    run = RunFolder(tmp_path / "run")
    names = {attr: getattr(run, attr).name for attr in ("config", "model", "history", "curves", "samples", "gallery",
                                                          "backup", "evaluation", "pieces", "latents", "best_weights")}
    assert names == {"config": "config.json", "model": "model.keras", "history": "history.csv",
                     "curves": "loss_curves.png", "samples": "samples", "gallery": "gallery", "backup": "backup",
                     "evaluation": "eval.json", "pieces": "pieces", "latents": "latents.npz",
                     "best_weights": "best.weights.h5"}
    assert run.prior.path == tmp_path / "run" / "prior" and run.prior.prior_model.name == "prior.keras"
    assert RunFolder(run).path == run.path  # a RunFolder is a path-like too


def test_only_kvae_runs_spells_a_run_folder_s_file_names():
    literal = re.compile(r'"(history\.csv|model\.keras|prior\.keras|latents\.npz|loss_curves\.png|backup)"')
    spelling = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if literal.search(p.read_text()))
    assert spelling == ["runs/folder.py"]


def test_the_one_table_of_resumable_settings_says_what_a_run_and_a_search_may_change():
    assert resumable("train", "epochs", "run") and not resumable("train", "epochs", "search")
    assert resumable("data", "cache", "run") and resumable("data", "cache", "search")
    assert not resumable("train", "learning_rate", "run") and not resumable("model", "latent_dim", "search")
    assert set(RESUMABLE.values()) == {"any", "run"}
    from kvae.training import trainer
    from kvae.tuning import searcher

    assert not hasattr(trainer, "RESUMABLE") and not hasattr(searcher, "_IGNORED_FOR_RESUME")


def test_the_resume_check_names_what_changed(tmp_path):
    run = RunFolder(tmp_path)
    run.backup.mkdir()
    run.config.write_text('{"data": {"path": "a"}, "train": {"epochs": 2, "learning_rate": 0.001}}')
    run.check_resume({"data": {"path": "b"}, "train": {"epochs": 9, "learning_rate": 0.001}})  # resumable
    with pytest.raises(KvaeError, match=r"train.learning_rate 0.001 -> 0.01; drop those --set"):
        run.check_resume({"data": {"path": "a"}, "train": {"epochs": 2, "learning_rate": 0.01}})


def test_a_run_of_kvae_0_1_is_checked_under_today_s_names(tmp_path):
    from kvae.config import upgrade

    run = RunFolder(tmp_path)
    run.backup.mkdir()
    run.config.write_text('{"data": {"rate": 3000}, "model": {"stft_weight": 200.0}, "train": {"epochs": 2}}')
    same = {"data": {"sample_rate": 3000}, "model": {"loss_weights": {"stft": 200.0}}, "train": {"epochs": 5}}
    run.check_resume(same, upgrade=upgrade)
    with pytest.raises(KvaeError, match=r"data.sample_rate 3000 -> 8000"):
        run.check_resume({**same, "data": {"sample_rate": 8000}}, upgrade=upgrade)


def test_one_history_reader_for_curves_replays_and_trials(tmp_path):
    from kvae.evaluation import plots
    from kvae.training.callbacks import DivergenceGuard

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_stft\n0,9,1\n1,3,x\n1,4,2\n2,2,3\n")  # epoch 1 twice: the last row counts
    assert read_history(path) == {"epoch": [0.0, 1.0, 2.0], "loss": [9.0, 4.0, 2.0], "val_stft": [1.0, 2.0, 3.0]}
    assert read_history(path, before=2) == {"epoch": [0.0, 1.0], "loss": [9.0, 4.0], "val_stft": [1.0, 2.0]}
    assert read_history(tmp_path / "missing.csv") == {}
    assert plots.read_history is read_history and not hasattr(DivergenceGuard, "read_history")
    assert truncate_history(path, 1) == 1 and read_history(path)["epoch"] == [0.0]


@pytest.fixture(scope="module")
def tiny_run(embedded, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    kvae.fit(TINY, run=run, verbose=False)
    return run


def test_the_prior_trains_through_the_skeleton_with_the_fused_adam_and_the_weight_average(tiny_run):
    import keras

    prior, history = kvae.fit_prior(tiny_run, config={
        "prior": {"context_seconds": 0.2, "width": 8, "components": 2}, "gmm": {"components": 2},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "max_seconds": 24.0, "verbose": 0,
                  "ema_momentum": 0.9}}, verbose=False)
    assert prior.optimizer.use_ema and prior.optimizer.ema_momentum == pytest.approx(0.9)
    if keras.backend.backend() == "torch":  # kvae fit's fused clipping and update
        assert "fuse_adam" in prior.optimizer._parallel_update_step.__qualname__
    folder = RunFolder(tiny_run).prior
    assert folder.prior_model.is_file() and folder.curves.is_file() and not folder.backup.exists()
    assert np.isfinite(history["loss"]).all()
