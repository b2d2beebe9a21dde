"""The VAE base class: encoder and decoder wiring, the negative ELBO, sampling and saving for every variant."""

import contextlib

import keras
import numpy as np
from keras import ops

from kvae import bounds
from kvae._deprecated import renamed
from kvae._keras_private import OptimizerStepInLoss
from kvae.errors import KvaeError
from kvae.models import torch_step
from kvae.models.adversarial import AdversarialStage, check_backend, from_legacy
from kvae.models import elbo
from kvae.models.elbo import (DECODER_VARIANCES, REDUCTIONS, RENAMED_WEIGHTS, KLWeight, SpectralTerms, gaussian_nll,
                              kl_divergence)
from kvae.models.noise import TorchNoise
from kvae.models.sampling import Sampling


_RENAMED = {"rate_target": "bitrate_target", "rate_gain": "bitrate_gain"}  # kvae 0.1's names of VAE arguments


@contextlib.contextmanager
def dtype_policy(policy):
    """Make layers under Keras's dtype `policy` (a name or a serialized policy); the global policy is put back."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(policy))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@keras.saving.register_keras_serializable(package="kvae")
class VAE(Sampling, OptimizerStepInLoss, keras.Model):
    """Base class of kvae's variational autoencoders on raw audio.

    A variant builds `self.encoder` (windows to `(z_mean, z_log_var)`) and
    `self.decoder` (latents to the reconstruction target), then calls
    `self._finish_build()`. The rest is here: the reparameterisation, the
    negative ELBO in `compute_loss` (which the stock step of every backend and
    `evaluate` call; on torch the step is `kvae.models.torch_step`'s), its
    metrics, `sample`, `reconstruct` and `.keras` saving.

    The loss is the negative ELBO of `kvae.models.elbo`: the Gaussian negative
    log-likelihood of the target, summed over an example's samples and
    averaged over the batch, plus the KL weight times the KL (and the STFT
    loss). The KL weight is the model's `kl_weight` (`kvae.models.elbo.KLWeight`:
    `beta`, `bitrate_target` and `bitrate_gain` below, plus a training's
    warm-up, which `kvae.fit` sets from the config's `train.kl_*`).

    Args:
        sample_rate: int. Sample rate of the audio in Hz. Defaults to 3000.
        window_seconds: float. Length of one input window. Defaults to 1.0.
        latent_dim: int. Size of the latent vector (or channels of a latent
            sequence). Defaults to 64.
        decoder_variance: str. `"fixed"`, `"scalar"` (a learned sigma),
            `"diagonal"` or `"optimal"` (sigma-VAE). Defaults to `"scalar"`.
        reduction: str. `"sum"` over samples or `"mean"` (the paper's MSE,
            kept to reproduce its silent decoder). Defaults to `"sum"`.
        loss_weights: dict or None. The weights of the loss terms, keyed by
            the names they are logged under (`kvae.models.elbo.LOSS_WEIGHTS`):
            `reconstruction` (the likelihood, 1.0), `stft` (a multi-resolution
            STFT loss on the audio, 0.0: off) and `mel` (DAC's multi-scale mel
            loss, `kvae.losses.MultiScaleMelLoss`, 0.0: off); the terms not
            given keep their defaults. kvae 0.1's `reconstruction_weight`,
            `stft_weight` and `mel_weight` are read into it.
        beta: float. Weight of the KL term, at least 0 (the warm-up's
            target). The weight of each training step is kept in the
            non-trainable variable `beta`, saved and resumed. Defaults to 1.0.
        free_bits: float. Per-latent-dimension KL floor in nats (batch
            averaged). Defaults to 0.0 (off).
        stft_fft_sizes: list of int or None. The STFT loss's FFT sizes; None
            scales RAVE's sizes to the sample rate.
        bitrate_target: float. Bits per second a controller steers the KL
            weight to while training, after any warm-up
            (`kvae.models.elbo.rate_controlled_beta`). Defaults to 0.0 (off).
        bitrate_gain: float. Its largest log-step per training step, in
            (0, 1]. Defaults to 0.02.
        init_log_sigma: float. Initial log sigma of a learned variance.
            Defaults to -2.0.
        seed: int or None. Seed of the training-time latent noise.
        latent_gmm: dict, `kvae.models.gmm.LatentGMM` or None. An ex-post
            Gaussian mixture over the posterior means (`set_latent_gmm`),
            kept in the config so `sample(prior="gmm")` survives saving.
        adversarial: dict, `AdversarialStage` or None. RAVE's second stage
            (the config's `model.adversarial` table; torch only); None trains
            the plain VAE. kvae 0.1's flat keys (`adversarial_after`, ...) are
            read into it.
    """

    refused_losses = {}
    """Loss terms a variant cannot train with, and why: `{name: reason}` (a weight > 0 is refused)."""

    def __init__(self, sample_rate=bounds.DEFAULT_RATE, window_seconds=1.0, latent_dim=64, decoder_variance="scalar",
                 reduction="sum", loss_weights=None, beta=1.0, free_bits=0.0, stft_fft_sizes=None,
                 init_log_sigma=-2.0, seed=None, latent_gmm=None, adversarial=None, bitrate_target=0.0,
                 bitrate_gain=0.02, **kwargs):
        legacy = from_legacy(kwargs)  # a model saved by kvae 0.1, or built with its keywords
        old = [key for key in (*_RENAMED, *RENAMED_WEIGHTS) if key in kwargs]  # kvae 0.1's names, as it saved them
        if old:
            renamed(", ".join(old), ", ".join(_RENAMED.get(key) or f"loss_weights.{RENAMED_WEIGHTS[key]}"
                                              for key in old), "model")
            bitrate_target = kwargs.pop("rate_target", bitrate_target)
            bitrate_gain = kwargs.pop("rate_gain", bitrate_gain)
            loss_weights = {**{RENAMED_WEIGHTS[key]: kwargs.pop(key) for key in old if key in RENAMED_WEIGHTS},
                            **(loss_weights or {})}
        super().__init__(**kwargs)
        if decoder_variance not in DECODER_VARIANCES:
            raise KvaeError(f"decoder_variance: must be one of {', '.join(DECODER_VARIANCES)}, "
                            f"got '{decoder_variance}'")
        if reduction not in REDUCTIONS:
            raise KvaeError(f"reduction: must be one of {', '.join(REDUCTIONS)}, got '{reduction}'")
        if int(latent_dim) <= 0:
            raise KvaeError(f"latent_dim: must be positive, got {latent_dim}")
        self.sample_rate = bounds.check("data.sample_rate", sample_rate, "sample_rate")  # the config's bounds
        self.window_seconds = float(bounds.check("data.window_seconds", window_seconds, "window_seconds"))
        self.window = bounds.check_window(self.sample_rate, self.window_seconds, "window_seconds")
        self.latent_dim = int(latent_dim)
        self.decoder_variance = decoder_variance
        self.reduction = reduction
        self.loss_weights = elbo.loss_weights(loss_weights)
        for name, why in self.refused_losses.items():
            if self.loss_weights[name] > 0:
                raise KvaeError(f"model.loss_weights.{name}: {type(self).__name__} {why}; set it to 0")
        self.kl_weight = KLWeight(beta=beta, bitrate_target=bitrate_target, bitrate_gain=bitrate_gain)
        self.free_bits = float(free_bits)
        self.stft_fft_sizes = list(stft_fft_sizes) if stft_fft_sizes else None
        self.init_log_sigma = float(init_log_sigma)
        self.seed = seed
        self.adversarial = AdversarialStage.from_config(legacy if adversarial is None else adversarial)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.latent_gmm = None
        self._initial_gmm = latent_gmm  # attached in _finish_build, once the variant knows its latent shape
        # Host-side state, plain attributes, not saved: the torch noise and step state.
        self.torch_noise = TorchNoise(seed)
        torch_step.new_fit(self)
        self.beta = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.kl_weight.beta),
                                    trainable=False, name="beta")  # the KL weight of the last training step
        self.loss_tracker_reconstruction = keras.metrics.Mean(name="reconstruction")
        self.loss_tracker_kl = keras.metrics.Mean(name="kl")
        self.spectral = SpectralTerms(self, self.loss_weights, self.stft_fft_sizes)

    # -- to be provided by variants -------------------------------------------------

    def target(self, x):
        """The representation the likelihood is on: the waveform itself here."""
        return x

    def to_audio(self, decoded):
        """Turn a decoded target back into audio: the identity for waveform models."""
        return decoded

    @property
    def latent_shape(self):
        """Shape of one latent, without the batch axis."""
        return (self.latent_dim,)

    def _finish_build(self, target_shape):
        """Create the decoder-variance weights (and the adversarial stage's) and mark the model built."""
        self.target_shape = tuple(int(d) for d in target_shape)
        self.log_sigma = None
        if self.decoder_variance in ("scalar", "diagonal"):
            shape = () if self.decoder_variance == "scalar" else self.target_shape
            self.log_sigma = self.add_weight(
                shape=shape, initializer=keras.initializers.Constant(self.init_log_sigma), name="log_sigma")
        if self.adversarial is not None:
            self.adversarial.build(self)
        if self._initial_gmm is not None:
            self.set_latent_gmm(self._initial_gmm)
        self.built = True

    def build(self, input_shape=None):  # every weight is created in the constructor
        self.built = True

    # -- training ----------------------------------------------------------------------

    def train_step(self, *args, **kwargs):  # jax's takes (state, data)
        if keras.backend.backend() == "torch":
            return torch_step.train_step(self, *args, **kwargs)
        if self.adversarial is not None:
            check_backend()
        return super().train_step(*args, **kwargs)

    def test_step(self, *args, **kwargs):  # validation is the VAE's loss alone
        return AdversarialStage.validation_logs(super().test_step(*args, **kwargs))

    def fit(self, *args, **kwargs):
        self._start_training()
        return super().fit(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        self._start_training()
        return super().train_on_batch(*args, **kwargs)

    def _start_training(self):  # fit, train_on_batch: the torch step's host state afresh; a backend check
        torch_step.new_fit(self)
        if self.adversarial is not None:
            check_backend()

    # -- the model --------------------------------------------------------------------

    def encode(self, x):
        """Return `(z_mean, z_log_var)` for a batch of windows."""
        z_mean, z_log_var = self.encoder(x)
        return z_mean, ops.clip(z_log_var, -20.0, 10.0)

    def decode(self, z):
        """Return the decoded target (audio for waveform models) for latents `z`."""
        return self.decoder(z)

    def posterior_sample(self, z_mean, z_log_var):
        """A latent drawn from the posterior: `z_mean + sigma * eps` (the reparameterisation)."""
        return z_mean + ops.exp(0.5 * z_log_var) * self.latent_noise(z_mean)

    def call(self, x, training=False):
        z_mean, z_log_var = self.encode(x)
        return self.decode(self.posterior_sample(z_mean, z_log_var)), z_mean, z_log_var

    def latent_noise(self, like):
        """Standard normal noise shaped like `like`, from the model's seed (on torch: `TorchNoise`)."""
        if keras.backend.backend() == "torch":
            return self.torch_noise.normal(like)
        return keras.random.normal(ops.shape(like), seed=self.seed_generator,
                                   dtype=keras.backend.standardize_dtype(like.dtype))

    def set_noise_stream(self, stream):
        """Draw the latent noise from stream `stream` of the seed from now on (0 is the seed's own; torch only)."""
        self.torch_noise = TorchNoise(self.seed, stream)

    # -- the loss -----------------------------------------------------------------------

    def _reconstruction_nll(self, target, decoded):
        """Per-example reconstruction term, shape `(batch,)` (`kvae.models.elbo.gaussian_nll`, weighted)."""
        nll = gaussian_nll(target, decoded, self.decoder_variance, self.log_sigma, self.reduction)
        return self.loss_weights["reconstruction"] * nll

    def _kl(self, z_mean, z_log_var):
        """KL(q(z|x) || N(0, I)), batch averaged, with the free-bits floor."""
        return kl_divergence(z_mean, z_log_var, self.free_bits)

    @property
    def bitrate_target(self):
        """The rate controller's target in bits per second (`kl_weight.bitrate_target`; 0: off)."""
        return self.kl_weight.bitrate_target

    @property
    def bitrate_gain(self):
        """The rate controller's largest log-step a training step (`kl_weight.bitrate_gain`)."""
        return self.kl_weight.bitrate_gain

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Under a mixed precision policy the layers compute in (b)float16; the loss stays in float32.
        decoded, z_mean, z_log_var = (ops.cast(t, "float32") for t in y_pred)
        x = ops.cast(x, "float32")
        reconstruction = ops.mean(self._reconstruction_nll(self.target(x), decoded))
        kl = self._kl(z_mean, z_log_var)
        beta = self.beta
        if training and self.kl_weight.moves and getattr(self, "optimizer", None) is not None:
            beta = self.kl_weight(self.optimizer_step(), self.beta, kl, self.window_seconds)
            self.beta.assign(beta)
        total = reconstruction + beta * kl
        self.loss_tracker_reconstruction.update_state(reconstruction)
        self.loss_tracker_kl.update_state(kl)
        if self.spectral:
            total = total + self.spectral(self, x, self.to_audio(decoded))
        if self.losses:
            total = total + ops.sum(ops.stack(self.losses))
        return total

    # -- using a trained model (sampling: `kvae.models.sampling.Sampling`) ---------------

    def reconstruct(self, x):
        """Encode and decode windows `(n, window)` through the posterior mean; a float32 array `(n, window)`."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.window:
            raise KvaeError(f"reconstruct: expected windows of shape (n, {self.window}), got {x.shape}")
        z_mean, _ = self.encode(ops.convert_to_tensor(x))
        return self.decode_audio(z_mean)

    @classmethod
    def from_config(cls, config):
        """The model, its inner networks built under its saved dtype policy (their layers are made in `__init__`
        and would take the global one, float32: a mixed-precision model would load as a float32 one)."""
        dtype = config.get("dtype")
        if dtype is None:
            return super().from_config(config)
        with dtype_policy(dtype):
            return super().from_config(config)

    def get_config(self):
        return {**super().get_config(), "sample_rate": self.sample_rate, "window_seconds": self.window_seconds,
                "latent_dim": self.latent_dim, "decoder_variance": self.decoder_variance, "reduction": self.reduction,
                "loss_weights": dict(self.loss_weights), "beta": self.kl_weight.beta,
                "free_bits": self.free_bits, "stft_fft_sizes": self.stft_fft_sizes,
                "bitrate_target": self.kl_weight.bitrate_target,
                "bitrate_gain": self.kl_weight.bitrate_gain,
                "init_log_sigma": self.init_log_sigma, "seed": self.seed,
                "latent_gmm": None if self.latent_gmm is None else self.latent_gmm.get_config(),
                "adversarial": None if self.adversarial is None else self.adversarial.get_config()}
