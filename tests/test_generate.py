"""Long-form generation: latent frames in time, `kvae prior fit` (run folder, resume), `kvae generate`
(reproducible per seed, streamed within bounded memory, primed), and their CLI."""

import gc
import hashlib
import json
import shutil
import tracemalloc

import numpy as np
import pytest

import kvae
from audio import sine
from kvae import cli
from kvae.data import WavStreamWriter, read_audio, write_wav
from kvae.errors import KvaeError
from model_checks import StopAfter

RATE = 3000
DATA = {"sample_rate": RATE, "window_seconds": 0.25, "windows_per_recording": 2, "batch_size": 8}
TRAIN = {"epochs": 1, "steps_per_epoch": 2, "n_samples": 0, "verbose": 0}
VAES = {
    "conv1d": {"data": DATA, "model": {"type": "conv1d", "channels": [8, 16], "latent_dim": 4}, "train": TRAIN},
    "fc": {"data": DATA, "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 32, "latent_dim": 4},
           "train": TRAIN},
}
PRIOR = {"prior": {"context_seconds": 0.2, "width": 8, "components": 2}, "gmm": {"components": 2},
         "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 4, "max_seconds": 24.0, "verbose": 0}}


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def vae_runs(embedded, tmp_path_factory):
    """A tiny trained run per latent kind (sequence: conv1d; vector: fc), without a prior."""
    root = tmp_path_factory.mktemp("vae-runs")
    for name, config in VAES.items():
        kvae.fit(config, run=root / name, verbose=False)
    return root


@pytest.fixture(scope="module")
def runs(vae_runs, tmp_path_factory):
    """The same runs with their priors fitted (one step)."""
    root = tmp_path_factory.mktemp("prior-runs")
    for name in VAES:
        shutil.copytree(vae_runs / name, root / name)
        kvae.fit_prior(root / name, config=PRIOR, verbose=False)
    return root


def fresh_run(vae_runs, tmp_path, name="conv1d"):
    shutil.copytree(vae_runs / name, tmp_path / name)
    return tmp_path / name


# ---------------------------------------------------------------- latent frames and streaming pieces


def test_layout_streams_back_what_reconstruct_audio_gives(runs):
    from kvae.training import reconstruct_audio
    from kvae.inference.latents import FrameWindows, LatentLayout, StreamDecoder

    audio = sine(220, 2.0, RATE, 0.3)
    for name in VAES:
        model = kvae.load(runs / name, compile=False)
        layout = LatentLayout(model)
        windows, frames = layout.encode(model, audio)
        assert frames.shape == (layout.frames_for(len(windows)), 4)
        centre = (layout.frames_per_window - 1) // 2  # each window's central frame is its own
        np.testing.assert_array_equal(frames[np.arange(len(windows)) * layout.hop_frames + centre],
                                      windows.reshape(len(windows), -1, 4)[:, centre])
        assembler = FrameWindows(layout, 1)
        assembled = [w for f in frames if (w := assembler.push(f[None])) is not None]
        np.testing.assert_array_equal(np.concatenate(assembled), layout.window_latents(frames))
        decoder = StreamDecoder(model, layout, 1, len(audio))
        chunks = [decoder.push(w[None]) for w in windows]
        assert all(c.shape[1] <= layout.hop_samples for c in chunks[:-1])
        out = np.concatenate(chunks, axis=1)[0]
        assert out.shape == audio.shape
        if not layout.sequence:  # the same windows, hop and crossfade as reconstruct_audio
            np.testing.assert_allclose(out, reconstruct_audio(model, audio), atol=1e-6)


def test_wav_stream_writer_is_atomic_and_refuses_inputs(tmp_path):
    x = np.linspace(-1.5, 1.5, 1000).astype("float32")
    with WavStreamWriter(tmp_path / "a.wav", 8000) as writer:
        for start in range(0, 1000, 300):
            writer.write(x[start:start + 300])
    audio, rate = read_audio(tmp_path / "a.wav")
    assert rate == 8000 and np.array_equal(audio, np.clip(x, -1, 1))
    with pytest.raises(RuntimeError):
        with WavStreamWriter(tmp_path / "b.wav", 8000) as writer:
            writer.write(x)
            raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]  # no partial file, no temporary left
    with pytest.raises(KvaeError, match="input"):
        WavStreamWriter(tmp_path / "a.wav", 8000, inputs=[tmp_path / "a.wav"])


# ---------------------------------------------------------------- kvae prior fit


def test_prior_fit_writes_its_folder_and_keeps_the_run_model(vae_runs, tmp_path):
    run = fresh_run(vae_runs, tmp_path)
    before = digest(run / "model.keras")
    prior, history = kvae.fit_prior(run, config=PRIOR, verbose=False)
    folder = run / "prior"
    for name in ("config.json", "latents.npz", "model.keras", "prior.keras", "history.csv", "loss_curves.png"):
        assert (folder / name).is_file(), name
    assert not (folder / "backup").exists()
    assert digest(run / "model.keras") == before  # the input model is never rewritten
    assert json.loads((folder / "config.json").read_text())["prior"]["width"] == 8
    assert set(history) >= {"loss", "val_loss"} and np.isfinite(history["loss"]).all()
    with_gmm = kvae.load(folder, compile=False)
    assert with_gmm.latent_gmm is not None and kvae.load(run, compile=False).latent_gmm is None
    assert with_gmm.sample(2, seed=0, prior="gmm").shape == (2, with_gmm.window)
    loaded = kvae.load(folder / "prior.keras", compile=False)
    assert loaded.get_config() == prior.get_config()
    with pytest.raises(KvaeError, match="already holds a fitted prior"):
        kvae.fit_prior(run, config=PRIOR, verbose=False)


def test_interrupted_prior_fit_resumes(vae_runs, tmp_path):
    run = fresh_run(vae_runs, tmp_path)
    config = {**PRIOR, "train": {**PRIOR["train"], "epochs": 2, "rollout": 0.3}}  # rollout: its seeds resume too
    with pytest.raises(KeyboardInterrupt):
        kvae.fit_prior(run, config=config, verbose=False, callbacks=[StopAfter(0)])
    folder = run / "prior"
    assert (folder / "backup").exists() and not (folder / "prior.keras").exists()
    assert (folder / "best.weights.h5").is_file()  # epoch 0 is the best so far (train.keep_best)
    latents = (folder / "latents.npz").stat().st_mtime_ns
    prior, history = kvae.fit_prior(run, verbose=False)  # the saved config is used
    assert len(history["loss"]) == 1 and prior.rollout == 0.3  # only epoch 1 ran again
    rows = (folder / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]
    assert (folder / "latents.npz").stat().st_mtime_ns == latents  # the encoded latents were reused
    assert (folder / "prior.keras").is_file() and not (folder / "backup").exists()
    assert not (folder / "best.weights.h5").exists()


def test_bad_prior_settings_are_one_line_errors(vae_runs, tmp_path):
    from kvae.training import load_prior_config

    for config, word in (({"prior": {"kind": "rnn"}}, "prior.kind"), ({"train": {"epochs": 0}}, "train.epochs"),
                         ({"prior": {"widht": 3}}, "prior.widht"), ({"model": {}}, "model"),
                         # the experiment config's checker and bounds table (kvae.config.Schema, kvae.bounds)
                         ({"train": {"learning_rate": float("nan")}}, "train.learning_rate: must be a finite"),
                         ({"prior": {"context_seconds": 0}}, "prior.context_seconds: must be above 0"),
                         ({"train": {"keep_best": 1}}, "train.keep_best: expected a boolean"),
                         ({"gmm": {"covariance": "tied"}}, "gmm.covariance: must be one of auto, full, diag"),
                         ({"train": {"verbose": 3}}, "train.verbose: must be auto, 0, 1 or 2"),
                         ({"prior": 3}, "prior: expected a table")):
        with pytest.raises(KvaeError, match=word) as info:
            load_prior_config(config)
        assert "\n" not in str(info.value)
    with pytest.raises(KvaeError, match="no model.keras"):
        kvae.fit_prior(tmp_path, verbose=False)


# ---------------------------------------------------------------- kvae generate


@pytest.mark.parametrize("name", sorted(VAES))
def test_generation_is_reproducible_per_seed(runs, name):
    for prior in ("ar", "gmm", "none"):
        a = kvae.generate(runs / name, seconds=2.0, prior=prior, seed=3)
        assert a.shape == (1, 2 * RATE) and a.dtype == np.float32 and np.isfinite(a).all(), prior
        assert np.abs(a).max() > 0, prior
        np.testing.assert_array_equal(a, kvae.generate(runs / name, seconds=2.0, prior=prior, seed=3))
        assert not np.allclose(a, kvae.generate(runs / name, seconds=2.0, prior=prior, seed=4)), prior
    two = kvae.generate(runs / name, seconds=2.0, seed=3, n=2)
    assert two.shape == (2, 2 * RATE) and not np.allclose(two[0], two[1])


def test_correlated_noise_keeps_unit_variance_and_correlates_consecutive_draws():
    from kvae.inference.generation import CorrelatedNormal

    plain = CorrelatedNormal(np.random.default_rng(5), 0.0)
    np.testing.assert_array_equal(np.stack([plain.standard_normal(3) for _ in range(4)]),
                                  np.random.default_rng(5).standard_normal((4, 3)))  # rho 0: the Generator's
    noisy = CorrelatedNormal(np.random.default_rng(5), 0.9)
    draws = np.stack([noisy.standard_normal(4) for _ in range(20000)])
    assert abs(draws.std() - 1.0) < 0.05  # each draw is still N(0, 1)
    lag1 = np.mean([np.corrcoef(draws[:-1, c], draws[1:, c])[0, 1] for c in range(4)])
    assert abs(lag1 - 0.9) < 0.02
    assert noisy.choice(3, p=[0.0, 1.0, 0.0]) == 1  # everything else is the wrapped Generator's


@pytest.mark.parametrize("name", sorted(VAES))
def test_noise_correlation_changes_only_the_autoregressive_draws(runs, name):
    from kvae.inference.generation import NOISE_CORRELATION

    np.testing.assert_array_equal(kvae.generate(runs / name, seconds=2.0, prior="ar", seed=3),
                                  kvae.generate(runs / name, seconds=2.0, prior="ar", seed=3,
                                                noise_correlation=NOISE_CORRELATION))  # the default
    base = kvae.generate(runs / name, seconds=2.0, prior="ar", seed=3, noise_correlation=0.0)
    smooth = kvae.generate(runs / name, seconds=2.0, prior="ar", seed=3, noise_correlation=0.9)
    assert np.isfinite(smooth).all() and not np.allclose(base, smooth)
    np.testing.assert_array_equal(smooth, kvae.generate(runs / name, seconds=2.0, prior="ar", seed=3,
                                                        noise_correlation=0.9))
    np.testing.assert_array_equal(kvae.generate(runs / name, seconds=2.0, prior="none", seed=3),
                                  kvae.generate(runs / name, seconds=2.0, prior="none", seed=3, noise_correlation=0.9))
    with pytest.raises(KvaeError, match="noise_correlation") as info:
        kvae.generate(runs / name, seconds=2.0, prior="ar", noise_correlation=1.0)
    assert "\n" not in str(info.value)


def test_auto_prior_falls_back_with_a_note(vae_runs, runs, capsys, tmp_path):
    out = kvae.generate(vae_runs / "fc", seconds=1.0, out=tmp_path / "p.wav", verbose=True)
    assert "no fitted prior" in capsys.readouterr().out
    assert read_audio(out[0])[0].shape == (RATE,)
    np.testing.assert_array_equal(kvae.generate(runs / "fc", seconds=1.0, seed=1),
                                  kvae.generate(runs / "fc", seconds=1.0, seed=1, prior="ar"))
    with pytest.raises(KvaeError, match="no fitted prior") as info:
        kvae.generate(vae_runs / "fc", seconds=1.0, prior="ar")
    assert "\n" not in str(info.value)


def _peak_bytes(function):
    gc.collect()
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_long_piece_streams_within_bounded_memory(runs, tmp_path):
    from kvae.inference.generation import _load_run, stream_pieces

    model, prior, _ = _load_run(runs / "fc", "ar")

    def piece(seconds):
        with WavStreamWriter(tmp_path / "piece.wav", RATE) as writer:
            for i, chunk in enumerate(stream_pieces(model, seconds, 1, "ar", prior, seed=0)):
                writer.write(chunk[0])
                if i % 10 == 9:
                    # Each Keras call leaves a little cyclic garbage (a few kB per window survive the young
                    # collections kvae runs: the stepper, the sampler and the writer's checks each add some);
                    # Python frees it in a full collection on its own schedule, which a test session's large heap
                    # postpones. Collecting here measures what the generator keeps, not that schedule.
                    gc.collect()

    piece(1.0)  # trace every code path once
    short, long = _peak_bytes(lambda: piece(10.0)), _peak_bytes(lambda: piece(30.0))
    print("peak bytes, 10-s and 30-s pieces:", short, long)
    assert read_audio(tmp_path / "piece.wav")[0].shape == (30 * RATE,)
    # 20 s more of float32 audio alone would be 240 kB: the streamed piece's peak does not grow with its length
    # (both lengths are past the first seconds, whose one-time allocations made a 2-s piece a moving baseline)
    assert long < short + 60_000, (short, long)


def test_generation_holds_the_same_buffers_at_every_step(runs):
    """A sequence model with the autoregressive prior: what the generator holds never grows."""
    from kvae.inference.generation import _load_run, stream_pieces

    model, prior, _ = _load_run(runs / "conv1d", "ar")

    def held(frame):
        arrays = []
        for value in frame.f_locals.values():
            arrays += value if isinstance(value, (list, tuple)) else [value]
        for name in ("decoder", "assembler", "stepper"):
            obj = frame.f_locals.get(name)
            for value in vars(obj).values() if obj is not None else ():
                arrays += value if isinstance(value, list) else [value]
        return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))

    pieces = stream_pieces(model, 4.0, 2, "ar", prior, seed=0)
    sizes = []
    for chunk in pieces:
        assert chunk.shape[1] <= model.window
        if pieces.gi_frame is not None:
            sizes.append(held(pieces.gi_frame))
    assert len(sizes) > 20 and len(set(sizes[1:])) == 1, sizes


def test_prime_continues_a_recording(runs, tmp_path):
    prime = write_wav(tmp_path / "prime.wav", sine(330, 1.0, 8000, 0.4), 8000)
    for name in VAES:
        a = kvae.generate(runs / name, seconds=3.0, prime=prime, seed=1)[0]
        b = kvae.generate(runs / name, seconds=3.0, prime=prime, seed=2)[0]
        same = np.flatnonzero(a != b)[0]  # both start with the prime, then part
        assert 0.5 * RATE <= same <= 1.0 * RATE, (name, same)
        assert not np.allclose(a[RATE + RATE // 2:], b[RATE + RATE // 2:]), name
    with pytest.raises(KvaeError, match="prime") as info:
        kvae.generate(runs / "fc", seconds=0.5, prime=prime)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("model", [
    {"type": "mel", "latent_dim": 4, "channels": [4, 8], "n_mels": 16, "griffin_lim_iters": 2},
    {"type": "transformer", "frame_size": 64, "d_model": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32,
     "latent_dim": 4},
], ids=["mel", "transformer"])
def test_mel_and_transformer_runs_fit_a_prior_and_generate(embedded, tmp_path, model):
    from kvae.config import load_config
    from kvae.training import build_model

    config = load_config({"data": DATA, "model": model, "train": TRAIN})
    run = tmp_path / "run"
    run.mkdir()
    build_model(config).save(run / "model.keras")  # untrained: the pipeline, not the sound, is under test
    (run / "config.json").write_text(json.dumps(config))
    kvae.fit_prior(run, config=PRIOR, verbose=False)
    for prior in ("ar", "gmm", "none"):
        a = kvae.generate(run, seconds=1.5, prior=prior, seed=0)
        assert a.shape == (1, int(1.5 * RATE)) and np.isfinite(a).all(), prior
        np.testing.assert_array_equal(a, kvae.generate(run, seconds=1.5, prior=prior, seed=0))


# ---------------------------------------------------------------- the CLI


def test_cli_prior_fit_and_generate(vae_runs, tmp_path, capsys):
    run = fresh_run(vae_runs, tmp_path, "fc")
    config = tmp_path / "prior.json"
    config.write_text(json.dumps(PRIOR))
    assert cli.main(["prior", "fit", str(run), "--config", str(config), "--epochs", "1", "--steps-per-epoch", "1",
                     "--set", "prior.kind=transformer", "--pieces", "1", "--piece-seconds", "1"]) == 0
    assert json.loads((run / "prior" / "config.json").read_text())["prior"]["kind"] == "transformer"
    assert read_audio(run / "pieces" / "piece_0.wav")[0].shape == (RATE,)
    out = tmp_path / "piece.wav"
    assert cli.main(["generate", str(run), "--seconds", "1.5", "--seed", "2", "--temperature", "0.8",
                     "--noise-correlation", "0.5", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "prior ar (transformer" in said and "noise correlation 0.5" in said
    assert read_audio(out)[0].shape == (int(1.5 * RATE),)
    assert cli.main(["generate", str(run), "--seconds", "1", "--prime", str(out), "--out", str(out)]) == 2
    assert "input" in capsys.readouterr().err
    assert cli.main(["generate", str(vae_runs / "fc"), "--prior", "gmm", "--out", str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvae: error: prior gmm") and err.count("\n") == 1
    assert cli.main(["prior", "fit", str(run), "--set", "bogus.key=1"]) == 2
    assert "bogus.key" in capsys.readouterr().err


def test_the_default_temperature_is_lower_with_the_autoregressive_prior(runs):
    from kvae.inference.generation import AR_TEMPERATURE

    run = runs / "conv1d"
    default = kvae.generate(run, seconds=1.0, seed=1)
    assert AR_TEMPERATURE == 0.7
    np.testing.assert_array_equal(default, kvae.generate(run, seconds=1.0, seed=1, temperature=0.7))
    assert not np.allclose(default, kvae.generate(run, seconds=1.0, seed=1, temperature=1.0))
    np.testing.assert_array_equal(kvae.generate(run, seconds=1.0, seed=1, prior="none"),  # other priors: 1
                                  kvae.generate(run, seconds=1.0, seed=1, prior="none", temperature=1.0))
