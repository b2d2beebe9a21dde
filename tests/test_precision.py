"""`train.precision = "auto"`: mixed bfloat16 where the torch backend multiplies bfloat16 natively, float32 else;
and ConvNeXt's GELU is the exact one (issue 31: the tanh approximation's CPU kernel cost 9 % of a step)."""

import sys

import keras
import numpy as np
import pytest
from scipy.special import erf

from kvae.config import load_config
from kvae.errors import KvaeError
from kvae.models.blocks import ConvNeXtBlock
from kvae.models.vae import dtype_policy
from kvae.training import build_model, precision


@pytest.mark.parametrize("fast, policy", [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_resolves_by_what_the_hardware_multiplies(monkeypatch, fast, policy):
    monkeypatch.setattr(precision, "fast_bfloat16", lambda: fast)
    assert precision.resolve_precision("auto") == policy
    assert precision.resolve_precision("float32") == "float32"
    assert precision.resolve_precision("mixed_float16") == "mixed_float16"
    config = load_config("quickstart", {"train": {"precision": "auto"}, "model": {"hidden_units": 8}})
    model = build_model(config)
    assert model.dtype_policy.name == policy and keras.config.dtype_policy().name == "float32"


def test_auto_is_float32_off_torch_and_asks_torch_on_it():
    if keras.backend.backend() != "torch":
        assert precision.fast_bfloat16() is False
        assert precision.resolve_precision("auto") == "float32"
    else:
        import torch

        flags = open("/proc/cpuinfo").read().split() if sys.platform == "linux" else []
        expected = "amx_bf16" in flags or "avx512_bf16" in flags  # what the kernel says the CPU has
        assert precision.fast_bfloat16() == (torch.cuda.is_bf16_supported() if torch.cuda.is_available()
                                            else expected)


def test_a_bad_precision_is_one_line_naming_the_choices():
    with pytest.raises(KvaeError, match="train.precision") as err:
        load_config({"train": {"precision": "bfloat8"}})
    assert "auto" in str(err.value) and "\n" not in str(err.value)


def test_convnext_uses_the_exact_gelu():
    block = ConvNeXtBlock(8, kernel_size=3)
    x = np.random.default_rng(0).normal(0, 3, (2, 5, 8)).astype("float32")
    block(x)
    kernel = np.zeros(tuple(block.depthwise.kernel.shape), "float32")
    kernel[1] = 1.0  # the centre tap: depthwise(x) = x
    block.depthwise.kernel.assign(kernel)
    block.gamma.assign(np.ones(8, "float32"))
    h = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    pre = h @ keras.ops.convert_to_numpy(block.expand.kernel) + keras.ops.convert_to_numpy(block.expand.bias)

    def after(act):
        return x + act @ keras.ops.convert_to_numpy(block.project.kernel) + \
            keras.ops.convert_to_numpy(block.project.bias)

    exact = after(0.5 * pre * (1 + erf(pre / np.sqrt(2))))
    tanh = after(0.5 * pre * (1 + np.tanh(np.sqrt(2 / np.pi) * (pre + 0.044715 * pre ** 3))))
    out = keras.ops.convert_to_numpy(block(x))
    np.testing.assert_allclose(out, exact, atol=2e-5)
    assert np.abs(out - tanh).max() > 1e-4  # the two GELUs differ by more than this check's tolerance


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's CPU bfloat16 kernels")
def test_vocos_under_mixed_bfloat16_keeps_its_stft_and_istft_in_float32_and_trains():
    from kvae.models import VocosVAE

    with dtype_policy("mixed_bfloat16"):
        model = VocosVAE(sample_rate=3000, window_seconds=0.25, seed=1, n_fft=64, hop=16, width=16,
                         encoder_blocks=1, decoder_blocks=1, downsample=2, latent_dim=4)
    assert model.get_layer("encoder").get_layer("stft").compute_dtype == "float32"
    assert model.get_layer("encoder").get_layer("enc_block_0").compute_dtype == "bfloat16"
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).normal(0, 0.1, (8, model.window)).astype("float32")
    decoded = model(x)[0]
    assert keras.backend.standardize_dtype(decoded.dtype) == "float32"  # the inverse STFT head's audio
    history = model.fit(x, batch_size=4, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()


def test_a_mixed_precision_model_loads_with_every_inner_layer_under_its_policy(tmp_path):
    from kvae.models import MagnitudeVAE

    with dtype_policy("mixed_bfloat16"):
        model = MagnitudeVAE(sample_rate=3000, window_seconds=0.25, seed=1, n_fft=64, hop=16, width=16,
                             encoder_blocks=1, decoder_blocks=1, downsample=2, latent_dim=4)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)

    def policies(m):
        return {layer.path: layer.dtype_policy.name for layer in m._flatten_layers(include_self=False)}

    assert policies(loaded) == policies(model)
    assert policies(loaded)["dec_block_0/expand"] == "mixed_bfloat16"  # built in ConvNeXtBlock.__init__
    assert policies(loaded)["log_magnitude"] == "float32"
    z = np.random.default_rng(0).normal(size=(2,) + model.latent_shape).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.decoder(z)),
                                  keras.ops.convert_to_numpy(model.decoder(z)))


def test_a_mixed_precision_model_can_load_to_compute_in_float32(tmp_path):
    import kvae
    from kvae.models import MagnitudeVAE

    kwargs = dict(sample_rate=3000, window_seconds=0.25, seed=1, n_fft=64, hop=16, width=16,
                  encoder_blocks=1, decoder_blocks=1, downsample=2, latent_dim=4)
    with dtype_policy("mixed_bfloat16"):
        model = MagnitudeVAE(**kwargs)
    model.save(tmp_path / "m.keras")
    plain = MagnitudeVAE(**kwargs)
    plain.set_weights(model.get_weights())
    loaded = kvae.load(tmp_path / "m.keras", compile=False, precision="float32")
    assert {layer.dtype_policy.name for layer in loaded._flatten_layers(include_self=True)} == {"float32"}
    z = np.random.default_rng(0).normal(size=(2,) + model.latent_shape).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.decoder(z)),
                               keras.ops.convert_to_numpy(plain.decoder(z)), rtol=1e-5, atol=1e-5)
    saved = kvae.load(tmp_path / "m.keras", compile=False)  # the default computes as saved
    assert saved.get_layer("decoder").dtype_policy.name == "mixed_bfloat16"
    with pytest.raises(KvaeError, match="precision: must be one of saved, float32") as info:
        kvae.load(tmp_path / "m.keras", precision="bf16")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kernel_size", [7, 3])
def test_convnext_depthwise_fast_path_is_kerass_convolution(monkeypatch, kernel_size):
    from kvae.models import blocks

    block = ConvNeXtBlock(8, kernel_size=kernel_size)
    x = np.random.default_rng(1).normal(0, 1, (3, 11, 8)).astype("float32")
    block(x)
    rng = np.random.default_rng(2)
    block.depthwise.kernel.assign(rng.normal(size=tuple(block.depthwise.kernel.shape)).astype("float32"))
    block.depthwise.bias.assign(rng.normal(size=(8,)).astype("float32"))
    xt = keras.ops.convert_to_tensor(x)
    monkeypatch.setattr(blocks, "TORCH_DEPTHWISE", True)
    fast = keras.ops.convert_to_numpy(block._depthwise(xt))
    monkeypatch.setattr(blocks, "TORCH_DEPTHWISE", False)
    portable = keras.ops.convert_to_numpy(block._depthwise(xt))
    np.testing.assert_allclose(fast, portable, atol=1e-5)
    # the padding is "same": the edges see zeros, and the output is frames by channels like the input
    assert fast.shape == x.shape
    reference = np.stack([np.convolve(np.pad(x[0, :, c], kernel_size // 2), keras.ops.convert_to_numpy(
        block.depthwise.kernel)[::-1, c, 0], mode="valid") for c in range(8)], axis=-1)
    np.testing.assert_allclose(fast[0], reference + keras.ops.convert_to_numpy(block.depthwise.bias), atol=1e-5)


def _block_and_grads(policy, seed=3):
    """A ConvNeXtBlock under `policy` with random weights, and a function: switches -> (output, gradients)."""
    import torch

    from kvae.models import blocks

    block = ConvNeXtBlock(16, kernel_size=7, dtype=policy)
    x = np.random.default_rng(seed).normal(0, 1, (4, 13, 16)).astype("float32")
    block(x)
    rng = np.random.default_rng(seed + 1)
    for v in block.weights:
        v.assign(rng.normal(0, 0.3, size=tuple(v.shape)).astype("float32"))
    upstream = torch.as_tensor(rng.normal(size=x.shape).astype("float32"))

    def run(**switches):
        saved = {name: getattr(blocks, name) for name in switches}
        try:
            for name, value in switches.items():
                setattr(blocks, name, value)
            xt = torch.tensor(x, requires_grad=True)
            out = block(xt)
            weights = [v.value for v in block.trainable_weights]
            grads = torch.autograd.grad(out, [xt] + weights, upstream.to(out.dtype))
        finally:
            for name, value in saved.items():
                setattr(blocks, name, value)
        return out.detach().float().numpy(), [g.float().numpy() for g in grads], [v.path for v in block.weights]

    return run


KERAS_PATHS = {"TORCH_DEPTHWISE": False, "TORCH_FUSED": False}


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch fast paths")
@pytest.mark.parametrize("switches", [{"TORCH_DEPTHWISE": True}, {"TORCH_FUSED": True},
                                      {"TORCH_DEPTHWISE": True, "TORCH_FUSED": True}])
def test_convnext_torch_paths_match_kerass_in_float32(switches):
    run = _block_and_grads("float32")
    out, grads, names = run(**KERAS_PATHS)
    fast_out, fast_grads, _ = run(**{**KERAS_PATHS, **switches})
    np.testing.assert_allclose(fast_out, out, rtol=1e-5, atol=1e-5)
    for name, fast, ref in zip(["input"] + names, fast_grads, grads):
        np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch fast paths")
def test_convnext_torch_paths_under_bfloat16_stay_near_float32():
    """Under mixed_bfloat16 every path rounds; the fast ones must be no further from the float32 block's
    output and gradients than Keras's own path is (the LayerNorm's weight gradients stay float32 sums)."""
    exact_out, exact_grads, names = _block_and_grads("float32")(**KERAS_PATHS)
    run = _block_and_grads("mixed_bfloat16")
    keras_out, keras_grads, _ = run(**KERAS_PATHS)
    fast_out, fast_grads, _ = run(TORCH_DEPTHWISE=True, TORCH_FUSED=True)

    def err(a, b):
        return np.abs(a - b).max() / np.abs(b).max()

    assert err(fast_out, exact_out) <= 2 * err(keras_out, exact_out) + 1e-3
    for name, fast, slow, exact in zip(["input"] + names, fast_grads, keras_grads, exact_grads):
        assert err(fast, exact) <= 2 * err(slow, exact) + 1e-3, name
        assert err(fast, exact) < 0.05, name
