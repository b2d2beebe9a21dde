"""Every waveform VAE variant: the shared model checks (config round trip, a training step and its loss
terms, save/load, sampling), then what is particular to these models."""

import keras
import numpy as np
import pytest

import audio
from kvae.errors import KvaeError
from kvae.models import FCVAE, Conv1DVAE, TransformerVAE
from model_checks import run_model_checks

RATE = 3000
TINY = {
    "fc": (FCVAE, dict(hidden_layers=2, hidden_units=32, latent_dim=8)),
    "conv1d": (Conv1DVAE, dict(channels=[8, 16], kernel_sizes=5, strides=4, latent_dim=4)),
    "conv1d-vector": (Conv1DVAE, dict(channels=[8, 16], latent="vector", latent_dim=4)),
    "transformer": (TransformerVAE, dict(frame_size=64, d_model=16, num_heads=2, num_layers=1, ff_dim=32,
                                         latent_dim=4)),
}


def tones(n=16, window=750, seed=0):
    return audio.tones(n, window, seed, RATE)


def make(name, **overrides):
    cls, kwargs = TINY[name]
    return cls(sample_rate=RATE, window_seconds=0.25, seed=1, **{**kwargs, **overrides})


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_checks(name, tmp_path):
    cls, kwargs = TINY[name]
    model = run_model_checks(cls, dict(sample_rate=RATE, window_seconds=0.25, seed=1, **kwargs),
                             tones(), tones(8, seed=1), tmp_path)
    assert model.sample_rate == RATE and model.window == 750


def test_decoder_variances_and_reductions():
    x = tones(8)
    for variance in ("fixed", "scalar", "diagonal", "optimal"):
        model = make("fc", decoder_variance=variance)
        decoded, z_mean, z_log_var = model(x)
        nll = keras.ops.convert_to_numpy(model._reconstruction_nll(x, decoded))
        assert nll.shape == (8,) and np.isfinite(nll).all(), variance
    fixed = make("fc", decoder_variance="fixed")
    decoded = fixed(x)[0]
    err = np.square(x - keras.ops.convert_to_numpy(decoded))
    summed = keras.ops.convert_to_numpy(fixed._reconstruction_nll(x, decoded))
    np.testing.assert_allclose(summed, err.sum(axis=1), rtol=1e-5)
    paper = make("fc", decoder_variance="fixed", reduction="mean")
    decoded = paper(x)[0]
    mean = keras.ops.convert_to_numpy(paper._reconstruction_nll(x, decoded))
    err = np.square(x - keras.ops.convert_to_numpy(decoded))
    np.testing.assert_allclose(mean, err.mean(axis=1), rtol=1e-5)
    assert make("fc", decoder_variance="diagonal").log_sigma.shape == (750,)


def test_kl_matches_closed_form_and_free_bits():
    model = make("fc")
    mu = np.array([[0.5, -1.0], [0.0, 2.0]], "float32")
    logvar = np.array([[0.0, -1.0], [1.0, 0.0]], "float32")
    expected = np.mean(np.sum(-0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)), axis=1))
    t = keras.ops.convert_to_tensor
    assert float(model._kl(t(mu), t(logvar))) == pytest.approx(expected, rel=1e-5)
    floored = make("fc", free_bits=2.0)
    zero = t(np.zeros((2, 2), "float32"))
    assert float(floored._kl(zero, zero)) == pytest.approx(4.0)  # two dims, each floored at 2 nats


def test_bad_arguments_are_one_line_errors():
    for kwargs, word in (
        (dict(hidden_layers=0), "hidden_layers"),
        (dict(hidden_layers=16), "hidden_layers"),
        (dict(decoder_variance="wide"), "decoder_variance"),
        (dict(reduction="median"), "reduction"),
        (dict(latent_dim=0), "latent_dim"),
    ):
        with pytest.raises(KvaeError, match=word) as info:
            make("fc", **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(KvaeError, match="num_heads"):
        make("transformer", d_model=18, num_heads=4)
    with pytest.raises(KvaeError, match="strides"):
        make("conv1d", channels=[8, 16], strides=[2, 2, 2])


def test_beta_is_a_saved_non_trainable_variable(tmp_path):
    model = make("fc", beta=0.25)
    assert all(w is not model.beta for w in model.trainable_weights)
    assert any(w is model.beta for w in model.non_trainable_weights)
    model.beta.assign(0.125)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert float(keras.ops.convert_to_numpy(loaded.beta)) == pytest.approx(0.125)


def test_stft_loss_term_is_logged():
    model = make("fc", loss_weights={"stft": 1.0})
    model.compile(optimizer="adam")
    history = model.fit(tones(), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["stft"][-1]) and history.history["stft"][-1] > 0


@pytest.mark.parametrize("name", ["fc", "conv1d"])
def test_seeded_samples_decode_numpy_noise_the_same_on_every_backend(name):
    """`sample(n, seed)` decodes `np.random.default_rng(seed)` normals (test_backends reruns this file on
    tensorflow and jax): the same seed gives the same clips on every backend, in any batching."""
    model = make(name)
    z = (np.random.default_rng(11).standard_normal((5,) + tuple(model.latent_shape)) * 0.5).astype("float32")
    expected = keras.ops.convert_to_numpy(model.to_audio(model.decode(z)))
    np.testing.assert_allclose(model.sample(5, seed=11, temperature=0.5), expected, atol=1e-6)
    batches = list(model.sample_batches(5, seed=11, temperature=0.5, batch_size=2))
    assert [len(b) for b in batches] == [2, 2, 1]
    np.testing.assert_allclose(np.concatenate(batches), expected, atol=1e-6)
    with pytest.raises(KvaeError, match="seed: must be a non-negative integer"):
        model.sample(2, seed=-1)


def test_the_rate_controller_moves_beta_toward_the_target_rate():
    from kvae.models.elbo import rate_controlled_beta

    def step(kl_nats, target):
        return float(keras.ops.convert_to_numpy(rate_controlled_beta(0.5, kl_nats, 1.0, target, 0.1)))

    assert step(1000 * np.log(2), 1000) == pytest.approx(0.5)  # on target: unchanged
    assert step(1500 * np.log(2), 1000) == pytest.approx(0.5 * np.exp(0.05), rel=1e-6)  # above: raised
    assert step(10 * np.log(2), 1000) == pytest.approx(0.5 * np.exp(-0.099), rel=1e-6)  # below: lowered
    assert step(1e6, 1000) == pytest.approx(0.5 * np.exp(0.1), rel=1e-6)  # at most exp(gain) a step


def test_a_rate_target_steers_beta_and_is_saved(tmp_path):
    model = make("fc", bitrate_target=1e9, bitrate_gain=0.05, loss_weights={"mel": 1.0})
    model.compile(optimizer="adam")
    from kvae.training.callbacks import InformationRate

    history = model.fit(tones(), batch_size=8, epochs=2, verbose=0, callbacks=[InformationRate()])
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert float(keras.ops.convert_to_numpy(model.beta)) == pytest.approx(np.exp(-0.05 * steps), rel=1e-4)
    assert history.history["beta"][-1] == pytest.approx(np.exp(-0.05 * steps), rel=1e-4)  # logged each epoch
    assert np.isfinite(history.history["mel"][-1]) and history.history["mel"][-1] > 0
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert (loaded.bitrate_target, loaded.bitrate_gain, loaded.loss_weights["mel"]) == (1e9, 0.05, 1.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"bitrate_target": -1.0}, "model.bitrate_target: must be from 0"),
    ({"bitrate_gain": 0.0}, "model.bitrate_gain: must be above 0 to 1"),
    ({"bitrate_gain": 1.5}, "model.bitrate_gain: must be above 0 to 1"),
    ({"beta": -0.5}, "model.beta: must be from 0"),
    ({"loss_weights": {"mel": -2.0}}, "model.loss_weights.mel: must be from 0"),
    ({"loss_weights": {"kl": 1.0}}, "model.loss_weights.kl: unknown loss term"),
])
def test_bad_kl_weight_rate_and_mel_settings_are_refused(kwargs, message):
    with pytest.raises(KvaeError, match=message):
        make("fc", **kwargs)


def test_the_kl_weight_is_one_object_built_from_one_table_with_one_default_each():
    import dataclasses

    from kvae.config import DEFAULTS, load_config
    from kvae.models.elbo import KL_CONFIG, KLWeight
    from kvae.training import build_model, callbacks

    defaults = KLWeight()
    for field, (section, key) in KL_CONFIG.items():  # the config's defaults are the KL weight's own
        if section == "train":
            assert DEFAULTS["train"][key] == getattr(defaults, field)
    cfg = load_config("quickstart", {"train": {"kl_schedule": "log", "kl_warmup_steps": 30, "kl_start": 1e-4},
                                     "model": {"beta": 0.25, "bitrate_target": 800.0}})
    model = build_model(cfg)
    assert model.kl_weight == KLWeight(0.25, "log", 30, 1e-4, 800.0, 0.02) == KLWeight.from_config(cfg)
    assert model.kl_weight.moves and dataclasses.replace(model.kl_weight, warmup_steps=0, bitrate_target=0).moves is False
    assert not hasattr(callbacks, "KLSchedule") and not hasattr(model, "set_kl_schedule")
    with pytest.raises(KvaeError, match=r"^model.beta: must be from 0 to 1e\+06, got -1.0$"):
        load_config("quickstart", {"model": {"beta": -1.0}})  # refused with the config, before any model is built


def test_beta_is_logged_once_whether_a_warmup_or_a_controller_moves_it():
    from kvae.models.elbo import KLWeight
    from kvae.training.callbacks import InformationRate

    model = make("fc", bitrate_target=500.0)
    model.kl_weight = KLWeight(1.0, "linear", 3, 0.0, 500.0, 0.05)
    model.compile(optimizer="adam")
    history = model.fit(tones(), batch_size=8, epochs=2, verbose=0, callbacks=[InformationRate()]).history
    assert len(history["beta"]) == 2 and "rate_bps" in history
    still = make("fc")
    still.compile(optimizer="adam")
    assert "beta" not in still.fit(tones(), batch_size=8, epochs=1, verbose=0, callbacks=[InformationRate()]).history
