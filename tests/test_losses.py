"""Tests for kvae.losses: agreement with auraloss, gradients, serialisation, backends."""

import importlib.util
import json

import keras
import numpy as np
import pytest

from backends import run_on_backend
from kvae.evaluation import metrics
from kvae.errors import KvaeError
from kvae.losses import MultiResolutionSTFTLoss, STFTLoss

torch = pytest.importorskip("torch")
auraloss = pytest.importorskip("auraloss")

RTOL, ATOL = 1e-5, 1e-6


def _pair(batch=3, samples=8000, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000.0
    target = 0.5 * np.sin(2 * np.pi * 220.0 * t)[None, :] + 0.2 * rng.standard_normal(
        (batch, samples)
    )
    pred = target + noise * rng.standard_normal((batch, samples))
    return target.astype("float32"), pred.astype("float32")


def _value(x):
    return float(keras.ops.convert_to_numpy(x))


def _auraloss_mr(y_true, y_pred, fft_sizes, hop_sizes, win_lengths, window="hann", **kw):
    loss = auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=list(fft_sizes),
        hop_sizes=list(hop_sizes),
        win_lengths=list(win_lengths),
        window=f"{window}_window",
        **kw,
    )
    # auraloss.forward(input, target): SC is normalised by the target.
    with torch.no_grad():
        return loss(torch.from_numpy(y_pred)[:, None, :], torch.from_numpy(y_true)[:, None, :]).item()


MR_CASES = [
    # auraloss's own defaults: hop and window different from fft_size / 4 and fft_size
    dict(fft_sizes=(1024, 2048, 512), hop_sizes=(120, 240, 50), win_lengths=(600, 1200, 240)),
    dict(fft_sizes=(2048, 512, 256, 64), hop_sizes=None, win_lengths=None),
    dict(fft_sizes=(256, 128), hop_sizes=(100, 17), win_lengths=(201, 128), window="hamming"),
    dict(fft_sizes=(512, 1024), hop_sizes=None, win_lengths=None, w_sc=0.5, w_log_mag=2.0),
]


@pytest.mark.parametrize("case", MR_CASES)
def test_multi_resolution_matches_auraloss(case):
    y_true, y_pred = _pair()
    ours = MultiResolutionSTFTLoss(**case)
    expected = _auraloss_mr(
        y_true,
        y_pred,
        ours.fft_sizes,
        ours.hop_sizes,
        ours.win_lengths,
        window=case.get("window", "hann"),
        w_sc=case.get("w_sc", 1.0),
        w_log_mag=case.get("w_log_mag", 1.0),
    )
    got = _value(ours(y_true, y_pred))
    assert got == pytest.approx(expected, rel=RTOL, abs=ATOL)


def test_multi_resolution_default_hops_are_quarter_fft():
    loss = MultiResolutionSTFTLoss()
    assert loss.fft_sizes == [1024, 2048, 512]
    assert loss.hop_sizes == [256, 512, 128]
    assert loss.win_lengths == [1024, 2048, 512]


@pytest.mark.parametrize("fft_size,hop,win", [(1024, None, None), (512, 50, 240), (64, 16, 33)])
def test_single_stft_loss_matches_auraloss(fft_size, hop, win):
    y_true, y_pred = _pair(seed=1)
    ours = STFTLoss(fft_size, hop_size=hop, win_length=win)
    ref = auraloss.freq.STFTLoss(ours.fft_size, ours.hop_size, ours.win_length)
    with torch.no_grad():
        expected = ref(torch.from_numpy(y_pred)[:, None], torch.from_numpy(y_true)[:, None]).item()
    assert _value(ours(y_true, y_pred)) == pytest.approx(expected, rel=RTOL, abs=ATOL)


def test_quiet_audio_matches_auraloss_eps_clamp():
    """Near-silent examples put |STFT|**2 near eps, where the clamp placement matters."""
    y_true, y_pred = _pair(seed=2)
    y_true[0] *= 1e-5
    y_pred[0] = y_true[0] + 1e-5 * np.random.default_rng(3).standard_normal(y_true.shape[1])
    y_true[1, :3000] = 0.0
    y_pred[1, :3000] = 0.0
    sizes, hops, wins = (512, 128), (128, 32), (512, 100)
    expected = _auraloss_mr(y_true, y_pred, sizes, hops, wins)
    got = _value(MultiResolutionSTFTLoss(sizes, hops, wins)(y_true, y_pred))
    assert got == pytest.approx(expected, rel=RTOL, abs=ATOL)


def test_argument_order_matters_like_auraloss():
    """SC is normalised by y_true, so swapping the arguments changes the value."""
    y_true, y_pred = _pair(noise=1.0)
    loss = STFTLoss(512)
    assert abs(_value(loss(y_true, y_pred)) - _value(loss(y_pred, y_true))) > 1e-3


def test_channel_axis_is_accepted():
    y_true, y_pred = _pair()
    loss = MultiResolutionSTFTLoss((512, 128))
    flat = _value(loss(y_true, y_pred))
    assert _value(loss(y_true[..., None], y_pred[..., None])) == pytest.approx(flat, rel=1e-6)
    # two channels (channels last) behave like auraloss's (batch, channels, samples)
    stereo_true = np.stack([y_true, y_true[::-1]], axis=-1)
    stereo_pred = np.stack([y_pred, y_true[::-1] * 0.5], axis=-1)
    ref = auraloss.freq.MultiResolutionSTFTLoss([512, 128], [128, 32], [512, 128])
    with torch.no_grad():
        expected = ref(
            torch.from_numpy(stereo_pred.transpose(0, 2, 1).copy()),
            torch.from_numpy(stereo_true.transpose(0, 2, 1).copy()),
        ).item()
    assert _value(loss(stereo_true, stereo_pred)) == pytest.approx(expected, rel=RTOL, abs=ATOL)
    assert keras.ops.convert_to_numpy(loss.per_example(stereo_true, stereo_pred)).shape == (3,)


def test_identical_inputs_give_zero():
    y_true, _ = _pair()
    assert abs(_value(MultiResolutionSTFTLoss()(y_true, y_true))) < 1e-7
    assert np.all(np.abs(keras.ops.convert_to_numpy(STFTLoss(256).per_example(y_true, y_true))) < 1e-7)


def test_loss_grows_with_error():
    y_true, small = _pair(noise=0.05)
    _, large = _pair(noise=0.5)
    loss = MultiResolutionSTFTLoss((512, 128))
    assert _value(loss(y_true, small)) < _value(loss(y_true, large))


def _gradient(loss, y_true, y_pred):
    backend = keras.backend.backend()
    if backend == "torch":
        pred = torch.tensor(y_pred, requires_grad=True)
        value = loss(torch.tensor(y_true), pred)
        value.backward()
        return pred.grad.numpy()
    if backend == "tensorflow":
        import tensorflow as tf

        pred = tf.Variable(y_pred)
        with tf.GradientTape() as tape:
            value = loss(tf.constant(y_true), pred)
        return tape.gradient(value, pred).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda p: loss(y_true, p))(y_pred))
    pytest.skip(f"no gradient helper for backend {backend}")


def test_gradient_is_finite_and_nonzero():
    y_true, y_pred = _pair(samples=4000)
    grad = _gradient(MultiResolutionSTFTLoss((512, 256, 64)), y_true, y_pred)
    assert grad.shape == y_pred.shape
    assert np.all(np.isfinite(grad))
    assert np.abs(grad).max() > 0


def test_gradient_is_finite_at_zero_error():
    y_true, _ = _pair(samples=4000)
    grad = _gradient(MultiResolutionSTFTLoss((512, 64)), y_true, y_true.copy())
    assert np.all(np.isfinite(grad))


def test_per_example_shape_and_consistency():
    y_true, y_pred = _pair()
    y_pred[1] = y_true[1]  # example 1 is perfect
    loss = MultiResolutionSTFTLoss((512, 256, 64))
    per = keras.ops.convert_to_numpy(loss.per_example(y_true, y_pred))
    assert per.shape == (3,)
    assert abs(per[1]) < 1e-6 and per[0] > 0.01 and per[2] > 0.01
    # the log-magnitude term is exact: its batch mean equals the batch loss
    log_only = MultiResolutionSTFTLoss((512, 256, 64), w_sc=0.0)
    per_log = keras.ops.convert_to_numpy(log_only.per_example(y_true, y_pred))
    assert per_log.mean() == pytest.approx(_value(log_only(y_true, y_pred)), rel=1e-5)
    # per example, the loss is the numpy mrstft distance
    expected = metrics.mrstft_distance(y_true, y_pred, 16000, fft_sizes=(512, 256, 64), reduce=False)
    np.testing.assert_allclose(per, expected, rtol=1e-4, atol=1e-6)


def test_get_config_round_trip():
    loss = MultiResolutionSTFTLoss((256, 64), hop_sizes=(50, 16), win_lengths=(200, 64), w_sc=0.25)
    config = loss.get_config()
    json.dumps(config)
    clone = MultiResolutionSTFTLoss.from_config(config)
    assert clone.get_config() == config
    single = STFTLoss(128, w_log_mag=3.0, window="hamming")
    assert STFTLoss.from_config(single.get_config()).get_config() == single.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, MultiResolutionSTFTLoss)
    y_true, y_pred = _pair(samples=2000)
    assert _value(restored(y_true, y_pred)) == pytest.approx(_value(loss(y_true, y_pred)), rel=1e-6)


def test_for_sample_rate_scales_the_fft_sizes():
    loss = MultiResolutionSTFTLoss.for_sample_rate(16000, w_sc=0.5)
    assert loss.fft_sizes == [1024, 512, 256, 128, 64, 32] and loss.w_sc == 0.5


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(fft_size=0),
        dict(fft_size=256, win_length=512),
        dict(fft_size=256, hop_size=-1),
        dict(fft_size=256, window="blackman"),
        dict(fft_size=256, eps=0.0),
    ],
)
def test_bad_settings_raise(kwargs):
    with pytest.raises(KvaeError):
        STFTLoss(**kwargs)


def test_bad_inputs_raise():
    with pytest.raises(KvaeError, match="too short"):
        STFTLoss(1024)(np.zeros((2, 300), "float32"), np.zeros((2, 300), "float32"))
    with pytest.raises(KvaeError, match="shapes differ"):
        STFTLoss(64)(np.zeros((2, 300), "float32"), np.zeros((3, 300), "float32"))
    with pytest.raises(KvaeError):
        MultiResolutionSTFTLoss((64, 128), hop_sizes=(16,))


def _run_backend(backend):
    """The same multi-resolution loss on `backend` (via its serialized config) and here."""
    y_true, y_pred = _pair()
    here = MultiResolutionSTFTLoss((1024, 256, 64), hop_sizes=(120, 64, 16), win_lengths=(600, 256, 64))
    serialized = keras.saving.serialize_keras_object(here)
    serialized["module"] = "kvae.losses"
    other = run_on_backend(backend, "backends:call_serialized", serialized, y_true, y_pred)
    return float(other), _value(here(y_true, y_pred))


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="tensorflow missing")
def test_tensorflow_backend_agrees():
    other, here = _run_backend("tensorflow")
    assert other == pytest.approx(here, rel=RTOL, abs=ATOL)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax missing")
def test_jax_backend_agrees():
    other, here = _run_backend("jax")
    assert other == pytest.approx(here, rel=RTOL, abs=ATOL)


def _numpy_log_mel_l1(y_true, y_pred, windows, n_mels, rate, eps=1e-5):
    """DAC's mel loss written out in numpy: centred reflect-padded frames, periodic Hann, |rfft|, filters, log10."""
    from kvae.dsp.filters import mel_filterbank

    def log_mel(x, w, m):
        hop = w // 4
        padded = np.pad(x, ((0, 0), (w // 2, w // 2)), mode="reflect")
        frames = np.stack([padded[:, i:i + w] for i in range(0, padded.shape[1] - w + 1, hop)], axis=1)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(w) / w)
        mag = np.abs(np.fft.rfft(frames * window, axis=-1))
        return np.log10(np.maximum(mag @ mel_filterbank(rate, w, m).T, eps))

    return sum(np.mean(np.abs(log_mel(y_true, w, m) - log_mel(y_pred, w, m))) for w, m in zip(windows, n_mels))


def test_multi_scale_mel_loss_matches_a_numpy_reference():
    from kvae.losses import MultiScaleMelLoss

    target, pred = _pair(batch=2, samples=3000)
    loss = MultiScaleMelLoss.for_sample_rate(3000, 3000)
    assert loss.window_lengths == [32, 64, 128, 256, 512, 1024, 2048] and loss.n_mels == [5, 10, 20, 40, 80, 160, 320]
    expected = _numpy_log_mel_l1(target.astype("float64"), pred.astype("float64"), loss.window_lengths,
                                 loss.n_mels, 3000)
    assert _value(loss(target, pred)) == pytest.approx(expected, rel=1e-4)
    assert _value(loss(target, target)) == 0.0
    per_example = keras.ops.convert_to_numpy(loss.per_example(target, pred))
    assert per_example.shape == (2,) and np.mean(per_example) == pytest.approx(expected, rel=1e-4)


def test_multi_scale_mel_loss_has_finite_gradients_and_round_trips():
    from kvae.losses import MultiScaleMelLoss

    target, pred = _pair(batch=2, samples=1000)
    loss = MultiScaleMelLoss(window_lengths=[32, 128], n_mels=[5, 20], sample_rate=3000)
    target[:, :300] = 0.0  # silent frames: |STFT| = 0 must not give a NaN gradient
    for guess in (target, np.zeros_like(target)):
        assert np.isfinite(_gradient(loss, target, guess)).all()
    again = MultiScaleMelLoss.from_config(json.loads(json.dumps(loss.get_config())))
    assert _value(again(target, pred)) == pytest.approx(_value(loss(target, pred)))
    with pytest.raises(KvaeError, match="window_lengths and n_mels"):
        MultiScaleMelLoss(window_lengths=[32, 64], n_mels=[5])
