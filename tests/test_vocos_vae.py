"""The Vocos VAE (issue 23's candidate): the shared model checks, its frame-rate layout, a quiet start,
saving across backends, and the preset through the real entry point."""

import json

import keras
import numpy as np
import pytest

import audio
from backends import other_backends
from kvae import cli
from kvae.dsp import ops as dsp
from kvae.errors import KvaeError
from kvae.models import VocosVAE
from kvae.models.blocks import ISTFTHead
from model_checks import check_saved_models_on_backend, run_model_checks

RATE = 3000
TINY = dict(sample_rate=RATE, window_seconds=0.25, seed=1, n_fft=64, hop=16, width=16, encoder_blocks=1,
            decoder_blocks=1, downsample=4, latent_dim=4)


def tones(n=16, seed=0):
    return audio.tones(n, 750, seed, RATE)


def test_model_checks(tmp_path):
    model = run_model_checks(VocosVAE, TINY, tones(), tones(8, seed=1), tmp_path)
    # 750 samples, hop 16: 47 centred frames, 12 latent frames (4 STFT frames each)
    assert model.frames == 47 and model.latent_shape == (12, 4)
    assert model.latent_rate == pytest.approx(RATE / 64)


def test_an_uncompiled_model_gives_its_loss_in_a_plain_loop():
    # a custom loop (benchmarks/train_benchmark.py's plain PyTorch row) calls compute_loss without compile:
    # the rate controller and the warm-up need an optimizer step, so the saved beta is used
    model = VocosVAE(**{**TINY, "loss_weights": {"reconstruction": 0.0, "mel": 1.0}, "bitrate_target": 500.0})
    x = keras.ops.convert_to_tensor(tones(4))
    loss = model.compute_loss(x=x, y_pred=model(x, training=True), training=True)
    assert np.isfinite(float(keras.ops.convert_to_numpy(loss)))


def test_a_fresh_decoder_is_quiet_not_full_scale_noise():
    model = VocosVAE(**{**TINY, "loss_weights": {"stft": 1.0}})
    audio_out = model.sample(4, seed=0)
    rms = float(np.sqrt(np.mean(np.square(audio_out))))
    assert 0 < rms < 0.05, rms


def test_the_head_is_the_inverse_stft_of_its_magnitude_and_phase():
    x = tones(2)
    real, imag = dsp.stft(keras.ops.convert_to_tensor(x), 64, 16)
    real, imag = keras.ops.convert_to_numpy(real), keras.ops.convert_to_numpy(imag)
    mag = np.sqrt(real ** 2 + imag ** 2) + 1e-12
    bins = mag.shape[-1]
    head = ISTFTHead(64, 16, 750, max_log_magnitude=30.0)
    # features = [log|X|, angle(X)]; weights that pass them straight to log-magnitude and phase
    features = np.concatenate([np.log(mag), np.arctan2(imag, real)], axis=-1).astype("float32")
    head.build(features.shape)
    eye = np.eye(2 * bins, dtype="float32")
    head.log_magnitude.set_weights([eye[:, :bins], np.zeros(bins, "float32")])
    head.phase.set_weights([eye[:, bins:], np.zeros(bins, "float32")])
    out = keras.ops.convert_to_numpy(head(features))
    np.testing.assert_allclose(out, x, atol=1e-4)


def test_bad_arguments_are_one_line_errors():
    for kwargs, word in ((dict(hop=0), "hop"), (dict(n_fft=8, hop=16), "n_fft, hop"), (dict(width=0), "width"),
                         (dict(n_fft=4096), "n_fft, hop")):
        with pytest.raises(KvaeError, match=word) as info:
            VocosVAE(**{**TINY, **kwargs})
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("backend", other_backends())
def test_saved_model_loads_samples_and_trains_on_other_backend(backend, tmp_path):
    check_saved_models_on_backend({"vocos": VocosVAE(**TINY)}, backend, tmp_path, train=True)


@pytest.mark.parametrize("preset", ["vocos", "vocos-mel"])
def test_cli_fit_vocos_then_sample_reconstruct_fit_a_prior_and_generate(preset, embedded, tmp_path):
    run = tmp_path / "run"
    tiny = ["train.steps_per_epoch=1", "train.n_samples=1", "train.verbose=0", "data.batch_size=2",
            "data.val_windows_per_recording=1", "model.width=8", "model.decoder_blocks=1"]
    args = ["fit", "--config", preset, "--run", str(run), "--epochs", "1"]
    for item in tiny:
        args += ["--set", item]
    assert cli.main(args) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["type"] == "vocos" and config["data"]["sample_rate"] == 3000
    out = tmp_path / "samples"
    assert cli.main(["sample", str(run), "-n", "2", "--seed", "0", "--out", str(out)]) == 0
    assert len(list(out.glob("*.wav"))) == 2
    source = tmp_path / "in.wav"
    from kvae.data import write_wav

    write_wav(source, 0.3 * np.sin(np.arange(4000) / 3.0), RATE)
    assert cli.main(["reconstruct", str(run), str(source), str(tmp_path / "out.wav")]) == 0
    assert cli.main(["prior", "fit", str(run), "--epochs", "1", "--steps-per-epoch", "1", "--set", "prior.width=8",
                     "--set", "gmm.components=2"]) == 0
    piece = tmp_path / "piece.wav"
    assert cli.main(["generate", str(run), "--seconds", "1.5", "--seed", "0", "--out", str(piece)]) == 0
    from kvae.data import read_audio

    audio, rate = read_audio(piece)
    assert rate == RATE and audio.shape == (int(1.5 * RATE),) and np.isfinite(audio).all()


class _Beta(keras.callbacks.Callback):
    """Reads the KL weight the rate controller keeps: when training begins (after a backup is restored)
    and at each epoch's end."""

    def __init__(self):
        super().__init__()
        self.at_begin, self.at_epoch_end = None, []

    def on_train_begin(self, logs=None):
        self.at_begin = float(keras.ops.convert_to_numpy(self.model.beta))

    def on_epoch_end(self, epoch, logs=None):
        self.at_epoch_end.append(float(keras.ops.convert_to_numpy(self.model.beta)))


def test_vocos_mel_resumes_with_its_rate_controller_where_it_stopped(embedded, tmp_path):
    import kvae
    from kvae.config import load_config
    from model_checks import StopAfter

    config = load_config("vocos-mel", {
        "data": {"batch_size": 2, "val_windows_per_recording": 1},
        "model": {"width": 8, "decoder_blocks": 1},
        "train": {"epochs": 3, "steps_per_epoch": 2, "n_samples": 1, "verbose": 0, "kl_schedule": "constant",
                  "kl_warmup_steps": 0}})
    run, first = tmp_path / "run", _Beta()
    with pytest.raises(KeyboardInterrupt):
        kvae.fit(config, run=run, callbacks=[first, StopAfter(0)], verbose=False)
    again = _Beta()
    model, history = kvae.fit(run=run, callbacks=[again], verbose=False)
    assert first.at_epoch_end[0] != first.at_begin  # the controller moved it
    assert again.at_begin == first.at_epoch_end[0]  # and the resumed run goes on from there
    assert len(history["loss"]) == 2 and int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 6


def test_a_kvae_0_1_vocos_file_loads_and_its_blocks_are_shared_by_every_decoder():
    from pathlib import Path

    import kvae
    from kvae.models import blocks, magnitude_vae, vocos_vae

    assert vocos_vae.ConvNeXtBlock is blocks.ConvNeXtBlock is magnitude_vae.ConvNeXtBlock  # the 0.1 path too
    assert vocos_vae.ISTFTHead is blocks.ISTFTHead
    assert [keras.saving.get_registered_name(c) for c in (blocks.ConvNeXtBlock, blocks.ISTFTHead)] == [
        "kvae>ConvNeXtBlock", "kvae>ISTFTHead"]  # the names saved models hold
    data = Path(__file__).parent / "data"  # vocos_0.1.0.keras: saved by kvae 0.1.0, blocks in vocos_vae.py
    with pytest.warns(FutureWarning, match="rate_target, rate_gain, reconstruction_weight"):  # its 0.1 keys, read
        model = kvae.load(data / "vocos_0.1.0.keras", compile=False)
    saved = np.load(data / "vocos_0.1.0.npz")
    np.testing.assert_allclose(model.reconstruct(saved["x"]), saved["reconstruction"], atol=1e-6)
    head = blocks.ISTFTHead(n_fft=32, hop=8, length=64)  # any frame-rate decoder can end in it
    frames = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=(2, 9, 12)).astype("float32"))
    assert tuple(head(frames).shape) == (2, 64)
