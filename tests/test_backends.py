"""The same models on the other Keras backends: the model tests again under tensorflow (and jax if
installed), and a model saved on torch loaded, sampled and trained on tensorflow."""

import keras
import pytest

from backends import other_backends, rerun_tests
from kvae.models import FCVAE, Conv1DVAE, TransformerVAE
from model_checks import check_saved_models_on_backend


@pytest.mark.parametrize("backend", other_backends())
def test_model_tests_pass_on_other_backend(backend):
    result = rerun_tests(backend, "tests/test_models.py", "tests/test_losses.py")
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
    check_saved_models_on_backend(models, "tensorflow", tmp_path, train=True)
