"""Keras layers shared by kvae's models: Snake, a dilated residual unit, PQMF (RAVE-style), the pre-norm
Transformer block of the Transformer VAE and the latent prior, and Vocos's ConvNeXt block and inverse-STFT
head (the Vocos and magnitude VAEs'; any decoder that ends in an STFT can use the head).

All are written in `keras.ops` only (any backend), registered for `.keras`
saving under the "kvae" package, and rebuilt from `get_config`.
"""

import keras
import numpy as np
from keras import layers, ops

from kvae.dsp import ops as dsp
from kvae.dsp.pqmf import pqmf_bank, pqmf_padding
from kvae.errors import KvaeError


@keras.saving.register_keras_serializable(package="kvae")
class Snake(layers.Layer):
    """The Snake activation (Ziyin et al. 2020, as in BigVGAN and RAVE v2): `x + sin^2(alpha x) / alpha`.

    Periodic with a monotonic trend, so a decoder can produce oscillations
    without learning them from ReLU pieces. `alpha` is trainable, one per
    channel (the last axis).

    Args:
        alpha: float. Initial frequency of every channel. Defaults to 1.0.
    """

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha_init = float(alpha)

    def build(self, input_shape):
        self.alpha = self.add_weight(shape=(int(input_shape[-1]),), name="alpha",
                                     initializer=keras.initializers.Constant(self.alpha_init))
        self.built = True

    def call(self, x):
        return x + ops.square(ops.sin(self.alpha * x)) / (self.alpha + 1e-9)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha_init}


@keras.saving.register_keras_serializable(package="kvae")
class ResidualUnit(layers.Layer):
    """RAVE v2's dilated unit with a skip: `x + conv1x1(snake(conv_k,d(snake(x))))`, channels kept.

    Args:
        channels: int. Channels in and out.
        kernel_size: int. Kernel of the dilated convolution. Defaults to 3.
        dilation: int. Its dilation. Defaults to 1.
    """

    def __init__(self, channels, kernel_size=3, dilation=1, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.kernel_size = int(kernel_size)
        self.dilation = int(dilation)
        policy = self.dtype_policy  # the sublayers compute as the block does, after a load too (see ConvNeXtBlock)
        self.act_in = Snake(name="snake_in", dtype=policy)
        self.conv = layers.Conv1D(self.channels, self.kernel_size, dilation_rate=self.dilation, padding="same",
                                  name="conv", dtype=policy)
        self.act_out = Snake(name="snake_out", dtype=policy)
        self.project = layers.Conv1D(self.channels, 1, name="project", dtype=policy)

    def build(self, input_shape):
        if int(input_shape[-1]) != self.channels:
            raise KvaeError(f"ResidualUnit: expected {self.channels} channels, got {input_shape[-1]}")
        for layer in (self.act_in, self.conv, self.act_out, self.project):
            layer.build(input_shape)
        self.built = True

    def call(self, x):
        return x + self.project(self.act_out(self.conv(self.act_in(x))))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "kernel_size": self.kernel_size,
                "dilation": self.dilation}


@keras.saving.register_keras_serializable(package="kvae")
class PQMF(layers.Layer):
    """PQMF multiband analysis (or, with `inverse=True`, synthesis) of `(batch, time, 1)` audio.

    Analysis maps `(batch, T, 1)` to `(batch, T / n_bands, n_bands)` (T must
    be a multiple of `n_bands`) with one strided convolution by the
    filterbank of `kvae.dsp.pqmf.pqmf_bank`; synthesis is its transposed
    convolution by the same (time-reversed) filters, times `n_bands`, back
    to `(batch, T, 1)`, aligned with the input: analysis then synthesis is
    the identity up to the filterbank's near-perfect reconstruction error
    (about 60 dB SNR). The filters are designed with scipy when the layer
    is made and kept as a non-trainable weight.

    Args:
        n_bands: int. Number of bands, at least 2 (RAVE uses 16).
        attenuation: float. Stop-band attenuation of the prototype in dB.
            Defaults to 100.
        inverse: bool. Synthesis instead of analysis. Defaults to False.
    """

    def __init__(self, n_bands, attenuation=100.0, inverse=False, **kwargs):
        super().__init__(**kwargs)
        self.n_bands = int(n_bands)
        self.attenuation = float(attenuation)
        self.inverse = bool(inverse)
        bank = pqmf_bank(self.n_bands, self.attenuation)
        self.taps = bank.shape[1]
        self.front, self.back = pqmf_padding(self.n_bands, self.taps)
        # conv kernel (taps, 1, n_bands): correlation with it is convolution with each analysis filter;
        # conv_transpose with it (times n_bands) is the synthesis bank.
        kernel = np.ascontiguousarray(bank[:, ::-1].T[:, None, :])
        if self.inverse:
            kernel = kernel * self.n_bands
        self.kernel = self.add_weight(shape=kernel.shape, name="filters", trainable=False, initializer="zeros")
        self.kernel.assign(kernel.astype("float32"))

    def build(self, input_shape):
        self.built = True

    def call(self, x):
        if self.inverse:
            frames = ops.shape(x)[1]
            y = ops.conv_transpose(x, self.kernel, strides=self.n_bands, padding="valid")
            return y[:, self.front:self.front + frames * self.n_bands, :]
        x = ops.pad(x, ((0, 0), (self.front, self.back), (0, 0)))
        return ops.conv(x, self.kernel, strides=self.n_bands, padding="valid")

    def compute_output_shape(self, input_shape):
        batch, time = input_shape[0], input_shape[1]
        if self.inverse:
            return (batch, None if time is None else time * self.n_bands, 1)
        return (batch, None if time is None else time // self.n_bands, self.n_bands)

    def get_config(self):
        return {**super().get_config(), "n_bands": self.n_bands, "attenuation": self.attenuation,
                "inverse": self.inverse}


@keras.saving.register_keras_serializable(package="kvae")
class TransformerBlock(layers.Layer):
    """A pre-norm Transformer encoder block (self-attention and a feed-forward net).

    Uses `keras.layers.MultiHeadAttention` without dropout, which goes through
    `keras.ops.dot_product_attention` and so reaches the backend's fused
    attention kernel (torch's `scaled_dot_product_attention`).

    Args:
        d_model: int. Token width.
        num_heads: int. Attention heads.
        ff_dim: int. Hidden width of the feed-forward net.
        **kwargs: arguments of `keras.layers.Layer`.
    """

    def __init__(self, d_model, num_heads, ff_dim, **kwargs):
        super().__init__(**kwargs)
        self.d_model = int(d_model)
        self.num_heads = int(num_heads)
        self.ff_dim = int(ff_dim)
        policy = self.dtype_policy  # the sublayers compute as the block does, after a load too (see ConvNeXtBlock)
        self.norm1 = layers.LayerNormalization(epsilon=1e-5, dtype=policy)
        self.attention = layers.MultiHeadAttention(num_heads, self.d_model // self.num_heads, dtype=policy)
        self.norm2 = layers.LayerNormalization(epsilon=1e-5, dtype=policy)
        self.ff1 = layers.Dense(self.ff_dim, activation="gelu", dtype=policy)
        self.ff2 = layers.Dense(self.d_model, dtype=policy)

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.norm2.build(input_shape)
        self.ff1.build(input_shape)
        self.ff2.build(input_shape[:-1] + (self.ff_dim,))
        self.built = True

    def call(self, x):
        h = self.norm1(x)
        x = x + self.attention(h, h)
        return x + self.ff2(self.ff1(self.norm2(x)))

    def get_config(self):
        config = super().get_config()
        config.update({"d_model": self.d_model, "num_heads": self.num_heads, "ff_dim": self.ff_dim})
        return config


TORCH_DEPTHWISE = True
"""Whether ConvNeXtBlock takes its channels-last depthwise path on torch (benchmarks switch it off for an A/B)."""

TORCH_FUSED = True
"""Whether ConvNeXtBlock computes its norm, MLP and layer scale with torch's fused kernels on torch (A/B switch)."""


@keras.saving.register_keras_serializable(package="kvae")
class ConvNeXtBlock(layers.Layer):
    """Vocos's ConvNeXt block over frames: depthwise conv, LayerNorm, a 1x1 MLP, layer scale, a skip.

    Args:
        channels: int. Channels in and out (the last axis).
        kernel_size: int. Kernel of the depthwise convolution. Defaults to 7.
        expansion: int. Width of the MLP, in multiples of `channels`. Defaults to 3.
        layer_scale: float. Initial scale of the block's output. Defaults to 0.1.
    """

    def __init__(self, channels, kernel_size=7, expansion=3, layer_scale=0.1, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.kernel_size = int(kernel_size)
        self.expansion = int(expansion)
        self.layer_scale = float(layer_scale)
        # The sublayers take the block's dtype policy: a block loaded from a mixed-precision model then computes
        # as it did when it was trained (the global policy at load time is float32).
        policy = self.dtype_policy
        self.depthwise = layers.DepthwiseConv1D(self.kernel_size, padding="same", name="depthwise", dtype=policy)
        self.norm = layers.LayerNormalization(epsilon=1e-6, name="norm", dtype=policy)
        self.expand = layers.Dense(self.channels * self.expansion, name="expand", dtype=policy)
        self.project = layers.Dense(self.channels, name="project", dtype=policy)

    def build(self, input_shape):
        if int(input_shape[-1]) != self.channels:
            raise KvaeError(f"ConvNeXtBlock: expected {self.channels} channels, got {input_shape[-1]}")
        self.depthwise.build(input_shape)
        self.norm.build(input_shape)
        self.expand.build(input_shape)
        self.project.build(tuple(input_shape[:-1]) + (self.channels * self.expansion,))
        self.gamma = self.add_weight(shape=(self.channels,), name="gamma",
                                     initializer=keras.initializers.Constant(self.layer_scale))
        self.built = True

    def _depthwise(self, x):
        """The depthwise convolution; on torch, a channels-last conv2d on a view of `(batch, frames, channels)`.

        Keras's torch conv transposes to channels-first and back (two copies a call, forward and backward);
        oneDNN's channels-last (NHWC, H = 1) depthwise kernel takes the frames-by-channels memory as it is.
        The bias is added outside the convolution: oneDNN's bias gradient over that layout costs about as much
        as the rest of the backward pass, a sum over contiguous frames almost nothing. (Convolving in float32
        under a bfloat16 policy was faster alone and slower in a whole step: benchmarks/step_speedups.py.)
        Same weights and result (tests/test_precision.py); other backends, or an even kernel, take Keras's path.
        """
        if not TORCH_DEPTHWISE or keras.backend.backend() != "torch" or self.kernel_size % 2 == 0:
            return self.depthwise(x)
        import torch.nn.functional as F

        kernel = ops.cast(self.depthwise.kernel, self.compute_dtype)  # (k, channels, 1)
        weight = kernel.permute(1, 2, 0).unsqueeze(2)  # (channels, 1, 1, k)
        out = F.conv2d(x.permute(0, 2, 1).unsqueeze(2), weight, padding=(0, self.kernel_size // 2),
                       groups=self.channels)
        return out.squeeze(2).permute(0, 2, 1) + ops.cast(self.depthwise.bias, self.compute_dtype)

    def _fused(self, x, h):
        """LayerNorm, the MLP and the layer-scaled skip as four torch kernels, in the compute dtype.

        Keras's path adds each Dense's bias and the layer scale as separate element-wise passes; here `F.linear`
        adds the bias in its matmul and `torch.addcmul` does the scaled skip. The norm stays in float32 as in
        Keras: torch's bfloat16 LayerNorm sums its weights' gradients in bfloat16 (6-13 % off on a 32 x 94 x 384
        batch). Same weights and result within the dtype's rounding (tests/test_precision.py).
        """
        import torch
        import torch.nn.functional as F

        def weight(v):
            return ops.cast(v, self.compute_dtype)

        h = F.layer_norm(ops.cast(h, "float32"), (self.channels,), ops.cast(self.norm.gamma, "float32"),
                         ops.cast(self.norm.beta, "float32"), self.norm.epsilon)
        h = ops.cast(h, self.compute_dtype)
        h = F.gelu(F.linear(h, weight(self.expand.kernel).T, weight(self.expand.bias)))
        h = F.linear(h, weight(self.project.kernel).T, weight(self.project.bias))
        return torch.addcmul(x, h, weight(self.gamma))

    def call(self, x):
        h = self._depthwise(x)
        if TORCH_FUSED and keras.backend.backend() == "torch":
            return self._fused(x, h)
        # The exact (erf) GELU, as Vocos and ConvNeXt use it: torch's CPU kernel of the tanh approximation
        # (`ops.gelu`'s default) is about 6x slower, 9 % of a magnitude step (benchmarks/flops.py).
        h = self.project(ops.gelu(self.expand(self.norm(h)), approximate=False))
        return x + self.gamma * h

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "kernel_size": self.kernel_size,
                "expansion": self.expansion, "layer_scale": self.layer_scale}


@keras.saving.register_keras_serializable(package="kvae")
class ISTFTHead(layers.Layer):
    """Frames of features to audio: log-magnitude and phase per bin, then the inverse STFT (Vocos's head).

    Args:
        n_fft: int. FFT size.
        hop: int. Hop in samples.
        length: int. Samples of the output.
        initial_log_magnitude: float. Initial log-magnitude of every bin (a
            quiet start, not full-scale noise). Defaults to -5.0.
        max_log_magnitude: float. Log-magnitudes are clipped here. Defaults to 4.6 (x100).
    """

    def __init__(self, n_fft, hop, length, initial_log_magnitude=-5.0, max_log_magnitude=4.6, **kwargs):
        super().__init__(**kwargs)
        self.n_fft = int(n_fft)
        self.hop = int(hop)
        self.length = int(length)
        self.initial_log_magnitude = float(initial_log_magnitude)
        self.max_log_magnitude = float(max_log_magnitude)
        bins = self.n_fft // 2 + 1
        # The sublayers compute in the head's dtype (float32 in VocosVAE under any policy: there is no bfloat16 FFT).
        self.log_magnitude = layers.Dense(bins, name="log_magnitude", dtype=self.dtype_policy,
                                          bias_initializer=keras.initializers.Constant(self.initial_log_magnitude))
        self.phase = layers.Dense(bins, name="phase", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.log_magnitude.build(input_shape)
        self.phase.build(input_shape)
        self.built = True

    def call(self, h):
        mag = ops.exp(ops.minimum(self.log_magnitude(h), self.max_log_magnitude))
        phase = self.phase(h)
        return dsp.istft(mag * ops.cos(phase), mag * ops.sin(phase), self.n_fft, self.hop, self.length)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.length)

    def get_config(self):
        return {**super().get_config(), "n_fft": self.n_fft, "hop": self.hop, "length": self.length,
                "initial_log_magnitude": self.initial_log_magnitude, "max_log_magnitude": self.max_log_magnitude}
