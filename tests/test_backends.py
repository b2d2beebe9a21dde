"""The same models on the other Keras backends: the model tests again under tensorflow (and jax if
installed), and a model saved on torch loaded, sampled and trained on tensorflow."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from kvae.models import FCVAE, Conv1DVAE, TransformerVAE

ROOT = Path(__file__).resolve().parent.parent


def _env(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


BACKENDS = ["tensorflow"] + (["jax"] if importlib.util.find_spec("jax") else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_tests_pass_on_other_backend(backend):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "tests/test_models.py", "tests/test_losses.py"],
        cwd=ROOT, env=_env(backend), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def test_torch_saved_models_load_sample_and_train_on_tensorflow(tmp_path):
    assert keras.backend.backend() == "torch"
    models = {
        "fc": FCVAE(sample_rate=3000, window_seconds=0.25, hidden_units=32, latent_dim=8),
        "conv1d": Conv1DVAE(sample_rate=3000, window_seconds=0.25, channels=[8, 16], latent_dim=4),
        "transformer": TransformerVAE(sample_rate=3000, window_seconds=0.25, frame_size=64, d_model=16,
                                      num_heads=2, num_layers=1, ff_dim=32, latent_dim=4),
    }
    rng = np.random.default_rng(0)
    for name, model in models.items():
        model.compile(optimizer="adam")
        model.fit(rng.normal(0, 0.1, (8, model.window)).astype("float32"), epochs=1, verbose=0)
        model.save(tmp_path / f"{name}.keras")
        z = rng.normal(size=(2,) + tuple(model.latent_shape)).astype("float32")
        np.save(tmp_path / f"{name}_z.npy", z)
        np.save(tmp_path / f"{name}_out.npy", keras.ops.convert_to_numpy(model.decode(z)))
    script = textwrap.dedent(f"""
        import numpy as np, keras, kvae
        assert keras.backend.backend() == "tensorflow"
        for name in {sorted(models)!r}:
            model = kvae.load(r"{tmp_path}/" + name + ".keras", compile=False)
            z = np.load(r"{tmp_path}/" + name + "_z.npy")
            expected = np.load(r"{tmp_path}/" + name + "_out.npy")
            np.testing.assert_allclose(keras.ops.convert_to_numpy(model.decode(z)), expected, atol=1e-4)
            audio = model.sample(2, seed=1)
            assert audio.shape == (2, model.window) and np.abs(audio).max() > 0
            model.compile(optimizer="adam")
            h = model.fit(np.random.default_rng(1).normal(0, .1, (8, model.window)).astype("float32"),
                          epochs=1, verbose=0)
            assert np.isfinite(h.history["loss"][-1])
            print(name, "ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], env=_env("tensorflow"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [w for n in sorted(models) for w in (n, "ok")]
