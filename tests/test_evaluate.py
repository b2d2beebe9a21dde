"""kvae evaluate: realism rows (two-sample tests against reference rows) and reconstruction rows (the
rate, the paired C2ST, the codec ladder), as a printed report with verdicts, as strict JSON and as a plot."""

import json
import math

import numpy as np
import pytest
from keras import ops

import kvae
from kvae import cli
from kvae.errors import KvaeError
from kvae.evaluation import ladder
from kvae.evaluation.evaluate import REFERENCE_ROWS, evaluate, information_rate, reconstruction_table
from kvae.evaluation.report import format_report, verdicts, write_json
from kvae.training.callbacks import InformationRate

TINY = {
    "data": {"sample_rate": 3000, "window_seconds": 0.5, "windows_per_recording": 4, "batch_size": 16},
    "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 32, "latent_dim": 4},
    "train": {"epochs": 1, "n_samples": 0, "verbose": 0},
}
REALISM = {"c2st", "c2st_low", "c2st_high", "kid", "kid_low", "kid_high", "frechet_clip", "frechet_logmel",
           "temporal_std", "silence", "flatness", "frechet_notes", "kid_notes", "frechet_music", "kid_music", "verdict"}
PAIRED = {"paired_c2st", "paired_c2st_low", "paired_c2st_high", "mrstft", "lsd_db", "si_sdr_db",
          "visqol", "visqol_low", "visqol_high", "visqol_clips"}


@pytest.fixture(scope="module")
def fitted(embedded, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval") / "run"
    model, history = kvae.fit(TINY, run=folder, verbose=False)
    return model, folder, history


@pytest.fixture(scope="module")
def run(fitted):
    return fitted[:2]


def test_evaluate_rows_keys_and_references(run):
    model, _ = run
    result = evaluate(model, n_clips=64, reference_rate=8000, visqol=False)  # ViSQOL: the CLI test below
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
    ladder_names = [f"ladder: {name}" for name in ("noise 30 dB SNR", "noise 20 dB SNR",
                                                    "magnitude smeared over 4 frames", "low-pass 1000 Hz",
                                                    "mu-law 4 bit", "Opus 6 kbit/s", "Opus 12 kbit/s")]
    assert list(recon) == ["reconstructions", *ladder_names, "ref: silence", "ref: white noise",
                           "ref: data via 3000 Hz (at 8000 Hz)"]
    assert set(recon["reconstructions"]) == PAIRED | {"kl_nats", "rate_bps", "verdict"}
    assert recon["reconstructions"]["rate_bps"] == result["rate_bps"] > 0
    assert "as detectable as" in recon["reconstructions"]["verdict"]
    assert recon["ref: silence"]["paired_c2st"] >= 0.9 and recon["ref: silence"]["si_sdr_db"] == -np.inf
    if ladder.opus_tools() is not None:
        assert PAIRED <= set(recon["ladder: Opus 6 kbit/s"]) and recon["ladder: Opus 6 kbit/s"]["rate_bps"] == 6000
    assert recon["ref: data via 3000 Hz (at 8000 Hz)"]["si_sdr_db"] > 0
    assert result["settings"]["n_clips"] == 64 and result["data"]["held_out_split"] == "test"
    text = format_report(result)
    assert "ref: drone" in text and "-inf" in text and "64 clips vs 64 random training windows" in text
    assert "ladder: low-pass 1000 Hz" in text and "reconstructions: told from their inputs" in text


def test_rate_is_the_kl_in_bits_per_second(fitted):
    model, _, history = fitted
    from kvae.data import prepare
    from kvae.evaluation.evaluate import windows

    clips, _ = windows(prepare(None, sample_rate=model.sample_rate), "test", model.window, 32, random=False)
    z_mean, z_log_var = model.encode(ops.convert_to_tensor(clips))
    kl = float(ops.convert_to_numpy(model._kl(z_mean, z_log_var)))  # the loss's KL term, nats per window
    rate = information_rate(model, clips)
    assert rate["kl_nats"] == pytest.approx(kl, rel=1e-4)
    assert rate["rate_bps"] == pytest.approx(kl / math.log(2) / model.window_seconds, rel=1e-4)
    # kvae fit logs the same conversion of its KL, per epoch, training and validation
    for prefix in ("", "val_"):
        expected = [k / math.log(2) / model.window_seconds for k in history[f"{prefix}kl"]]
        assert history[f"{prefix}rate_bps"] == pytest.approx(expected)
    logs = {"kl": 2.0 * math.log(2)}
    callback = InformationRate()
    callback.set_model(model)
    callback.on_epoch_end(0, logs)
    assert logs["rate_bps"] == pytest.approx(2.0 / model.window_seconds) and "val_rate_bps" not in logs


def test_reconstruction_table_judges_outputs_from_outside_kvae():
    """Any model's outputs (benchmarks/peer_rave.py: RAVE's) get evaluate's paired rows, ladder and verdicts."""
    rng = np.random.default_rng(0)
    t = np.arange(1500) / 3000.0
    pitch = rng.uniform(110.0, 660.0, (40, 1))
    test = (0.3 * np.sin(2 * np.pi * pitch * t) * np.exp(-rng.uniform(0.5, 4.0, (40, 1)) * t)
            + 0.01 * rng.standard_normal((40, 1500))).astype(np.float32)
    outputs = {"copy": test.copy(), "hiss": 0.1 * rng.standard_normal(test.shape).astype(np.float32)}
    rows = reconstruction_table(test, outputs, 3000, columns={"copy": {"rate_bps": 1234.0}})
    assert list(rows)[:2] == ["copy", "hiss"] and list(rows)[-2:] == ["ref: silence", "ref: white noise"]
    assert "ladder: mu-law 4 bit" in rows and "ladder: low-pass 1000 Hz" in rows
    assert set(rows["copy"]) == PAIRED | {"rate_bps", "verdict"} and rows["copy"]["rate_bps"] == 1234.0
    assert rows["copy"]["paired_c2st_low"] < 0.6 and rows["copy"]["verdict"].startswith("hard to tell")
    assert rows["hiss"]["paired_c2st"] >= 0.9 and "as detectable as" in rows["hiss"]["verdict"]
    with pytest.raises(KvaeError, match="do not match"):
        reconstruction_table(test, {"short": test[:, :1000]}, 3000)
    with pytest.raises(KvaeError, match="NaN"):
        reconstruction_table(test, {"nan": np.full_like(test, np.nan)}, 3000)


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


def test_cli_evaluate_prints_and_writes_strict_json_and_the_plot(run, tmp_path, capsys):
    _, folder = run
    out, plot = tmp_path / "eval.json", tmp_path / "rate.png"
    assert cli.main(["evaluate", str(folder), "--n-clips", "32", "--out", str(out), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert "C2ST" in printed and "samples: " in printed and "Reconstruction" in printed
    assert "information rate: " in printed and f"wrote {plot}" in printed
    saved = json.loads(out.read_text())  # strict JSON: -inf became null
    assert saved["reconstruction"]["ref: silence"]["si_sdr_db"] is None
    assert saved["settings"]["n_clips"] == 32 and saved["model"]["sample_rate"] == 3000
    assert saved["rate_bps"] > 0 and saved["reconstruction"]["reconstructions"]["paired_c2st"] >= 0.5
    from kvae.evaluation import music_embedding, visqol

    if visqol.available()[0]:  # the eval extra: ViSQOL for the model and every ladder row (silence has none)
        assert "ViSQOL MOS" in printed and saved["settings"]["visqol"].startswith("visqol-python")
        recon = saved["reconstruction"]
        assert all(1 <= row["visqol"] <= 5 for name, row in recon.items()
                   if name != "ref: silence" and "note" not in row and name.startswith(("ladder", "recon", "ref: w")))
    else:
        assert "ViSQOL column: off: ViSQOL (visqol-python) is not installed" in printed
    if music_embedding.available()[0]:
        assert "Fréchet musicnn" in printed and saved["realism"]["ref: white noise"]["frechet_music"] > 0
    else:
        assert "music network columns: off: the music network (musicnn) is not installed" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_cli_evaluate_plot_must_be_a_png(run, capsys):
    _, folder = run
    assert cli.main(["evaluate", str(folder), "--plot", "rate.pdf"]) == 2
    assert capsys.readouterr().err.strip() == "kvae: error: --plot: give a .png file name, got rate.pdf"


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
    assert err == "kvae: error: --n-clips: must be from 10 to 100000, got 4"
