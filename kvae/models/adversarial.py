"""RAVE's adversarial stage: its settings (the config's `model.adversarial` table), discriminators and losses.

After `after` optimizer steps of plain VAE training (RAVE's phase 1), the
encoder is frozen and the decoder trains against discriminators (phase 2):
its loss becomes the VAE's (likelihood, MR-STFT, KL; the KL no longer
changes anything) plus `adv_gen` (hinge: `mean(relu(1 - D(fake)))`, as
EnCodec) and `feature_matching` (per layer `mean|D_l(real) - D_l(fake)| /
mean|D_l(real)|`, averaged), each times its weight; the discriminators take
a step on `adv_disc` (hinge: `mean(relu(1 - D(real))) + mean(relu(1 +
D(fake)))`) with their own Keras optimizer. Scores are averaged over the
discriminators.

`AdversarialStage` owns the settings and adds the discriminators, their
optimizer and the loss trackers to the model it serves. Discriminators, in
`keras.ops` (any backend):

- `STFTDiscriminator` (EnCodec's MS-STFT discriminator, DAC's MRD without
  the band split): 2-D convolutions over the complex STFT (real and imaginary
  parts as two channels, time x frequency), strided along frequency.
- `PeriodDiscriminator` (HiFi-GAN's MPD): the waveform folded into
  `(T / p, p)` and convolved with `(5, 1)` kernels, strided along time.
- `Discriminators`: one STFT discriminator per FFT size (3 by default,
  scaled to the sample rate) and one period discriminator per period (2, 3,
  5, 7, 11).

The alternating step needs two backward passes and two optimizers per step,
which Keras's stock `train_step` does not do; it is the torch step of
`kvae.models.torch_step`. Other backends refuse to train such a model (one line).
"""

import keras
from keras import layers, ops

from kvae.dsp import ops as dsp_ops
from kvae.dsp.filters import scaled_fft_sizes
from kvae.errors import KvaeError

LOSS_NAMES = ("adv_gen", "adv_disc", "feature_matching")
DEFAULT_WEIGHTS = {"adv_gen": 1.0, "adv_disc": 1.0, "feature_matching": 10.0}
DISC_REFERENCE_SIZES = (2048, 1024, 512)  # DAC's MRD FFT sizes at 44.1 kHz
SUPPORTED_BACKENDS = ("torch",)
# kvae 0.1's flat model keys, and their names in the `model.adversarial` table
LEGACY_KEYS = {"adversarial_after": "after", "adversarial_weights": "weights", "disc_capacity": "capacity",
               "disc_periods": "periods", "disc_fft_sizes": "fft_sizes", "disc_learning_rate": "learning_rate"}


def loss_weights(weights):
    """`DEFAULT_WEIGHTS` updated by `weights` (a dict keyed by the logged loss names); checked."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(LOSS_NAMES))
    if unknown:
        raise KvaeError(f"model.adversarial.weights: unknown loss {', '.join(unknown)} "
                        f"(known: {', '.join(LOSS_NAMES)})")
    out = dict(DEFAULT_WEIGHTS)
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise KvaeError(f"model.adversarial.weights.{key}: expected a non-negative number, got {value!r}")
        out[key] = float(value)
    return out


def check_backend():
    """A one-line `KvaeError` unless this Keras backend can train the adversarial stage."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise KvaeError(f"model.adversarial: the adversarial stage trains only on the torch backend, not "
                        f"{backend} (set KERAS_BACKEND=torch, or remove model.adversarial to train the plain VAE)")


def _leaky(x):
    return ops.leaky_relu(x, negative_slope=0.2)


@keras.saving.register_keras_serializable(package="kvae")
class STFTDiscriminator(layers.Layer):
    """2-D convolutions over one complex STFT (EnCodec's MS-STFT discriminator at one resolution).

    Input `(batch, samples)` audio; output `(logits, features)`: logits
    `(batch, frames, bins', 1)` and the activations of every layer.

    Args:
        n_fft: int. FFT size (hop `n_fft // 4`, Hann window).
        channels: int. Channels of every convolution. Defaults to 32 (EnCodec's).
    """

    def __init__(self, n_fft, channels=32, **kwargs):
        super().__init__(**kwargs)
        self.n_fft = int(n_fft)
        self.channels = int(channels)
        c = self.channels
        self.convs = [layers.Conv2D(c, (3, 9), padding="same", name="conv_0")]
        self.convs += [layers.Conv2D(c, (3, 9), strides=(1, 2), padding="same", name=f"conv_{i}") for i in (1, 2, 3)]
        self.convs += [layers.Conv2D(c, (3, 3), padding="same", name="conv_4")]
        self.post = layers.Conv2D(1, (3, 3), padding="same", name="post")

    def build(self, input_shape):
        frames = None if input_shape[1] is None else 1 + int(input_shape[1]) // (self.n_fft // 4)
        shape = (input_shape[0], frames, self.n_fft // 2 + 1, 2)
        for conv in self.convs + [self.post]:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.built = True

    def call(self, x):
        real, imag = dsp_ops.stft(x, self.n_fft)
        return _run_stack(ops.stack([real, imag], axis=-1), self.convs, self.post)

    def get_config(self):
        return {**super().get_config(), "n_fft": self.n_fft, "channels": self.channels}


def _run_stack(h, convs, post):
    """A discriminator's conv stack: leaky ReLU after each conv, every activation kept for feature matching."""
    features = []
    for conv in convs:
        h = _leaky(conv(h))
        features.append(h)
    return post(h), features


@keras.saving.register_keras_serializable(package="kvae")
class PeriodDiscriminator(layers.Layer):
    """HiFi-GAN's period discriminator: the waveform folded by `period`, `(5, 1)` convolutions along time.

    Input `(batch, samples)`; output `(logits, features)`.

    Args:
        period: int. Fold period in samples.
        capacity: int. Channels of the first layer; the next ones have 4x,
            16x, 32x and 32x (HiFi-GAN's 32, 128, 512, 1024, 1024 at 32).
            Defaults to 32.
    """

    def __init__(self, period, capacity=32, **kwargs):
        super().__init__(**kwargs)
        self.period = int(period)
        self.capacity = int(capacity)
        widths = [self.capacity * m for m in (1, 4, 16, 32)]
        self.convs = [layers.Conv2D(w, (5, 1), strides=(3, 1), padding="same", name=f"conv_{i}")
                      for i, w in enumerate(widths)]
        self.convs += [layers.Conv2D(widths[-1], (5, 1), padding="same", name="conv_4")]
        self.post = layers.Conv2D(1, (3, 1), padding="same", name="post")

    def _fold(self, x):
        samples = x.shape[1]
        pad = (-samples) % self.period
        if pad:
            x = ops.pad(x, ((0, 0), (0, pad)))
        return ops.reshape(x, (-1, (samples + pad) // self.period, self.period, 1))

    def build(self, input_shape):
        samples = int(input_shape[1])
        shape = (input_shape[0], -(-samples // self.period), self.period, 1)
        for conv in self.convs + [self.post]:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.built = True

    def call(self, x):
        return _run_stack(self._fold(x), self.convs, self.post)

    def get_config(self):
        return {**super().get_config(), "period": self.period, "capacity": self.capacity}


@keras.saving.register_keras_serializable(package="kvae")
class Discriminators(layers.Layer):
    """Multi-scale STFT discriminators plus multi-period waveform discriminators, built for one window length.

    `call(audio)` returns a list of `(logits, features)`, one per discriminator.

    Args:
        window: int. Samples per input clip.
        sample_rate: int. Sample rate in Hz (scales the default FFT sizes).
        capacity: int. Width of every discriminator: the STFT ones have
            `4 * capacity` channels, the period ones start at `capacity`.
            Defaults to 8 (light, for CPUs; EnCodec and HiFi-GAN use 32).
        periods: list of int. Periods of the waveform discriminators.
            Defaults to [2, 3, 5, 7, 11].
        fft_sizes: list of int or None. FFT sizes of the STFT
            discriminators; None scales DAC's 2048, 1024, 512 at 44.1 kHz to
            `sample_rate` (keeping those that fit in the window).
    """

    def __init__(self, window, sample_rate, capacity=8, periods=(2, 3, 5, 7, 11), fft_sizes=None, **kwargs):
        super().__init__(**kwargs)
        self.window = int(window)
        self.sample_rate = int(sample_rate)
        self.capacity = int(capacity)
        self.periods = [int(p) for p in periods]
        if self.capacity <= 0 or any(p <= 0 for p in self.periods):
            raise KvaeError(f"model.adversarial: capacity and periods must be positive, "
                            f"got {capacity}, {list(periods)}")
        if fft_sizes:
            self.fft_sizes = [int(s) for s in fft_sizes]
        else:
            sizes = scaled_fft_sizes(self.sample_rate, reference_sizes=DISC_REFERENCE_SIZES, min_size=32)
            self.fft_sizes = [s for s in sizes if s // 2 < self.window] or [min(sizes)]
        if any(s < 16 or s // 2 >= self.window for s in self.fft_sizes):
            raise KvaeError(f"model.adversarial.fft_sizes: each must be at least 16 and under twice the window "
                            f"({self.window} samples), got {self.fft_sizes}")
        self.stft_discriminators = [STFTDiscriminator(n, 4 * self.capacity, name=f"stft_{n}")
                                    for n in self.fft_sizes]
        self.period_discriminators = [PeriodDiscriminator(p, self.capacity, name=f"period_{p}")
                                      for p in self.periods]

    def all_discriminators(self):
        return list(self.stft_discriminators) + list(self.period_discriminators)

    def build(self, input_shape=None):
        for d in self.all_discriminators():
            d.build((None, self.window))
        self.built = True

    def call(self, audio):
        return [d(audio) for d in self.all_discriminators()]

    def get_config(self):
        return {**super().get_config(), "window": self.window, "sample_rate": self.sample_rate,
                "capacity": self.capacity, "periods": self.periods, "fft_sizes": self.fft_sizes}


# ------------------------------------------------------------------ losses (keras.ops)

def discriminator_hinge(real_outputs, fake_outputs):
    """`mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`, averaged over the discriminators."""
    terms = [ops.mean(ops.relu(1.0 - r)) + ops.mean(ops.relu(1.0 + f))
             for (r, _), (f, _) in zip(real_outputs, fake_outputs)]
    return ops.mean(ops.stack(terms))


def generator_hinge(fake_outputs):
    """`mean(relu(1 - D(fake)))`, averaged over the discriminators."""
    return ops.mean(ops.stack([ops.mean(ops.relu(1.0 - f)) for f, _ in fake_outputs]))


def feature_matching(real_outputs, fake_outputs):
    """Relative L1 between the discriminators' features on real and generated audio, averaged over layers."""
    terms = []
    for (_, real_features), (_, fake_features) in zip(real_outputs, fake_outputs):
        for r, f in zip(real_features, fake_features):
            terms.append(ops.mean(ops.abs(r - f)) / (ops.mean(ops.abs(r)) + 1e-8))
    return ops.mean(ops.stack(terms))



# ------------------------------------------------------------------ the stage: settings, and what it adds to a VAE

def from_legacy(flat):
    """Pop kvae 0.1's flat keys (`adversarial_after`, `disc_capacity`, ...) from the dict `flat`.

    Returns:
        Them as a `model.adversarial` table, or None when `adversarial_after`
        was unset (the stage was off whatever the other keys said).
    """
    table = {new: flat.pop(old) for old, new in LEGACY_KEYS.items() if old in flat}
    table = {key: value for key, value in table.items() if value is not None}
    return table if "after" in table else None


def _positive_ints(values, key):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise KvaeError(f"model.adversarial.{key}: expected a list of positive integers, got {values!r}")
    values = list(values)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise KvaeError(f"model.adversarial.{key}: expected a list of positive integers, got {values!r}")
    return values


class AdversarialStage:
    """RAVE's second stage of a VAE: the settings of the config's `model.adversarial` table.

    A model given one (`VAE(adversarial={...})`) gets from `build` the
    discriminators (`model.discriminator`), their Adam (`model.disc_optimizer`,
    betas 0.5, 0.9 as RAVE) and a loss tracker per logged term; the torch step
    (`kvae.models.torch_step`) trains them. Not a Keras object: the settings
    travel in the model's config, the weights with the model.

    Args:
        after: int. The optimizer step from which the encoder is frozen and
            the decoder trains against the discriminators. Defaults to 0.
        weights: dict or None. Weights of the logged losses `adv_gen`,
            `adv_disc` and `feature_matching`; defaults 1, 1, 10.
        capacity: int. Width of the discriminators. Defaults to 8.
        periods: list of int. Periods of the waveform discriminators.
            Defaults to [2, 3, 5, 7, 11].
        fft_sizes: list of int or None. FFT sizes of the STFT
            discriminators; None scales 2048, 1024, 512 at 44.1 kHz.
        learning_rate: float. Learning rate of the discriminators' Adam.
            Defaults to 1e-4.
        freeze_encoder: bool. Freeze the encoder in the adversarial stage
            (RAVE's phase 2). False trains the whole VAE against the
            discriminators, KL included, as EnCodec and DAC do from step 0.
            Defaults to True.
        batch: int. Windows of each batch that the adversarial terms see
            (the first ones; 0: all). A sub-batch makes a step's
            discriminator passes cheaper in proportion. Defaults to 0.
    """

    DEFAULTS = {"after": 0, "weights": {}, "capacity": 8, "periods": [2, 3, 5, 7, 11], "fft_sizes": None,
                "learning_rate": 1e-4, "freeze_encoder": True, "batch": 0}

    def __init__(self, after=0, weights=None, capacity=8, periods=(2, 3, 5, 7, 11), fft_sizes=None,
                 learning_rate=1e-4, freeze_encoder=True, batch=0):
        if isinstance(after, bool) or not isinstance(after, (int, float)) or after < 0 or int(after) != after:
            raise KvaeError(f"model.adversarial.after: must be a step number >= 0, got {after!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise KvaeError(f"model.adversarial.capacity: must be a positive integer, got {capacity!r}")
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
            raise KvaeError(f"model.adversarial.learning_rate: must be positive, got {learning_rate!r}")
        self.after = int(after)
        self.weights_config = dict(weights or {})
        self.weights = loss_weights(self.weights_config)
        self.capacity = int(capacity)
        self.periods = _positive_ints(periods, "periods")
        self.fft_sizes = _positive_ints(fft_sizes, "fft_sizes") if fft_sizes else None
        self.learning_rate = float(learning_rate)
        if not isinstance(freeze_encoder, bool):
            raise KvaeError(f"model.adversarial.freeze_encoder: must be true or false, got {freeze_encoder!r}")
        self.freeze_encoder = freeze_encoder
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
            raise KvaeError(f"model.adversarial.batch: must be a number of windows >= 0, got {batch!r}")
        self.batch = batch

    @classmethod
    def from_config(cls, config):
        """A stage from its table (a dict), a stage, or None (no stage); unknown keys are one line."""
        if config is None or isinstance(config, cls):
            return config
        if not isinstance(config, dict):
            raise KvaeError(f"model.adversarial: expected a table of settings, got {config!r}")
        unknown = sorted(set(config) - set(cls.DEFAULTS))
        if unknown:
            raise KvaeError(f"model.adversarial.{unknown[0]}: unknown setting (known: {', '.join(cls.DEFAULTS)})")
        return cls(**config)

    def get_config(self):
        return {"after": self.after, "weights": dict(self.weights_config), "capacity": self.capacity,
                "periods": list(self.periods), "fft_sizes": None if self.fft_sizes is None else list(self.fft_sizes),
                "learning_rate": self.learning_rate, "freeze_encoder": self.freeze_encoder,
                "batch": self.batch}

    def build(self, model):
        """Give `model` the discriminators, their optimizer (built, so its state saves and restores) and trackers.

        They are attributes of the model itself (`discriminator`,
        `disc_optimizer`, `loss_tracker_<term>`), where Keras tracks, saves and
        logs them, under the paths of kvae 0.1's saved models.
        """
        model.discriminator = Discriminators(model.window, model.sample_rate, capacity=self.capacity,
                                             periods=self.periods, fft_sizes=self.fft_sizes, name="discriminator")
        model.discriminator.build((None, model.window))
        model.disc_optimizer = keras.optimizers.Adam(self.learning_rate, beta_1=0.5, beta_2=0.9,
                                                     name="disc_optimizer")
        model.disc_optimizer.build(model.discriminator.trainable_weights)
        for name in LOSS_NAMES:
            setattr(model, f"loss_tracker_{name}", keras.metrics.Mean(name=name))

    def sub_batch(self, x):
        """The windows of `x` the adversarial terms see (the first `batch`; all when 0)."""
        return x[: self.batch] if self.batch else x

    def active(self, step):
        """Whether optimizer step `step` (a host int) is one of the adversarial stage."""
        return step >= self.after

    def generator_loss(self, model, real_outputs, fake_outputs):
        """The weighted `adv_gen` and `feature_matching` terms added to the decoder's loss (logged)."""
        adv_gen = generator_hinge(fake_outputs)
        fm = feature_matching(real_outputs, fake_outputs)
        model.loss_tracker_adv_gen.update_state(adv_gen)
        model.loss_tracker_feature_matching.update_state(fm)
        return self.weights["adv_gen"] * adv_gen + self.weights["feature_matching"] * fm

    def discriminator_loss(self, model, real_outputs, fake_outputs):
        """The weighted `adv_disc` term the discriminators step on (logged)."""
        adv_disc = discriminator_hinge(real_outputs, fake_outputs)
        model.loss_tracker_adv_disc.update_state(adv_disc)
        return self.weights["adv_disc"] * adv_disc

    @staticmethod
    def validation_logs(logs):
        """`logs` without the adversarial terms: validation is the VAE's loss alone."""
        return {k: v for k, v in logs.items() if k not in LOSS_NAMES} if isinstance(logs, dict) else logs
