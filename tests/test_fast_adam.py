"""The torch fast path for Adam (kvae.training.fast_adam): Keras's update, faster, same saved form."""

import json
import zipfile

import keras
import numpy as np
import pytest

import kvae
from backends import current_backend
from kvae.config import load_config
from kvae.training import build_model, compile_model

pytestmark = pytest.mark.skipif(current_backend() != "torch", reason="a torch-only fast path")

CONFIG = {
    "data": {"sample_rate": 3000, "window_seconds": 0.25, "batch_size": 16},
    "model": {"type": "fc", "hidden_layers": 2, "hidden_units": 64, "latent_dim": 8},
}


def _train(fused, clipnorm, steps=12, amsgrad=False, ema=0.0):
    """Weights after `steps` train steps from the same start, data and noise, with or without the fast path."""
    import torch

    cfg = load_config(CONFIG, {"train": {"fused_adam": fused, "clipnorm": clipnorm, "ema_momentum": ema}})
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    if amsgrad:
        from kvae.training.fast_adam import fuse_adam

        optimizer = keras.optimizers.Adam(1e-3, amsgrad=True)
        assert fuse_adam(optimizer) is False  # unsupported settings keep the stock optimizer
        model.compile(optimizer=optimizer)
    else:
        compile_model(model, cfg)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((steps, 16, 750)) * rng.uniform(0.01, 3.0, (steps, 1, 1))).astype("float32")
    torch.manual_seed(2)
    keras.utils.set_random_seed(2)  # the latent noise
    for batch in x:
        model.train_on_batch(batch)
    return model


@pytest.mark.parametrize("clipnorm, ema", [(1.0, 0.0), (0.05, 0.0), (0.0, 0.0), (1.0, 0.9)])
def test_fused_adam_gives_keras_updates(clipnorm, ema):
    stock, fused = _train(False, clipnorm, ema=ema), _train(True, clipnorm, ema=ema)
    assert len(fused.optimizer.variables) == len(stock.optimizer.variables)  # with EMA: the averages too
    assert fused.optimizer._parallel_update_step.__qualname__.startswith("fuse_adam")  # the fast path ran
    assert "fuse_adam" not in type(stock.optimizer)._parallel_update_step.__qualname__
    for a, b in zip(stock.trainable_weights, fused.trainable_weights):
        a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        assert np.abs(a - b).max() <= 2e-6 + 2e-5 * np.abs(a).max(), a.shape  # float32 summation order
    for a, b in zip(stock.optimizer.variables, fused.optimizer.variables):  # moments and step count too
        a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        assert np.abs(a - b).max() <= 1e-4 * max(np.abs(a).max(), 1e-3)
    moved = max(float(np.abs(keras.ops.convert_to_numpy(w)).max()) for w in fused.trainable_weights)
    assert moved > 0 and int(keras.ops.convert_to_numpy(fused.optimizer.iterations)) == 12


def test_unsupported_settings_keep_the_stock_optimizer():
    model = _train(True, 1.0, steps=2, amsgrad=True)
    assert "fuse_adam" not in model.optimizer._parallel_update_step.__qualname__


def test_fused_model_saves_as_a_plain_keras_adam(embedded, tmp_path):
    tiny = load_config({**CONFIG, "train": {"epochs": 1, "steps_per_epoch": 2, "n_samples": 0, "verbose": 0,
                                            "gallery": False}})
    model, _ = kvae.fit(tiny, run=tmp_path / "run", verbose=False)
    assert model.optimizer._parallel_update_step.__qualname__.startswith("fuse_adam")
    with zipfile.ZipFile(tmp_path / "run" / "model.keras") as archive:
        saved = json.loads(archive.read("config.json"))
    optimizer = saved["compile_config"]["optimizer"]
    stock = keras.saving.serialize_keras_object(keras.optimizers.Adam(1e-3, clipnorm=1.0))
    assert (optimizer["class_name"], optimizer["module"]) == (stock["class_name"], stock["module"]) == (
        "Adam", type(model.optimizer).__module__)
    assert optimizer["config"]["clipnorm"] == 1.0
    loaded = kvae.load(tmp_path / "run")
    assert type(loaded.optimizer) is type(model.optimizer)
    np.testing.assert_allclose(loaded.sample(2, seed=3), model.sample(2, seed=3), atol=1e-6)


@pytest.mark.slow
def test_jit_compile_trains_with_the_fast_path_falling_back():
    cfg = load_config(CONFIG, {"train": {"jit_compile": True}})
    model = compile_model(build_model(cfg), cfg)
    logs = model.fit(np.random.default_rng(0).standard_normal((32, 750)).astype("float32") * 0.1,
                     batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][-1])


def test_averaged_weights_lends_the_ema_and_gives_the_training_weights_back():
    from kvae.training.callbacks import averaged_weights

    model = _train(True, 1.0, steps=3, ema=0.5)
    raw = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
    average = [keras.ops.convert_to_numpy(v).copy() for v in model.optimizer._model_variables_moving_average]
    with averaged_weights(model):
        inside = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
    for r, a, i in zip(raw, average, inside):
        np.testing.assert_array_equal(i, a)
    assert any(np.abs(r - a).max() > 1e-6 for r, a in zip(raw, average))  # the average is not the weights
    for r, v in zip(raw, model.trainable_variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), r)
