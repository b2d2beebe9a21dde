"""The magnitude-first VAE: the shared model checks, its target is the log-magnitude, PGHI and Griffin-Lim give
the audio back, a quiet start, saving across backends, and the preset through the real entry point."""

import json

import keras
import numpy as np
import pytest

import audio
from backends import other_backends
from kvae import cli
from kvae.dsp import ops as dsp
from kvae.errors import KvaeError
from kvae.models import MagnitudeVAE
from kvae.models.vae import dtype_policy
from model_checks import check_saved_models_on_backend, run_model_checks

RATE = 3000
TINY = dict(sample_rate=RATE, window_seconds=0.25, seed=1, n_fft=64, hop=16, width=16, encoder_blocks=1,
            decoder_blocks=1, downsample=2, latent_dim=4, griffin_lim_iters=4)


def tones(n=16, seed=0):
    return audio.tones(n, 750, seed, RATE)


def test_model_checks(tmp_path):
    model = run_model_checks(MagnitudeVAE, TINY, tones(), tones(8, seed=1), tmp_path)
    # 750 samples, hop 16: 47 centred frames of 33 bins, 24 latent frames (2 STFT frames each)
    assert model.frames == 47 and model.target_shape == (47, 33) and model.latent_shape == (24, 4)
    assert model.latent_rate == pytest.approx(RATE / 32)


def test_the_target_is_the_floored_log_magnitude_of_kvaes_stft():
    model = MagnitudeVAE(**TINY)
    x = tones(2)
    real, imag = (keras.ops.convert_to_numpy(t) for t in dsp.stft(keras.ops.convert_to_tensor(x), 64, 16))
    expected = np.log(np.sqrt(real ** 2 + imag ** 2) + model.log_floor)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.target(keras.ops.convert_to_tensor(x))), expected,
                               atol=1e-4)


@pytest.mark.parametrize("phase, bound", [("pghi", 0.2), ("griffin-lim", 0.2)])
def test_the_phase_of_the_true_magnitude_gives_the_input_magnitude_back(phase, bound):
    # to_audio of a perfect decoder: the floor removed, then the phase; its STFT magnitude is the input's
    model = MagnitudeVAE(**{**TINY, "phase": phase, "decoder_temperature": 0.0, "griffin_lim_iters": 64})
    x = tones(2)
    target = model.target(keras.ops.convert_to_tensor(x))
    out = keras.ops.convert_to_numpy(model.to_audio(target))
    assert out.shape == x.shape

    def mag(signal):
        real, imag = dsp.stft(keras.ops.convert_to_tensor(signal.astype("float32")), 64, 16)
        return np.sqrt(keras.ops.convert_to_numpy(real) ** 2 + keras.ops.convert_to_numpy(imag) ** 2)

    error = np.linalg.norm(mag(out) - mag(x)) / np.linalg.norm(mag(x))
    print(phase, error)
    assert error < bound, error  # spectral convergence of PGHI / 64 fast Griffin-Lim iterations on tones


def test_a_fresh_decoder_is_quiet_not_full_scale_noise():
    out = MagnitudeVAE(**TINY).sample(4, seed=0)
    rms = float(np.sqrt(np.mean(np.square(out))))
    assert 0 < rms < 0.05, rms


def test_bad_arguments_are_one_line_errors():
    for kwargs, word in ((dict(hop=0), "hop"), (dict(n_fft=16, hop=16), "n_fft, hop"), (dict(width=0), "width"),
                         (dict(n_fft=4096), "n_fft, hop"), (dict(log_floor=0.0), "log_floor"),
                         (dict(griffin_lim_momentum=1.0), "griffin_lim_momentum"), (dict(phase="gl"), "phase"),
                         (dict(decoder_temperature=-1), "decoder_temperature"),
                         (dict(decoder_temperature=0.5, decoder_variance="fixed"), "decoder_temperature"),
                         (dict(loss_weights={"stft": 1.0}), "loss_weights.stft"),
                         (dict(loss_weights={"mel": 1.0}), "loss_weights.mel")):
        with pytest.raises(KvaeError, match=word) as info:
            MagnitudeVAE(**{**TINY, **kwargs})
        assert "\n" not in str(info.value)


def test_export_says_on_one_line_why_not():
    from kvae.export import check_exportable

    with pytest.raises(KvaeError, match="MagnitudeVAE cannot be exported") as info:
        check_exportable(MagnitudeVAE(**TINY))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backend", other_backends())
def test_saved_model_loads_samples_and_trains_on_other_backend(backend, tmp_path):
    check_saved_models_on_backend({"magnitude": MagnitudeVAE(**TINY)}, backend, tmp_path, train=True)


def test_cli_fit_magnitude_then_sample_reconstruct_fit_a_prior_and_generate(embedded, tmp_path):
    run = tmp_path / "run"
    tiny = ["train.steps_per_epoch=1", "train.n_samples=1", "train.verbose=0", "data.batch_size=2",
            "data.val_windows_per_recording=1", "model.width=8", "model.decoder_blocks=1",
            "model.griffin_lim_iters=2"]
    args = ["fit", "--config", "magnitude", "--run", str(run), "--epochs", "1"]
    for item in tiny:
        args += ["--set", item]
    assert cli.main(args) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["type"] == "magnitude" and config["model"]["bitrate_target"] == 6000.0
    out = tmp_path / "samples"
    assert cli.main(["sample", str(run), "-n", "2", "--seed", "0", "--out", str(out)]) == 0
    assert len(list(out.glob("*.wav"))) == 2
    source = tmp_path / "in.wav"
    from kvae.data import read_audio, write_wav

    write_wav(source, 0.3 * np.sin(np.arange(4000) / 3.0), RATE)
    assert cli.main(["reconstruct", str(run), str(source), str(tmp_path / "out.wav")]) == 0
    assert cli.main(["prior", "fit", str(run), "--epochs", "1", "--steps-per-epoch", "1", "--set", "prior.width=8",
                     "--set", "gmm.components=2"]) == 0
    piece = tmp_path / "piece.wav"
    assert cli.main(["generate", str(run), "--seconds", "1.5", "--seed", "0", "--out", str(piece)]) == 0
    audio_out, rate = read_audio(piece)
    assert rate == RATE and audio_out.shape == (int(1.5 * RATE),) and np.isfinite(audio_out).all()
    assert cli.main(["export", str(run), "--out", str(tmp_path / "onnx")]) == 2  # one line: why not


def test_to_audio_plays_a_fixed_draw_from_the_decoders_likelihood_at_its_temperature():
    x = keras.ops.convert_to_tensor(tones(2))
    mean = MagnitudeVAE(**{**TINY, "decoder_temperature": 0.0})
    warm = MagnitudeVAE(**{**TINY, "decoder_temperature": 0.5})
    assert MagnitudeVAE(**TINY).decoder_temperature == 0.0  # the default plays the mean
    target = mean.target(x)
    played_mean = keras.ops.convert_to_numpy(mean.to_audio(target))
    played = keras.ops.convert_to_numpy(warm.to_audio(target))
    np.testing.assert_array_equal(played, keras.ops.convert_to_numpy(warm.to_audio(target)))  # deterministic
    assert np.abs(played - played_mean).max() > 1e-3  # and not the mean
    assert warm.get_config()["decoder_temperature"] == 0.5


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's CPU bfloat16 kernels (tensorflow's have no "
                    "bfloat16 STFT either way; the spectrogram is float32 under every policy)")
def test_mixed_bfloat16_keeps_the_spectrogram_and_the_loss_in_float32_and_trains():
    with dtype_policy("mixed_bfloat16"):
        model = MagnitudeVAE(**TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = tones(8)
    decoded, z_mean, _ = model(x)
    assert keras.backend.standardize_dtype(decoded.dtype) == "bfloat16"
    target = model.target(keras.ops.convert_to_tensor(x))
    assert keras.backend.standardize_dtype(target.dtype) == "float32"  # the STFT is not done in bfloat16
    history = model.fit(x, batch_size=4, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]
    assert keras.ops.convert_to_numpy(model.to_audio(decoded)).dtype == np.float32
