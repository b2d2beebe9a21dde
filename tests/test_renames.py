"""One name per quantity: kvae 0.1's names (data.rate, --rate, model.rate_target / rate_gain, prepare(rate=),
Corpus.rate) still work, each read as its new name with one warning line."""

import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import kvae
from kvae import cli
from kvae.config import load_config
from kvae.errors import KvaeError

OLD = Path(__file__).parent / "data"  # fc_rate_target_0.1.0.keras: saved by kvae 0.1.0, with rate_target, rate_gain


def test_an_old_config_key_is_read_as_its_new_name_with_one_warning():
    with pytest.warns(FutureWarning, match=r"data.rate: renamed data.sample_rate in kvae 0.2") as caught:
        cfg = load_config({"data": {"rate": 8000}, "model": {"type": "fc"}})
    assert cfg["data"]["sample_rate"] == 8000 and "rate" not in cfg["data"] and len(caught) == 1
    with pytest.warns(FutureWarning, match=r"model.rate_target: renamed model.bitrate_target"):
        cfg = load_config({"model": {"type": "fc", "rate_target": 900.0}})
    assert cfg["model"]["bitrate_target"] == 900.0
    with pytest.warns(FutureWarning):  # a keyword of kvae.fit(**overrides) too
        assert load_config(None, {"data": {"rate": 4000}})["data"]["sample_rate"] == 4000
    with pytest.warns(FutureWarning) as caught:
        cfg = load_config("fc", {"model": {"stft_weight": 5.0, "mel_weight": 1.0}})  # over the preset's table
    assert [str(w.message).split(" in kvae")[0] for w in caught] == [  # one line for all of them
        "model.stft_weight, model.mel_weight: renamed model.loss_weights.stft, model.loss_weights.mel"]
    assert cfg["model"]["loss_weights"] == {"stft": 5.0, "mel": 1.0}
    with pytest.raises(KvaeError, match="data.rate and data.sample_rate: one setting given twice"):
        load_config({"data": {"rate": 8000, "sample_rate": 8000}})


def test_the_new_names_warn_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("quickstart", "vocos-mel", "magnitude", "fc"):
            load_config(name)


def test_an_old_config_file_is_one_warning_line_on_the_command_line(tmp_path, capsys):
    old = tmp_path / "old.toml"
    old.write_text('[data]\nrate = 1\n[model]\ntype = "fc"\nstft_weight = 2.0\n')  # 0.1's keys; a bad value
    assert cli.main(["fit", "--config", str(old), "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("kvae: warning: ") and "data.rate, model.stft_weight: renamed data.sample_rate, " \
        "model.loss_weights.stft" in err[0]
    assert err[1].startswith("kvae: error: data.sample_rate: must be from 1000") and len(err) == 2


def test_the_old_rate_flag_trains_with_one_warning_line(embedded, tmp_path, capsys):
    run = tmp_path / "x"
    assert cli.main(["fit", "--rate", "3000", "--epochs", "1", "--steps-per-epoch", "2", "--run", str(run),
                     "--set", "train.n_samples=0", "--set", "train.gallery=false",
                     "--set", "data.window_seconds=0.25", "--set", "train.verbose=0"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kvae: warning:")]
    assert warned == ["kvae: warning: --rate: renamed --sample-rate in kvae 0.2; read as such (update it)"]
    assert kvae.load(run, compile=False).sample_rate == 3000


def test_an_old_model_file_loads_with_its_rate_controller_under_the_new_names():
    with pytest.warns(FutureWarning, match=r"^model: rate_target, rate_gain, reconstruction_weight, stft_weight, "
                      r"mel_weight: renamed bitrate_target, bitrate_gain, loss_weights.reconstruction, "
                      r"loss_weights.stft, loss_weights.mel in kvae 0.2") as caught:
        model = kvae.load(OLD / "fc_rate_target_0.1.0.keras", compile=False)
    assert len(caught) == 1  # one line for every old name the file holds
    assert (model.bitrate_target, model.bitrate_gain) == (500.0, 0.05)
    assert model.loss_weights == {"reconstruction": 1.0, "stft": 0.0, "mel": 0.0}
    saved = np.load(OLD / "fc_rate_target_0.1.0.npz")
    np.testing.assert_allclose(model.reconstruct(saved["x"]), saved["reconstruction"], atol=1e-6)
    assert "rate_target" not in model.get_config() and model.get_config()["bitrate_target"] == 500.0
    assert "stft_weight" not in model.get_config() and model.get_config()["loss_weights"]["reconstruction"] == 1.0


def test_prepare_and_the_corpus_take_the_old_rate_name_too(embedded):
    from kvae.data import prepare

    with pytest.warns(FutureWarning, match=r"prepare\(rate=...\): renamed prepare\(sample_rate=...\)"):
        corpus = prepare(None, rate=3000)
    with pytest.warns(FutureWarning, match="Corpus.rate: renamed Corpus.sample_rate"):
        assert corpus.rate == corpus.sample_rate == 3000


def test_every_window_length_is_the_bounds_one_and_the_mel_loss_defaults_to_the_default_rate():
    from pathlib import Path as P

    from kvae import bounds
    from kvae.losses import MultiScaleMelLoss

    assert MultiScaleMelLoss().sample_rate == bounds.DEFAULT_RATE
    source = (P(kvae.__file__).parent / "data" / "cache.py").read_text()
    assert "bounds.window_samples(" in source and "round(window_seconds * rate)" not in source
    assert keras.backend.backend()  # the test module runs on every backend


def test_the_export_format_flag_is_ignored_with_one_warning_line(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "none.keras"), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("kvae: warning: --format: kvae export writes ONNX, its only format")
    assert err[1].startswith("kvae: error: ") and len(err) == 2


def test_version_0_2_with_a_changelog_of_every_rename_and_its_dependencies_declared():
    import configparser

    root = Path(kvae.__file__).resolve().parents[1]
    assert kvae.__version__ == "0.2.0"
    changelog = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    assert changelog.startswith("# Changelog\n\n## ") and "\n## 0.2.0\n" in changelog
    for old in ("`data.rate`", "--rate", "`model.rate_target`", "`kvae.stream`", "`kvae.training.inference`",
                "`kvae.training.latents`", "`kvae.training.generation`", "`kvae.training.runs`", "KLSchedule",
                "prepare(rate=...)", "Corpus.rate", "--format", "read_history", "RESUMABLE", "check_output_file"):
        assert old in changelog, old
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    requires = [line.split(">")[0].split("=")[0].strip() for line in setup["options"]["install_requires"].split("\n")]
    assert "scikit-learn" in requires  # kvae.evaluation.two_sample imports sklearn
