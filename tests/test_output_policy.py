"""Nothing lost: the output policy (kvae.paths), the run lock, the bounds table (kvae.bounds) and the
fault-probe cases of issue 24, each through the entry point a user would take."""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import kvae
from audio import wav_file
from kvae import bounds, cli
from kvae.data import WavWriter, prepare, read_audio, write_wav
from kvae.errors import KvaeError
from kvae.paths import OwnedFolder
from kvae.runs import check_output_file, run_lock
from model_checks import StopAfter

RATE = 3000
DATA = {"sample_rate": RATE, "window_seconds": 0.25, "windows_per_recording": 2, "batch_size": 8}
TRAIN = {"epochs": 1, "steps_per_epoch": 2, "n_samples": 2, "verbose": 0, "gallery": False}
TINY = {"data": DATA, "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 16, "latent_dim": 4},
        "train": TRAIN}
PRIOR = {"prior": {"context_seconds": 0.2, "width": 8, "components": 2}, "gmm": {"components": 2},
         "train": {"epochs": 2, "steps_per_epoch": 1, "batch_size": 4, "max_seconds": 24.0, "verbose": 0}}


@pytest.fixture(scope="module")
def trained(embedded, tmp_path_factory):
    run = tmp_path_factory.mktemp("policy") / "run"
    kvae.fit(TINY, run=run, verbose=False)
    return run


def copy_run(trained, tmp_path, name="run"):
    shutil.copytree(trained, tmp_path / name)
    return tmp_path / name


def digests(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("kvae: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    return err


# ---------------------------------------------------------------- data lost (fix first)


def test_generate_never_replaces_a_model_a_run_file_or_an_existing_file(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    before = digests(run)
    for target in (run / "model.keras", run / "config.json"):
        for extra in ([], ["--overwrite"]):
            assert cli.main(["generate", str(run), "--seconds", "1", "--out", str(target), *extra]) == 2
            one_line_error(capsys, str(target))
    assert digests(run) == before  # the trained VAE and its config are untouched
    mine = tmp_path / "mine.wav"
    mine.write_bytes(b"my recording")
    assert cli.main(["generate", str(run), "--seconds", "1", "--out", str(mine)]) == 2
    one_line_error(capsys, "exists", "--overwrite")
    assert mine.read_bytes() == b"my recording"
    assert cli.main(["generate", str(run), "--seconds", "1", "--out", str(mine), "--overwrite"]) == 0
    assert read_audio(mine)[0].shape == (RATE,)


def test_reconstruct_and_evaluate_refuse_an_existing_output_unless_told(trained, tmp_path, capsys):
    source = tmp_path / "in.wav"
    write_wav(source, 0.3 * np.sin(np.arange(RATE) / 5.0), RATE)
    target = tmp_path / "out.wav"
    target.write_bytes(b"keep me")
    assert cli.main(["reconstruct", str(trained), str(source), str(target)]) == 2
    one_line_error(capsys, "exists")
    assert target.read_bytes() == b"keep me"
    assert cli.main(["reconstruct", str(trained), str(source), str(target), "--overwrite"]) == 0
    assert read_audio(target)[0].shape == (RATE,)
    report = tmp_path / "notes.json"
    report.write_text("my notes")
    assert cli.main(["evaluate", str(trained), "--out", str(report), "--n-clips", "16"]) == 2
    one_line_error(capsys, "exists")  # refused before the evaluation runs
    assert report.read_text() == "my notes"
    assert cli.main(["evaluate", str(trained), "--out", str(tmp_path / "newdir") + "/", "--n-clips", "16"]) == 2
    one_line_error(capsys, "is a folder")
    assert not (tmp_path / "newdir").exists()


def test_gallery_never_overwrites_nor_deletes_what_it_did_not_write(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path, "samples")  # a run folder named like the gallery's clips
    out = tmp_path / "shared"
    theirs = out / "samples"
    theirs.mkdir(parents=True)
    for i in range(3):
        for kind in ("sample", "real", "recon", "piece"):
            (theirs / f"{kind}_{i}.wav").write_bytes(b"user file")
    before = digests(out)
    assert cli.main(["gallery", str(run), "--out", str(out), "-n", "1"]) == 2
    one_line_error(capsys, str(out), "not written by kvae gallery")
    assert digests(out) == before  # the 12 files are all there, unchanged

    page = tmp_path / "page"
    assert cli.main(["gallery", str(run), "--out", str(page), "-n", "2"]) == 0
    assert (page / "samples" / "recon_1.wav").is_file()
    (page / "samples" / "my_notes.txt").write_text("mine")
    (page / "samples" / "sample_7.wav").write_bytes(b"mine too")  # a clip name the gallery did not write
    assert cli.main(["gallery", str(run), "--out", str(page), "-n", "1"]) == 0  # its own folder: rewritten
    assert not (page / "samples" / "recon_1.wav").exists()  # its own stale clip went
    assert (page / "samples" / "my_notes.txt").read_text() == "mine"
    assert (page / "samples" / "sample_7.wav").read_bytes() == b"mine too"
    mode = stat.S_IMODE((page / "index.html").stat().st_mode)
    assert mode & 0o044 == 0o044 & ~current_umask()  # readable by others as the umask allows, not 0600


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_owned_folder_refuses_a_file_it_did_not_write(tmp_path):
    owned = OwnedFolder(tmp_path / "g", "gallery")
    path = owned.file("a/x.wav")
    path.parent.mkdir()
    path.write_bytes(b"1")
    (tmp_path / "g" / "a" / "y.wav").write_bytes(b"user")
    with pytest.raises(KvaeError, match="was not written by kvae gallery"):
        owned.file("a/y.wav")
    owned.remove("a/y.wav")  # not its own: nothing happens
    assert (tmp_path / "g" / "a" / "y.wav").read_bytes() == b"user"
    again = OwnedFolder(tmp_path / "g", "gallery")  # the marker remembers what it wrote
    assert again.owned("a") == ["a/x.wav"]


LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from kvae.runs import run_lock
    with run_lock(sys.argv[1], "fit"):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_process_on_a_run_folder_gets_one_line_naming_the_holder(embedded, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        config = tmp_path / "tiny.json"
        config.write_text(json.dumps(TINY))
        assert cli.main(["fit", "--config", str(config), "--run", str(run)]) == 2
        one_line_error(capsys, f"in use by process {holder.pid} (kvae fit)")
        assert not (run / "config.json").exists()  # nothing written while another process holds it
        assert cli.main(["prior", "fit", str(run)]) == 2
        capsys.readouterr()
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run, "fit"):  # released by the kill: no stale lock
        pass


def test_prior_fit_killed_while_saving_resumes_without_retraining(trained, tmp_path, monkeypatch):
    from kvae.training import loop as prior_module  # the skeleton's one atomic save

    run = copy_run(trained, tmp_path)
    real_save = prior_module.save_model_atomic

    def killed(model, path):
        if path.name == "prior.keras":
            raise KeyboardInterrupt  # the kill arrives during the final save
        return real_save(model, path)

    monkeypatch.setattr(prior_module, "save_model_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        kvae.fit_prior(run, config=PRIOR, verbose=False)
    folder = run / "prior"
    assert (folder / "backup").exists() and not (folder / "prior.keras").exists()
    monkeypatch.setattr(prior_module, "save_model_atomic", real_save)
    _, history = kvae.fit_prior(run, verbose=False)
    assert history.get("loss", []) == []  # every epoch was done: only saved again
    rows = (folder / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]  # each epoch once
    assert (folder / "prior.keras").is_file() and not (folder / "backup").exists()
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]


def test_resume_with_changed_settings_is_refused_before_anything_is_written(embedded, tmp_path, capsys):
    run = tmp_path / "run"
    config = {**TINY, "train": {**TRAIN, "epochs": 3}}
    with pytest.raises(KeyboardInterrupt):
        kvae.fit(config, run=run, verbose=False, callbacks=[StopAfter(0)])
    saved = (run / "config.json").read_text()
    assert cli.main(["fit", "--run", str(run), "--set", "model.hidden_units=32"]) == 2
    one_line_error(capsys, "model.hidden_units 16 -> 32")
    assert (run / "config.json").read_text() == saved
    assert cli.main(["fit", "--run", str(run), "--set", "train.epochs=2"]) == 0  # how long may change
    assert (run / "model.keras").is_file()


KILL_AT_THIRD = textwrap.dedent("""
    import os, signal, sys
    from kvae.data import prepare
    def progress(done, total, key):
        if done == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    prepare(sys.argv[1], sample_rate=3000, cache_dir=sys.argv[2], progress=progress)
""")


def test_prepare_killed_midway_keeps_what_it_cached_and_sweeps_its_temporaries(tmp_path):
    root = tmp_path / "data"
    for i in range(5):
        wav_file(root / f"r{i}.wav", (0.1 * np.sin(np.arange(8000) * (i + 1) / 7.0)).astype(np.float32), 8000)
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", KILL_AT_THIRD, str(root), str(cache)])
    assert done.returncode == -signal.SIGKILL
    (cache / "audio" / ".tmp-abc123.npy").write_bytes(b"half")  # what a kill during a write leaves
    (cache / "audio" / ".r9.npy.123-0123abcd.tmp.npy").write_bytes(b"half")
    report = prepare(root, sample_rate=RATE, cache_dir=cache).report
    assert (report.reused, report.built) == (3, 2)
    assert not [p.name for p in (cache / "audio").iterdir() if "tmp" in p.name]


class _FullDisk:
    """A file object whose writes fail with ENOSPC after `room` bytes, as on a full disk."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_generate_onto_a_full_disk_is_one_line_and_leaves_nothing(trained, tmp_path, monkeypatch, capsys):
    import builtins

    from kvae.data import wav_writer

    real_open = builtins.open
    monkeypatch.setattr(wav_writer, "open", lambda *a, **k: _FullDisk(real_open(*a, **k), 5000), raising=False)
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["generate", str(trained), "--seconds", "5", "--out", str(out / "piece.wav")]) == 2
    one_line_error(capsys, "disk full while writing the piece", "piece.wav")
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- bounds, tracebacks, words


@pytest.mark.parametrize("args, word", [
    (["--seconds", "nan"], "seconds"), (["--seconds", "inf"], "seconds"), (["--seconds=-inf"], "seconds"),
    (["--seconds", "1e9"], "seconds"), (["--seconds", "1e-9"], "seconds: must be from 0.01"),
    (["--temperature", "nan"], "temperature"), (["--temperature", "inf"], "temperature"),
    (["--seed", "-3"], "seed"), (["-n", "0"], "n: must be from 1"),
])
def test_generate_bounds_are_one_line(trained, tmp_path, capsys, args, word):
    assert cli.main(["generate", str(trained), "--out", str(tmp_path / "p.wav"), *args]) == 2
    one_line_error(capsys, word)
    assert not (tmp_path / "p.wav").exists()


@pytest.mark.parametrize("setting, word", [
    ("data.window_seconds=100000", "data.window_seconds"), ("data.sample_rate=1000000000", "data.sample_rate"),
    ("train.learning_rate=nan", "train.learning_rate: must be a finite number"),
    ("train.learning_rate=inf", "train.learning_rate: must be a finite number"),
    ("data.window_seconds=500", "samples per window"),
])
def test_fit_bounds_fail_at_once(embedded, tmp_path, capsys, setting, word):
    assert cli.main(["fit", "--run", str(tmp_path / "run"), "--set", setting]) == 2
    one_line_error(capsys, word)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("rate", ["0", "-5", "1000000000"])
def test_prepare_rate_out_of_bounds(embedded, capsys, rate):
    assert cli.main(["prepare", "--sample-rate", rate]) == 2
    one_line_error(capsys, "rate: must be from 1000 to 192000 Hz")


def test_the_bounds_table_is_checked_and_described():
    assert bounds.check("seconds", 2) == 2
    for bad in (float("nan"), True, "x", 1e9):
        with pytest.raises(KvaeError, match="^seconds: "):
            bounds.check("seconds", bad)
    assert any(line.startswith("data.sample_rate: whole number >= 1000") for line in bounds.describe())


def test_python_api_errors_are_kvae_errors(trained, tmp_path):
    with pytest.raises(KvaeError, match="config: expected a config file"):
        kvae.fit(42)
    with pytest.raises(KvaeError, match="seconds: must be a finite number"):
        kvae.generate(trained, seconds=float("nan"))
    import keras

    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(KvaeError, match="a Keras model \\(Sequential\\) but not a kvae model"):
        kvae.load(tmp_path / "plain.keras")


def _hostile(path, name, size):
    with zipfile.ZipFile(trained_model_path, "r") as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename != name:
                dst.writestr(item, src.read(item.filename))
        dst.writestr(name, b"\0" * size if name.endswith(".h5") else b"{" + b" " * size + b"}")


trained_model_path = None


def test_hostile_keras_archives_are_refused_before_keras_reads_them(trained, tmp_path, capsys):
    global trained_model_path
    trained_model_path = trained / "model.keras"
    _hostile(tmp_path / "padded.keras", "model.weights.h5", 100 * 2 ** 20)
    assert cli.main(["sample", str(tmp_path / "padded.keras"), "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "padding, not weights")
    _hostile(tmp_path / "config.keras", "config.json", 40 * 2 ** 20)
    assert cli.main(["sample", str(tmp_path / "config.keras"), "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "config.json is 40 MB")
    (tmp_path / "text.keras").write_text("hello")
    assert cli.main(["sample", str(tmp_path / "text.keras"), "--out", str(tmp_path / "s")]) == 2
    err = one_line_error(capsys, "not a model file")
    assert "Error" not in err  # no Python exception names


def test_a_12_bit_wav_is_read_or_named_in_one_line(trained, tmp_path, capsys):
    path = tmp_path / "twelve.wav"
    write_wav(path, 0.5 * np.sin(np.arange(RATE) / 5.0), RATE, bits=16)
    data = bytearray(path.read_bytes())
    data[34:36] = (12).to_bytes(2, "little")  # 12 bits per sample in 16-bit frames, left-justified: standard
    path.write_bytes(bytes(data))
    assert cli.main(["reconstruct", str(trained), str(path), str(tmp_path / "o.wav")]) == 0
    assert abs(float(np.abs(read_audio(path)[0]).max()) - 0.5) < 1e-3
    data[28:34] = (RATE).to_bytes(4, "little") + (1).to_bytes(2, "little")  # packed: 1 byte per 12-bit frame
    path.write_bytes(bytes(data))
    assert cli.main(["reconstruct", str(trained), str(path), str(tmp_path / "p.wav")]) == 2
    one_line_error(capsys, "12-bit WAV samples packed in 1-byte frames")


def test_wav_writer_cleans_up_and_refuses_inputs(tmp_path):
    write_wav(tmp_path / "a.wav", np.zeros(4), RATE)
    with pytest.raises(KvaeError, match="input"):
        WavWriter(tmp_path / "a.wav", RATE, inputs=[tmp_path / "a.wav"])
    with pytest.raises(RuntimeError):
        with WavWriter(tmp_path / "b.wav", RATE) as out:
            out.write(np.zeros(10))
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]
    check_output_file(tmp_path / "new.wav")  # a new file is fine


def test_work_of_known_size_checks_disk_and_memory_first(trained, tmp_path, monkeypatch):
    import shutil as shutil_module

    from kvae import bounds as bounds_module

    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(KvaeError, match="MiB of audio to write, 0.0 MiB free"):
        kvae.generate(trained, seconds=10, out=tmp_path / "p.wav")
    assert not (tmp_path / "p.wav").exists()
    monkeypatch.setattr(bounds_module, "available_memory", lambda: 1000)
    with pytest.raises(KvaeError, match="GiB needed"):
        kvae.generate(trained, seconds=10)


def test_the_bounds_page_lists_every_config_bound():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "guides" / "reliability.md").read_text()
    missing = [name for name in bounds.BOUNDS if "." in name and f"`{name}`" not in page]
    assert missing == []


@pytest.mark.parametrize("command, words", [
    ("evaluate", "nothing was written; run it again"),
    ("gallery", "the files written so far are whole"),
    ("fit", "an interrupted fit resumes with the same --run"),
])
def test_ctrl_c_says_what_this_command_leaves(trained, monkeypatch, capsys, command, words):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    target = {"evaluate": "kvae.evaluation.evaluate.evaluate", "gallery": "kvae.evaluation.gallery.write_gallery",
              "fit": "kvae.training.fit"}[command]
    monkeypatch.setattr(target, interrupted)
    assert cli.main([command, str(trained)] if command != "fit" else ["fit"]) == 130
    err = capsys.readouterr().err
    assert err == f"kvae: interrupted ({words})\n" or (words in err and err.count("\n") == 1), err


def test_ctrl_c_on_fit_nproc_is_exit_130_not_a_torchrun_traceback(monkeypatch, capsys):
    from torch.distributed.elastic.multiprocessing.api import SignalException

    def stopped(args):
        raise SignalException("Process 1 got signal: 2", sigval=signal.SIGINT)

    monkeypatch.setattr("torch.distributed.run.run", stopped)
    assert cli.main(["fit", "--nproc", "2"]) == 130
    assert capsys.readouterr().err == "kvae: interrupted (an interrupted fit resumes with the same --run)\n"


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_for_evaluate_and_the_embedded_build(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("kvae.evaluation.evaluate.evaluate", lambda *a, **k: {"realism": {}, "reconstruction": {}})
    monkeypatch.setattr("kvae.evaluation.evaluate.format_report", lambda result: "report")
    monkeypatch.setattr("kvae.paths.write_text", _no_space)
    assert cli.main(["evaluate", str(trained), "--out", str(tmp_path / "e.json")]) == 2
    one_line_error(capsys, "disk full while writing the report")
    monkeypatch.setenv("KVAE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("kvae.data.embedded.writer.generate_corpus", _no_space)
    assert cli.main(["prepare"]) == 2
    one_line_error(capsys, "disk full while building the embedded dataset")
    leftovers = [p.name for p in (tmp_path / "home" / "embedded").iterdir()]
    assert leftovers == []


def test_a_backup_that_will_not_fit_is_refused_before_hdf5_writes(embedded, tmp_path, monkeypatch, capsys):
    # HDF5 cut off by a full disk leaves objects that fail again when freed (tracebacks, a segfault at
    # exit, seen on a 6.2 MB tmpfs): the room is checked before h5py starts.
    import shutil as shutil_module

    real = shutil_module.disk_usage
    monkeypatch.setattr(shutil_module, "disk_usage", lambda p: real(p)._replace(free=100_000))
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    assert cli.main(["fit", "--config", str(config), "--run", str(run)]) == 2
    one_line_error(capsys, "disk full while backing up the run")
    assert [p.name for p in (run / "backup").iterdir()] == []


def test_sample_takes_a_whole_number_of_clips(trained):
    model = kvae.load(trained, compile=False)
    for bad, word in ((2.5, "n: expected a whole number"), (float("nan"), "n: must be a finite number"),
                      (10 ** 9, "n: must be from 0 to")):
        with pytest.raises(KvaeError, match=word):
            model.sample(bad, seed=0)
    with pytest.raises(KvaeError, match="temperature"):
        model.sample(1, seed=0, temperature=float("inf"))
    assert model.sample(2.0, seed=0).shape == (2, model.window)  # a whole float is a whole number
