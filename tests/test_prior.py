"""Latent priors: the ex-post Gaussian mixture stored with a VAE, the autoregressive `LatentPrior`
(one training step, save and load), and `kvae prior fit` (run folder, resume, CLI)."""

import keras
import numpy as np
import pytest

from kvae.errors import KvaeError
from kvae.models import FCVAE, Conv1DVAE
from kvae.models.gmm import LatentGMM

RATE = 3000


def two_clusters(n=200, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4)) * [1.0, 0.3, 0.5, 1.0]
    z[: n // 2, 1] += 3.0
    return z


def test_gmm_fits_samples_and_matches_sklearn_density():
    from sklearn.mixture import GaussianMixture

    z = two_clusters()
    gmm = LatentGMM.fit(z, components=2, seed=0)
    assert gmm.components == 2 and gmm.covariance_type == "full"
    draws = gmm.sample(4000, np.random.default_rng(1))
    assert draws.dtype == np.float32 and draws.shape == (4000, 4)
    # bimodal in dimension 1, as the data: both modes are drawn, about half each
    assert 0.4 < np.mean(draws[:, 1] > 1.5) < 0.6
    np.testing.assert_array_equal(gmm.sample(5, 7), gmm.sample(5, 7))
    reference = GaussianMixture(2, covariance_type="full", reg_covar=1e-4, random_state=0).fit(z)
    np.testing.assert_allclose(gmm.log_density(z[:10]), reference.score_samples(z[:10]), rtol=1e-5)
    cold = gmm.sample(4000, np.random.default_rng(1), temperature=0.0)
    assert len(np.unique(cold[:, 1].round(5))) == 2  # temperature 0: the component means
    diag = LatentGMM.fit(np.random.default_rng(0).normal(size=(100, 80)), components=3)
    assert diag.covariance_type == "diag" and diag.covariances.shape == (3, 80)


def test_gmm_is_stored_with_the_model_and_survives_saving(tmp_path):
    model = FCVAE(sample_rate=RATE, window_seconds=0.25, hidden_layers=1, hidden_units=16, latent_dim=4)
    with pytest.raises(KvaeError, match="no latent mixture"):
        model.sample(2, seed=0, prior="gmm")
    with pytest.raises(KvaeError, match="prior"):
        model.sample(2, seed=0, prior="flow")
    with pytest.raises(KvaeError, match="dimensions"):
        model.set_latent_gmm(LatentGMM.fit(np.random.default_rng(0).normal(size=(40, 3)), 2))
    model.set_latent_gmm(LatentGMM.fit(two_clusters(), 2))
    a = model.sample(3, seed=5, prior="gmm")
    assert a.shape == (3, model.window) and a.dtype == np.float32
    np.testing.assert_array_equal(a, model.sample(3, seed=5, prior="gmm"))
    assert not np.allclose(a, model.sample(3, seed=6, prior="gmm"))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.sample(3, seed=5, prior="gmm"), a)


def test_gmm_on_a_latent_sequence_is_diagonal_and_shaped_like_the_latent():
    model = Conv1DVAE(sample_rate=RATE, window_seconds=0.25, channels=[8, 16], latent_dim=4)
    z = np.random.default_rng(0).normal(size=(30,) + tuple(model.latent_shape))
    model.set_latent_gmm(LatentGMM.fit(z, 2))
    assert model.latent_gmm.covariance_type == "diag"
    assert model.sample_latents_gmm(2, np.random.default_rng(0)).shape == (2,) + tuple(model.latent_shape)
    assert model.sample(2, seed=0, prior="gmm").shape == (2, model.window)
