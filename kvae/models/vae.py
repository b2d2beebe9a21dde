"""The VAE base class: loss, metrics, sampling and saving for every kvae variant.

Longer than 400 lines because the base holds everything the variants share
(the likelihood and KL terms, the optional adversarial stage's hooks, the
ex-post latent mixture, batched seeded sampling and the Keras config) so that
each variant only builds an encoder and a decoder; splitting it would scatter
one class over several files.
"""

import math

import keras
import numpy as np
from keras import ops

from kvae.errors import KvaeError
from kvae.models import data_parallel

DECODER_VARIANCES = ("fixed", "scalar", "diagonal", "optimal")
REDUCTIONS = ("sum", "mean")
_LOG_2PI = math.log(2.0 * math.pi)


def kl_warmup_weight(step, kind, steps, start, target, dtype="float32"):
    """The KL weight at optimizer step `step` of a warm-up from `start` to `target` over `steps` steps.

    `kind` is `"constant"` (always `target`), `"linear"` or `"log"` (geometric,
    as RAVE v2). Computed with `keras.ops`, so `step` may be the optimizer's
    step-count tensor inside a training step (`VAE.kl_weight`) or a Python
    int (`kvae.training.KLSchedule.value`).
    """
    if kind == "constant":
        return ops.convert_to_tensor(target, dtype)
    t = ops.clip(ops.cast(step, dtype) / float(steps), 0.0, 1.0)
    if kind == "log":
        lo = max(start, 1e-12)
        return ops.exp(math.log(lo) + t * (math.log(max(target, lo)) - math.log(lo)))
    return start + t * (target - start)


@keras.saving.register_keras_serializable(package="kvae")
class VAE(keras.Model):
    """Base class of kvae's variational autoencoders on raw audio.

    A variant builds `self.encoder` (a layer mapping a batch of windows to
    `(z_mean, z_log_var)`) and `self.decoder` (a layer mapping latents to the
    reconstruction target), then calls `self._finish_build()`. Everything else
    comes from here: the reparameterisation, the negative ELBO computed in
    `compute_loss` (so the stock training step of every Keras backend runs it,
    and `evaluate` reports the same `val_loss`), the `reconstruction` and `kl`
    metrics, `sample`, `reconstruct` and `.keras` saving.

    The reconstruction term is the Gaussian negative log-likelihood of the
    target, summed over the samples of an example and averaged over the
    batch. The decoder variance is fixed (plain squared error times
    `reconstruction_weight`), a learned scalar sigma, a learned diagonal, or
    the sigma-VAE "optimal" sigma (Rybkin et al. 2021). `reduction="mean"`
    averages over samples instead: the paper's MSE, which amounts to a huge
    fixed variance, lets the KL term win and makes the decoder output
    silence. It is kept only to reproduce that failure on purpose.

    Args:
        sample_rate: int. Sample rate of the audio in Hz. Defaults to 3000.
        window_seconds: float. Length of one input window. Defaults to 1.0.
        latent_dim: int. Size of the latent vector (or channels of a latent
            sequence). Defaults to 64.
        decoder_variance: str. `"fixed"`, `"scalar"`, `"diagonal"` or
            `"optimal"`. Defaults to `"scalar"`.
        reduction: str. `"sum"` over samples (a likelihood) or `"mean"` (the
            paper's MSE). Defaults to `"sum"`.
        reconstruction_weight: float. Weight of the reconstruction term.
            Defaults to 1.0.
        beta: float. Initial weight of the KL term; a non-trainable variable,
            so schedules survive saving and resuming. Defaults to 1.0.
        free_bits: float. Per-latent-dimension KL floor in nats (batch
            averaged). Defaults to 0.0 (off).
        stft_weight: float. Weight of a multi-resolution STFT loss on the
            audio, added to the likelihood. Defaults to 0.0 (off).
        stft_fft_sizes: list of int or None. Its FFT sizes; None scales
            RAVE's sizes to the sample rate.
        init_log_sigma: float. Initial log sigma of a learned variance.
            Defaults to -2.0.
        seed: int or None. Seed of the training-time latent noise.
        adversarial_after: int or None. RAVE's second stage: from this
            optimizer step on, the encoder is frozen and the decoder trains
            against discriminators (`kvae.models.adversarial`; torch backend
            only: elsewhere `fit` refuses with one line). None (the default)
            trains the plain VAE throughout.
        adversarial_weights: dict or None. Weights of the logged losses
            `adv_gen`, `adv_disc` and `feature_matching`; defaults 1, 1, 10.
        disc_capacity: int. Width of the discriminators. Defaults to 8.
        disc_periods: list of int. Periods of the waveform discriminators.
            Defaults to [2, 3, 5, 7, 11].
        disc_fft_sizes: list of int or None. FFT sizes of the STFT
            discriminators; None scales 2048, 1024, 512 at 44.1 kHz.
        disc_learning_rate: float. Learning rate of the discriminators' Adam
            (betas 0.5, 0.9 as RAVE). Defaults to 1e-4.
        latent_gmm: dict, `kvae.models.gmm.LatentGMM` or None. An ex-post
            Gaussian mixture over the posterior means (`set_latent_gmm`),
            kept in the config so `sample(prior="gmm")` survives saving.
    """

    def __init__(self, sample_rate=3000, window_seconds=1.0, latent_dim=64,
                 decoder_variance="scalar", reduction="sum", reconstruction_weight=1.0,
                 beta=1.0, free_bits=0.0, stft_weight=0.0, stft_fft_sizes=None,
                 init_log_sigma=-2.0, seed=None, latent_gmm=None, adversarial_after=None, adversarial_weights=None,
                 disc_capacity=8, disc_periods=(2, 3, 5, 7, 11), disc_fft_sizes=None, disc_learning_rate=1e-4,
                 **kwargs):
        super().__init__(**kwargs)
        if decoder_variance not in DECODER_VARIANCES:
            raise KvaeError(
                f"decoder_variance: must be one of {', '.join(DECODER_VARIANCES)}, got '{decoder_variance}'"
            )
        if reduction not in REDUCTIONS:
            raise KvaeError(f"reduction: must be one of {', '.join(REDUCTIONS)}, got '{reduction}'")
        if int(sample_rate) <= 0 or float(window_seconds) <= 0:
            raise KvaeError(f"sample_rate and window_seconds must be positive, got {sample_rate}, {window_seconds}")
        if int(latent_dim) <= 0:
            raise KvaeError(f"latent_dim: must be positive, got {latent_dim}")
        self.sample_rate = int(sample_rate)
        self.window_seconds = float(window_seconds)
        self.window = int(round(self.sample_rate * self.window_seconds))
        self.latent_dim = int(latent_dim)
        self.decoder_variance = decoder_variance
        self.reduction = reduction
        self.reconstruction_weight = float(reconstruction_weight)
        self.initial_beta = float(beta)
        self.free_bits = float(free_bits)
        self.stft_weight = float(stft_weight)
        self.stft_fft_sizes = list(stft_fft_sizes) if stft_fft_sizes else None
        self.init_log_sigma = float(init_log_sigma)
        self.seed = seed
        if adversarial_after is not None and (isinstance(adversarial_after, bool)
                                              or not isinstance(adversarial_after, (int, float))
                                              or adversarial_after < 0 or int(adversarial_after) != adversarial_after):
            raise KvaeError(f"adversarial_after: must be a step number >= 0 (or unset), got {adversarial_after!r}")
        self.adversarial_after = None if adversarial_after is None else int(adversarial_after)
        self.adversarial_weights_config = dict(adversarial_weights) if adversarial_weights else None
        self.disc_capacity = int(disc_capacity)
        self.disc_periods = [int(p) for p in disc_periods]
        self.disc_fft_sizes = [int(n) for n in disc_fft_sizes] if disc_fft_sizes else None
        self.disc_learning_rate = float(disc_learning_rate)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.latent_gmm = None
        self._initial_gmm = latent_gmm  # attached in _finish_build, once the variant knows its latent shape
        self.beta = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_beta),
            trainable=False, name="beta",
        )
        self.loss_tracker_reconstruction = keras.metrics.Mean(name="reconstruction")
        self.loss_tracker_kl = keras.metrics.Mean(name="kl")
        self.loss_tracker_stft = keras.metrics.Mean(name="stft") if self.stft_weight else None
        self.stft_loss = None
        if self.stft_weight:
            from kvae.losses import MultiResolutionSTFTLoss, scaled_fft_sizes

            sizes = self.stft_fft_sizes or scaled_fft_sizes(self.sample_rate)
            sizes = [s for s in sizes if s <= self.window] or [min(sizes)]
            self.stft_loss = MultiResolutionSTFTLoss(fft_sizes=sizes)

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
        """Create the decoder-variance weights and mark the model built.

        Args:
            target_shape: tuple. Shape of one reconstruction target.
        """
        self.target_shape = tuple(int(d) for d in target_shape)
        self.log_sigma = None
        if self.decoder_variance in ("scalar", "diagonal"):
            shape = () if self.decoder_variance == "scalar" else self.target_shape
            self.log_sigma = self.add_weight(
                shape=shape, initializer=keras.initializers.Constant(self.init_log_sigma), name="log_sigma",
            )
        if self.adversarial_after is not None:
            self._build_adversarial()
        if self._initial_gmm is not None:
            self.set_latent_gmm(self._initial_gmm)
        self.built = True

    def _build_adversarial(self):
        """The discriminators, their optimizer (built, so its state saves and restores) and the loss trackers."""
        from kvae.models import adversarial

        self.adversarial_weights = adversarial.loss_weights(self.adversarial_weights_config)
        self.discriminator = adversarial.Discriminators(
            self.window, self.sample_rate, capacity=self.disc_capacity, periods=self.disc_periods,
            fft_sizes=self.disc_fft_sizes, name="discriminator",
        )
        self.discriminator.build((None, self.window))
        self.disc_optimizer = keras.optimizers.Adam(self.disc_learning_rate, beta_1=0.5, beta_2=0.9,
                                                    name="disc_optimizer")
        self.disc_optimizer.build(self.discriminator.trainable_weights)
        for name in adversarial.LOSS_NAMES:
            setattr(self, f"loss_tracker_{name}", keras.metrics.Mean(name=name))

    def build(self, input_shape=None):
        # Every weight is created in the constructor; nothing is left to build.
        self.built = True

    # -- training: the stock step, or the adversarial one ------------------------------

    def train_step(self, *args, **kwargs):
        if self.adversarial_after is None:
            if data_parallel.world_size() > 1:  # under torchrun: the gradients averaged over the ranks
                return data_parallel.torch_train_step(self, *args, **kwargs)
            return super().train_step(*args, **kwargs)
        from kvae.models import adversarial

        adversarial.check_backend()
        return adversarial.torch_train_step(self, *args, **kwargs)

    def test_step(self, *args, **kwargs):
        logs = super().test_step(*args, **kwargs)
        if self.adversarial_after is not None and isinstance(logs, dict):
            from kvae.models.adversarial import LOSS_NAMES

            logs = {k: v for k, v in logs.items() if k not in LOSS_NAMES}  # validation is the VAE loss alone
        return logs

    def fit(self, *args, **kwargs):
        self._host_step = None  # the adversarial step's host copy of the step count, read afresh
        if self.adversarial_after is not None:
            from kvae.models import adversarial

            adversarial.check_backend()
        return super().fit(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        self._host_step = None
        if self.adversarial_after is not None:
            from kvae.models import adversarial

            adversarial.check_backend()
        return super().train_on_batch(*args, **kwargs)

    # -- the model --------------------------------------------------------------------

    def encode(self, x):
        """Return `(z_mean, z_log_var)` for a batch of windows."""
        z_mean, z_log_var = self.encoder(x)
        return z_mean, ops.clip(z_log_var, -20.0, 10.0)

    def decode(self, z):
        """Return the decoded target (audio for waveform models) for latents `z`."""
        return self.decoder(z)

    def call(self, x, training=False):
        z_mean, z_log_var = self.encode(x)
        z = z_mean + ops.exp(0.5 * z_log_var) * self.latent_noise(z_mean)
        return self.decode(z), z_mean, z_log_var

    def latent_noise(self, like, stream=None):
        """Standard normal noise shaped like `like`: the reparameterisation's, seeded by `seed`.

        On torch it comes from a `torch.Generator` on the tensor's device,
        seeded once from `seed` (plus `stream`, e.g. a data-parallel rank,
        which `set_noise_stream` sets): Keras's seeded torch draw reads its
        seed back to the host at every call, which on a GPU waits for the
        device at every step. The stream is not part of the saved state: a
        resumed run draws fresh noise. Elsewhere: `keras.random.normal` with
        the model's `SeedGenerator`.
        """
        if keras.backend.backend() != "torch":
            return keras.random.normal(ops.shape(like), seed=self.seed_generator,
                                       dtype=keras.backend.standardize_dtype(like.dtype))
        import torch

        if like.device.type == "meta" or self.seed is None:  # Keras's symbolic build; or torch's global seed
            return torch.randn(like.shape, device=like.device, dtype=like.dtype)
        generator = self.__dict__.get("_noise_generator")
        if generator is None or generator.device != like.device:
            generator = torch.Generator(device=like.device)
            generator.manual_seed((int(self.seed) + 1_000_003 * self.__dict__.get("_noise_stream", 0)) % 2 ** 63)
            self.__dict__["_noise_generator"] = generator
        return torch.randn(like.shape, device=like.device, dtype=like.dtype, generator=generator)

    def set_noise_stream(self, stream):
        """Draw the latent noise from stream `stream` of the seed from now on (0 is the seed's own; torch only)."""
        self.__dict__["_noise_stream"] = int(stream)
        self.__dict__["_noise_generator"] = None

    # -- the loss -----------------------------------------------------------------------

    def _reconstruction_nll(self, target, decoded):
        """Per-example reconstruction term, shape `(batch,)`."""
        sq = ops.square(ops.subtract(target, decoded))
        axes = tuple(range(1, len(sq.shape)))
        if self.decoder_variance == "fixed":
            per_sample = sq
        else:
            if self.decoder_variance == "optimal":
                log_sigma = 0.5 * ops.log(ops.mean(sq) + 1e-12)
                log_sigma = ops.maximum(log_sigma, -6.0)
            else:
                log_sigma = self.log_sigma
            per_sample = 0.5 * sq * ops.exp(-2.0 * log_sigma) + log_sigma + 0.5 * _LOG_2PI
        reduce = ops.mean if self.reduction == "mean" else ops.sum
        return self.reconstruction_weight * reduce(per_sample, axis=axes)

    def _kl(self, z_mean, z_log_var):
        """KL(q(z|x) || N(0, I)), batch averaged, with the free-bits floor."""
        kl = -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
        kl = ops.reshape(kl, (ops.shape(kl)[0], -1))
        if self.free_bits > 0:
            return ops.sum(ops.maximum(ops.mean(kl, axis=0), self.free_bits))
        return ops.mean(ops.sum(kl, axis=1))

    def set_kl_schedule(self, kind="constant", steps=0, start=1e-6):
        """Warm the KL weight up inside the loss (`kvae.training.KLSchedule` sets it at the start of `fit`).

        Each training step computes the weight from `optimizer.iterations` in
        the step itself (no read of the step count on the host, which on a GPU
        would wait for the device) and keeps it in `beta`, saved with the model.

        Args:
            kind: str. `"constant"` (no warm-up), `"linear"` or `"log"`.
            steps: int. Warm-up length in optimizer steps; 0 for none.
            start: float. The weight at step 0.
        """
        warmup = None if kind == "constant" or steps <= 0 else (kind, max(int(steps), 1), float(start))
        self.__dict__["_kl_warmup"] = warmup

    def kl_weight(self, step):
        """The KL weight at optimizer step `step` (a tensor) under the schedule set by `set_kl_schedule`."""
        kind, steps, start = self.__dict__.get("_kl_warmup") or ("constant", 1, self.initial_beta)
        return kl_warmup_weight(step, kind, steps, start, self.initial_beta)

    def _optimizer_step(self):
        # On jax the train step is traced with the optimizer's variables as arguments: take the step
        # count from them (see compute_loss_and_updates), not the variable's value when it was traced.
        state = self.__dict__.get("_jax_optimizer_state")
        if state is not None:
            for ref, value in zip(self.optimizer.variables, state):
                if ref is self.optimizer.iterations:
                    return value
        return self.optimizer.iterations

    def compute_loss_and_updates(self, *args, optimizer_variables=None, **kwargs):
        # keras.src.backend.jax.trainer.JAXTrainer's method (jax only; the other backends never call it).
        self.__dict__["_jax_optimizer_state"] = optimizer_variables
        try:
            return super().compute_loss_and_updates(*args, optimizer_variables=optimizer_variables, **kwargs)
        finally:
            self.__dict__["_jax_optimizer_state"] = None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Under a mixed precision policy the layers compute in (b)float16; the loss and the variance
        # terms stay in float32.
        decoded, z_mean, z_log_var = (ops.cast(t, "float32") for t in y_pred)
        x = ops.cast(x, "float32")
        reconstruction = ops.mean(self._reconstruction_nll(self.target(x), decoded))
        kl = self._kl(z_mean, z_log_var)
        beta = self.beta
        if training and self.__dict__.get("_kl_warmup") and self.optimizer is not None:
            beta = self.kl_weight(self._optimizer_step())
            self.beta.assign(beta)
        total = reconstruction + beta * kl
        self.loss_tracker_reconstruction.update_state(reconstruction)
        self.loss_tracker_kl.update_state(kl)
        if self.stft_loss is not None:
            stft = self.stft_loss(x, self.to_audio(decoded))
            total = total + self.stft_weight * stft
            self.loss_tracker_stft.update_state(stft)
        if self.losses:
            total = total + ops.sum(ops.stack(self.losses))
        return total

    # -- using a trained model -------------------------------------------------------

    def prior_noise(self, n, seed=None, temperature=1.0, batch_size=None):
        """Latents drawn from the prior N(0, temperature^2 I), in batches.

        With a seed the draw is NumPy's (`np.random.default_rng(seed)`,
        standard normals in float64 cast to float32), so the same seed gives
        the same latents on every Keras backend, and the batching does not
        change them: batch after batch continue one stream. Without a seed it
        is `keras.random.normal`, governed by `keras.utils.set_random_seed`.

        Args:
            n: int. Number of latents.
            seed: int or None. A non-negative seed.
            temperature: float. Scale of the standard deviation. Defaults to 1.0.
            batch_size: int or None. Latents per batch; None for one batch.

        Yields:
            float32 numpy arrays of shape `(batch, *latent_shape)`, `n` rows in all.
        """
        n = int(n)
        if n <= 0:
            raise KvaeError(f"n: must be a positive number of samples, got {n}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise KvaeError(f"seed: must be a non-negative integer, got {seed!r}")
        batch = n if batch_size is None else max(int(batch_size), 1)
        rng = np.random.default_rng(int(seed)) if seed is not None else None
        shape = tuple(self.latent_shape)
        for start in range(0, n, batch):
            m = min(batch, n - start)
            if rng is not None:
                z = rng.standard_normal((m,) + shape) * float(temperature)
            else:
                z = ops.convert_to_numpy(keras.random.normal((m,) + shape)) * float(temperature)
            yield np.asarray(z, dtype=np.float32)

    def sample_batches(self, n, seed=None, temperature=1.0, batch_size=256):
        """Decode `n` prior samples a batch at a time, so memory does not grow with `n`.

        Batch after batch gives the clips `sample(n, seed, temperature)`
        gives, in the same order (see `prior_noise`). Batches of 256 decode
        about as fast per clip as one big batch on a 2-core CPU, where 64
        took 2-3 times longer.

        Yields:
            float32 numpy arrays of shape `(batch, window)`.
        """
        for z in self.prior_noise(n, seed, temperature, batch_size):
            yield np.asarray(ops.convert_to_numpy(self.to_audio(self.decode(ops.convert_to_tensor(z)))),
                             dtype=np.float32)

    def sample(self, n=1, seed=None, temperature=1.0, prior=None):
        """Decode `n` latents drawn from the prior into audio.

        Args:
            n: int. Number of clips. Defaults to 1.
            seed: int or None. The same seed gives the same clips, on every
                Keras backend: its latents are drawn with NumPy
                (`np.random.default_rng(seed)`, see `prior_noise`).
            temperature: float. Scale of the prior's standard deviation.
                Defaults to 1.0.
            prior: str or None. `None` or `"normal"`: N(0, I); `"gmm"`: the
                fitted latent mixture (`set_latent_gmm`), drawn with numpy
                from the seed.

        Returns:
            A float32 numpy array of shape `(n, window)` at `sample_rate`.
            For many clips, `sample_batches` yields them a batch at a time.
        """
        if prior == "gmm":
            if int(n) <= 0:
                raise KvaeError(f"n: must be a positive number of samples, got {n}")
            z = self.sample_latents_gmm(n, np.random.default_rng(seed), temperature)
            return np.asarray(ops.convert_to_numpy(self.to_audio(self.decode(z))), dtype=np.float32)
        if prior not in (None, "normal"):
            raise KvaeError(f"prior: must be normal or gmm, got {prior!r}")
        return np.concatenate(list(self.sample_batches(n, seed, temperature, batch_size=None)))

    def set_latent_gmm(self, gmm):
        """Attach an ex-post Gaussian mixture over the latents (a `LatentGMM`, its config, or None)."""
        from kvae.models.gmm import LatentGMM

        gmm = None if gmm is None else LatentGMM.from_config(gmm)
        size = int(np.prod(self.latent_shape))
        if gmm is not None and gmm.dim != size:
            raise KvaeError(f"latent_gmm: the mixture has {gmm.dim} dimensions, the latent {size}")
        self.latent_gmm = gmm

    def sample_latents_gmm(self, n, rng, temperature=1.0):
        """`n` latents `(n, *latent_shape)` drawn from the latent mixture with a numpy Generator."""
        if self.latent_gmm is None:
            raise KvaeError("prior gmm: this model has no latent mixture; run `kvae prior fit` on its run folder")
        z = self.latent_gmm.sample(int(n), rng, temperature)
        return z.reshape((int(n),) + tuple(self.latent_shape))

    def reconstruct(self, x):
        """Encode and decode windows through the posterior mean.

        Args:
            x: array-like. Windows of shape `(n, window)`.

        Returns:
            A float32 numpy array of shape `(n, window)`.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.window:
            raise KvaeError(f"reconstruct: expected windows of shape (n, {self.window}), got {x.shape}")
        z_mean, _ = self.encode(ops.convert_to_tensor(x))
        return np.asarray(ops.convert_to_numpy(self.to_audio(self.decode(z_mean))), dtype=np.float32)

    def get_config(self):
        config = super().get_config()
        config.update({
            "sample_rate": self.sample_rate,
            "window_seconds": self.window_seconds,
            "latent_dim": self.latent_dim,
            "decoder_variance": self.decoder_variance,
            "reduction": self.reduction,
            "reconstruction_weight": self.reconstruction_weight,
            "beta": self.initial_beta,
            "free_bits": self.free_bits,
            "stft_weight": self.stft_weight,
            "stft_fft_sizes": self.stft_fft_sizes,
            "init_log_sigma": self.init_log_sigma,
            "seed": self.seed,
            "adversarial_after": self.adversarial_after,
            "adversarial_weights": self.adversarial_weights_config,
            "disc_capacity": self.disc_capacity,
            "disc_periods": self.disc_periods,
            "disc_fft_sizes": self.disc_fft_sizes,
            "disc_learning_rate": self.disc_learning_rate,
            "latent_gmm": None if self.latent_gmm is None else self.latent_gmm.get_config(),
        })
        return config
