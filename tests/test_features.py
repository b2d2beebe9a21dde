"""Clip features and two-sample tests: real music vs itself, vs noise, drone and silence (embedded corpus)."""

import numpy as np
import pytest

from kvae.errors import KvaeError
from kvae.evaluation import references
from kvae.evaluation.evaluate import windows
from kvae.evaluation.features import clip_features, feature_names, temporal_std
from kvae.evaluation.two_sample import Standardizer, c2st, frechet_features, kid, wilson_interval

RATE = 3000


@pytest.fixture(scope="module")
def music(embedded):
    """512 random 1-s training windows and 256 held-out ones at 3 kHz, with the reference's features."""
    from kvae.data import prepare

    corpus = prepare(None, sample_rate=RATE)
    train, _ = windows(corpus, "train", RATE, 512, random=True, seed=0)
    order = np.random.default_rng(0).permutation(len(train))
    reference, other = train[order[:256]], train[order[256:]]
    return reference, other, clip_features(reference, RATE)


def test_feature_vector_layout_and_units():
    t = np.arange(RATE) / RATE
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    f = clip_features(np.stack([tone, np.zeros(RATE)]), RATE)
    names = feature_names()
    assert f.shape == (2, len(names)) and np.isfinite(f).all()
    row = dict(zip(names, f[0]))
    assert row["level_db"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.1)  # RMS of a sine, dBFS
    assert row["salience_mean"] > 0.9 and row["flatness_mean"] < 0.05  # periodic and tonal
    silent = dict(zip(names, f[1]))
    assert silent["level_db"] == -100.0 and silent["onset_rate"] == 0.0 and silent["salience_mean"] == 0.0


def test_bad_clips_are_one_line_errors():
    with pytest.raises(KvaeError, match="NaN"):
        clip_features(np.full((2, 3000), np.nan), RATE)
    with pytest.raises(KvaeError, match="too short"):
        clip_features(np.zeros((2, 40)), RATE)


def test_real_vs_real_is_near_chance(music):
    reference, other, ref_features = music
    result = c2st(ref_features, clip_features(other, RATE))
    assert 0.4 <= result["accuracy"] <= 0.65, result
    assert result["low"] < result["accuracy"] < result["high"]


@pytest.mark.parametrize("make", ["noise", "drone", "silence"])
def test_noise_drone_and_silence_are_told_apart_from_music(music, make):
    reference, _, ref_features = music
    clips = {"noise": lambda: references.white_noise_like(reference, seed=1),
             "drone": lambda: references.drone_like(reference, RATE, seed=2),
             "silence": lambda: references.silence_like(reference)}[make]()
    assert c2st(ref_features, clip_features(clips, RATE))["accuracy"] >= 0.9


def test_kid_is_zero_for_a_set_against_itself_and_large_for_noise(music):
    reference, other, ref_features = music
    scale = Standardizer(ref_features)
    self_kid = kid(ref_features, ref_features, scale)
    real_kid = kid(ref_features, clip_features(other, RATE), scale)
    noise_kid = kid(ref_features, clip_features(references.white_noise_like(reference, seed=1), RATE), scale)
    # unbiased, so not exactly 0 for a set against itself (its k(x, x) terms sit in the cross term only)
    assert abs(self_kid["value"]) < 0.02 * noise_kid["value"]
    assert noise_kid["low"] > 10 * max(real_kid["high"], 0.1)
    assert frechet_features(ref_features, ref_features, scale) == pytest.approx(0.0, abs=1e-3)


def test_a_drone_moves_far_less_than_music(music):
    reference, _, ref_features = music
    drone = references.drone_like(reference, RATE, seed=2)
    assert temporal_std(clip_features(drone, RATE)).mean() < 0.4 * temporal_std(ref_features).mean()
    # ... while its level matches the data clip by clip
    np.testing.assert_allclose(np.sqrt(np.mean(drone ** 2, axis=1)), np.sqrt(np.mean(reference ** 2, axis=1)),
                               rtol=1e-3, atol=1e-7)


def test_wilson_interval():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(100, 100)[1] == pytest.approx(1.0) and wilson_interval(100, 100)[0] > 0.95
