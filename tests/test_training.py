"""kvae.fit end to end on the embedded data: run folder, learning, resuming, the CLI, config errors."""

import csv
import errno
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import kvae
from audio import tone_wav
from backends import backend_env, current_backend, run_on_backend
from kvae import cli
from kvae.config import load_config, parse_set
from kvae.data import read_audio, write_wav
from kvae.errors import KvaeError
from model_checks import StopAfter

TINY = {
    "name": "tiny",
    "data": {"sample_rate": 3000, "window_seconds": 0.25, "windows_per_recording": 4, "val_windows_per_recording": 2,
             "batch_size": 16},
    "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 64, "latent_dim": 8},
    "train": {"epochs": 2, "n_samples": 2, "verbose": 0},
}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fit_writes_the_run_folder(embedded, tmp_path):
    run = tmp_path / "run"
    model, history = kvae.fit(TINY, run=run)
    for name in ("model.keras", "config.json", "history.csv", "loss_curves.png",
                 "samples/sample_0.wav", "samples/sample_0.png", "samples/sample_1.wav"):
        assert (run / name).is_file(), name
    assert not (run / "backup").exists()  # BackupAndRestore cleans up after a finished run
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["hidden_units"] == 64 and saved["data"]["path"] == ""
    assert [int(r["epoch"]) for r in rows(run / "history.csv")] == [0, 1]
    assert set(history) >= {"loss", "reconstruction", "kl", "val_loss", "val_reconstruction", "val_kl"}
    audio, rate = read_audio(run / "samples" / "sample_0.wav")
    assert rate == 3000 and audio.shape == (750,)
    loaded = kvae.load(run)
    assert loaded.sample_rate == 3000
    np.testing.assert_allclose(loaded.sample(2, seed=5), model.sample(2, seed=5), atol=1e-6)
    with pytest.raises(KvaeError, match="already holds a finished model"):
        kvae.fit(TINY, run=run)


def test_training_learns_and_samples_are_not_silent(embedded, tmp_path):
    from kvae.evaluation.metrics import silence_fraction
    from kvae.training import build_model, compile_model, make_datasets

    config = load_config(TINY, {"train": {"epochs": 6}, "data": {"windows_per_recording": 16}})
    _, val, _, _ = make_datasets(config, verbose=False)
    keras.utils.set_random_seed(0)
    untrained = compile_model(build_model(config), config)
    before = untrained.evaluate(val, verbose=0, return_dict=True)["loss"]
    model, history = kvae.fit(config, run=tmp_path / "run")
    after = model.evaluate(val, verbose=0, return_dict=True)["loss"]
    # The negative ELBO is in nats per window; a drop of several hundred is learning, not noise.
    assert after < before - 200, (before, after)
    clips = model.sample(8, seed=0)
    assert silence_fraction(clips, 3000) < 0.5
    assert np.sqrt(np.mean(clips ** 2)) > 1e-3


@pytest.mark.slow
def test_quickstart_samples_are_tonal_not_silent(embedded, tmp_path):
    """The full quickstart (minutes): samples are neither silent nor white noise."""
    from kvae.evaluation.metrics import silence_fraction, spectral_flatness

    model, _ = kvae.fit("quickstart", run=tmp_path / "run", verbose=False)
    clips = model.sample(16, seed=0)
    assert silence_fraction(clips, model.sample_rate) < 0.2
    assert spectral_flatness(clips) < 0.1  # white noise is near 0.5-1 here, the data near 0.01


def test_interrupted_fit_resumes_without_losing_an_epoch(embedded, tmp_path):
    run = tmp_path / "run"
    config = load_config(TINY, {"train": {"epochs": 4}})
    with pytest.raises(KeyboardInterrupt):
        kvae.fit(config, run=run, callbacks=[StopAfter(1)])
    assert (run / "backup").exists() and not (run / "model.keras").exists()
    model, history = kvae.fit(run=run)  # the saved config is used
    assert [int(r["epoch"]) for r in rows(run / "history.csv")] == [0, 1, 2, 3]
    assert len(history["loss"]) == 2  # only epochs 2 and 3 ran again
    assert (run / "model.keras").is_file()


def test_cli_fit_sample_reconstruct(embedded, tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    assert cli.main(["fit", "--config", str(config), "--run", str(run), "--epochs", "1",
                     "--set", "model.latent_dim=4", "--set", "train.verbose=0"]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["latent_dim"] == 4
    out = tmp_path / "samples"
    assert cli.main(["sample", str(run / "model.keras"), "-n", "3", "--seed", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.wav")) == ["sample_0.wav", "sample_1.wav", "sample_2.wav"]
    source = tmp_path / "in.wav"
    t = np.arange(int(44100 * 1.3)) / 44100
    write_wav(source, 0.3 * np.sin(2 * np.pi * 220 * t), 44100)
    target = tmp_path / "out.wav"
    assert cli.main(["reconstruct", str(run), str(source), str(target)]) == 0
    audio, rate = read_audio(target)
    assert rate == 3000 and len(audio) == int(np.ceil(len(t) * 3000 / 44100))
    capsys.readouterr()
    assert cli.main(["sample", str(tmp_path / "nope.keras")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvae: error:") and "nope.keras" in err and err.count("\n") == 1


@pytest.mark.parametrize("items, word", [
    (["model.hidden_layerz=3"], "model.hidden_layerz"),
    (["train.epochs=three"], "train.epochs"),
    (["data.sample_rate=1.5"], "data.sample_rate"),
    (["data.normalize=loud"], "data.normalize"),
    (["train.learning_rate=0"], "train.learning_rate"),
    (["bogus.key=1"], "bogus.key"),
    (["no_equals_sign"], "no_equals_sign"),
    (["model.type=rnn"], "model.type"),
    (["train.steps_per_epoch=-3"], "train.steps_per_epoch"),
    (["train.kl_warmup_steps=-1"], "train.kl_warmup_steps"),
    (["train.clipnorm=-1.0"], "train.clipnorm"),
    (["train.seed=-1"], "train.seed"),
])
def test_bad_overrides_are_one_line_errors_naming_the_key(items, word):
    with pytest.raises(KvaeError) as info:
        load_config("quickstart", parse_set(items))
    assert word in str(info.value) and "\n" not in str(info.value)


def test_cli_reports_bad_override_without_traceback(tmp_path, capsys):
    assert cli.main(["fit", "--run", str(tmp_path / "r"), "--set", "model.widthh=3"]) == 2
    err = capsys.readouterr().err
    assert "model.widthh" in err and "Traceback" not in err and err.count("\n") == 1


def test_config_files_compose_with_base(tmp_path):
    (tmp_path / "child.toml").write_text('base = "parent.toml"\n[train]\nepochs = 7\n')
    (tmp_path / "parent.toml").write_text('name = "p"\n[train]\nepochs = 3\nlearning_rate = 0.01\n')
    config = load_config(tmp_path / "child.toml")
    assert config["name"] == "p" and config["train"]["epochs"] == 7 and config["train"]["learning_rate"] == 0.01
    with pytest.raises(KvaeError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_kl_schedule_values():
    from kvae.models.elbo import KLWeight

    linear = KLWeight(1.0, "linear", 100, start=0.0)
    assert linear.value(0) == 0.0 and linear.value(50) == pytest.approx(0.5)
    assert linear.value(100) == 1.0 and linear.value(10_000) == 1.0
    log = KLWeight(5e-2, "log", 20_000, start=1e-6)  # RAVE v2: 1e-6 to 5e-2 over 20k steps
    assert log.value(0) == pytest.approx(1e-6)
    assert log.value(10_000) == pytest.approx(np.sqrt(1e-6 * 5e-2), rel=1e-6)
    assert log.value(20_000) == pytest.approx(5e-2)
    with pytest.raises(KvaeError, match="kl_schedule"):
        KLWeight(1.0, "cosine", 10)


def test_kl_warmup_updates_saved_beta_and_survives_resume(embedded, tmp_path):
    config = load_config(TINY, {"train": {"epochs": 3, "steps_per_epoch": 4, "kl_schedule": "linear",
                                          "kl_warmup_steps": 10, "kl_start": 0.0},
                                "model": {"beta": 0.5}})
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        kvae.fit(config, run=run, callbacks=[StopAfter(0)])
    model, history = kvae.fit(run=run)
    # Resumed at step 4 (the optimizer's step count is restored): epoch 1's last batch began at
    # step 7 (beta 0.35); epoch 2's at step 11 >= 10, so beta reached its target.
    assert float(keras.ops.convert_to_numpy(model.beta)) == pytest.approx(0.5)
    assert [round(b, 3) for b in history["beta"]] == [0.35, 0.5]
    logged = [float(r["beta"]) for r in rows(run / "history.csv")]
    assert logged[0] == pytest.approx(0.5 * 3 / 10)  # after epoch 0 the last batch began at step 3
    assert float(keras.ops.convert_to_numpy(kvae.load(run).beta)) == pytest.approx(0.5)


def test_same_seed_same_initial_weights_without_importing_tensorflow():
    result = run_on_backend("torch", "model_checks:seeded_initial_weights",
                            {"type": "fc", "hidden_units": 16, "latent_dim": 4}, [3, 3, 4])
    first, again, other = result["weights"]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))
    assert not result["tensorflow_imported"]


def test_fit_with_the_tf_data_front_end(embedded, tmp_path):
    import warnings

    config = load_config(TINY, {"data": {"frontend": "tf"}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, history = kvae.fit(config, run=tmp_path / "run", verbose=False)
    assert len(history["loss"]) == 2 and np.isfinite(history["val_loss"]).all()
    assert not [w for w in caught if "ran out of data" in str(w.message)]


# ---------------------------------------------------------------- nothing lost, no tracebacks (issue 14)


def epochs_logged(run):
    return [int(r["epoch"]) for r in rows(run / "history.csv")]


def hidden_files(folder):
    """Hidden files other than kvae's run lock and its output markers (temporaries, that is)."""
    return sorted(p.name for p in folder.rglob(".*") if p.name != ".kvae.lock" and not p.name.startswith(".kvae-"))


KILLED_WHILE_SAVING = """
import os, sys
import keras

def save(self, filepath, *args, **kwargs):  # the process is killed halfway through writing the model
    with open(filepath, "wb") as f:
        f.write(b"PK\\x03\\x04")
    os._exit(9)

keras.Model.save = save
from kvae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_run_killed_while_saving_the_model_resumes(embedded, tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    command = ["fit", "--config", str(config), "--run", str(run)]
    proc = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, *command], env=backend_env(current_backend()),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-3000:]
    assert (run / "backup").is_dir()  # kept until the model is safely written
    (run / "model.keras").write_bytes(b"PK\x03\x04")  # and a model file cut short does not stop the resume
    assert cli.main(command) == 0  # the same command again
    assert kvae.load(run).sample_rate == 3000
    assert not (run / "backup").exists()
    assert epochs_logged(run) == [0, 1]  # the epochs were not trained again
    assert hidden_files(run) == []  # no temporary file left behind


def test_unreadable_model_without_backup_says_what_to_do(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(load_config(TINY)))
    (run / "model.keras").write_bytes(b"")
    assert cli.main(["fit", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "model.keras: unreadable model" in err and "delete it and rerun the same command" in err


def test_history_lists_each_epoch_once_after_resuming_from_an_earlier_epoch(embedded, tmp_path):
    run = tmp_path / "run"
    config = load_config(TINY, {"train": {"epochs": 3}})
    with pytest.raises(KeyboardInterrupt):
        kvae.fit(config, run=run, callbacks=[StopAfter(0)])
    # The cut-short run had logged epoch 1 too (killed after writing its row, before its backup).
    lines = (run / "history.csv").read_text().splitlines()
    (run / "history.csv").write_text("\n".join(lines + ["1" + lines[1][1:], "2,0.1"]) + "\n")
    kvae.fit(run=run)
    assert epochs_logged(run) == [0, 1, 2]


class _Diverge(keras.callbacks.Callback):
    """Turns the weights into NaN after the first batch, as a learning rate far too high does
    (kvae.bounds caps train.learning_rate at 10, where this tiny model still trains)."""

    def on_train_batch_end(self, batch, logs=None):
        for w in self.model.trainable_weights:
            w.assign(keras.ops.full(w.shape, float("nan"), w.dtype))


def test_history_starts_afresh_after_a_divergence(embedded, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KvaeError, match="diverged"):
        kvae.fit(TINY, run=run, callbacks=[_Diverge()])
    assert epochs_logged(run) == [0] and not (run / "backup").exists()
    model, history = kvae.fit(TINY, run=run)  # the same folder with a learning rate that works
    assert epochs_logged(run) == [0, 1]
    assert all(np.isfinite(float(r["loss"])) for r in rows(run / "history.csv"))


def test_loss_plot_reader_keeps_the_last_row_of_each_epoch(tmp_path):
    from kvae.runs import read_history

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,inf\n0,5\n1,4\n0,9\n1,3\n2,2\n")  # two resumes of an older kvae
    assert read_history(path) == {"epoch": [0.0, 1.0, 2.0], "loss": [9.0, 3.0, 2.0]}


def _disk_full(self, filepath, *args, **kwargs):
    with open(filepath, "wb") as f:
        f.write(b"\0" * 100)  # a partial file
    raise OSError(errno.ENOSPC, "No space left on device", str(filepath))


@pytest.mark.parametrize("method, doing", [("save_weights", "backing up the run"), ("save", "saving the model")])
def test_disk_full_while_saving_is_one_line_and_the_rerun_resumes(embedded, tmp_path, monkeypatch, method, doing):
    run = tmp_path / "run"
    monkeypatch.setattr(keras.Model, method, _disk_full)
    with pytest.raises(KvaeError) as info:
        kvae.fit(TINY, run=run)
    message = str(info.value)
    assert f"disk full while {doing}; free space and rerun the same command to resume" in message
    assert "\n" not in message
    assert hidden_files(run) == [] and not (run / "model.keras").exists()
    monkeypatch.undo()
    model, history = kvae.fit(run=run)
    assert epochs_logged(run) == [0, 1]
    assert len(history.get("loss", [])) == (2 if method == "save_weights" else 0)  # the model save resumes only
    assert kvae.load(run).sample_rate == 3000 and not (run / "backup").exists()


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(size)`: a folder on a tmpfs of `size` ("300k"), unmounted afterwards; skips without root."""
    mounted = []

    def mount(size):
        disk = tmp_path / f"disk{len(mounted)}"
        disk.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                          capture_output=True).returncode:
            pytest.skip("cannot mount a small tmpfs here")
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_really_full_disk_is_one_line_without_a_crash(embedded, tmp_path, small_disk):
    """On a 300 kB tmpfs: h5py's failed write used to end in a traceback and a segfault."""
    disk = small_disk("300k")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    command = ["fit", "--config", str(config), "--run", str(disk / "run")]
    proc = subprocess.run([sys.executable, "-m", "kvae.cli", *command], env=backend_env(current_backend()),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f"kvae: error: {disk / 'run' / 'backup'}: disk full while backing up the run; "
        "free space and rerun the same command to resume"]
    subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)  # space freed
    assert cli.main(command) == 0
    assert epochs_logged(disk / "run") == [0, 1] and (disk / "run" / "model.keras").is_file()


def test_cli_rejects_negative_counts_on_one_line(capsys, tmp_path):
    for option in (["--steps-per-epoch", "-3"], ["--epochs", "0"], ["--epochs", "-1"]):
        assert cli.main(["fit", "--run", str(tmp_path / "r"), *option]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("kvae: error: train.") and "Traceback" not in err


@pytest.fixture
def untrained(tmp_path):
    """A tiny FC VAE saved untrained (0.25 s windows at 3000 Hz)."""
    from kvae.models import FCVAE

    path = tmp_path / "model.keras"
    FCVAE(sample_rate=3000, window_seconds=0.25, hidden_units=16, latent_dim=4, seed=0).save(path)
    return path


def test_reconstruct_never_overwrites_its_input(untrained, tmp_path, capsys):
    source = tone_wav(tmp_path / "in.wav", seconds=0.5)
    original = source.read_bytes()
    (tmp_path / "soft.wav").symlink_to(source)
    os.link(source, tmp_path / "hard.wav")
    (tmp_path / "folder").mkdir()
    cases = [(source, "is an input"), (tmp_path / "soft.wav", "is an input"), (tmp_path / "hard.wav", "is an input"),
             (untrained, "is an input"), (tmp_path / "folder", "is a folder"),
             (str(tmp_path / "new") + os.sep, "is a folder")]
    for output, words in cases:
        assert cli.main(["reconstruct", str(untrained), str(source), str(output)]) == 2, output
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"kvae: error: {output}") and words in err, err
    assert source.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "hard.wav", "in.wav", "model.keras", "soft.wav"]


def test_reconstruct_onto_a_full_disk_keeps_the_old_output(untrained, tmp_path, small_disk, capsys):
    disk = small_disk("64k")
    target = write_wav(disk / "out.wav", np.full(10_000, 0.25, np.float32), 3000)  # 40 kB of the 64
    source = tone_wav(tmp_path / "in.wav", seconds=3.0)  # 36 kB once reconstructed at 3000 Hz
    assert cli.main(["reconstruct", str(untrained), str(source), str(target), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err == (f"kvae: error: {target}: disk full while writing the reconstruction; "
                   "free space and run the command again\n")
    assert np.array_equal(read_audio(target)[0], np.full(10_000, 0.25, np.float32))  # untouched
    assert [p.name for p in disk.iterdir()] == ["out.wav"]  # nothing half written


def test_sample_out_that_is_a_file_is_one_line(untrained, tmp_path, capsys):
    taken = tmp_path / "taken.wav"
    taken.write_bytes(b"x")
    assert cli.main(["sample", str(untrained), "--out", str(taken), "-n", "1"]) == 2
    err = capsys.readouterr().err
    assert err == f"kvae: error: {taken}: is a file, not a folder; give a folder name\n"
    assert taken.read_bytes() == b"x"


def test_samples_are_generated_and_written_a_batch_at_a_time(untrained, tmp_path, monkeypatch):
    from kvae.training import write_samples

    model = kvae.load(untrained, compile=False)
    expected = model.sample(5, seed=3)
    sizes = []
    decode = type(model).decode
    monkeypatch.setattr(type(model), "decode", lambda self, z: sizes.append(int(z.shape[0])) or decode(self, z))
    paths = write_samples(model, tmp_path / "out", n=5, seed=3, plots=False, batch_size=2)
    assert sizes == [2, 2, 1]  # never all the clips at once
    written = np.stack([read_audio(p)[0] for p in paths])
    np.testing.assert_allclose(written, expected, atol=1e-6)  # the clips of sample(5, seed=3), in order


def _reconstruct_all_at_once(model, audio):
    """kvae's reconstruct_audio before streaming: every window in memory at once."""
    import math

    from kvae.dsp import crossfade_window

    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    w = model.window
    hop = max(w // 2, 1)
    n_frames = max(1, math.ceil(max(len(x) - w, 0) / hop) + 1)
    padded = np.zeros((n_frames - 1) * hop + w, np.float32)
    padded[: len(x)] = x
    frames = np.stack([padded[i * hop:i * hop + w] for i in range(n_frames)])
    out_frames = np.concatenate([model.reconstruct(frames[i:i + 64]) for i in range(0, n_frames, 64)])
    taper = crossfade_window(w).astype(np.float32) if n_frames > 1 else np.ones(w, np.float32)
    out = np.zeros_like(padded)
    norm = np.zeros_like(padded)
    for i, frame in enumerate(out_frames):
        out[i * hop:i * hop + w] += frame * taper
        norm[i * hop:i * hop + w] += taper
    return (out / np.maximum(norm, 1e-3))[: len(x)]


def test_streamed_reconstruction_equals_all_at_once(untrained, tmp_path):
    from kvae.data import resample
    from kvae.training import reconstruct_audio, reconstruct_file

    model = kvae.load(untrained, compile=False)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * 3000 + 123).astype(np.float32)
    whole = _reconstruct_all_at_once(model, x)
    np.testing.assert_array_equal(reconstruct_audio(model, x), whole)  # the same batches of 64 windows
    for chunk in (1, 2, 5):
        np.testing.assert_allclose(reconstruct_audio(model, x, chunk_frames=chunk), whole, atol=1e-6)
    for n in (1, 100, 750, 751):  # shorter than, as long as and just over one window
        np.testing.assert_allclose(reconstruct_audio(model, x[:n], chunk_frames=1), _reconstruct_all_at_once(model, x[:n]),
                                   atol=1e-6)
    # A file at another rate, stereo int16, read and resampled piece by piece.
    stereo = (np.random.default_rng(1).uniform(-0.4, 0.4, (int(2.7 * 44100), 2)) * 32767).astype(np.int16)
    source = tmp_path / "in.wav"
    from scipy.io import wavfile

    wavfile.write(source, 44100, stereo)
    frames = reconstruct_file(model, source, tmp_path / "out.wav", chunk_frames=2)
    audio, rate = read_audio(tmp_path / "out.wav")
    expected = _reconstruct_all_at_once(model, resample(read_audio(source)[0], 44100, 3000))
    assert rate == 3000 and frames == len(expected) == len(audio)
    np.testing.assert_allclose(audio, np.clip(expected, -1, 1), atol=1e-6)


def test_time_budget_ends_training_after_the_epoch_that_spends_it_and_saves(embedded, tmp_path, capsys):
    from kvae.training.callbacks import TimeBudget

    config = load_config(TINY, {"train": {"epochs": 5, "steps_per_epoch": 3, "max_minutes": 1e-9}})
    run = tmp_path / "run"
    model, history = kvae.fit(config, run=run)
    assert "train.max_minutes = 1e-09 spent; stopped after step 1" in capsys.readouterr().out
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 1  # the batch that spent it
    assert [int(r["epoch"]) for r in rows(run / "history.csv")] == [0]  # its epoch ended as usual
    assert (run / "model.keras").is_file() and not (run / "backup").exists()
    cpu = TimeBudget(1e-9, clock="cpu")
    kvae.fit(TINY, run=tmp_path / "cpu", callbacks=[cpu], verbose=False)
    assert cpu.stopped_at == 1
    with pytest.raises(KvaeError, match="train.max_minutes: must be from 0 to"):
        load_config(TINY, {"train": {"max_minutes": -1}})
    with pytest.raises(KvaeError, match="clock: must be wall or cpu"):
        TimeBudget(1, clock="gpu")


class _Tick(keras.callbacks.Callback):
    """Moves a fake clock (`now[0]`, seconds) a minute forward before each batch."""

    def __init__(self, now):
        super().__init__()
        self.now = now

    def on_train_batch_begin(self, batch, logs=None):
        self.now[0] += 60.0


def test_a_resumed_run_continues_its_time_budget_and_snapshots(embedded, tmp_path, monkeypatch):
    from kvae.training import callbacks as cb

    now = [0.0]
    monkeypatch.setitem(cb._CLOCKS, "cpu", lambda: now[0])
    config = load_config(TINY, {"train": {"epochs": 10, "steps_per_epoch": 2}})
    run = tmp_path / "run"
    first = cb.Snapshots(tmp_path / "snaps", [1, 3, 5], clock="cpu")
    with pytest.raises(KeyboardInterrupt):  # killed at the start of epoch 2: the backup holds epochs 0-1
        kvae.fit(config, run=run, callbacks=[_Tick(now), first, cb.TimeBudget(100, clock="cpu"), StopAfter(1)],
                 verbose=False)
    assert {m: step for m, (_, step) in first.saved.items()} == {1.0: 1, 3.0: 3}
    assert cb.RunBackup.spent(run / "backup")["cpu"] == pytest.approx(240.0)  # four one-minute batches
    written = (tmp_path / "snaps" / "cpu-1min.keras").stat().st_mtime_ns

    now[0] = 10_000.0  # a new process: its clock reads anything
    # a snapshot the killed run had written after its last backup is kept too (here a copy stands for it)
    (tmp_path / "snaps" / "cpu-5.5min.keras").write_bytes((tmp_path / "snaps" / "cpu-3min.keras").read_bytes())
    again = cb.Snapshots(tmp_path / "snaps", [1, 3, 5, 5.5], clock="cpu")
    budget = cb.TimeBudget(6, clock="cpu")
    model, _ = kvae.fit(config, run=run, callbacks=[_Tick(now), again, budget], verbose=False)
    assert again.saved.keys() == {5.0} and again.saved[5.0][1] == 5  # 1 and 3 were passed before the kill
    assert (tmp_path / "snaps" / "cpu-1min.keras").stat().st_mtime_ns == written  # not overwritten
    assert budget.stopped_at == 6 == int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert cb.RunBackup.spent(tmp_path / "no-backup") == {}


def test_weight_ema_is_what_the_saved_model_and_its_snapshots_hold(embedded, tmp_path, monkeypatch):
    from kvae.training import callbacks as cb

    now = [0.0]
    monkeypatch.setitem(cb._CLOCKS, "cpu", lambda: now[0])
    weights = {}
    for ema in (0.0, 0.5):
        config = load_config(TINY, {"train": {"epochs": 1, "steps_per_epoch": 3, "ema_momentum": ema}})
        now[0] = 0.0
        run = tmp_path / f"ema{ema}"
        kvae.fit(config, run=run, callbacks=[_Tick(now), cb.Snapshots(run / "snaps", [3], clock="cpu")],
                 verbose=False)
        weights[ema] = [[keras.ops.convert_to_numpy(w) for w in kvae.load(path).trainable_weights]
                        for path in (run / "model.keras", run / "snaps" / "cpu-3min.keras")]
    for ema, (final, snapshot) in weights.items():  # the last step's snapshot is the saved model: the average
        for a, b in zip(final, snapshot):
            np.testing.assert_array_equal(a, b)
    assert max(np.abs(a - b).max() for a, b in zip(weights[0.0][0], weights[0.5][0])) > 1e-6  # not the raw weights
    with pytest.raises(KvaeError, match="train.ema_momentum"):
        load_config(TINY, {"train": {"ema_momentum": 1.0}})


def test_divergence_guard_trips_on_a_sustained_blow_up_only():
    from kvae.training.callbacks import DivergenceGuard

    class Model:
        stop_training = False

    def replay(values, **kwargs):
        guard = DivergenceGuard(3.0, **kwargs)
        guard.set_model(Model())
        guard.on_train_begin()
        for epoch, value in enumerate(values):
            guard.on_epoch_end(epoch, {"val_stft": value, "loss": -800.0})
        return guard

    healthy = [2.2, 1.9, 1.7, 2.0, 1.6, 1.8, 1.55]  # noisy but within 1.3 x its best
    assert replay(healthy).tripped is None and not replay(healthy).model.stop_training
    assert replay([2.1, 2.5, 5.4, 3.1, 2.2, 7.0, 2.0]).tripped is None  # spikes that recover
    assert replay([2.1, 2.5, None, float("nan")]).tripped is None  # nothing to judge
    guard = replay([2.2, 2.1, 11.2, 21.3, 21.3, 21.3])
    assert guard.tripped == (4, 21.3, 2.1) and guard.model.stop_training
    assert guard.message().startswith("training diverged at epoch 4: val_stft 21.3 has been over 3 x its best (2.1)")
    assert replay([2.0, 7.0, 7.0], patience=2).tripped == (2, 7.0, 2.0)
    with pytest.raises(KvaeError, match="divergence_factor: must be 0 .off. or above 1"):
        DivergenceGuard(1.0)
    with pytest.raises(KvaeError, match="train.divergence_factor"):
        load_config(TINY, {"train": {"divergence_factor": -1}})


def test_a_resumed_run_judges_a_blow_up_against_the_best_of_the_whole_run(embedded, tmp_path):
    config = load_config(TINY, {"model": {"loss_weights": {"stft": 1.0}}, "train": {"epochs": 8, "steps_per_epoch": 1}})
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        kvae.fit(config, run=run, callbacks=[StopAfter(1)], verbose=False)
    history = rows(run / "history.csv")
    history[1]["val_stft"] = str(10 * float(history[1]["val_stft"]))  # the blow-up began before the kill
    with open(run / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    with pytest.raises(KvaeError, match="training diverged at epoch 3: "):  # epochs 1 (replayed), 2 and 3
        kvae.fit(run=run, callbacks=[_BlowUp(0)], verbose=False)


def test_divergence_replay_reads_histories_as_the_guard_would(tmp_path, capsys):
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("divergence_replay",
                                                  os.path.join(root, "benchmarks", "divergence_replay.py"))
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    blown, healthy, mel = tmp_path / "blown.csv", tmp_path / "healthy", tmp_path / "mel.csv"
    blown.write_text("epoch,loss,val_stft\n0,-1,2.2\n1,-2,2.1\n2,5,11.2\n3,9,21.3\n4,9,21.3\n")
    healthy.mkdir()
    (healthy / "history.csv").write_text("epoch,val_stft\n0,2.0\n1,2.2\n2,1.8\n")
    mel.write_text("epoch,loss\n0,1.0\n")
    assert replay.main([str(blown), str(healthy), str(mel), str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("5 epochs, at most 10.14 x its best so far; trips at epoch 4 (21.3 against a best of 2.1)")
    assert out[1].endswith("3 epochs, at most 1.10 x its best so far; never trips")
    assert "no val_stft column" in out[2] and "no history.csv (skipped)" in out[3]
    assert replay.main([str(blown), "--factor", "0.5"]) == 2


class _BlowUp(keras.callbacks.Callback):
    """Makes the logged validation MR-STFT ten times larger from epoch `start` on (what the guard reads)."""

    def __init__(self, start):
        super().__init__()
        self.start = start

    def on_epoch_end(self, epoch, logs=None):
        if epoch >= self.start:
            logs["val_stft"] *= 10.0


def test_a_blown_up_run_stops_with_one_line_and_keeps_its_history(embedded, tmp_path):
    config = load_config(TINY, {"model": {"loss_weights": {"stft": 1.0}}, "train": {"epochs": 8, "steps_per_epoch": 1}})
    run = tmp_path / "run"
    blown_up = r"training diverged at epoch 4: val_stft .* for 3 epochs; lower train.learning_rate"
    with pytest.raises(KvaeError, match=blown_up):
        kvae.fit(config, run=run, callbacks=[_BlowUp(2)], verbose=False)
    assert [int(r["epoch"]) for r in rows(run / "history.csv")] == [0, 1, 2, 3, 4]  # stopped after epoch 4
    assert not (run / "backup").exists() and not (run / "model.keras").exists()
    off = load_config(TINY, {"model": {"loss_weights": {"stft": 1.0}},
                             "train": {"epochs": 6, "steps_per_epoch": 1, "divergence_factor": 0}})
    kvae.fit(off, run=tmp_path / "off", callbacks=[_BlowUp(2)], verbose=False)  # the check turned off
    assert (tmp_path / "off" / "model.keras").is_file()


def test_snapshots_save_the_model_as_each_mark_of_the_clock_passes(embedded, tmp_path):
    from kvae.training.callbacks import Snapshots

    snaps = Snapshots(tmp_path / "snaps", [2, 0.5], clock="cpu")
    ticks = iter(range(0, 10_000, 30))  # the clock: 30 s a reading, saving included
    snaps.clock = lambda: float(next(ticks))
    config = load_config(TINY, {"train": {"epochs": 1, "steps_per_epoch": 5}})
    kvae.fit(config, run=tmp_path / "run", callbacks=[snaps], verbose=False)
    # readings: start 0; batch 1 at 30 s (0.5 min: saved, the save read 60 and 90, its 30 s not counted);
    # batch 2 at 120 s (1.5 min); batch 3 at 150 s (2 min: saved)
    assert {m: step for m, (_, step) in snaps.saved.items()} == {0.5: 1, 2.0: 3}
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == ["cpu-0.5min.keras", "cpu-2min.keras"]
    early = kvae.load(tmp_path / "snaps" / "cpu-0.5min.keras")
    assert int(keras.ops.convert_to_numpy(early.optimizer.iterations)) == 1
    for bad, word in ((dict(minutes=[]), "positive finite minutes"), (dict(minutes=[0]), "positive finite"),
                      (dict(minutes=[1], clock="gpu"), "clock: must be wall or cpu")):
        with pytest.raises(KvaeError, match=word):
            Snapshots(tmp_path, **bad)
