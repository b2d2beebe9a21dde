"""Phase-gradient heap integration: the phase a magnitude implies gives that magnitude back, better than
Griffin-Lim's iterations, on a chirp and tones; edge cases."""

import numpy as np
import pytest
from keras import ops

from kvae.dsp import ops as dsp
from kvae.dsp import pghi, pghi_batch

RATE, N_FFT, HOP = 3000, 256, 32


def magnitude_and_phase(x):
    real, imag = (ops.convert_to_numpy(t) for t in dsp.stft(ops.convert_to_tensor(x.astype("float32")), N_FFT, HOP))
    return np.hypot(real, imag), np.arctan2(imag, real)


def convergence(signal, mag):
    """Spectral convergence: how far the STFT magnitude of `signal` is from `mag`, relative."""
    return np.linalg.norm(magnitude_and_phase(signal)[0] - mag) / np.linalg.norm(mag)


def inverse(mag, phase):
    real = ops.convert_to_tensor((mag * np.cos(phase)).astype("float32"))
    imag = ops.convert_to_tensor((mag * np.sin(phase)).astype("float32"))
    return ops.convert_to_numpy(dsp.istft(real, imag, N_FFT, HOP, RATE))


def chirp_and_tone():
    t = np.arange(RATE) / RATE
    return (np.sin(2 * np.pi * (200 * t + 300 * t ** 2)) + 0.5 * np.sin(2 * np.pi * 440 * t) * (t > 0.5))[None]


def test_pghi_phase_gives_the_magnitude_back_better_than_griffin_lim():
    mag, _ = magnitude_and_phase(chirp_and_tone())
    pghi_error = convergence(inverse(mag, pghi_batch(mag, N_FFT, HOP)), mag)
    random_error = convergence(inverse(mag, np.random.default_rng(0).uniform(-np.pi, np.pi, mag.shape)), mag)
    gl_error = convergence(ops.convert_to_numpy(dsp.griffin_lim(ops.convert_to_tensor(mag.astype("float32")), N_FFT,
                                                                 HOP, RATE, 32, 0.99)), mag)
    # measured: PGHI 0.065, 32 fast Griffin-Lim iterations 0.14, random phase 0.73
    assert pghi_error < 0.1 and pghi_error < 0.75 * gl_error and random_error > 0.5, (pghi_error, gl_error)


def test_a_wrong_sign_convention_would_fail():
    # the two phase-gradient terms flipped give a much worse phase: the test above pins the convention
    mag, _ = magnitude_and_phase(chirp_and_tone())
    good = convergence(inverse(mag, pghi(mag[0], N_FFT, HOP)), mag)
    flipped = convergence(inverse(mag, -pghi(mag[0], N_FFT, HOP)), mag)
    assert flipped > 2 * good


def test_silence_and_empty_batches_give_zero_phase():
    assert not pghi(np.zeros((10, N_FFT // 2 + 1)), N_FFT, HOP).any()
    assert pghi_batch(np.zeros((0, 10, N_FFT // 2 + 1)), N_FFT, HOP).shape == (0, 10, N_FFT // 2 + 1)


def test_a_magnitude_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="129"):
        pghi(np.ones((10, 64)), N_FFT, HOP)
