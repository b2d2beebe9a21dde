"""Tests for `kvae prepare` through the real entry point (kvae.cli.main) and as a subprocess."""

import contextlib
import importlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

from audio import tone_wav, truncated_wav, write_musicnet
from kvae.cli import main
from kvae.errors import KvaeError


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_error_line(err, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kvae: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_prepare_summary_with_a_bad_file(tmp_path, capsys):
    root = tmp_path / "data"
    tone_wav(root / "a.wav", 1.5)
    tone_wav(root / "test" / "b.wav", 1.5, freq=330.0)
    truncated_wav(root / "broken.wav", seconds=1.5)
    cache = tmp_path / "cache"
    code, out, err = _run(capsys, "prepare", "--data", str(root), "--cache", str(cache))
    assert code == 0, err
    assert "Traceback" not in err
    assert re.search(r"^recordings: 3 found, 2 built, 0 reused, 1 skipped$", out, re.M), out
    assert re.search(r"^audio: +0\.001 hours \(3\.0 s\)$", out, re.M), out
    assert re.search(r"^skipped: .*broken\.wav: truncated WAV", out, re.M), out
    assert re.search(r"^cache size: +[0-9.]+ MB$", out, re.M), out
    assert re.search(r"^time: +[0-9.]+ s$", out, re.M), out
    assert re.search(rf"^cache: +{re.escape(str(cache))} at 3000 Hz$", out, re.M), out
    assert re.search(r"^data: .*\(folder layout\)$", out, re.M), out
    assert (cache / "manifest.json").is_file()
    # again: everything reused, the bad file still listed
    code, out, _ = _run(capsys, "prepare", "--data", str(root), "--cache", str(cache))
    assert code == 0
    assert "recordings: 3 found, 0 built, 2 reused, 1 skipped" in out
    assert "broken.wav" in out


def test_prepare_rate_and_short_window(tmp_path, capsys):
    root = tmp_path / "data"
    tone_wav(root / "long.wav", 3.0)
    tone_wav(root / "tiny.wav", 0.5)
    code, out, err = _run(capsys, "prepare", "--data", str(root), "--cache", str(tmp_path / "c"),
                          "--rate", "4000", "--window", "2")
    assert code == 0, err
    assert " at 4000 Hz" in out
    short = [line for line in out.splitlines() if line.startswith("short:")]
    assert len(short) == 1 and "tiny" in short[0] and "long" not in short[0] and "2 s window" in short[0]


def test_prepare_missing_data_path(tmp_path, capsys):
    missing = tmp_path / "does-not-exist"
    code, out, err = _run(capsys, "prepare", "--data", str(missing), "--cache", str(tmp_path / "c"))
    assert code == 2
    _assert_one_error_line(err, str(missing), "does not exist")


def test_prepare_empty_folder(tmp_path, capsys):
    root = tmp_path / "empty"
    root.mkdir()
    code, out, err = _run(capsys, "prepare", "--data", str(root), "--cache", str(tmp_path / "c"))
    assert code == 2
    _assert_one_error_line(err, str(root), "empty")


def test_prepare_all_bad_folder(tmp_path, capsys):
    root = tmp_path / "bad"
    root.mkdir()
    truncated_wav(root / "one.wav", seconds=1.5)
    (root / "two.wav").write_text("not audio")
    code, out, err = _run(capsys, "prepare", "--data", str(root), "--cache", str(tmp_path / "c"))
    assert code == 2
    _assert_one_error_line(err, str(root), "no usable audio")
    # the summary still says what was skipped and why
    assert re.search(r"^skipped: .*one\.wav: truncated", out, re.M), out
    assert re.search(r"^skipped: .*two\.wav: not a WAV", out, re.M), out


def test_prepare_ensemble_on_a_plain_folder(tmp_path, capsys):
    root = tmp_path / "data"
    tone_wav(root / "a.wav", 1.5)
    code, _, err = _run(capsys, "prepare", "--data", str(root), "--cache", str(tmp_path / "c"),
                        "--ensemble", "Solo Piano")
    assert code == 2
    _assert_one_error_line(err, str(root))


def test_debug_reraises(tmp_path, capsys):
    with pytest.raises(KvaeError, match="does not exist"):
        main(["--debug", "prepare", "--data", str(tmp_path / "nope"), "--cache", str(tmp_path / "c")])


def test_subprocess_error_is_one_line(tmp_path):
    env = dict(os.environ, KVAE_HOME=str(tmp_path / "home"))
    missing = tmp_path / "missing"
    proc = subprocess.run([sys.executable, "-m", "kvae.cli", "prepare", "--data", str(missing)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kvae: error: ") and str(missing) in lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize("layout, name", [("original", "musicnet"), ("kaggle", "musicnet-kaggle")])
def test_prepare_musicnet_tree_by_ensemble(tmp_path, capsys, layout, name):
    root = write_musicnet(tmp_path / "mn", layout=layout, seconds=0.5)
    cache = tmp_path / "c"
    code, out, err = _run(capsys, "prepare", "--data", str(root), "--cache", str(cache),
                          "--ensemble", "solo piano", "--window", "0.25")
    assert code == 0, err
    assert f"({name} layout)" in out
    assert "recordings: 3 found, 3 built, 0 reused, 0 skipped" in out
    assert "(1.5 s)" in out

    manifest = json.loads((cache / "manifest.json").read_text())
    assert sorted(manifest["entries"]) == ["1759", "2303", "2532"]
    assert {k: v["split"] for k, v in manifest["entries"].items()} == {"1759": "test", "2303": "test", "2532": "train"}


def test_prepare_upsampling_is_reported(tmp_path, capsys):
    root = tmp_path / "data"
    tone_wav(root / "a.wav", 0.3)  # 8 kHz
    tone_wav(root / "b.wav", 0.3)
    for _ in range(2):  # built, then reused: every prepare says so
        code, out, err = _run(capsys, "prepare", "--data", str(root), "--cache", str(tmp_path / "c"),
                              "--rate", "16000", "--window", "0.1")
        assert code == 0, err
        assert re.search(r"^upsampled: +2 recording\(s\) have a lower sample rate than 16000 Hz and are upsampled "
                         r"\(nothing above half their rate\): a\.wav \(8000 Hz\), b\.wav \(8000 Hz\)$", out, re.M), out


# ---------------------------------------------------------------- folders this user may not read


@pytest.fixture
def open_tmp():
    """A temporary folder every user may enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="kvae-perm-"))
    path.chmod(0o755)
    yield path
    for p in [path, *path.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(path)


def _prepare_unprivileged(root, cache):
    """`kvae prepare` in a forked child that drops root to uid/gid 65534 (root reads any folder).

    Not a new interpreter: the venv's python lives under /root, which uid 65534 may not enter. Returns
    `(exit code, stdout, stderr)`; an exception that escaped `main` comes back as its traceback in stderr.
    """
    cache.mkdir()
    if os.geteuid() == 0:
        os.chown(cache, 65534, 65534)
    importlib.import_module("kvae.data")  # the child may not read the standard library under /root
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(["prepare", "--data", str(root), "--cache", str(cache), "--window", "0.1"])
                except BaseException:
                    traceback.print_exc()
                    code = "exception"
            result = (code, out.getvalue(), err.getvalue())
        except BaseException as exc:
            result = ("child failed", "", repr(exc))
        with os.fdopen(write, "wb") as f:
            pickle.dump(result, f)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


def test_prepare_unlistable_subfolder_is_skipped_with_its_reason(open_tmp):
    root = open_tmp / "data"
    tone_wav(root / "a.wav", 0.3)
    locked = root / "locked"
    tone_wav(locked / "b.wav", 0.3)
    root.chmod(0o755)
    locked.chmod(0)
    code, out, err = _prepare_unprivileged(root, open_tmp / "cache")
    assert code == 0, err
    assert "recordings: 2 found, 1 built, 0 reused, 1 skipped" in out, out
    assert re.search(rf"^skipped: +{re.escape(str(locked))}: cannot list this folder "
                     r"\(Permission denied \(EACCES\)\); its audio is not used$", out, re.M), out


def test_prepare_unlistable_data_root_is_one_line(open_tmp):
    root = open_tmp / "data"
    tone_wav(root / "a.wav", 0.3)
    root.chmod(0)
    code, out, err = _prepare_unprivileged(root, open_tmp / "cache")
    assert code == 2, err
    _assert_one_error_line(err, f"{root}: cannot list the data folder (Permission denied (EACCES))")
