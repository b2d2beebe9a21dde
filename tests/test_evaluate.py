"""kvae evaluate: metrics of a saved model beside reference rows, printed and written as JSON."""

import json

import numpy as np

import kvae
from kvae import cli
from kvae.evaluate import evaluate, format_table

TINY = {
    "data": {"rate": 3000, "window_seconds": 0.5, "windows_per_recording": 4, "batch_size": 16},
    "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 32, "latent_dim": 4},
    "train": {"epochs": 1, "n_samples": 0, "verbose": 0},
}


def test_evaluate_rows_and_reference_values(embedded, tmp_path):
    model, _ = kvae.fit(TINY, run=tmp_path / "run", verbose=False)
    result = evaluate(model, n_samples=8, windows_per_recording=2, reference_rate=8000)
    rows = result["rows"]
    assert set(rows) == {"model", "silence", "white noise", "training windows", "data via 3000 Hz (at 8000 Hz)"}
    assert rows["silence"]["silence"] == 1.0 and rows["silence"]["si_sdr_db"] == -np.inf
    assert rows["white noise"]["flatness"] > 0.3 > rows["training windows"]["flatness"]
    # real music is closer to the test windows than white noise or silence is
    assert rows["training windows"]["frechet_logmel"] < rows["white noise"]["frechet_logmel"]
    assert rows["training windows"]["frechet_logmel"] < rows["silence"]["frechet_logmel"]
    # the band-limit reference keeps most of the signal
    assert rows["data via 3000 Hz (at 8000 Hz)"]["si_sdr_db"] > 0
    for key in ("mrstft", "lsd_db", "si_sdr_db", "silence", "flatness", "frechet_logmel"):
        assert np.isfinite(rows["model"][key]), key
    table = format_table(result)
    assert "white noise" in table and "-inf" in table


def test_cli_evaluate_prints_and_writes_json(embedded, tmp_path, capsys):
    kvae.fit(TINY, run=tmp_path / "run", verbose=False)
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", str(tmp_path / "run"), "--n-samples", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Fréchet log-mel" in printed and "model" in printed
    saved = json.loads(out.read_text())  # strict JSON: -inf became null
    assert saved["rows"]["silence"]["si_sdr_db"] is None
    assert saved["n_samples"] == 4 and saved["model"]["sample_rate"] == 3000
