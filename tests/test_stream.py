"""kvae.inference.stream: block-by-block reconstruction equals the offline one after the stated latency."""

import keras
import numpy as np
import pytest

from audio import wav_file
from kvae import cli
from kvae.data import read_audio
from kvae.errors import KvaeError
from kvae.models import Conv1DVAE, FCVAE
from kvae.inference.stream import Decoder, Encoder, Reconstructor
from kvae.inference import reconstruct_audio

RATE = 3000
TOLERANCE = 1e-5  # of the offline output's peak: float rounding of differently batched model calls


def tiny(cls=Conv1DVAE, seed=0):
    """A tiny model (750-sample windows, hop 375) with random weights, so every output sample depends on them."""
    kwargs = (dict(channels=[8, 16], kernel_sizes=5, strides=4, latent_dim=4) if cls is Conv1DVAE
              else dict(hidden_layers=1, hidden_units=16, latent_dim=4))
    model = cls(sample_rate=RATE, window_seconds=0.25, seed=1, **kwargs)
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        w.assign(keras.ops.convert_to_numpy(w) + rng.normal(0, 0.05, w.shape).astype("float32"))
    return model


def streamed(stream, signal, block):
    out = [stream.push(signal[i:i + block]) for i in range(0, len(signal), block)]
    assert [len(o) for o in out] == [len(signal[i:i + block]) for i in range(0, len(signal), block)]
    return np.concatenate(out + [stream.finish()])


@pytest.mark.parametrize("cls", [Conv1DVAE, FCVAE])
def test_streamed_equals_offline_after_the_latency(cls):
    model = tiny(cls)
    signal = np.random.default_rng(1).normal(0, 0.2, 3 * RATE + 123).astype("float32")
    offline = reconstruct_audio(model, signal)
    for block in (7, 100, 374, 1000, 4096):  # below the hop (375) and not dividing it, and above the window
        stream = Reconstructor(model)
        assert stream.latency_samples == model.window and stream.latency_ms == pytest.approx(250.0)
        out = streamed(stream, signal, block)
        assert len(out) == len(signal) + stream.latency_samples
        assert not out[:stream.latency_samples].any()  # the pre-roll
        error = np.abs(out[stream.latency_samples:] - offline).max()
        assert error <= TOLERANCE * np.abs(offline).max(), (block, error)


def test_signals_of_a_window_or_less_equal_offline_too():
    model = tiny()
    signal = np.random.default_rng(2).normal(0, 0.2, 2000).astype("float32")
    for length in (1, 5, 500, 750, 751):
        stream = Reconstructor(model)
        out = np.concatenate([stream.push(signal[:length]), stream.finish()])
        np.testing.assert_allclose(out[model.window:], reconstruct_audio(model, signal[:length]), atol=1e-6)
    empty = Reconstructor(model)
    assert len(empty.push(np.zeros(0, np.float32))) == 0 and len(empty.finish()) == model.window


def test_encoder_emits_each_window_when_complete_and_decoder_a_hop_per_latent():
    model = tiny()
    encoder, decoder = Encoder(model), Decoder(model)
    assert (encoder.latency_samples, decoder.latency_samples) == (750, 0)
    signal = np.random.default_rng(3).normal(0, 0.2, 1500).astype("float32")
    assert encoder.push(signal[:749]).shape == (0, 47, 4)
    first = encoder.push(signal[749:1125])  # completes the windows at 0 and 375
    assert first.shape == (2, 47, 4)
    want = keras.ops.convert_to_numpy(model.encode(signal[None, 375:1125])[0])[0]
    np.testing.assert_allclose(first[1], want, atol=1e-6)
    assert len(decoder.push(first)) == 2 * 375
    with pytest.raises(KvaeError, match="expected latents of shape"):
        decoder.push(np.zeros((1, 3), np.float32))


def test_reconstruct_stream_command_writes_the_offline_output_and_prints_the_latency(tmp_path, capsys):
    model = tiny()
    model.save(tmp_path / "model.keras")
    source = wav_file(tmp_path / "in.wav", np.random.default_rng(4).normal(0, 0.2, 2 * RATE).astype("float32"), RATE)
    assert cli.main(["reconstruct", str(tmp_path / "model.keras"), str(source), str(tmp_path / "off.wav")]) == 0
    assert cli.main(["reconstruct", str(tmp_path / "model.keras"), str(source), str(tmp_path / "on.wav"),
                     "--stream", "--block-ms", "7.3"]) == 0
    printed = capsys.readouterr().out
    assert "latency 750 samples = 250.0 ms" in printed and "blocks of 7.3 ms" in printed
    offline, streamed_ = read_audio(tmp_path / "off.wav")[0], read_audio(tmp_path / "on.wav")[0]
    assert streamed_.shape == offline.shape == (2 * RATE,)
    assert np.abs(streamed_ - offline).max() <= TOLERANCE * np.abs(offline).max()
    for extra, word in ((["--block-ms", "5"], "only with --stream"), (["--stream", "--block-ms", "0"], "--block-ms"),
                        (["--stream", "--block-ms", "nan"], "--block-ms")):
        assert cli.main(["reconstruct", str(tmp_path / "model.keras"), str(source), str(tmp_path / "x.wav")]
                        + extra) == 2
        err = capsys.readouterr().err.strip()
        assert word in err and "\n" not in err
        assert not (tmp_path / "x.wav").exists()
