"""MelVAE: log-mel target, per-example floor, Griffin-Lim audio, training, saving, other backends."""

import numpy as np
import pytest
from keras import ops

from kvae.errors import KvaeError
from kvae.models import MODELS
from kvae.models.mel_vae import MelVAE

import audio
from model_checks import check_saved_models_on_backend, run_model_checks

RATE = 3000
TINY = dict(sample_rate=RATE, window_seconds=0.5, latent_dim=8, channels=[4, 8, 16], griffin_lim_iters=8, seed=1)


def make(**overrides):
    return MelVAE(**{**TINY, **overrides})


def sine(freq=440.0, amplitude=0.5, window=1500):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(window) / RATE)).astype("float32")[None]


def tones(n=8, window=1500, seed=0):
    return audio.tones(n, window, seed, RATE)


def np_(x):
    return ops.convert_to_numpy(x)


def test_config_round_trip_defaults_and_registry():
    model = make()
    assert MODELS["mel"] is MelVAE
    assert model.log_mel.n_fft == 256 and model.log_mel.hop_length == 64  # auto at 3000 Hz
    assert model.target_shape == (24, 64) and model.latent_shape == (8,)
    assert model.weights  # built in the constructor
    config = model.get_config()
    assert config["n_fft"] is None and config["channels"] == [4, 8, 16] and config["griffin_lim_iters"] == 8
    clone = MelVAE.from_config(config)
    assert clone.get_config() == config
    assert len(clone.weights) == len(model.weights)


def test_odd_sizes_are_padded_and_cropped():
    # 1 s at hop 64 has 47 frames (padded to 48); 36 mels are padded to 40 inside the networks.
    model = make(window_seconds=1.0, n_mels=36, n_fft=128, hop_length=48, channels=[4, 8])
    x = tones(2, window=model.window)
    target = model.target(x)
    assert tuple(target.shape) == (2, model.target_shape[0], 36) and model.target_shape[0] % 4 == 0
    decoded, z_mean, _ = model(x)
    assert tuple(decoded.shape) == tuple(target.shape) and tuple(z_mean.shape) == (2, 8)
    assert model.reconstruct(x).shape == (2, model.window)


def test_bad_arguments_raise():
    for kwargs in (dict(loss_weights={"stft": 0.5}), dict(n_mels=200), dict(hop_length=200), dict(channels=[]),
                   dict(log_floor=0.0), dict(n_fft=4096), dict(griffin_lim_momentum=1.0)):
        with pytest.raises(KvaeError):
            make(**kwargs)
    with pytest.raises(KvaeError, match=r"^model.loss_weights.stft: MelVAE does not support .*Griffin-Lim"):
        make(loss_weights={"stft": 1.0})


def test_log_mel_of_a_sine_peaks_in_its_band():
    model = make()
    target = np_(model.target(sine(440.0)))
    assert target.shape == (1, 24, 64) and np.isfinite(target).all()
    filterbank = model.log_mel.filterbank
    expected = int(np.argmax(filterbank[:, round(440.0 * 256 / RATE)]))
    assert abs(int(np.argmax(target[0].mean(axis=0))) - expected) <= 1


def test_floor_is_per_example_and_level_is_kept():
    model = make()
    loud, quiet = tones(2, seed=3)[:1], 1e-3 * tones(2, seed=4)[:1]
    together = np_(model.target(np.concatenate([loud, quiet])))
    alone = np_(model.target(quiet))
    np.testing.assert_allclose(together[1], alone[0], atol=1e-4)
    # absolute level survives: scaling the audio by 1e-2 shifts the log-mel by log(1e-2) (bar the tiny eps)
    np.testing.assert_allclose(np_(model.target(1e-2 * loud)), np_(model.target(loud)) + np.log(1e-2),
                               atol=1e-2)


def test_griffin_lim_recovers_a_sine():
    model = make(griffin_lim_iters=32)
    x = sine(440.0)
    magnitude = np_(model.log_mel.magnitude(x))

    def convergence(audio):
        rebuilt = np_(model.log_mel.magnitude(audio))
        return np.linalg.norm(rebuilt - magnitude) / np.linalg.norm(magnitude)

    # Griffin-Lim alone, on the true magnitude
    assert convergence(model.griffin_lim(magnitude)) < 0.2
    # the whole inversion: log-mel -> linear magnitude -> Griffin-Lim
    audio = np_(model.to_audio(model.target(x)))
    assert audio.shape == (1, model.window)
    assert convergence(audio) < 0.3
    spectrum = np.abs(np.fft.rfft(audio[0] * np.hanning(model.window)))
    assert abs(np.argmax(spectrum) * RATE / model.window - 440.0) < 12.0
    assert abs(20 * np.log10(audio.std() / x.std())) < 2.0  # about as loud as the input


def test_model_checks_and_tensorflow(tmp_path):
    """The shared checks (config, a fit step, save/load, sampling), then the saved model on tensorflow."""
    model = run_model_checks(MelVAE, TINY, tones(8), tones(4, seed=1), tmp_path, batch_size=4)
    check_saved_models_on_backend({"mel": model}, "tensorflow", tmp_path, train=False)
