"""ViSQOL (visqol-python, audio mode) in the reconstruction table: a copy scores near the top, noise lower,
silence has no score; a missing package is one line. Skipped where `kvae[eval]` is not installed."""

import numpy as np
import pytest

from kvae.errors import KvaeError
from kvae.evaluation import visqol
from kvae.evaluation.report import RECONSTRUCTION_KEYS, format_table

RATE = 3000
INSTALLED, WHY = visqol.available()
needs_visqol = pytest.mark.skipif(not INSTALLED, reason=f"visqol-python not installed ({WHY})")


def _tones(n, seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = rng.uniform(110.0, 660.0, (n, 1))
    tone = sum(np.sin(2 * np.pi * k * pitch * t) / k for k in range(1, 4))
    return (0.3 * tone * np.exp(-rng.uniform(0.5, 4.0, (n, 1)) * t) + 0.005 * rng.standard_normal((n, t.size)))


def test_subset_is_a_quarter_evenly_spaced_at_most_64():
    assert list(visqol.subset(8)) == [0, 7] and len(visqol.subset(256)) == 64 and len(visqol.subset(1000)) == 64
    assert list(visqol.subset(3)) == [0] and len(visqol.subset(0)) == 0
    index = visqol.subset(256)
    assert index[0] == 0 and index[-1] == 255 and np.all(np.diff(index) > 0)


@needs_visqol
def test_a_copy_scores_near_the_top_noise_lower_silence_none():
    clips = _tones(3)
    noisy = clips + 0.3 * clips.std(axis=1, keepdims=True) * np.random.default_rng(1).standard_normal(clips.shape)
    copy, hiss = visqol.scores(clips, clips, RATE), visqol.scores(clips, noisy, RATE)
    assert np.all(copy > 4.5) and np.all(hiss < copy - 0.05), (copy, hiss)
    assert np.isnan(visqol.scores(clips[:1], np.zeros_like(clips[:1]), RATE)).all()
    columns = visqol.visqol_columns(clips, clips, RATE, max_clips=2)
    assert columns["visqol_clips"] == 0 + len(visqol.subset(3, 2)) and columns["visqol_low"] <= columns["visqol"]
    assert visqol.visqol_columns(clips, np.zeros_like(clips), RATE)["visqol"] is None
    half = _tones(8, seconds=0.5)  # too short for ViSQOL alone: the 2 scored windows are joined into 1 s
    columns = visqol.visqol_columns(half, half, RATE)
    assert columns["visqol_clips"] == 1 and columns["visqol"] > 4.5
    with pytest.raises(KvaeError, match="must both be"):
        visqol.scores(clips, clips[:, :100], RATE)


@needs_visqol
def test_every_row_of_the_reconstruction_table_gets_visqol():
    from kvae.evaluation.evaluate import reconstruction_table

    test = _tones(8).astype(np.float32)
    rows = reconstruction_table(test, {"copy": test.copy()}, RATE, visqol=True)  # 2 of 8 windows scored per row
    assert rows["copy"]["visqol"] > 4.5 and rows["copy"]["visqol_clips"] == 2
    for name, row in rows.items():
        if "note" in row:  # a ladder row that could not be made (no opus-tools)
            continue
        if name == "ref: silence":
            assert row["visqol"] is None
        else:
            assert 1.0 <= row["visqol"] <= 5.0, name
    assert rows["ref: white noise"]["visqol"] < rows["copy"]["visqol"]
    text = "\n".join(format_table(rows, RECONSTRUCTION_KEYS, ""))
    assert "ViSQOL MOS" in text


def test_a_missing_package_is_one_line_saying_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "visqol" else real(name, *a))
    ok, why = visqol.available()
    assert ok is False and 'pip install "kvae[eval]"' in why and "\n" not in why
    from kvae.evaluation.evaluate import reconstruction_table

    test = _tones(8).astype(np.float32)
    rows = reconstruction_table(test, {"copy": test}, RATE)  # off where it is missing: the column is None
    assert rows["copy"]["visqol"] is None
    with pytest.raises(KvaeError, match="visqol-python"):
        reconstruction_table(test, {"copy": test}, RATE, visqol=True)
