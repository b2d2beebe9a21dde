"""kvae export: ONNX graphs that onnxruntime runs as Keras does, the mel VAE's one-line refusal, the prior's
cached step, and the docs' decoder script in a process where `import keras` fails."""

import json
import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import keras
import numpy as np
import pytest

from kvae import cli
from kvae.errors import KvaeError
from kvae.models import LatentPrior, MelVAE, RaveVAE

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import test_models  # noqa: E402
from kvae.export import OnnxVAE, export_onnx  # noqa: E402

RATE = 3000
ROOT = Path(__file__).resolve().parents[1]
TINY = {**test_models.TINY,  # the model tests' tiny configs, and RAVE's
        "rave": (RaveVAE, dict(capacity=4, ratios=[2, 2], n_bands=4, latent_dim=4))}


def perturbed(layer, seed=0, scale=0.05):
    """Random weights on top of the initial ones: zero-initialised layers (RAVE's last one) then matter too."""
    rng = np.random.default_rng(seed)
    for w in layer.trainable_weights:
        w.assign(keras.ops.convert_to_numpy(w) + rng.normal(0, scale, w.shape).astype("float32"))
    return layer


def make(name):
    cls, kwargs = TINY[name]
    return perturbed(cls(sample_rate=RATE, window_seconds=0.25, seed=1, **kwargs))


def within_tolerance(got, want):
    """The issue's agreement: within 1e-4 of the Keras output's peak."""
    error = np.abs(np.asarray(got) - np.asarray(want)).max()
    assert error <= 1e-4 * np.abs(want).max(), error
    return error


@pytest.mark.parametrize("name", sorted(TINY))
def test_onnx_graphs_compute_what_keras_computes(name, tmp_path):
    model = make(name)
    written = export_onnx(model, tmp_path / "onnx")
    assert sorted(written) == ["decoder", "encoder"]
    exported = OnnxVAE(tmp_path / "onnx", threads=1)
    meta = exported.metadata
    assert (exported.sample_rate, exported.window, exported.hop) == (RATE, 750, 375)
    assert exported.latent_shape == tuple(model.latent_shape) and meta["model_class"] == type(model).__name__
    assert json.loads(meta["outputs"]) == ["audio"] and json.loads(meta["inputs"]) == ["z"]
    encoder_meta = exported.encoder.get_modelmeta().custom_metadata_map
    assert json.loads(encoder_meta["outputs"]) == ["z_mean", "z_scale"]
    assert [i.name for i in exported.encoder.get_inputs()] == ["audio"]

    rng = np.random.default_rng(1)
    x = (0.3 * rng.standard_normal((3, model.window))).astype("float32")  # a batch of 3: the batch axis is dynamic
    z = rng.standard_normal((2,) + tuple(model.latent_shape)).astype("float32")
    within_tolerance(exported.reconstruct(x), model.reconstruct(x))
    within_tolerance(exported.decode(z), keras.ops.convert_to_numpy(model.to_audio(model.decode(z))))
    z_mean, z_log_var = (keras.ops.convert_to_numpy(t) for t in model.encode(x))
    mean, scale = exported.encode(x)
    within_tolerance(mean, z_mean)
    within_tolerance(scale, np.exp(0.5 * z_log_var))


def test_streaming_through_onnxruntime_equals_keras_offline(tmp_path):
    from kvae.inference.stream import Reconstructor
    from kvae.inference import reconstruct_audio

    model = make("conv1d")
    export_onnx(model, tmp_path / "onnx")
    signal = (0.2 * np.random.default_rng(2).standard_normal(2 * RATE)).astype("float32")
    stream = Reconstructor(OnnxVAE(tmp_path / "onnx"))
    out = np.concatenate([stream.push(signal[i:i + 100]) for i in range(0, len(signal), 100)] + [stream.finish()])
    within_tolerance(out[stream.latency_samples:], reconstruct_audio(model, signal))


def test_mel_export_is_refused_on_one_line(tmp_path, capsys):
    model = MelVAE(sample_rate=RATE, window_seconds=0.25, channels=[4, 8], latent_dim=4, n_mels=16)
    model.save(tmp_path / "mel.keras")
    assert cli.main(["export", str(tmp_path / "mel.keras"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kvae: error: kvae export: MelVAE cannot be exported to ONNX: ") and "\n" not in err
    assert "complex FFTs" in err and "Griffin-Lim" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(KvaeError, match="MelVAE cannot be exported"):
        export_onnx(model, tmp_path / "out")


def test_the_vocos_vae_is_refused_on_one_line_and_the_exporter_prints_nothing(tmp_path, capfd, monkeypatch):
    from kvae.models import VocosVAE

    model = VocosVAE(sample_rate=RATE, window_seconds=0.25, n_fft=64, hop=16, width=8, encoder_blocks=1,
                     decoder_blocks=1, latent_dim=4)
    with pytest.raises(KvaeError, match="VocosVAE cannot be exported to ONNX: .*complex FFTs") as info:
        export_onnx(model, tmp_path / "out")
    assert "\n" not in str(info.value)
    monkeypatch.setattr("kvae.export.NOT_EXPORTABLE", {})  # the exporter's own refusal: one line, no graph dump
    with pytest.raises(KvaeError, match="the ONNX exporter failed on encoder.onnx: .*STFT"):
        export_onnx(model, tmp_path / "out2")
    out, err = capfd.readouterr()
    assert "Torch IR graph" not in out + err


def test_the_mel_refusal_is_what_the_exporter_says(tmp_path, monkeypatch):
    """Without the refusal the exporter itself fails on the STFT: one line, and no graph left behind."""
    monkeypatch.setattr("kvae.export.NOT_EXPORTABLE", {})
    model = MelVAE(sample_rate=RATE, window_seconds=0.25, channels=[4, 8], latent_dim=4, n_mels=16)
    with pytest.raises(KvaeError, match="the ONNX exporter failed on encoder.onnx: .*STFT") as info:
        export_onnx(model, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".kvae-export.json"]


def test_export_needs_the_torch_backend(tmp_path, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(KvaeError, match="needs the torch backend") as info:
        export_onnx(make("fc"), tmp_path / "out")
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


def test_export_command_with_a_prior_writes_its_cached_step(tmp_path, capsys):
    run = tmp_path / "run"
    model = make("conv1d")
    (run / "prior").mkdir(parents=True)
    model.save(run / "model.keras")
    (run / "config.json").write_text("{}")
    prior = perturbed(LatentPrior(latent_dim=4, context_frames=8, width=8, components=3), seed=3, scale=0.2)
    prior.set_statistics(np.linspace(-0.5, 0.5, 4), np.linspace(0.5, 2.0, 4))
    prior.save(run / "prior" / "prior.keras")
    out = tmp_path / "onnx"
    assert cli.main(["export", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "prior_step.onnx" in printed and "window 750, hop 375, latent [47, 4]" in printed
    assert sorted(p.name for p in out.iterdir()) == [".kvae-export.json", "decoder.onnx", "encoder.onnx",
                                                     "prior_step.onnx"]

    session = ort.InferenceSession(str(out / "prior_step.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert (meta["frames_per_window"], meta["hop_frames"], meta["frame_hop_samples"]) == ("47", "23", str(23 * 16))
    states = [np.zeros([2] + shape, np.float32) for shape in json.loads(meta["state_shapes"])]
    frame = np.tile(np.asarray(json.loads(meta["start_frame"]), np.float32), (2, 1))
    np.testing.assert_allclose(frame[0], prior.denormalize(np.zeros((1, 4)))[0], atol=1e-6)
    stepper = prior.stepper(2)
    normalised = np.zeros((2, 4), np.float32)
    rng = np.random.default_rng(4)
    for _ in range(12):  # past the receptive field, so the cached states wrap
        weights, means, scales, *states = session.run(None, {"frame": frame, **{f"state_{i}": s
                                                                                 for i, s in enumerate(states)}})
        want_w, want_m, want_s = stepper.push(normalised)
        within_tolerance(weights, want_w)
        within_tolerance(means, prior.denormalize(want_m))  # the graph's mixture is in latent units
        within_tolerance(scales, want_s * keras.ops.convert_to_numpy(prior.latent_std))
        normalised = rng.standard_normal((2, 4)).astype(np.float32)
        frame = prior.denormalize(normalised)

    # The same folder again is fine (it is kvae export's); a run folder or a folder of other files is not.
    assert cli.main(["export", str(run), "--out", str(out), "--no-prior"]) == 0
    capsys.readouterr()
    for target, word in ((run, "is a run folder"), (run / "prior", "was not written by kvae export")):
        assert cli.main(["export", str(run), "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert word in err and "\n" not in err


def docs_decoder_script():
    page = (ROOT / "docs" / "guides" / "export.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(# decode\.py.*?)```", page, flags=re.S)
    assert len(blocks) == 1, "docs/guides/export.md holds one `# decode.py` example"
    return blocks[0]


def test_docs_decoder_script_runs_where_keras_cannot_be_imported(tmp_path):
    model = make("conv1d")
    export_onnx(model, tmp_path / "onnx")
    stubs = tmp_path / "stubs"
    for name in ("keras", "kvae", "torch", "tensorflow", "jax"):  # each import raises, as if not installed
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    script = tmp_path / "decode.py"
    script.write_text(docs_decoder_script(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(stubs)}
    probe = subprocess.run([sys.executable, "-c", "import keras"], env=env, cwd=tmp_path, capture_output=True,
                           text=True)
    assert probe.returncode != 0 and "keras is not installed here" in probe.stderr
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "onnx"), "1.3", str(tmp_path / "piece.wav")],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1.3 s at 3000 Hz" in result.stdout
    with wave.open(str(tmp_path / "piece.wav")) as f:
        assert (f.getframerate(), f.getnchannels(), f.getnframes()) == (RATE, 1, int(1.3 * RATE))
        audio = np.frombuffer(f.readframes(f.getnframes()), "<i2")
    assert np.abs(audio).max() > 0
