"""kvae.fit end to end on the embedded data: run folder, learning, resuming, the CLI, config errors."""

import csv
import json

import keras
import numpy as np
import pytest

import kvae
from backends import run_on_backend
from kvae import cli
from kvae.config import load_config, parse_set
from kvae.data import read_audio, write_wav
from kvae.errors import KvaeError

TINY = {
    "name": "tiny",
    "data": {"rate": 3000, "window_seconds": 0.25, "windows_per_recording": 4, "val_windows_per_recording": 2,
             "batch_size": 16},
    "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 64, "latent_dim": 8},
    "train": {"epochs": 2, "n_samples": 2, "verbose": 0},
}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fit_writes_the_run_folder(embedded, tmp_path):
    run = tmp_path / "run"
    model, history = kvae.fit(TINY, run=run)
    for name in ("model.keras", "config.json", "history.csv", "loss_curves.png",
                 "samples/sample_0.wav", "samples/sample_0.png", "samples/sample_1.wav"):
        assert (run / name).is_file(), name
    assert not (run / "backup").exists()  # BackupAndRestore cleans up after a finished run
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["hidden_units"] == 64 and saved["data"]["path"] == ""
    assert [int(r["epoch"]) for r in rows(run / "history.csv")] == [0, 1]
    assert set(history) >= {"loss", "reconstruction", "kl", "val_loss", "val_reconstruction", "val_kl"}
    audio, rate = read_audio(run / "samples" / "sample_0.wav")
    assert rate == 3000 and audio.shape == (750,)
    loaded = kvae.load(run)
    assert loaded.sample_rate == 3000
    np.testing.assert_allclose(loaded.sample(2, seed=5), model.sample(2, seed=5), atol=1e-6)
    with pytest.raises(KvaeError, match="already holds a finished model"):
        kvae.fit(TINY, run=run)


def test_training_learns_and_samples_are_not_silent(embedded, tmp_path):
    from kvae.evaluation.metrics import silence_fraction
    from kvae.training import build_model, compile_model, make_datasets

    config = load_config(TINY, {"train": {"epochs": 6}, "data": {"windows_per_recording": 16}})
    _, val, _, _ = make_datasets(config, verbose=False)
    keras.utils.set_random_seed(0)
    untrained = compile_model(build_model(config), config)
    before = untrained.evaluate(val, verbose=0, return_dict=True)["loss"]
    model, history = kvae.fit(config, run=tmp_path / "run")
    after = model.evaluate(val, verbose=0, return_dict=True)["loss"]
    # The negative ELBO is in nats per window; a drop of several hundred is learning, not noise.
    assert after < before - 200, (before, after)
    clips = model.sample(8, seed=0)
    assert silence_fraction(clips, 3000) < 0.5
    assert np.sqrt(np.mean(clips ** 2)) > 1e-3


@pytest.mark.slow
def test_quickstart_samples_are_tonal_not_silent(embedded, tmp_path):
    """The full quickstart (minutes): samples are neither silent nor white noise."""
    from kvae.evaluation.metrics import silence_fraction, spectral_flatness

    model, _ = kvae.fit("quickstart", run=tmp_path / "run", verbose=False)
    clips = model.sample(16, seed=0)
    assert silence_fraction(clips, model.sample_rate) < 0.2
    assert spectral_flatness(clips) < 0.1  # white noise is near 0.5-1 here, the data near 0.01


class StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_interrupted_fit_resumes_without_losing_an_epoch(embedded, tmp_path):
    run = tmp_path / "run"
    config = load_config(TINY, {"train": {"epochs": 4}})
    with pytest.raises(KeyboardInterrupt):
        kvae.fit(config, run=run, callbacks=[StopAfter(1)])
    assert (run / "backup").exists() and not (run / "model.keras").exists()
    model, history = kvae.fit(run=run)  # the saved config is used
    assert [int(r["epoch"]) for r in rows(run / "history.csv")] == [0, 1, 2, 3]
    assert len(history["loss"]) == 2  # only epochs 2 and 3 ran again
    assert (run / "model.keras").is_file()


def test_cli_fit_sample_reconstruct(embedded, tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    assert cli.main(["fit", "--config", str(config), "--run", str(run), "--epochs", "1",
                     "--set", "model.latent_dim=4", "--set", "train.verbose=0"]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["latent_dim"] == 4
    out = tmp_path / "samples"
    assert cli.main(["sample", str(run / "model.keras"), "-n", "3", "--seed", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.wav")) == ["sample_0.wav", "sample_1.wav", "sample_2.wav"]
    source = tmp_path / "in.wav"
    t = np.arange(int(44100 * 1.3)) / 44100
    write_wav(source, 0.3 * np.sin(2 * np.pi * 220 * t), 44100)
    target = tmp_path / "out.wav"
    assert cli.main(["reconstruct", str(run), str(source), str(target)]) == 0
    audio, rate = read_audio(target)
    assert rate == 3000 and len(audio) == int(np.ceil(len(t) * 3000 / 44100))
    capsys.readouterr()
    assert cli.main(["sample", str(tmp_path / "nope.keras")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvae: error:") and "nope.keras" in err and err.count("\n") == 1


@pytest.mark.parametrize("items, word", [
    (["model.hidden_layerz=3"], "model.hidden_layerz"),
    (["train.epochs=three"], "train.epochs"),
    (["data.rate=1.5"], "data.rate"),
    (["data.normalize=loud"], "data.normalize"),
    (["train.learning_rate=0"], "train.learning_rate"),
    (["bogus.key=1"], "bogus.key"),
    (["no_equals_sign"], "no_equals_sign"),
    (["model.type=rnn"], "model.type"),
])
def test_bad_overrides_are_one_line_errors_naming_the_key(items, word):
    with pytest.raises(KvaeError) as info:
        load_config("quickstart", parse_set(items))
    assert word in str(info.value) and "\n" not in str(info.value)


def test_cli_reports_bad_override_without_traceback(tmp_path, capsys):
    assert cli.main(["fit", "--run", str(tmp_path / "r"), "--set", "model.widthh=3"]) == 2
    err = capsys.readouterr().err
    assert "model.widthh" in err and "Traceback" not in err and err.count("\n") == 1


def test_config_files_compose_with_base(tmp_path):
    (tmp_path / "child.toml").write_text('base = "parent.toml"\n[train]\nepochs = 7\n')
    (tmp_path / "parent.toml").write_text('name = "p"\n[train]\nepochs = 3\nlearning_rate = 0.01\n')
    config = load_config(tmp_path / "child.toml")
    assert config["name"] == "p" and config["train"]["epochs"] == 7 and config["train"]["learning_rate"] == 0.01
    with pytest.raises(KvaeError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_kl_schedule_values():
    from kvae.training import KLSchedule

    linear = KLSchedule(100, "linear", start=0.0)
    assert linear.value(0, 1.0) == 0.0 and linear.value(50, 1.0) == pytest.approx(0.5)
    assert linear.value(100, 1.0) == 1.0 and linear.value(10_000, 1.0) == 1.0
    log = KLSchedule(20_000, "log", start=1e-6)  # RAVE v2: 1e-6 to 5e-2 over 20k steps
    assert log.value(0, 5e-2) == pytest.approx(1e-6)
    assert log.value(10_000, 5e-2) == pytest.approx(np.sqrt(1e-6 * 5e-2), rel=1e-6)
    assert log.value(20_000, 5e-2) == pytest.approx(5e-2)
    with pytest.raises(KvaeError, match="kl_schedule"):
        KLSchedule(10, "cosine")


def test_kl_warmup_updates_saved_beta_and_survives_resume(embedded, tmp_path):
    config = load_config(TINY, {"train": {"epochs": 3, "steps_per_epoch": 4, "kl_schedule": "linear",
                                          "kl_warmup_steps": 10, "kl_start": 0.0},
                                "model": {"beta": 0.5}})
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        kvae.fit(config, run=run, callbacks=[StopAfter(0)])
    model, history = kvae.fit(run=run)
    # Resumed at step 4 (the optimizer's step count is restored): epoch 1's last batch began at
    # step 7 (beta 0.35); epoch 2's at step 11 >= 10, so beta reached its target.
    assert float(keras.ops.convert_to_numpy(model.beta)) == pytest.approx(0.5)
    assert [round(b, 3) for b in history["beta"]] == [0.35, 0.5]
    logged = [float(r["beta"]) for r in rows(run / "history.csv")]
    assert logged[0] == pytest.approx(0.5 * 3 / 10)  # after epoch 0 the last batch began at step 3
    assert float(keras.ops.convert_to_numpy(kvae.load(run).beta)) == pytest.approx(0.5)


def test_same_seed_same_initial_weights_without_importing_tensorflow():
    result = run_on_backend("torch", "model_checks:seeded_initial_weights",
                            {"type": "fc", "hidden_units": 16, "latent_dim": 4}, [3, 3, 4])
    first, again, other = result["weights"]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))
    assert not result["tensorflow_imported"]


def test_fit_with_the_tf_data_front_end(embedded, tmp_path):
    import warnings

    config = load_config(TINY, {"data": {"frontend": "tf"}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, history = kvae.fit(config, run=tmp_path / "run", verbose=False)
    assert len(history["loss"]) == 2 and np.isfinite(history["val_loss"]).all()
    assert not [w for w in caught if "ran out of data" in str(w.message)]
