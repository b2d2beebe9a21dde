"""Conditioning (issue 35): labels per recording (metadata, file, CSV), `ConditionedPrior` and
`ConditionedChunkPrior` (saved, stepped, guided, learning their labels), a conditioned `kvae prior fit` (resumed)
and `kvae generate --condition`, and the benchmark's smoke run."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import kvae
from audio import sine
from kvae import cli
from kvae.data import prepare, read_audio, write_wav
from kvae.errors import KvaeError
from model_checks import StopAfter

RATE = 3000
ROOT = Path(__file__).resolve().parents[1]
VAE = {"data": {"sample_rate": RATE, "window_seconds": 0.25, "windows_per_recording": 2, "batch_size": 8},
       "model": {"type": "conv1d", "channels": [8, 16], "latent_dim": 4},
       "train": {"epochs": 1, "steps_per_epoch": 2, "n_samples": 0, "verbose": 0}}
PRIOR = {"prior": {"context_seconds": 0.2, "width": 8, "components": 2, "condition": "ensemble"},
         "gmm": {"components": 2},
         "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 4, "max_seconds": 24.0, "verbose": 0}}


@pytest.fixture(scope="module")
def vae_run(embedded, tmp_path_factory):
    """A tiny trained conv1d run on the embedded corpus, without a prior."""
    run = tmp_path_factory.mktemp("cond-vae") / "run"
    kvae.fit(VAE, run=run, verbose=False)
    return run


@pytest.fixture(scope="module")
def corpus(embedded):
    return prepare(None, sample_rate=RATE)


def out(tensor):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(tensor))


def fresh(vae_run, tmp_path):
    shutil.copytree(vae_run, tmp_path / "run")
    return tmp_path / "run"


# ---------------------------------------------------------------- labels of recordings


def test_labels_from_metadata_file_and_csv(corpus, tmp_path):
    from kvae.data.labels import normalize_condition, recording_labels

    labels, notes = recording_labels(corpus, "ensemble")
    assert notes == [] and set(labels) == {e.key for e in corpus.entries}
    assert all(labels[e.key] == e.metadata["ensemble"] for e in corpus.entries)
    assert recording_labels(corpus, "file")[0] == {e.key: e.key for e in corpus.entries}
    with pytest.raises(KvaeError, match="--condition colour: not a metadata column .*composer.*ensemble") as info:
        recording_labels(corpus, "colour")
    assert "\n" not in str(info.value)

    first, second, third = (e.key for e in corpus.entries[:3])
    table = tmp_path / "labels.csv"  # by key, by file name with a suffix, a row for no recording, one unlabelled
    table.write_text(f"file,label\n{first},fast\nsub/{second}.wav,slow\nnothing.wav,fast\n{third},\n")
    labels, notes = recording_labels(corpus, str(table))
    assert labels[first] == "fast" and labels[second] == "slow" and labels[third] is None
    assert sum(v is not None for v in labels.values()) == 2
    assert notes == ["1 rows of labels.csv name no recording of the data (first: nothing.wav)"]
    assert normalize_condition("labels.csv") == str(Path("labels.csv").resolve())
    (tmp_path / "bad.csv").write_text("name,label\na,b\n")
    for path, words in ((tmp_path / "bad.csv", "expected columns file,label"),
                        (tmp_path / "none.csv", "label CSV not found")):
        with pytest.raises(KvaeError, match=words):
            recording_labels(corpus, str(path))


def test_a_folder_has_file_labels_but_no_metadata(tmp_path):
    from kvae.data.labels import recording_labels

    folder = tmp_path / "music"
    for name, freq in (("a", 220), ("b", 330)):
        write_wav(folder / "songs" / f"{name}.wav", sine(freq, 1.0, RATE, 0.3), RATE)
    corpus = prepare(folder, sample_rate=RATE, cache_dir=tmp_path / "cache")
    assert recording_labels(corpus, "file")[0] == {"songs/a": "songs/a", "songs/b": "songs/b"}
    (tmp_path / "labels.csv").write_text("file,label\na.wav,low\nsongs/b.wav,high\n")
    assert recording_labels(corpus, str(tmp_path / "labels.csv"))[0] == {"songs/a": "low", "songs/b": "high"}
    with pytest.raises(KvaeError, match="the data has no metadata .*--condition file or a CSV"):
        recording_labels(corpus, "composer")


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("kind", ["conv", "transformer"])
def test_conditioned_prior_steps_saves_loads_and_guides(kind, tmp_path):
    from kvae.models import ConditionedPrior
    from kvae.models.conditioned_prior import conditioned_stepper

    prior = ConditionedPrior(3, labels=["a", "b"], kind=kind, context_frames=12, width=8, components=2)
    rng = np.random.default_rng(0)
    for w in prior.trainable_weights:  # away from the zero-initialised head
        w.assign((0.3 * rng.normal(size=w.shape)).astype("float32"))
    frames = rng.normal(size=(2, 12, 3)).astype("float32")
    ids = prior.label_ids(["b", None])
    stepper = prior.stepper(2, ids)
    for t in range(12):
        got = stepper.push(frames[:, t])
    for a, b in zip(got, prior.next_distribution(frames, ids)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    plain = out(prior(frames))  # frames alone: unconditional (id 0)
    np.testing.assert_allclose(plain, out(prior((frames, np.zeros(2, "int32")))), atol=1e-6)
    assert not np.allclose(plain, out(prior((frames, np.ones(2, "int32")))))

    guided = conditioned_stepper(prior, 2, ["b", "a"], guidance=1.0)
    extrapolated = conditioned_stepper(prior, 2, ["b", "a"], guidance=3.0)
    unconditional = conditioned_stepper(prior, 2, ["b", "a"], guidance=0.0)
    for t in range(5):
        one, three, zero = (s.push(frames[:, t]) for s in (guided, extrapolated, unconditional))
    plain_step = prior.stepper(2)
    for t in range(5):
        none = plain_step.push(frames[:, t])
    np.testing.assert_allclose(zero[1], none[1], rtol=1e-4, atol=1e-5)  # guidance 0 is the unconditional prior
    np.testing.assert_allclose(three[1], none[1] + 3 * (one[1] - none[1]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(three[0].sum(axis=-1), 1.0, rtol=1e-6)

    prior.save(tmp_path / "prior.keras")
    loaded = kvae.load(tmp_path / "prior.keras", compile=False)
    assert type(loaded) is ConditionedPrior and loaded.labels == ["a", "b"]
    np.testing.assert_allclose(out(loaded((frames, ids))), out(prior((frames, ids))), atol=1e-6)
    with pytest.raises(KvaeError, match=r"condition: unknown value 'c' \(known: a, b\)") as info:
        conditioned_stepper(loaded, 2, "c")
    assert "\n" not in str(info.value)
    with pytest.raises(KvaeError, match="needs distinct labels"):
        ConditionedPrior(3, labels=[])


def test_a_conditioned_prior_learns_its_labels():
    """Sequences near +1.5 labelled up and near -1.5 labelled down: each label's pieces stay on its side."""
    import keras

    from kvae.inference.prior_data import LatentCrops
    from kvae.models import ConditionedPrior
    from kvae.models.conditioned_prior import conditioned_stepper
    from kvae.models.latent_prior import sample_mixture
    from kvae.training.loop import seed_everything

    seed_everything(0)
    rng = np.random.default_rng(0)
    sequences = [(side * 1.5 + 0.3 * rng.standard_normal((200, 2))).astype("float32") for side in (1, -1, 1, -1)]
    prior = ConditionedPrior(2, labels=["up", "down"], context_frames=8, width=16, components=2)
    crops = LatentCrops(sequences, 16, 16, 40, seed=0, labels=[1, 2, 1, 2], label_dropout=0.1)
    assert isinstance(crops[0][0], tuple) and set(np.unique(crops[0][0][1])) <= {0, 1, 2}
    prior.compile(optimizer=keras.optimizers.Adam(3e-3))
    prior.fit(crops, epochs=3, verbose=0)
    for label, side in (("up", 1), ("down", -1)):
        stepper = conditioned_stepper(prior, 4, label)
        rngs = [np.random.default_rng([0, i]) for i in range(4)]
        mixture, frames = stepper.push(np.zeros((4, 2), np.float32)), []
        for _ in range(30):
            frames.append(sample_mixture(*mixture, rngs))
            mixture = stepper.push(frames[-1])
        assert side * np.mean(frames) > 1.0, (label, np.mean(frames))


def test_conditioned_chunk_prior_saves_loads_and_guides_towards_the_label(tmp_path):
    """With one Euler step a chunk is `x0 + v`: a labelled piece's guidance g gives `x0 + v_0 + g (v_label - v_0)`
    with its context kept (v_0: id 0, unconditional); an unlabelled piece's leans towards its context instead."""
    import keras

    from kvae.models.chunk_prior import ConditionedChunkPrior
    from kvae.models.conditioned_prior import conditioned_stepper

    prior = ConditionedChunkPrior(2, labels=["a", "b"], context_frames=4, chunk_frames=6, width=16, layers=3,
                                  flow_steps=1)
    rng = np.random.default_rng(0)
    for w in prior.trainable_weights:  # away from the zero-initialised output and gates
        w.assign((0.3 * rng.normal(size=w.shape)).astype("float32"))
    rngs = lambda: [np.random.default_rng([3, i]) for i in range(2)]  # noqa: E731
    context = rng.normal(size=(2, 4, 2)).astype("float32")
    x0 = np.stack([r.standard_normal((6, 2)) for r in rngs()]).astype("float32")
    s, has = np.zeros((2, 1), np.float32), np.ones((2, 1), np.float32)
    v = lambda ids, has=has: out(prior.velocity(x0, s, context, has, ids=np.asarray(ids, "int32")))  # noqa: E731
    np.testing.assert_allclose(out(prior.velocity(x0, s, context, has)), v([0, 0]), atol=1e-6)  # None: id 0
    assert not np.allclose(v([0, 0]), v([2, 2]))  # the label reaches the velocity
    ids = prior.label_ids(["b", None])
    np.testing.assert_allclose(prior.draw_chunk(context, rngs(), ids=ids), x0 + v(ids), atol=1e-5)
    guided = prior.draw_chunk(context, rngs(), guidance=3.0, ids=ids)
    np.testing.assert_allclose(guided[0], (x0 + v([0, 0]) + 3.0 * (v(ids) - v([0, 0])))[0], atol=1e-5)
    towards_context = x0 + v([0, 0], 0 * has) + 3.0 * (v([0, 0]) - v([0, 0], 0 * has))
    np.testing.assert_allclose(guided[1], towards_context[1], atol=1e-5)  # no label: guided towards its context

    stepper = conditioned_stepper(prior, 2, ["b", None], guidance=3.0)  # what kvae generate reaches
    stepper.history = context
    np.testing.assert_allclose(stepper.next_frame(rngs()), guided[:, 0], atol=1e-5)
    prior.save(tmp_path / "prior.keras")
    loaded = kvae.load(tmp_path / "prior.keras", compile=False)
    assert type(loaded) is ConditionedChunkPrior and loaded.labels == ["a", "b"]
    np.testing.assert_allclose(loaded.draw_chunk(context, rngs(), guidance=3.0, ids=ids), guided, atol=1e-5)
    with pytest.raises(KvaeError, match=r"^condition: unknown value 'c' \(known: a, b\)$"):
        conditioned_stepper(loaded, 2, "c")
    keras.backend.clear_session()


def test_a_conditioned_chunk_prior_learns_its_labels():
    """Sequences near +1.5 labelled up and near -1.5 labelled down: each label's chunks, drawn with no
    context, land on its side."""
    import keras

    from kvae.inference.prior_data import LatentCrops
    from kvae.models.chunk_prior import ConditionedChunkPrior
    from kvae.training.loop import seed_everything

    seed_everything(0)
    rng = np.random.default_rng(0)
    sequences = [(side * 1.5 + 0.3 * rng.standard_normal((200, 2))).astype("float32") for side in (1, -1, 1, -1)]
    prior = ConditionedChunkPrior(2, labels=["up", "down"], context_frames=4, chunk_frames=8, width=16, layers=2,
                                  context_dropout=0.5)  # half the crops learn to start a piece
    crops = LatentCrops(sequences, prior.crop_frames, 16, 40, seed=0, labels=[1, 2, 1, 2], label_dropout=0.1)
    prior.compile(optimizer=keras.optimizers.Adam(3e-3))
    prior.fit(crops, epochs=5, verbose=0)
    empty = np.zeros((6, 0, 2), np.float32)
    for label, side in (("up", 1), ("down", -1)):
        chunk = prior.draw_chunk(empty, [np.random.default_rng([0, i]) for i in range(6)],
                                 ids=prior.label_ids([label] * 6))
        assert (side * chunk.mean(axis=(1, 2)) > 0.7).all(), (label, chunk.mean(axis=(1, 2)))  # every piece


# ---------------------------------------------------------------- fitting and generating


def test_interrupted_conditioned_prior_fit_resumes(vae_run, tmp_path, capsys):
    from kvae.models import ConditionedPrior

    run = fresh(vae_run, tmp_path)
    config = {**PRIOR, "prior": {**PRIOR["prior"], "condition": "file"}, "train": {**PRIOR["train"], "epochs": 2}}
    with pytest.raises(KeyboardInterrupt):
        kvae.fit_prior(run, config=config, verbose=False, callbacks=[StopAfter(0)])
    folder = run / "prior"
    assert (folder / "backup").exists() and not (folder / "prior.keras").exists()
    with np.load(folder / "latents.npz") as saved:  # each sequence's recording is kept with the frames
        keys = [str(k) for k in saved["train_keys"]]
    assert len(keys) == 12 and len(set(keys)) == 12
    with pytest.raises(KvaeError, match="--condition: .* holds a fit interrupted with condition 'file'"):
        kvae.fit_prior(run, condition="ensemble", verbose=False)
    prior, history = kvae.fit_prior(run, verbose=True)  # the saved config (its condition) is used
    assert "condition:  file, 12 labels over 12 training recordings" in capsys.readouterr().out
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"]).all()
    assert isinstance(prior, ConditionedPrior) and prior.labels == sorted(keys)
    loaded = kvae.load(folder / "prior.keras", compile=False)
    assert loaded.get_config() == prior.get_config()
    assert json.loads((folder / "config.json").read_text())["prior"]["condition"] == "file"
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from kvae.export import export_onnx

    written = export_onnx(run, tmp_path / "onnx", verbose=True)  # the VAE is exported, the prior refused
    assert set(written) == {"encoder", "decoder"}
    assert "note: prior not exported: prior_step.onnx has no label input" in capsys.readouterr().out


def test_cli_conditioned_fit_and_generate(vae_run, tmp_path, capsys):
    run = fresh(vae_run, tmp_path)
    config = tmp_path / "prior.json"
    config.write_text(json.dumps({**PRIOR, "prior": {k: v for k, v in PRIOR["prior"].items() if k != "condition"}}))
    assert cli.main(["prior", "fit", str(run), "--config", str(config), "--condition", "ensemble",
                     "--set", "prior.kind=transformer"]) == 0
    assert "condition:  ensemble, 7 labels over 12 training recordings" in capsys.readouterr().out
    labels = kvae.load(run / "prior" / "prior.keras", compile=False).labels
    assert "Solo Piano" in labels
    out = tmp_path / "piece.wav"
    assert cli.main(["generate", str(run), "--seconds", "1.5", "--condition", "Solo Piano", "--guidance", "2",
                     "-n", "2", "--out", str(out)]) == 0
    assert "condition Solo Piano, guidance 2" in capsys.readouterr().out
    pieces = [read_audio(tmp_path / f"piece_{i}.wav")[0] for i in range(2)]
    assert all(p.shape == (int(1.5 * RATE),) and np.isfinite(p).all() for p in pieces)
    a = kvae.generate(run, seconds=1.0, condition="Solo Piano", seed=1)
    np.testing.assert_array_equal(a, kvae.generate(run, seconds=1.0, condition="Solo Piano", seed=1))
    assert kvae.generate(run, seconds=1.0, seed=1).shape == a.shape  # unconditional from the same prior
    for argv, words in ((["--condition", "Kazoo"], f"condition: unknown value 'Kazoo' (known: {', '.join(labels)})"),
                        (["--condition", "Solo Piano", "--prior", "gmm"], "condition: needs the run's autoregressive"),
                        (["--condition", "Solo Piano", "--guidance", "-1"], "guidance")):
        assert cli.main(["generate", str(run), "--seconds", "1", "--out", str(tmp_path / "x.wav"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"kvae: error: {words}") and err.count("\n") == 1, err
    assert not (tmp_path / "x.wav").exists()
    bare = tmp_path / "bare"
    shutil.copytree(vae_run, bare)
    assert cli.main(["prior", "fit", str(bare), "--config", str(config), "--condition", "colour"]) == 2
    assert "--condition colour: not a metadata column" in capsys.readouterr().err
    assert not (bare / "prior" / "latents.npz").exists()  # refused before encoding anything


def test_conditioned_chunk_prior_fits_and_generates_on_musicnet_labels(vae_run, tmp_path, capsys):
    """`kvae prior fit RUN --condition ensemble` with a chunk prior, then `kvae generate --condition`."""
    from kvae.models.chunk_prior import ConditionedChunkPrior

    run = fresh(vae_run, tmp_path)
    config = tmp_path / "prior.json"
    config.write_text(json.dumps({"prior": {"kind": "chunk", "context_seconds": 0.1, "chunk_seconds": 0.2,
                                            "width": 8, "layers": 2, "flow_steps": 4},
                                  "train": {**PRIOR["train"], "steps_per_epoch": 3}}))  # the zero-initialised
    # output and gates pass nothing back at the first step: the label's embedding is reached from the third
    assert cli.main(["prior", "fit", str(run), "--config", str(config), "--condition", "ensemble"]) == 0
    assert "condition:  ensemble, 7 labels over 12 training recordings" in capsys.readouterr().out
    prior = kvae.load(run / "prior" / "prior.keras", compile=False)
    assert type(prior) is ConditionedChunkPrior and "Solo Piano" in prior.labels
    out_path = tmp_path / "piece.wav"
    assert cli.main(["generate", str(run), "--seconds", "1.5", "--condition", "Solo Piano", "--guidance", "2",
                     "--out", str(out_path)]) == 0
    assert "condition Solo Piano, guidance 2" in capsys.readouterr().out
    assert read_audio(out_path)[0].shape == (int(1.5 * RATE),)
    a = kvae.generate(run, seconds=1.0, condition="Solo Piano", seed=1)
    np.testing.assert_array_equal(a, kvae.generate(run, seconds=1.0, condition="Solo Piano", seed=1))
    assert not np.array_equal(a, kvae.generate(run, seconds=1.0, condition="String Quartet", seed=1))
    assert cli.main(["generate", str(run), "--seconds", "1", "--condition", "Kazoo",
                     "--out", str(tmp_path / "x.wav")]) == 2
    assert capsys.readouterr().err.startswith("kvae: error: condition: unknown value 'Kazoo' (known: ")
    assert not (tmp_path / "x.wav").exists()


def test_unconditioned_prior_refuses_a_condition(vae_run, tmp_path):
    from kvae.inference.latents import LatentLayout
    from kvae.models import LatentPrior

    layout = LatentLayout(kvae.load(vae_run, compile=False))
    path = tmp_path / "prior.keras"
    LatentPrior(layout.channels, context_frames=4, width=8, components=2,
                latent_shape=list(layout.latent_shape)).save(path)
    with pytest.raises(KvaeError, match="this prior was fitted without a condition"):
        kvae.generate(vae_run, seconds=1.0, ar_prior=path, condition="Solo Piano")
    with pytest.raises(KvaeError, match="guidance: only with a prior fitted with a condition"):
        kvae.generate(vae_run, seconds=1.0, ar_prior=path, guidance=2.0)
    assert kvae.generate(vae_run, seconds=1.0, ar_prior=path).shape == (1, RATE)


# ---------------------------------------------------------------- the benchmark


@pytest.mark.slow
def test_condition_benchmark_quick_run(embedded, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("condition_accuracy", ROOT / "benchmarks" / "condition_accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "generated pieces" in out and "held-out real windows" in out and "target:" in out
    summary = json.loads((tmp_path / "condition_accuracy.json").read_text())
    assert summary["condition"] == "ensemble" and len(summary["labels"]) >= 2
    assert len(list(tmp_path.glob("piece-*.wav"))) == len(summary["labels"])
