"""kvae evaluate: realism rows (two-sample tests against reference rows) and reconstruction rows, as
a printed report with verdicts and as strict JSON."""

import json

import numpy as np
import pytest

import kvae
from kvae import cli
from kvae.errors import KvaeError
from kvae.evaluation.evaluate import REFERENCE_ROWS, evaluate
from kvae.evaluation.report import format_report, verdicts, write_json

TINY = {
    "data": {"rate": 3000, "window_seconds": 0.5, "windows_per_recording": 4, "batch_size": 16},
    "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 32, "latent_dim": 4},
    "train": {"epochs": 1, "n_samples": 0, "verbose": 0},
}
REALISM = {"c2st", "c2st_low", "c2st_high", "kid", "kid_low", "kid_high", "frechet_clip", "frechet_logmel",
           "temporal_std", "silence", "flatness", "verdict"}


@pytest.fixture(scope="module")
def run(embedded, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval") / "run"
    model, _ = kvae.fit(TINY, run=folder, verbose=False)
    return model, folder


def test_evaluate_rows_keys_and_references(run):
    model, _ = run
    result = evaluate(model, n_clips=64, reference_rate=8000)
    realism = result["realism"]
    assert list(realism) == ["samples", "reconstructions", *REFERENCE_ROWS]
    for name, row in realism.items():
        assert set(row) == REALISM, name
    # the references do what they are for
    assert realism["ref: real vs real"]["c2st"] < 0.7
    for failure in ("ref: white noise", "ref: drone", "ref: silence"):
        assert realism[failure]["c2st"] >= 0.9, failure
    assert realism["ref: silence"]["silence"] == 1.0
    assert realism["ref: drone"]["temporal_std"] < 0.5 * realism["ref: real vs real"]["temporal_std"]
    assert realism["ref: white noise"]["kid"] > 10 * abs(realism["ref: real vs real"]["kid"])
    recon = result["reconstruction"]
    assert set(recon) == {"reconstructions", "ref: silence", "ref: white noise", "ref: data via 3000 Hz (at 8000 Hz)"}
    assert recon["ref: silence"]["si_sdr_db"] == -np.inf
    assert recon["ref: data via 3000 Hz (at 8000 Hz)"]["si_sdr_db"] > 0
    assert result["settings"]["n_clips"] == 64 and result["data"]["held_out_split"] == "test"
    text = format_report(result)
    assert "ref: drone" in text and "-inf" in text and "64 clips vs 64 random training windows" in text


def test_verdicts_in_plain_words():
    rows = {
        "samples": {"c2st": 0.99, "c2st_low": 0.97},
        "ref: real vs real": {"c2st": 0.5, "c2st_low": 0.44},
        "ref: white noise": {"c2st": 0.995, "c2st_low": 0.98},
        "ref: drone": {"c2st": 0.9, "c2st_low": 0.87},
    }
    words = verdicts(rows)
    assert words["samples"] == "distinguishable from the training data 99 % of the time, like white noise (100 %)"
    assert words["ref: real vs real"].startswith("hard to tell from the training data: told apart 50 %")
    assert "like white noise" in words["ref: drone"]


def test_cli_evaluate_prints_and_writes_strict_json(run, tmp_path, capsys):
    _, folder = run
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", str(folder), "--n-clips", "32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "C2ST" in printed and "samples: " in printed and "Reconstruction" in printed
    saved = json.loads(out.read_text())  # strict JSON: -inf became null
    assert saved["reconstruction"]["ref: silence"]["si_sdr_db"] is None
    assert saved["settings"]["n_clips"] == 32 and saved["model"]["sample_rate"] == 3000
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_report_never_overwrites_its_input_or_a_folder(run, tmp_path):
    _, folder = run
    with pytest.raises(KvaeError, match="input"):
        write_json(folder / "model.keras", {"a": 1}, refuse=[folder / "model.keras"])
    with pytest.raises(KvaeError, match="folder"):
        write_json(tmp_path, {"a": 1})
    assert (folder / "model.keras").stat().st_size > 1000


def test_cli_evaluate_too_few_clips_is_one_line(run, capsys):
    _, folder = run
    assert cli.main(["evaluate", str(folder), "--n-clips", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "kvae: error: n_clips: at least 10 clips per set are needed, got 4"
