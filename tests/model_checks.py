"""The checks every kvae model must pass, in one place (after keras-hub's `run_layer_test` and
`run_model_saving_test`): `run_model_checks(cls, init_kwargs, x, val, tmp_path)` runs them all on a
fresh model; the parts are usable alone; `check_saved_models_on_backend` loads saved models on
another Keras backend and compares what they compute.
"""

import dataclasses
import json
import sys

import keras
import numpy as np
import pytest

from audio import tones
from backends import run_on_backend
from kvae.errors import KvaeError


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def run_model_checks(cls, init_kwargs, x, val, tmp_path, batch_size=8):
    """Build `cls(**init_kwargs)` and check its config round trip, one fit step, `.keras` saving and sampling.

    Args:
        x, val: float32 windows `(n, window)` to train on and to validate with.

    Returns:
        The trained model (saved as `tmp_path / "model.keras"`).
    """
    model = cls(**init_kwargs)
    check_config_round_trip(model)
    check_fit_step(model, x, val, batch_size)
    check_saving(model, tmp_path / "model.keras", val[:3])
    check_sampling(model, val[:3])
    return model


def check_config_round_trip(model):
    """`from_config(get_config())` gives the same class, config and weight shapes; the config is JSON."""
    config = model.get_config()
    json.dumps(config)
    assert model.weights, "a kvae model builds its weights in the constructor"
    clone = type(model).from_config(config)
    assert type(clone) is type(model)
    assert clone.get_config() == config
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in model.weights]


def check_fit_step(model, x, val, batch_size=8):
    """One compiled epoch: finite ELBO terms, and val_loss = val_reconstruction + beta * val_kl (+ STFT term).

    Returns:
        The last value of each logged metric.
    """
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, batch_size=batch_size, epochs=1, verbose=0, validation_data=(val,))
    logs = {k: v[-1] for k, v in history.history.items()}
    for key in ("loss", "reconstruction", "kl", "val_loss", "val_reconstruction", "val_kl"):
        assert np.isfinite(logs[key]), key
    beta = float(_np(model.beta))
    expected = logs["val_reconstruction"] + beta * logs["val_kl"] + model.loss_weights["stft"] * logs.get("val_stft", 0.0)
    # equal up to the running-mean bookkeeping
    assert logs["val_loss"] == pytest.approx(expected, rel=1e-4, abs=1e-3)
    return logs


def check_saving(model, path, x):
    """Save to `path` (.keras), load it back, and `assert_same_model`. Returns the loaded model."""
    model.save(path)
    loaded = keras.models.load_model(path)
    assert_same_model(loaded, model, x)
    return loaded


def assert_same_model(loaded, model, x, n=3, seed=7):
    """Same class and config, identical weights, identical `sample(n, seed)` and `reconstruct(x)`."""
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    assert (loaded.sample_rate, loaded.window) == (model.sample_rate, model.window)
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(_np(b), _np(a), err_msg=a.path)
    np.testing.assert_array_equal(loaded.sample(n, seed=seed), model.sample(n, seed=seed))
    np.testing.assert_array_equal(loaded.reconstruct(x), model.reconstruct(x))


def check_sampling(model, x):
    """`sample`: float32 `(n, window)`, audible, the same for a seed and different for another;
    `reconstruct`: float32 `(n, window)`, and a one-line error for windows of the wrong length."""
    a, b, c = model.sample(2, seed=3), model.sample(2, seed=3), model.sample(2, seed=4)
    assert a.shape == (2, model.window) and a.dtype == np.float32
    assert np.isfinite(a).all() and np.abs(a).max() > 1e-3
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    rec = model.reconstruct(x)
    assert rec.shape == (len(x), model.window) and rec.dtype == np.float32 and np.isfinite(rec).all()
    with pytest.raises(KvaeError, match="reconstruct") as info:
        model.reconstruct(np.zeros((2, 10), "float32"))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- other backends


def check_saved_models_on_backend(models, backend, tmp_path, train=True):
    """Save each model here, load it on `backend` in one child process, and compare.

    There, as here: `decode(z)` within 1e-4; `to_audio(decode(z))`, `reconstruct(x)` and
    `sample(2, seed=1)` within 1e-3 of their peak (+1e-5); with `train`, one
    epoch of fitting gives a finite loss.

    Args:
        models: dict of name to model.
    """
    rng = np.random.default_rng(0)
    paths, zs, xs, expected = [], [], [], []
    for name, model in models.items():
        paths.append(tmp_path / f"{name}.keras")
        model.save(paths[-1])
        zs.append(rng.normal(size=(2,) + tuple(model.latent_shape)).astype("float32"))
        xs.append(tones(2, model.window, seed=5, rate=model.sample_rate))
        decoded = model.decode(zs[-1])
        expected.append({"decoded": _np(decoded), "audio": _np(model.to_audio(decoded)),
                         "reconstruct": model.reconstruct(xs[-1])})
    results = run_on_backend(backend, "model_checks:saved_model_outputs", paths, zs, xs, train=train)
    assert len(results) == len(models)
    for (name, model), want, got in zip(models.items(), expected, results):
        assert got["class"] == type(model).__name__, name
        np.testing.assert_allclose(got["decoded"], want["decoded"], atol=1e-4, err_msg=name)
        for key in ("audio", "reconstruct"):
            error = np.abs(got[key] - want[key]).max()
            assert error < 1e-3 * np.abs(want[key]).max() + 1e-5, (name, key, error)
        assert got["sample"].shape == (2, model.window) and np.abs(got["sample"]).max() > 0, name
        # The same seed draws the same latents on every backend (NumPy's generator), so the same clips.
        want_sample = model.sample(2, seed=1)
        error = np.abs(got["sample"] - want_sample).max()
        assert error < 1e-3 * np.abs(want_sample).max() + 1e-5, (name, "sample", error)
        if train:
            assert np.isfinite(got["loss"]), name


def saved_model_outputs(paths, zs, xs, train=False):
    """Runs on the other backend: load each `.keras` file (without its optimizer) and return what it computes."""
    import kvae

    results = []
    for path, z, x in zip(paths, zs, xs):
        model = kvae.load(path, compile=False)
        decoded = model.decode(z)
        result = {"class": type(model).__name__, "decoded": _np(decoded), "audio": _np(model.to_audio(decoded)),
                  "reconstruct": model.reconstruct(x), "sample": model.sample(2, seed=1)}
        if train:
            model.compile(optimizer="adam")
            noise = np.random.default_rng(1).normal(0, 0.1, (8, model.window)).astype("float32")
            result["loss"] = float(model.fit(noise, epochs=1, verbose=0).history["loss"][-1])
        results.append(result)
    return results


def seeded_initial_weights(model_config, seeds):
    """Runs in a fresh process: the initial weights `kvae.training` builds for a model config under
    each seed, and whether building them imported tensorflow."""
    from kvae.config import load_config
    from kvae.training import build_model, seed_everything

    config = load_config({"model": model_config})
    weights = []
    for seed in seeds:
        seed_everything(seed)
        weights.append([np.asarray(w) for w in build_model(config).get_weights()])
    return {"weights": weights, "tensorflow_imported": "tensorflow" in sys.modules}


def adversarial_fit_refusal(path, model_kwargs):
    """Runs on a backend without the adversarial stage: a saved adversarial model loads and samples there,
    and `fit` / `train_on_batch` of it, and of a freshly built one, refuse with a `KvaeError`.

    Returns:
        `{"sample_shape": ..., "errors": [message, ...]}`.
    """
    import kvae
    from kvae.models import RaveVAE

    loaded = kvae.load(path, compile=False)
    result = {"sample_shape": list(loaded.sample(2, seed=0).shape), "errors": []}
    x = np.zeros((4, loaded.window), "float32")
    for model in (loaded, RaveVAE(**model_kwargs)):
        model.compile(optimizer="adam")
        for attempt in (lambda: model.fit(x, epochs=1, verbose=0), lambda: model.train_on_batch(x)):
            try:
                attempt()
            except KvaeError as exc:
                result["errors"].append(str(exc))
            else:
                result["errors"].append(None)
    return result


def kl_warmup_beta(epochs, steps=10):
    """Runs on any backend: the KL weight a linear warm-up over `steps` steps (0 to beta 1) has reached after
    `epochs` one-batch epochs of `fit` (on jax read from the traced optimizer state, `kvae._keras_private`)."""
    from kvae.models import FCVAE

    model = FCVAE(sample_rate=3000, window_seconds=0.1, hidden_layers=1, hidden_units=8, latent_dim=2, seed=0)
    model.compile(optimizer="adam")
    model.kl_weight = dataclasses.replace(model.kl_weight, schedule="linear", warmup_steps=steps, start=0.0)
    x = np.random.default_rng(0).normal(0, 0.1, (4, model.window)).astype("float32")
    model.fit(x, batch_size=4, epochs=epochs, verbose=0)
    return {"beta": float(_np(model.beta)), "iterations": int(_np(model.optimizer.iterations))}


def rate_controlled_beta(epochs, warmup=0, target=1e9, gain=0.1):
    """Runs on any backend: the KL weight after `epochs` one-batch epochs of `fit` with a rate target (far above
    the model's rate by default, so each controlled step lowers beta by exp(-gain)) after a linear warm-up."""
    from kvae.models import FCVAE

    model = FCVAE(sample_rate=3000, window_seconds=0.1, hidden_layers=1, hidden_units=8, latent_dim=2, seed=0,
                  bitrate_target=target, bitrate_gain=gain)
    model.compile(optimizer="adam")
    if warmup:
        model.kl_weight = dataclasses.replace(model.kl_weight, schedule="linear", warmup_steps=warmup, start=0.0)
    x = np.random.default_rng(0).normal(0, 0.1, (4, model.window)).astype("float32")
    history = model.fit(x, batch_size=4, epochs=epochs, verbose=0)
    return {"beta": float(_np(model.beta)), "kl": [float(v) for v in history.history["kl"]]}


class StopAfter(keras.callbacks.Callback):
    """Interrupts training (as Ctrl-C does) at the end of epoch `epoch`: the resume tests' kill."""

    def __init__(self, epoch=0):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def check_prior_fit_resumes_and_generates(run, config, capsys, fit_says, generate_says, rate):
    """`kvae prior fit` cut short after its first epoch resumes from the backup with the saved config, then
    `kvae generate` streams a WAV that `kvae.generate` reproduces for its seed (and not for another).

    `fit_says` / `generate_says`: text the resumed fit's and the generation's printouts must hold.
    Returns the prior folder.
    """
    import kvae
    from kvae import cli
    from kvae.data import read_audio

    with pytest.raises(KeyboardInterrupt):
        kvae.fit_prior(run, config=config, verbose=False, callbacks=[StopAfter(0)])
    folder = run / "prior"
    assert (folder / "backup").exists() and not (folder / "prior.keras").exists()
    _, history = kvae.fit_prior(run, verbose=True)  # the saved config is used
    assert fit_says in capsys.readouterr().out
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"]).all()  # only epoch 1 ran again
    assert [r.split(",")[0] for r in (folder / "history.csv").read_text().splitlines()[1:]] == ["0", "1"]
    assert (folder / "prior.keras").is_file() and not (folder / "backup").exists()

    out = run.parent / "piece.wav"
    assert cli.main(["generate", str(run), "--seconds", "2.5", "--seed", "3", "--out", str(out)]) == 0
    assert generate_says in capsys.readouterr().out
    audio = read_audio(out)[0]
    assert audio.shape == (int(2.5 * rate),) and np.abs(audio).max() > 0
    np.testing.assert_array_equal(kvae.generate(run, seconds=2.5, seed=3)[0], np.clip(audio, -1, 1))
    assert not np.allclose(kvae.generate(run, seconds=2.5, seed=4)[0], audio)
    return folder
