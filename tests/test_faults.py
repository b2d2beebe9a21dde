"""The second fault probe's cases (issue 32), each through the entry point a user or a hostile file would take:
nothing silently wrong, nothing unbounded, every bad input one line."""

import errno
import json
import os
import shutil
import signal
import struct
import zipfile
import zlib

import numpy as np
import pytest

import kvae
from audio import wav_file
from kvae import bounds, cli
from kvae.data import WavWriter, read_audio
from kvae.errors import KvaeError, KvaeNote
from kvae.paths import OwnedFolder

RATE = 3000
DATA = {"sample_rate": RATE, "window_seconds": 0.25, "windows_per_recording": 2, "batch_size": 8}
TRAIN = {"epochs": 1, "steps_per_epoch": 2, "n_samples": 2, "verbose": 0, "gallery": False}
TINY = {"data": DATA, "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 16, "latent_dim": 4},
        "train": TRAIN}
DEAD = 99999999  # above any pid_max: the pid of a process that was killed


@pytest.fixture(scope="module")
def trained(embedded, tmp_path_factory):
    run = tmp_path_factory.mktemp("faults") / "run"
    kvae.fit(TINY, run=run, verbose=False)
    return run


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("kvae: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "Error:" not in err.split("kvae: error: ", 1)[1], err
    for word in words:
        assert word in err, err
    return err


def edited_archive(source, target, name, edit):
    """A copy of the `.keras` archive `source` whose member `name` is `edit(bytes)`."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item.filename, edit(data) if item.filename == name else data)
    return target


def with_config(**settings):
    def edit(data):
        saved = json.loads(data)
        saved["config"].update(settings)
        return json.dumps(saved).encode()
    return edit


def lying_archive(source, target, pad, name="model.weights.h5"):
    """`source` with `pad` zero bytes streamed after the weights, the headers declaring the real size and CRC."""
    real = {}

    def padded(data):
        real["data"] = data
        return data + b"\0" * pad
    edited_archive(source, target, name, padded)
    blob = bytearray(target.read_bytes())
    crc, size = zlib.crc32(real["data"]), len(real["data"])
    with zipfile.ZipFile(target) as archive:
        offset = archive.getinfo(name).header_offset
    struct.pack_into("<I", blob, offset + 14, crc)  # the local header's CRC-32 and uncompressed size
    struct.pack_into("<I", blob, offset + 22, size)
    at = blob.find(b"PK\x01\x02")
    while at >= 0:
        length = struct.unpack_from("<H", blob, at + 28)[0]
        if bytes(blob[at + 46:at + 46 + length]) == name.encode():
            struct.pack_into("<I", blob, at + 16, crc)
            struct.pack_into("<I", blob, at + 24, size)
        at = blob.find(b"PK\x01\x02", at + 4)
    target.write_bytes(bytes(blob))
    return target


# ---------------------------------------------------------------- sizes: estimated together, read from the bytes


def test_a_keras_file_whose_config_outgrows_its_weights_is_refused_before_keras_builds_it(trained, tmp_path, capsys):
    model = trained / "model.keras"
    wide = edited_archive(model, tmp_path / "wide.keras", "config.json", with_config(hidden_units=100000))
    assert cli.main(["sample", str(wide), "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "hidden_units 100000", "not a model this file holds")
    deep = edited_archive(model, tmp_path / "deep.keras", "config.json",
                          with_config(hidden_units=40000, hidden_layers=15))
    assert cli.main(["evaluate", str(deep)]) == 2
    one_line_error(capsys, "hidden_units 40000", "hidden_layers 15")
    assert not (tmp_path / "s").exists()


def test_a_model_too_large_for_the_memory_is_refused_from_its_config(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bounds, "available_memory", lambda: 2 ** 20)
    assert cli.main(["sample", str(trained), "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "hidden_units 16", "GiB available")


def test_a_weights_member_that_streams_more_than_it_declares_is_refused(trained, tmp_path, capsys):
    lying = lying_archive(trained / "model.keras", tmp_path / "lying.keras", 20 * 2 ** 20)
    with zipfile.ZipFile(lying) as archive:  # what the headers say: the real weights, nothing more
        assert archive.getinfo("model.weights.h5").file_size < 2 ** 20
    for command in (["sample", str(lying), "--out", str(tmp_path / "s")], ["export", str(lying), "--out",
                                                                            str(tmp_path / "e")]):
        assert cli.main(command) == 2
        one_line_error(capsys, "model.weights.h5 unpacks to more than", "it declares")
    assert not (tmp_path / "s").exists() and not (tmp_path / "e").exists()


@pytest.mark.parametrize("settings, words", [
    (["model.hidden_units=400000000"], "model.hidden_units: must be from 1 to"),
    (["model.hidden_units=1e12"], "model.hidden_units"),
    (["data.window_seconds=300", "data.batch_size=65536"], "data.batch_size 65536"),
    (["model.hidden_units=400000", "model.hidden_layers=3"], "model.hidden_units 400000"),
])
def test_model_sizes_are_bounded_and_their_products_estimated_before_anything_is_written(
        config_file, tmp_path, capsys, settings, words):
    run = tmp_path / "run"
    argv = ["fit", "--config", str(config_file), "--run", str(run)]
    for item in settings:
        argv += ["--set", item]
    assert cli.main(argv) == 2
    one_line_error(capsys, words)
    assert not run.exists()


def test_evaluate_clips_have_an_upper_bound(trained, capsys):
    assert cli.main(["evaluate", str(trained), "--n-clips", "1000000"]) == 2
    one_line_error(capsys, "--n-clips: must be from 10 to 100000")


def test_the_estimate_is_close_for_the_tiny_model(trained):
    from kvae.resources import estimate

    found = estimate(TINY["model"], RATE, 0.25, 8)
    actual = kvae.load(trained, compile=False).count_params()
    assert 0.5 * actual <= found["parameters"] <= 2 * actual


# ---------------------------------------------------------------- exports: one consistent set


def test_export_into_an_earlier_export_folder_leaves_one_consistent_set(trained, tmp_path, capsys):
    pytest.importorskip("onnx")
    from kvae.inference.onnx import PRIOR_FILE

    out = tmp_path / "onnx"
    earlier = OwnedFolder(out, "export")  # an earlier run's export, with its prior
    earlier.file(PRIOR_FILE).write_bytes(b"another run's prior")
    (out / f".encoder.onnx.{DEAD}-0123abcd.tmp.onnx").write_bytes(b"half")  # a kill -9 during that export
    assert cli.main(["export", str(trained), "--out", str(out), "--no-prior"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".kvae-export.json", "decoder.onnx", "encoder.onnx"]
    marker = json.loads((out / ".kvae-export.json").read_text())
    assert marker["source"] == str(trained.resolve()) and marker["complete"] is True
    assert marker["files"] == ["decoder.onnx", "encoder.onnx"]


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_export_onto_a_full_disk_or_a_read_only_folder_is_one_line(trained, tmp_path, monkeypatch, capsys, error):
    pytest.importorskip("onnx")

    def refused(self):
        raise OSError(error, os.strerror(error))
    monkeypatch.setattr("kvae.paths.OwnedFolder._save", refused)
    assert cli.main(["export", str(trained), "--out", str(tmp_path / "onnx")]) == 2
    one_line_error(capsys, "disk full" if error == errno.ENOSPC else "Read-only")


# ---------------------------------------------------------------- no silent wrong output


def test_reconstruct_refuses_what_prepare_refuses(trained, tmp_path, capsys):
    for peak in (3e38, 1.5e4):
        source = wav_file(tmp_path / f"loud{peak:g}.wav", (peak * np.sin(np.arange(RATE) / 5.0)).astype(np.float32),
                          RATE)
        for extra in ([], ["--stream"]):
            out = tmp_path / f"out{peak:g}{len(extra)}.wav"
            assert cli.main(["reconstruct", str(trained), str(source), str(out)] + extra) == 2
            one_line_error(capsys, "beyond +-10000: not audio")
            assert not out.exists()


def test_a_silent_or_clipped_output_says_so(tmp_path):
    with pytest.warns(KvaeNote, match="silent"):
        with WavWriter(tmp_path / "zero.wav", RATE) as out:
            out.write(np.zeros(100))
        out.warn()
    with pytest.warns(KvaeNote, match="50 of 100 samples were beyond"):
        with WavWriter(tmp_path / "loud.wav", RATE) as out:
            out.write(np.r_[np.full(50, 3.0), np.full(50, 0.5)])
        out.warn()
    assert float(read_audio(tmp_path / "loud.wav")[0].max()) == 1.0
    with WavWriter(tmp_path / "fine.wav", RATE) as out:
        out.write(np.full(10, 0.5))
    assert out.note() is None


def test_a_clipped_reconstruction_says_so_on_one_line(trained, tmp_path, monkeypatch, capsys):
    source = wav_file(tmp_path / "in.wav", (0.5 * np.sin(np.arange(RATE) / 5.0)).astype(np.float32), RATE)
    monkeypatch.setattr("kvae.models.vae.VAE.reconstruct", lambda self, x, *a, **k: np.full(np.shape(x), 4.0))
    assert cli.main(["reconstruct", str(trained), str(source), str(tmp_path / "o.wav")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kvae: warning: ") and "were clipped (peak" in err, err


# ---------------------------------------------------------------- temporaries of killed commands


def test_commands_sweep_the_temporaries_a_killed_run_left(trained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / f".piece.wav.{DEAD}-0123abcd.tmp.wav", out / f".sample_0.wav.{DEAD}-89abcdef.tmp.wav"]
    live = out / f".other.wav.{os.getpid()}-01234567.tmp.wav"  # this process is still writing it
    for path in stale + [live]:
        path.write_bytes(b"half")
    kvae.generate(trained, seconds=1, out=out / "piece.wav")
    assert not any(p.exists() for p in stale) and live.exists()
    samples = tmp_path / "samples"
    OwnedFolder(samples, "sample")  # a kvae sample killed while writing its first clip
    stale = samples / f".sample_0.wav.{DEAD}-0123abcd.tmp.wav"
    stale.write_bytes(b"half")
    assert cli.main(["sample", str(trained), "-n", "1", "--no-plots", "--out", str(samples)]) == 0
    assert not stale.exists()
    source = wav_file(tmp_path / "in.wav", (0.5 * np.sin(np.arange(RATE) / 5.0)).astype(np.float32), RATE)
    stale = tmp_path / f".rec.wav.{DEAD}-0123abcd.tmp.wav"
    stale.write_bytes(b"half")
    assert cli.main(["reconstruct", str(trained), str(source), str(tmp_path / "rec.wav")]) == 0
    assert not stale.exists()


# ---------------------------------------------------------------- history.csv read defensively


def test_a_corrupt_history_is_set_aside_with_one_line(tmp_path):
    from kvae.runs.history import read_history, truncate_history

    for name, content in (("binary", bytes(range(256)) * 4), ("foreign", b"epoch,foo\n0,1\n1,2\n"),
                          ("headless", b"a,b\n1,2\n")):
        folder = tmp_path / name
        folder.mkdir()
        path = folder / "history.csv"
        path.write_bytes(content)
        assert read_history(path) == {} or "loss" not in read_history(path)
        with pytest.warns(KvaeNote, match="set aside as history.corrupt.csv, the history restarts at epoch 3"):
            assert truncate_history(path, 2) == 0
        assert not path.exists() and (folder / "history.corrupt.csv").read_bytes() == content


def test_loss_curves_of_a_foreign_history_are_not_drawn_and_do_not_fail(tmp_path):
    from kvae.training.loop import draw_curves

    (tmp_path / "history.csv").write_text("epoch,foo\n0,1\n1,2\n")
    draw_curves(tmp_path)
    assert not (tmp_path / "loss_curves.png").exists()
    (tmp_path / "history.csv").write_bytes(b"\xff\xfe\x00binary")
    draw_curves(tmp_path)


# ---------------------------------------------------------------- every argument checked first, by its flag


@pytest.mark.parametrize("extra, word", [
    (["--pieces", "-1"], "--pieces: must be from 1 to 1024"),
    (["--pieces", "2", "--piece-seconds", "nan"], "--piece-seconds: must be a finite number"),
    (["--pieces", "2", "--piece-seconds", "1e9"], "--piece-seconds: must be from 0.01 to"),
])
def test_prior_fit_pieces_are_checked_before_the_prior_is_trained(trained, tmp_path, capsys, extra, word):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert cli.main(["prior", "fit", str(run)] + extra) == 2
    one_line_error(capsys, word)
    assert not (run / "prior").exists()
    with pytest.raises(KvaeError, match="^pieces: "):
        kvae.fit_prior(run, pieces=-1)
    assert not (run / "prior").exists()


@pytest.mark.parametrize("argv, word", [
    (["evaluate", "RUN", "--seed", "-1"], "--seed: must be from 0"),
    (["gallery", "RUN", "--seed", "-1", "--out", "G"], "--seed: must be from 0"),
    (["sample", "RUN", "--seed", "-1", "--out", "G"], "--seed: must be from 0"),
    (["evaluate", "RUN", "--out", "G", "--plot", "G"], "--out and --plot: the same file"),
])
def test_arguments_are_one_line_naming_the_flag(trained, tmp_path, capsys, argv, word):
    argv = [str(trained) if a == "RUN" else str(tmp_path / "same.png") if a == "G" else a for a in argv]
    assert cli.main(argv) == 2
    one_line_error(capsys, word)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [42, None, 3.5])
def test_load_of_something_that_is_not_a_path_is_one_line(value):
    with pytest.raises(KvaeError, match="path: expected a model.keras file or a run folder"):
        kvae.load(value)


def test_evaluate_plot_onto_a_full_disk_is_one_line(trained, tmp_path, monkeypatch, capsys):
    import matplotlib.figure

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    result = {"rate_bps": 100.0, "realism": {}, "reconstruction": {"reconstructions": {"paired_c2st": 0.6}}}
    monkeypatch.setattr("kvae.evaluation.evaluate.evaluate", lambda *a, **k: result)
    monkeypatch.setattr("kvae.evaluation.evaluate.format_report", lambda result: "report")
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    assert cli.main(["evaluate", str(trained), "--plot", str(tmp_path / "r.png")]) == 2
    one_line_error(capsys, "disk full while writing the plot")
    assert list(tmp_path.iterdir()) == []
    from kvae.evaluation.plots import plot_history

    with pytest.raises(KvaeError, match="disk full while writing the plot"):
        plot_history({"loss": [1.0, 0.5]}, tmp_path / "curves.png")


@pytest.mark.parametrize("settings, word", [  # (model.bitrate_target and bitrate_gain: refused at once since 0.2)
    (["train.divergence_factor=0.5"], "train.divergence_factor: must be 0 (off) or above 1"),
    (["train.divergence_factor=-1"], "(0: off, else above 1), got -1"),
])
def test_rate_and_divergence_settings_are_refused_before_anything_is_written(config_file, tmp_path, capsys,
                                                                             settings, word):
    run = tmp_path / "run"
    assert cli.main(["fit", "--config", str(config_file), "--run", str(run), "--set", settings[0]]) == 2
    one_line_error(capsys, word)
    assert not run.exists()


def test_a_config_folder_a_run_file_and_a_changed_config_are_named(config_file, tmp_path, capsys):
    assert cli.main(["fit", "--config", str(tmp_path), "--run", str(tmp_path / "run")]) == 2
    one_line_error(capsys, "is a folder, not a config file")
    (tmp_path / "afile").write_text("x")
    assert cli.main(["fit", "--config", str(config_file), "--run", str(tmp_path / "afile")]) == 2
    one_line_error(capsys, "afile: is a file, not a run folder")
    assert (tmp_path / "afile").read_text() == "x"


def test_resuming_with_another_config_names_the_config_not_only_set(tmp_path):
    from kvae.runs import RunFolder

    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.config.write_text(json.dumps({"train": {"learning_rate": 1e-3}}))
    folder.backup.mkdir()
    with pytest.raises(KvaeError, match="drop those --set \\(or the other --config\\)"):
        folder.check_resume({"train": {"learning_rate": 1e-2}})


def test_ctrl_c_after_a_data_parallel_fit_finished_is_not_an_interruption(trained, monkeypatch, capsys):
    from torch.distributed.elastic.multiprocessing.api import SignalException

    def finished_then_interrupted(args):
        raise SignalException("Process 1 got signal: 2", sigval=signal.SIGINT)
    monkeypatch.setattr("torch.distributed.run.run", finished_then_interrupted)
    assert cli.main(["fit", "--nproc", "2", "--run", str(trained)]) == 0
    err = capsys.readouterr().err
    assert "after the run finished" in err and "resumes" not in err and err.count("\n") == 1, err


# ---------------------------------------------------------------- what a message says is what happens


def test_a_block_under_one_sample_says_it_is_one_sample(trained, tmp_path, capsys):
    source = wav_file(tmp_path / "in.wav", (0.5 * np.sin(np.arange(RATE // 4) / 5.0)).astype(np.float32), RATE)
    assert cli.main(["reconstruct", str(trained), str(source), str(tmp_path / "o.wav"), "--stream",
                     "--block-ms", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "blocks of 0.01 ms = 1 sample (0.333 ms: a block is one sample at least)" in out, out


def test_a_prior_fit_with_nothing_left_to_train_says_so(trained, monkeypatch, capsys):
    monkeypatch.setattr("kvae.training.fit_prior", lambda *a, **k: (None, {}))
    assert cli.main(["prior", "fit", str(trained)]) == 0
    assert "no epoch left to train, prior saved" in capsys.readouterr().out


# ---------------------------------------------------------------- compressed files: cut short or corrupted


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    tfio = pytest.importorskip("tensorflow_io")
    rate, folder = 44100, tmp_path_factory.mktemp("encoded")
    x = (0.5 * np.sin(np.arange(4 * rate) / 5.0)).astype(np.float32)
    flac = tfio.audio.encode_flac(tf.constant((x[:, None] * 32767).astype(np.int16)), rate=rate).numpy()
    ogg = tfio.audio.encode_vorbis(tf.constant(x[:, None]), rate=rate).numpy()
    return folder, {"flac": flac, "ogg": ogg}


@pytest.mark.parametrize("kind, damage, words", [
    ("ogg", "cut", "cannot decode OGG: cut short"),
    ("flac", "cut", "cannot decode FLAC: cut short"),
    ("flac", "corrupt", "cannot decode FLAC: corrupted or cut short (unreadable from byte"),
    ("ogg", "corrupt", "cannot decode OGG: corrupted (read failed"),
])
def test_a_cut_short_or_corrupted_compressed_file_is_one_line_in_words(encoded, capfd, kind, damage, words):
    from kvae.data import AudioFileError

    folder, streams = encoded
    data = bytearray(streams[kind])
    if damage == "cut":
        data = data[:len(data) // 3]
    else:
        data[len(data) // 2:len(data) // 2 + 500] = b"\x55" * 500
    path = folder / f"{damage}.{kind}"
    path.write_bytes(bytes(data))
    with pytest.raises(AudioFileError) as err:
        read_audio(path)
    assert words in str(err.value) and not str(err.value).endswith("name"), str(err.value)
    assert "ErrorCallback" not in capfd.readouterr().err
    whole = folder / f"whole.{kind}"
    whole.write_bytes(streams[kind])
    assert abs(len(read_audio(whole)[0]) - 4 * 44100) < 2048


@pytest.mark.parametrize("command", ["generate", "sample", "reconstruct", "export"])
def test_sigterm_while_writing_leaves_no_temporary(tmp_path, monkeypatch, capsys, command):
    import time

    from kvae.paths import atomic_path

    def writing(*args, **kwargs):
        with atomic_path(tmp_path / "out.wav") as tmp:
            tmp.write_bytes(b"half a piece")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal arrives first
    target = {"generate": "kvae.inference.generate", "sample": "kvae.training.write_samples",
              "reconstruct": "kvae.inference.reconstruct_file", "export": "kvae.export.export_onnx"}[command]
    monkeypatch.setattr(target, writing)
    monkeypatch.setattr("kvae.models.loading.load", lambda *a, **k: None)
    monkeypatch.setattr("kvae.inference.load", lambda *a, **k: None)
    source = wav_file(tmp_path / "in.wav", np.zeros(100, np.float32), RATE)
    argv = {"generate": ["generate", "RUN", "--out", str(tmp_path / "p.wav")],
            "sample": ["sample", "RUN", "--out", str(tmp_path / "s")],
            "reconstruct": ["reconstruct", "RUN", str(source), str(tmp_path / "r.wav")],
            "export": ["export", "RUN", "--out", str(tmp_path / "e")]}[command]
    assert cli.main(argv) == 143
    err = capsys.readouterr().err
    assert err.startswith("kvae: stopped by SIGTERM") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or not callable(signal.getsignal(signal.SIGTERM)) or \
        signal.getsignal(signal.SIGTERM).__name__ != "terminated"


def test_the_guides_say_when_a_time_budget_stops():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    for page in [docs / "getting-started.md", docs / "guides" / "training.md"]:
        text = page.read_text()
        assert "after the epoch that spends it" not in text and "after the batch that spends it" in text
