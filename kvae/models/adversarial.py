"""RAVE's adversarial stage: discriminators, their losses, and the torch training step that alternates them.

After `adversarial_after` optimizer steps of plain VAE training (RAVE's phase
1), the encoder is frozen and the decoder trains against discriminators
(phase 2): its loss becomes the VAE's (likelihood, MR-STFT, KL; the KL no
longer changes anything) plus `adv_gen` (hinge: `mean(relu(1 - D(fake)))`,
as EnCodec) and `feature_matching` (per layer `mean|D_l(real) - D_l(fake)| /
mean|D_l(real)|`, averaged), each times its weight; the discriminators take
a step on `adv_disc` (hinge: `mean(relu(1 - D(real))) + mean(relu(1 +
D(fake)))`) with their own Keras optimizer. Scores are averaged over the
discriminators.

Discriminators, in `keras.ops` (any backend):

- `STFTDiscriminator` (EnCodec's MS-STFT discriminator, DAC's MRD without
  the band split): 2-D convolutions over the complex STFT (real and imaginary
  parts as two channels, time x frequency), strided along frequency.
- `PeriodDiscriminator` (HiFi-GAN's MPD): the waveform folded into
  `(T / p, p)` and convolved with `(5, 1)` kernels, strided along time.
- `Discriminators`: one STFT discriminator per FFT size (3 by default,
  scaled to the sample rate) and one period discriminator per period (2, 3,
  5, 7, 11).

The alternating step needs two backward passes and two optimizers per step,
which Keras's stock `train_step` does not do; `torch_train_step` is written
with torch autograd as Keras's guide "Customizing what happens in fit() with
PyTorch" does. Other backends refuse to train such a model (one line).
"""

import keras
from keras import layers, ops

from kvae.dsp import ops as dsp_ops
from kvae.models import data_parallel
from kvae.dsp.filters import scaled_fft_sizes
from kvae.errors import KvaeError

LOSS_NAMES = ("adv_gen", "adv_disc", "feature_matching")
DEFAULT_WEIGHTS = {"adv_gen": 1.0, "adv_disc": 1.0, "feature_matching": 10.0}
DISC_REFERENCE_SIZES = (2048, 1024, 512)  # DAC's MRD FFT sizes at 44.1 kHz
SUPPORTED_BACKENDS = ("torch",)


def loss_weights(weights):
    """`DEFAULT_WEIGHTS` updated by `weights` (a dict keyed by the logged loss names); checked."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(LOSS_NAMES))
    if unknown:
        raise KvaeError(f"adversarial_weights: unknown loss {', '.join(unknown)} (known: {', '.join(LOSS_NAMES)})")
    out = dict(DEFAULT_WEIGHTS)
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise KvaeError(f"adversarial_weights.{key}: expected a non-negative number, got {value!r}")
        out[key] = float(value)
    return out


def check_backend():
    """A one-line `KvaeError` unless this Keras backend can train the adversarial stage."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise KvaeError(f"model.adversarial_after: the adversarial stage trains only on the torch backend, not "
                        f"{backend} (set KERAS_BACKEND=torch, or unset adversarial_after to train the plain VAE)")


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
            raise KvaeError(f"disc_capacity and disc_periods must be positive, got {capacity}, {list(periods)}")
        if fft_sizes:
            self.fft_sizes = [int(s) for s in fft_sizes]
        else:
            sizes = scaled_fft_sizes(self.sample_rate, reference_sizes=DISC_REFERENCE_SIZES, min_size=32)
            self.fft_sizes = [s for s in sizes if s // 2 < self.window] or [min(sizes)]
        if any(s < 16 or s // 2 >= self.window for s in self.fft_sizes):
            raise KvaeError(f"disc_fft_sizes: each must be at least 16 and under twice the window "
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


# ------------------------------------------------------------------ the torch training step

def in_adversarial_stage(model):
    """Whether the model's next step is an adversarial one (`optimizer.iterations >= adversarial_after`).

    The choice is Python control flow, so it needs the step on the host: it is
    read from the device once per `fit` / `train_on_batch` call (`VAE.fit` resets
    `model._host_step`) and then counted on the host, so a step on a GPU does not
    wait for the device. A loss-scaling optimizer (mixed_float16) may skip a
    step, so under it the step is read every time.
    """
    step = getattr(model, "_host_step", None)
    if step is None or isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        step = int(ops.convert_to_numpy(model.optimizer.iterations))
    model._host_step = step + 1
    return step >= model.adversarial_after


def torch_train_step(model, data):
    """One step of either stage with torch autograd: the VAE alone, or decoder then discriminators."""
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    batch = x.shape[0]
    adversarial = in_adversarial_stage(model)
    disc_vars = model.discriminator.trainable_weights
    disc_ids = {id(v) for v in disc_vars}
    frozen = {id(v) for v in model.encoder.trainable_weights} if adversarial else set()
    gen_vars = [v for v in model.trainable_weights if id(v) not in disc_ids and id(v) not in frozen]

    # -- generator (phase 1: the whole VAE; phase 2: the decoder, the encoder frozen)
    model.zero_grad()
    if adversarial:
        with torch.no_grad():
            z_mean, z_log_var = model.encode(x)
        decoded = model.decode(z_mean + ops.exp(0.5 * z_log_var) * model.latent_noise(z_mean))
        y_pred = (decoded, z_mean, z_log_var)
    else:
        y_pred = model(x, training=True)
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    if adversarial:
        fake = model.to_audio(decoded)
        with torch.no_grad():
            real_outputs = model.discriminator(x)
        fake_outputs = model.discriminator(fake)
        adv_gen = generator_hinge(fake_outputs)
        fm = feature_matching(real_outputs, fake_outputs)
        loss = loss + model.adversarial_weights["adv_gen"] * adv_gen \
            + model.adversarial_weights["feature_matching"] * fm
        model.loss_tracker_adv_gen.update_state(adv_gen)
        model.loss_tracker_feature_matching.update_state(fm)
    model.optimizer.scale_loss(loss).backward()
    grads = [v.value.grad for v in gen_vars]
    loss = data_parallel.reduce_gradients(grads, loss)  # averaged over the ranks under torchrun; else as is
    model._loss_tracker.update_state(loss, sample_weight=batch)
    with torch.no_grad():
        model.optimizer.apply(grads, gen_vars)

    # -- discriminators (phase 2 only), on the generated audio before this step's update
    if adversarial:
        for v in disc_vars:
            v.value.grad = None
        real_outputs = model.discriminator(x)
        fake_outputs = model.discriminator(ops.stop_gradient(fake))
        adv_disc = discriminator_hinge(real_outputs, fake_outputs)
        (model.adversarial_weights["adv_disc"] * adv_disc).backward()
        grads = [v.value.grad for v in disc_vars]
        data_parallel.reduce_gradients(grads)
        with torch.no_grad():
            model.disc_optimizer.apply(grads, disc_vars)
        model.loss_tracker_adv_disc.update_state(adv_disc)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
