"""benchmarks/oracle.py's pieces: the swaps invert, the ladder and the linear code behave, and a quick run prints
one table with the model's swaps, the model-free rows, the ladder and the references."""

import importlib.util
import os

import numpy as np
import pytest

import audio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def oracle():
    spec = importlib.util.spec_from_file_location("oracle", os.path.join(ROOT, "benchmarks", "oracle.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_true_magnitude_with_the_true_phase_is_the_input(oracle):
    x = audio.tones(3, 3000, 0, 3000)
    mag, phase = oracle.stft(x, 256, 64)
    np.testing.assert_allclose(oracle.istft(mag, phase, 256, 64, 3000), x, atol=1e-4)


def test_smear_and_blur_average_over_frames_or_bins_and_one_is_the_identity(oracle):
    mag = np.zeros((1, 9, 5))
    mag[0, 4, 2] = 4.0
    assert oracle.smear(mag, 1, axis=1) is mag
    np.testing.assert_allclose(oracle.smear(mag, 4, axis=1).sum(axis=1), mag.sum(axis=1))
    assert np.count_nonzero(oracle.smear(mag, 4, axis=1)[0, :, 2]) == 4  # spread over 4 frames
    assert np.count_nonzero(oracle.smear(mag, 3, axis=2)[0, 4]) == 3  # over 3 bins


def test_the_linear_code_gets_closer_with_more_components_and_bits(oracle):
    x = audio.tones(16, 3000, 1, 3000)
    mag, _ = oracle.stft(x, 256, 64)
    error = {}
    for k, b in ((4, 3), (32, 3), (32, 8)):
        coded = oracle.linear_code(mag, mag, k, b)
        assert coded.shape == mag.shape and (coded >= 0).all()
        error[k, b] = np.mean(np.abs(np.log(coded + 1e-3) - np.log(mag + 1e-3)))
    assert error[32, 3] < error[4, 3] and error[32, 8] < error[32, 3]


def test_a_quick_run_prints_one_table_with_the_swaps_the_ladder_and_the_references(oracle, embedded, tmp_path,
                                                                                     capsys):
    from kvae.models import MagnitudeVAE

    model = MagnitudeVAE(sample_rate=3000, window_seconds=1.0, n_fft=128, hop=32, width=8, encoder_blocks=1,
                         decoder_blocks=1, latent_dim=4, griffin_lim_iters=2)
    path = tmp_path / "m.keras"
    model.save(path)
    out = tmp_path / "oracle.json"
    assert oracle.main(["--quick", "--model", str(path), "--codes", "8x4", "--smear", "2", "--blur", "3",
                        "--temperatures", "0.5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for row in ("model ", "model mag + true phase", "true mag + model phase", "model mag + Griffin-Lim",
                "model's own mag + true phase", "model's own mag + PGHI", "model's own draw at T=0.5 + PGHI", "model mag + PGHI", "true mag + PGHI",
                "true mag + Griffin-Lim", "true mag + random phase",
                "smear 2 frames + Griffin-Lim", "blur 3 bins + Griffin-Lim", "linear code 8 x 4 bit + Griffin-Lim",
                "ladder: Opus 6 kbit/s", "ref: white noise"):
        assert row in text, row
    import json

    rows = json.loads(out.read_text())["rows"]
    assert rows["linear code 8 x 4 bit + Griffin-Lim"]["rate_bps"] == pytest.approx(8 * 4 * 3000 / 64)
    assert 0.0 <= rows["true mag + Griffin-Lim"]["paired_c2st"] <= 1.0
    with pytest.raises(SystemExit):
        oracle.main(["--codes", "8by4"])
