"""Tests for kvae.evaluation.metrics (numpy/scipy evaluation metrics)."""

import numpy as np
import pytest

from kvae.evaluation import frechet, metrics
from kvae.errors import KvaeError

SR = 16000


def _sine(freq=440.0, seconds=1.0, amplitude=0.5, sr=SR, phase=0.0):
    t = np.arange(int(seconds * sr)) / sr
    return amplitude * np.sin(2 * np.pi * freq * t + phase)


def _noise(shape, seed=0, scale=0.3):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def _tones(seed, n=12, seconds=0.5):
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        f0 = rng.uniform(150, 600)
        clip = sum(_sine(f0 * k, seconds, 0.4 / k, phase=rng.uniform(0, 6.28)) for k in (1, 2, 3))
        clips.append(clip)
    return np.stack(clips)


# ------------------------------------------------------------------ si_sdr


def test_si_sdr_identical_is_large():
    x = _noise(8000)
    assert metrics.si_sdr(x, x) > 80.0
    assert np.all(metrics.si_sdr(np.stack([x, x]), np.stack([x, x]), reduce=False) > 80.0)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_si_sdr_matches_known_snr(snr_db):
    x = _sine(330.0, 1.0) + 0.5 * _sine(1234.0, 1.0)
    noise = _noise(x.shape, seed=int(snr_db) + 5)
    x0 = x - x.mean()
    noise = noise - noise.mean()
    noise *= np.sqrt(np.sum(x0**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
    assert metrics.si_sdr(x, x + noise) == pytest.approx(snr_db, abs=0.5)


def test_si_sdr_is_scale_invariant_and_batched():
    x = _noise((3, 4000), seed=1)
    y = x + _noise((3, 4000), seed=2, scale=0.1)
    per_clip = metrics.si_sdr(x, y, reduce=False)
    assert per_clip.shape == (3,)
    np.testing.assert_allclose(metrics.si_sdr(x, 7.5 * y, reduce=False), per_clip, rtol=1e-9)
    np.testing.assert_allclose(metrics.si_sdr(0.01 * x, y, reduce=False), per_clip, rtol=1e-9)
    assert metrics.si_sdr(x, y) == pytest.approx(per_clip.mean())
    # the optimal scale may be negative: polarity does not matter either
    np.testing.assert_allclose(metrics.si_sdr(x, -y, reduce=False), per_clip, rtol=1e-9)


def test_si_sdr_undefined_cases():
    x = _noise((2, 1000), seed=4)
    ref = x.copy()
    ref[0] = 0.25  # constant reference: undefined
    values = metrics.si_sdr(ref, x, reduce=False)
    assert np.isnan(values[0]) and np.isfinite(values[1])
    assert metrics.si_sdr(ref, x) == pytest.approx(values[1])


# ------------------------------------------------------------------ levels


def test_rms_and_dbfs():
    s = _sine(1000.0, 0.5, amplitude=1.0)
    assert metrics.rms(s) == pytest.approx(1 / np.sqrt(2), rel=1e-3)
    assert metrics.rms_dbfs(s) == pytest.approx(-3.01, abs=0.01)
    batch = np.stack([s, 0.1 * s, np.zeros_like(s)])
    db = metrics.rms_dbfs(batch)
    assert db.shape == (3,)
    np.testing.assert_allclose(db[:2], [-3.01, -23.01], atol=0.01)
    assert db[2] == -200.0


def test_silence_fraction():
    assert metrics.silence_fraction(np.zeros(SR), SR) == 1.0
    sine_m20 = _sine(440.0, 1.0, amplitude=np.sqrt(2) * 0.1)  # -20 dBFS RMS
    assert metrics.rms_dbfs(sine_m20) == pytest.approx(-20.0, abs=0.01)
    assert metrics.silence_fraction(sine_m20, SR) == 0.0
    half = sine_m20.copy()
    half[: SR // 2] = 0.0
    assert metrics.silence_fraction(half, SR) == pytest.approx(0.5, abs=0.02)
    per_clip = metrics.silence_fraction(np.stack([np.zeros(SR), sine_m20]), SR, reduce=False)
    np.testing.assert_allclose(per_clip, [1.0, 0.0])
    # a quiet (-70 dBFS) sine is silence at the default threshold, not at -80
    quiet = sine_m20 * 10 ** (-50 / 20)
    assert metrics.silence_fraction(quiet, SR) == 1.0
    assert metrics.silence_fraction(quiet, SR, threshold_db=-80.0) == 0.0


def test_spectral_flatness():
    assert metrics.spectral_flatness(_noise(SR, seed=3)) > 0.5
    assert metrics.spectral_flatness(_sine(440.0)) < 0.05
    assert np.isnan(metrics.spectral_flatness(np.zeros(4096)))
    # silent frames are skipped, not averaged in
    gappy = np.concatenate([np.zeros(SR), _noise(SR, seed=3)])
    assert metrics.spectral_flatness(gappy) > 0.5
    per_clip = metrics.spectral_flatness(np.stack([np.zeros(SR), _noise(SR)]), reduce=False)
    assert np.isnan(per_clip[0]) and per_clip[1] > 0.5


# ------------------------------------------------------------------ distances


def test_mrstft_distance():
    x = _tones(1, n=2)
    assert metrics.mrstft_distance(x, x, SR) == pytest.approx(0.0, abs=1e-12)
    d_small = metrics.mrstft_distance(x, x + _noise(x.shape, scale=0.01), SR)
    d_large = metrics.mrstft_distance(x, x + _noise(x.shape, scale=0.1), SR)
    assert 0.0 < d_small < d_large
    per_clip = metrics.mrstft_distance(x, x + _noise(x.shape, scale=0.1), SR, reduce=False)
    assert per_clip.shape == (2,) and per_clip.mean() == pytest.approx(d_large)
    # default sizes too long for a short clip are dropped; explicit ones raise
    assert metrics.mrstft_distance(x[0, :300], x[0, :300] * 0.5, SR) > 0
    with pytest.raises(KvaeError, match="too short"):
        metrics.mrstft_distance(x[0, :300], x[0, :300], SR, fft_sizes=(1024,))


def test_log_spectral_distance():
    x = _tones(2, n=2)
    assert metrics.log_spectral_distance(x, x, SR) == pytest.approx(0.0, abs=1e-12)
    # a pure gain of g changes every bin by 20 log10(g) dB (noise: no bin below the floor)
    x = _noise((2, 8000), seed=6)
    assert metrics.log_spectral_distance(x, 0.5 * x, SR) == pytest.approx(6.0206, abs=1e-3)
    small = metrics.log_spectral_distance(x, x + _noise(x.shape, scale=0.01), SR)
    large = metrics.log_spectral_distance(x, x + _noise(x.shape, scale=0.1), SR)
    assert 0.0 < small < large


def test_log_mel_statistics_shapes_and_ragged_clips():
    clips = [_sine(440.0, 0.5), _sine(880.0, 0.3), _noise(6000)]
    mean, cov = frechet.log_mel_statistics(clips, SR, n_mels=40)
    assert mean.shape == (40,) and cov.shape == (40, 40)
    np.testing.assert_allclose(cov, cov.T)
    assert np.all(mean >= np.log(1e-5) - 1e-9)


def test_frechet_log_mel_distance():
    tones_a, tones_b = _tones(10), _tones(11)
    noise = _noise(tones_a.shape, seed=12)
    same = frechet.frechet_log_mel_distance(tones_a, tones_a, SR)
    similar = frechet.frechet_log_mel_distance(tones_a, tones_b, SR)
    different = frechet.frechet_log_mel_distance(noise, tones_b, SR)
    assert same == pytest.approx(0.0, abs=1e-4)
    assert similar > 0.0
    assert different > 3.0 * similar
    assert frechet.frechet_log_mel_distance(tones_b, noise, SR) == pytest.approx(different, rel=1e-6)


# ------------------------------------------------------------------ helpers and validation


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda bad, ok: metrics.si_sdr(bad, ok), "reference"),
        (lambda bad, ok: metrics.si_sdr(ok, bad), "estimate"),
        (lambda bad, ok: metrics.mrstft_distance(ok, bad, SR), "estimate"),
        (lambda bad, ok: metrics.log_spectral_distance(bad, ok, SR), "reference"),
        (lambda bad, ok: metrics.rms(bad), "x"),
        (lambda bad, ok: metrics.silence_fraction(bad, SR), "x"),
        (lambda bad, ok: metrics.spectral_flatness(bad), "x"),
        (lambda bad, ok: frechet.log_mel_statistics(bad, SR), "clips"),
        (lambda bad, ok: frechet.frechet_log_mel_distance(ok, bad, SR), "clips_b"),
    ],
)
@pytest.mark.parametrize("kind", ["nan", "inf", "empty"])
def test_invalid_input_raises_naming_argument(call, name, kind):
    ok = _noise(4096, seed=9)
    if kind == "empty":
        bad = np.zeros(0)
    else:
        bad = ok.copy()
        bad[100] = np.nan if kind == "nan" else np.inf
    with pytest.raises(KvaeError) as info:
        call(bad, ok)
    message = str(info.value)
    assert "\n" not in message
    assert message.split()[0] == name


def test_shape_mismatch_and_bad_rank_raise():
    with pytest.raises(KvaeError, match="reference and estimate"):
        metrics.si_sdr(np.zeros(100), np.zeros(99))
    with pytest.raises(KvaeError, match="x must be 1-D"):
        metrics.rms(np.zeros((2, 2, 2)))
    with pytest.raises(KvaeError, match="sample_rate"):
        metrics.silence_fraction(np.zeros(100), -1)


def test_spectral_flatness_default_fft_fits_short_clips():
    rng = np.random.default_rng(0)
    short = rng.normal(0, 0.1, (4, 750))  # shorter than the 2048 default
    assert metrics.spectral_flatness(short) == metrics.spectral_flatness(short, n_fft=512)
    assert metrics.spectral_flatness(short) > 0.4  # still noise
    long = rng.normal(0, 0.1, (2, 5000))
    assert metrics.spectral_flatness(long) == metrics.spectral_flatness(long, n_fft=2048)
