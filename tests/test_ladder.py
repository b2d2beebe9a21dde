"""The codec ladder and the paired C2ST: degradations do what they say, and detectability is ordered on music."""

import numpy as np
import pytest

from kvae.errors import KvaeError
from kvae.evaluation import ladder
from kvae.evaluation.evaluate import ladder_table, windows
from kvae.evaluation.features import clip_features
from kvae.evaluation.metrics import si_sdr
from kvae.evaluation.report import reconstruction_verdict
from kvae.evaluation.two_sample import paired_c2st

RATE = 3000


@pytest.fixture(scope="module")
def held_out(embedded):
    """128 held-out 1-s windows of the embedded corpus at 3 kHz (the evaluation's test split)."""
    from kvae.data import prepare

    clips, split = windows(prepare(None, sample_rate=RATE), "test", RATE, 128, random=False, seed=0)
    assert split == "test"
    return clips


def _snr(clean, other):
    return 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum((other - clean).astype(np.float64) ** 2))


def test_degradations_do_what_they_say(held_out):
    x = held_out[:16]
    assert _snr(x, ladder.noise_at_snr(x, 30)) == pytest.approx(30, abs=0.3)
    assert _snr(x, ladder.noise_at_snr(x, 20)) == pytest.approx(20, abs=0.3)
    assert _snr(x, ladder.mu_law(x, bits=8)) > _snr(x, ladder.mu_law(x, bits=4)) + 10
    assert len(np.unique(ladder.mu_law(x, bits=4))) <= 16
    t = np.arange(RATE) / RATE
    sines = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 1300 * t)])
    passed = ladder.lowpass(sines, RATE)
    assert ladder.lowpass_cutoff(RATE) == 1000
    assert np.std(passed[0]) / np.std(sines[0]) == pytest.approx(1, abs=0.01)  # below the cutoff: kept
    assert np.std(passed[1]) / np.std(sines[1]) < 0.1  # above: gone
    steady = ladder.smear_magnitude(sines[:1], RATE)  # a stationary sine's magnitude is already smooth
    assert si_sdr(sines[:1], steady) > 30
    assert ladder.smear_magnitude(x, RATE).shape == x.shape
    with pytest.raises(KvaeError, match="Nyquist"):
        ladder.lowpass(x, RATE, cutoff=2000)


@pytest.mark.skipif(ladder.opus_tools() is None, reason=ladder.OPUS_MISSING)
def test_opus_round_trip_is_aligned_and_costs_its_bitrate(held_out):
    x = held_out[:8]
    coded, bps = ladder.opus(x, RATE, 12)
    assert coded.shape == x.shape and coded.dtype == np.float32
    assert si_sdr(x, coded) > 3  # aligned to the sample: a shift by a few samples would give < 0 dB
    assert 8_000 < bps < 20_000  # the .opus file's own rate, container included
    low, _ = ladder.opus(x, RATE, 6)
    assert si_sdr(x, low) < si_sdr(x, coded)


def test_missing_opus_tools_leave_a_row_that_says_how_to_install(held_out, monkeypatch):
    monkeypatch.setattr(ladder, "opus_tools", lambda: None)
    rows = ladder.ladder_rows(held_out[:8], RATE)
    for kbps in ladder.OPUS_KBPS:
        clips, info = rows[f"Opus {kbps} kbit/s"]
        assert clips is None and info["rate_bps"] == 1000 * kbps and "apt-get install opus-tools" in info["note"]
    with pytest.raises(KvaeError, match="opus-tools"):
        ladder.opus(held_out[:8], RATE, 6)


def test_paired_c2st_of_inputs_with_themselves_is_chance(held_out):
    f = clip_features(held_out, RATE)
    assert paired_c2st(f, f)["accuracy"] == 0.5
    silent = clip_features(np.zeros_like(held_out), RATE)
    assert paired_c2st(f, silent)["accuracy"] >= 0.95
    with pytest.raises(KvaeError, match="pair up"):
        paired_c2st(f, f[:-1])


def test_ladder_is_ordered_on_music(held_out):
    rows = ladder_table(held_out, RATE)
    c2st = {name[len("ladder: "):]: row.get("paired_c2st") for name, row in rows.items()}
    assert c2st["noise 30 dB SNR"] < c2st["noise 20 dB SNR"] < c2st["low-pass 1000 Hz"], c2st
    assert rows["ladder: noise 30 dB SNR"]["paired_c2st_high"] < rows["ladder: low-pass 1000 Hz"]["paired_c2st_low"]
    assert rows["ladder: mu-law 4 bit"]["rate_bps"] == 4 * RATE
    for kbps in ladder.OPUS_KBPS:
        row = rows[f"ladder: Opus {kbps} kbit/s"]
        assert row["rate_bps"] == 1000 * kbps
        assert (row.get("paired_c2st") is not None) == (ladder.opus_tools() is not None)
    if ladder.opus_tools() is not None:  # more bits, less detectable
        assert c2st["Opus 12 kbit/s"] <= c2st["Opus 6 kbit/s"], c2st
    # a reconstruction's verdict names the nearest ladder row
    rows["reconstructions"] = {"paired_c2st": c2st["noise 20 dB SNR"], "paired_c2st_low": 0.7, "rate_bps": 1400.0}
    verdict = reconstruction_verdict(rows)
    assert verdict.startswith(f"told from their inputs {round(100 * c2st['noise 20 dB SNR'])} % of the time at "
                              "1.4 kbit/s: as detectable as "), verdict
    rows["reconstructions"]["paired_c2st_low"] = 0.45
    assert reconstruction_verdict(rows).startswith("hard to tell from their inputs at 1.4 kbit/s")
