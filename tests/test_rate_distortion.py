"""benchmarks/rate_distortion.py: a config per rate target, and the curve of given models beside Opus."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def rd():
    spec = importlib.util.spec_from_file_location("rate_distortion",
                                                  os.path.join(ROOT, "benchmarks", "rate_distortion.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_config_per_bitrate_target_on_the_base_config(rd, tmp_path):
    from kvae.config import load_config

    files = rd.rate_configs("magnitude", [1.5, 12], tmp_path)
    assert [f.name for f in files] == ["magnitude-1.5k.toml", "magnitude-12k.toml"]
    config = load_config(str(files[0]))
    assert config["name"] == "magnitude-1.5k" and config["model"]["bitrate_target"] == 1500.0
    assert config["model"]["type"] == "magnitude" and config["model"]["n_fft"] == 256
    assert rd.rate_configs("magnitude", [1.5, 12], tmp_path) == files  # a rerun keeps them


def test_given_models_are_judged_beside_opus_and_plotted(rd, embedded, tmp_path, capsys):
    from kvae.models import MagnitudeVAE

    model = MagnitudeVAE(sample_rate=3000, window_seconds=1.0, n_fft=128, hop=32, width=8, encoder_blocks=1,
                         decoder_blocks=1, latent_dim=4, griffin_lim_iters=2)
    path = tmp_path / "m.keras"
    model.save(path)
    out, png = tmp_path / "rd", tmp_path / "rd.png"
    assert rd.main(["--no-train", "--rates", "3", "--models", f"tiny={path}", "--opus-rates", "6", "--n-clips", "16",
                    "--no-visqol", "--out", str(out), "--plot", str(png)]) == 0
    rows = json.loads((out / "rd.json").read_text())["rows"]
    assert rows["tiny"]["rate_bps"] > 0 and "paired_c2st" in rows["tiny"] and "ladder: Opus 12 kbit/s" in rows
    assert png.stat().st_size > 0
    assert "tiny" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        rd.main(["--no-train", "--models", "no-equals-sign", "--out", str(out)])
