"""An ex-post density prior on a VAE's latents: a Gaussian mixture (numpy; fitting uses scikit-learn).

Ghosh et al. (2020, "From variational to deterministic autoencoders") fit a
Gaussian mixture to the posterior means of the training windows and sample
the decoder from it instead of from N(0, I): the aggregate posterior of a
trained VAE is rarely the unit Gaussian, so prior draws land where the
decoder never saw a latent. `LatentGMM` is that mixture. It lives in the
model's config (`VAE(latent_gmm=...)`, `VAE.set_latent_gmm`), so a saved
model samples the same way after loading, and it samples with numpy from a
seed, so the same seed gives the same latents on every backend.

Latents of any shape are flattened; the covariances are full up to
`FULL_COVARIANCE_MAX_DIM` dimensions and diagonal above (a latent sequence
of 47 frames x 16 channels would need 752 x 752 matrices per component).
"""

import numpy as np

from kvae.errors import KvaeError

FULL_COVARIANCE_MAX_DIM = 64
COVARIANCE_TYPES = ("full", "diag")


class LatentGMM:
    """A Gaussian mixture over flattened latents.

    Args:
        weights: array `(k,)`. Mixture weights (normalised here).
        means: array `(k, d)`. Component means.
        covariances: array `(k, d, d)` (full) or `(k, d)` (diagonal variances).
        covariance_type: str. `"full"` or `"diag"`.
    """

    def __init__(self, weights, means, covariances, covariance_type="full"):
        if covariance_type not in COVARIANCE_TYPES:
            raise KvaeError(f"latent_gmm: covariance_type must be full or diag, got {covariance_type!r}")
        self.weights = np.asarray(weights, np.float64).reshape(-1)
        self.means = np.asarray(means, np.float64)
        self.covariances = np.asarray(covariances, np.float64)
        self.covariance_type = covariance_type
        k = len(self.weights)
        d = self.means.shape[-1] if self.means.ndim == 2 else -1
        want = (k, d, d) if covariance_type == "full" else (k, d)
        if k == 0 or self.means.shape != (k, d) or self.covariances.shape != want:
            raise KvaeError(f"latent_gmm: inconsistent shapes: weights {self.weights.shape}, means "
                            f"{self.means.shape}, covariances {self.covariances.shape}")
        if not (np.all(np.isfinite(self.means)) and np.all(np.isfinite(self.covariances))
                and np.all(self.weights >= 0) and self.weights.sum() > 0):
            raise KvaeError("latent_gmm: weights, means and covariances must be finite, weights non-negative")
        self.weights = self.weights / self.weights.sum()
        if covariance_type == "full":
            jitter = 1e-9 * np.eye(d)
            try:
                self._scales = np.linalg.cholesky(self.covariances + jitter)
            except np.linalg.LinAlgError:
                raise KvaeError("latent_gmm: a covariance matrix is not positive definite") from None
        else:
            self._scales = np.sqrt(np.maximum(self.covariances, 0.0))

    @property
    def dim(self):
        """Dimension of the flattened latent."""
        return self.means.shape[1]

    @property
    def components(self):
        """Number of mixture components."""
        return len(self.weights)

    def sample(self, n, rng, temperature=1.0):
        """Draw `n` flattened latents: float32 `(n, d)`.

        Args:
            n: int. Number of draws.
            rng: numpy Generator (or a seed for `np.random.default_rng`).
            temperature: float. Scale of each component's spread around its
                mean (the component choice is not tempered). Defaults to 1.0.
        """
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        which = rng.choice(self.components, size=int(n), p=self.weights)
        eps = rng.standard_normal((int(n), self.dim)) * float(temperature)
        if self.covariance_type == "full":
            spread = np.einsum("nij,nj->ni", self._scales[which], eps)
        else:
            spread = self._scales[which] * eps
        return (self.means[which] + spread).astype(np.float32)

    def log_density(self, z):
        """Log density of flattened latents `(n, d)` under the mixture: `(n,)` (for tests and diagnostics)."""
        z = np.asarray(z, np.float64)
        logs = []
        for k in range(self.components):
            diff = z - self.means[k]
            if self.covariance_type == "full":
                solved = np.linalg.solve(self._scales[k], diff.T).T
                log_det = 2.0 * np.log(np.diag(self._scales[k])).sum()
            else:
                scale = np.maximum(self._scales[k], 1e-12)
                solved = diff / scale
                log_det = 2.0 * np.log(scale).sum()
            logs.append(np.log(self.weights[k] + 1e-300) - 0.5 * (np.sum(solved ** 2, axis=1) + log_det
                                                                 + self.dim * np.log(2 * np.pi)))
        logs = np.stack(logs, axis=1)
        top = logs.max(axis=1, keepdims=True)
        return (top + np.log(np.exp(logs - top).sum(axis=1, keepdims=True)))[:, 0]

    def get_config(self):
        """The mixture as JSON-ready lists (what `VAE.get_config` stores)."""
        return {"covariance_type": self.covariance_type, "weights": self.weights.tolist(),
                "means": self.means.tolist(), "covariances": self.covariances.tolist()}

    @classmethod
    def from_config(cls, config):
        """Rebuild a mixture from `get_config()` (a `LatentGMM` passes through)."""
        if isinstance(config, LatentGMM):
            return config
        if not isinstance(config, dict):
            raise KvaeError(f"latent_gmm: expected a dict of weights, means and covariances, got {type(config).__name__}")
        try:
            return cls(config["weights"], config["means"], config["covariances"],
                       config.get("covariance_type", "full"))
        except KeyError as exc:
            raise KvaeError(f"latent_gmm: missing key {exc.args[0]!r}") from None

    @classmethod
    def fit(cls, latents, components=8, covariance_type="auto", seed=0, reg_covar=1e-4):
        """Fit a mixture to latents (scikit-learn's `GaussianMixture`, k-means initialisation).

        Args:
            latents: array `(n, ...)`. Posterior means, one per training window; flattened.
            components: int. Mixture components; fewer are used when there are
                fewer than 4 latents per component. Defaults to 8.
            covariance_type: str. `"full"`, `"diag"` or `"auto"` (full up to
                64 dimensions, diagonal above). Defaults to "auto".
            seed: int. Seed of the initialisation.
            reg_covar: float. Added to the covariances' diagonals. Defaults to 1e-4.

        Returns:
            A `LatentGMM`.
        """
        from sklearn.mixture import GaussianMixture

        z = np.asarray(latents, np.float64).reshape(len(latents), -1)
        if len(z) < 2 or not np.all(np.isfinite(z)):
            raise KvaeError(f"latent_gmm: need at least 2 finite latents to fit a mixture, got {len(z)}")
        if covariance_type == "auto":
            covariance_type = "full" if z.shape[1] <= FULL_COVARIANCE_MAX_DIM else "diag"
        if covariance_type not in COVARIANCE_TYPES:
            raise KvaeError(f"gmm.covariance: must be auto, full or diag, got {covariance_type!r}")
        k = max(1, min(int(components), len(z) // 4))
        mixture = GaussianMixture(k, covariance_type=covariance_type, reg_covar=reg_covar, random_state=seed,
                                  max_iter=200, n_init=1)
        mixture.fit(z)
        return cls(mixture.weights_, mixture.means_, mixture.covariances_, covariance_type)
