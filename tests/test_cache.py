"""Tests for kvae.data.cache: prepare() skips bad files, reuses and rebuilds the cache, memory-maps it."""

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from audio import sine, tone_wav, truncated_wav, wav_file
from kvae.data.audio_io import read_audio, resample
from kvae.data.cache import MANIFEST, Corpus, file_crc32, prepare
from kvae.data.windows import WindowSource
from kvae.errors import KvaeError

SR = 8000
RATE = 3000


def _good_folder(root, n=3, seconds=1.0):
    for i in range(n):
        tone_wav(root / f"good{i}.wav", seconds, freq=200.0 + 50 * i, rate=SR)
    return root


def _one_line(exc):
    text = str(exc)
    assert "\n" not in text, text
    return text


def _add_bad_files(root):
    """Write one file of each kind of damage; return {name: words its reason must contain}."""
    truncated_wav(root / "truncated.wav", seconds=1.0, rate=SR)
    truncated_wav(root / "header.wav", keep=30, seconds=1.0, rate=SR)
    (root / "text.wav").write_text("this is a text file, not audio\n" * 10)
    (root / "zero.wav").write_bytes(b"")
    nan = sine(220.0, 1.0, SR)
    nan[100] = np.nan
    wav_file(root / "nan.wav", nan, SR)
    inf = sine(220.0, 1.0, SR)
    inf[5] = np.inf
    inf[6] = -np.inf
    wav_file(root / "inf.wav", inf, SR)
    return {
        "truncated.wav": ("truncated",),
        "header.wav": ("corrupt", "truncated"),  # either word describes a 30-byte header
        "text.wav": ("not a wav",),
        "zero.wav": ("empty",),
        "nan.wav": ("nan or inf",),
        "inf.wav": ("nan or inf",),
    }


# ---------------------------------------------------------------- bad inputs


def test_bad_files_are_skipped_and_listed(tmp_path):
    root = _good_folder(tmp_path / "data", n=2)
    expected = _add_bad_files(root)
    corpus = prepare(root, sample_rate=RATE, cache_dir=tmp_path / "cache")
    report = corpus.report
    assert report.found == 2 + len(expected)
    assert report.built == 2 and report.reused == 0
    assert sorted(e.key for e in corpus.entries) == ["good0", "good1"]
    skipped = {Path(p).name: reason for p, reason in report.skipped}
    assert sorted(skipped) == sorted(expected)
    for name, words in expected.items():
        reason = skipped[name].lower()
        assert any(w in reason for w in words), (name, reason)
        assert "\n" not in reason
    for path, _ in report.skipped:
        assert Path(path).parent == root
    assert any("skipped:" in line and "truncated.wav" in line for line in report.summary())


def test_all_bad_files_is_an_error_with_report(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    expected = _add_bad_files(root)
    with pytest.raises(KvaeError) as err:
        prepare(root, sample_rate=RATE, cache_dir=tmp_path / "cache")
    text = _one_line(err.value)
    assert str(root) in text and "no usable audio" in text
    report = err.value.report
    assert sorted(Path(p).name for p, _ in report.skipped) == sorted(expected)
    assert report.found == len(expected) and report.built == 0


# ---------------------------------------------------------------- short recordings


def test_short_recording_counted_and_zero_padded(tmp_path):
    root = tmp_path / "data"
    tone_wav(root / "long.wav", 2.0, rate=SR)
    tone_wav(root / "short.wav", 0.4, rate=SR)
    corpus = prepare(root, sample_rate=RATE, cache_dir=tmp_path / "cache", window_seconds=1.0)
    assert corpus.report.short == ["short"]
    assert any(line.startswith("short:") and "short" in line for line in corpus.report.summary())
    entry = {e.key: e for e in corpus.entries}["short"]
    assert entry.frames == 1200
    window = RATE  # 1 s
    for random in (True, False):
        source = WindowSource(corpus, "train", window=window, batch_size=2, random=random, seed=3)
        assert source.short == ["short"]
        index = [e.key for e in source.entries].index("short")
        plan = source.plan(0)
        row = int(np.flatnonzero(plan[:, 0] == index)[0])
        x = source.read(plan[row:row + 1])[0]
        assert x.shape == (window,)
        np.testing.assert_array_equal(x[:1200], corpus.array(entry)[:1200])
        assert np.all(x[1200:] == 0)
        assert np.abs(x[:1200]).max() > 0.3


# ---------------------------------------------------------------- caching


def test_second_prepare_reuses_everything(tmp_path):
    root = _good_folder(tmp_path / "data", n=3)
    cache = tmp_path / "cache"
    first = prepare(root, sample_rate=RATE, cache_dir=cache)
    assert (first.report.built, first.report.reused) == (3, 0)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (cache / "audio").iterdir()}
    second = prepare(root, sample_rate=RATE, cache_dir=cache)
    assert (second.report.built, second.report.reused) == (0, 3)
    assert {p.name: p.stat().st_mtime_ns for p in (cache / "audio").iterdir()} == mtimes
    for a, b in zip(first.entries, second.entries):
        assert (a.key, a.file, a.frames) == (b.key, b.file, b.frames)
        np.testing.assert_array_equal(first.array(a), second.array(b))
    assert second.report.seconds_of_audio == pytest.approx(3.0, abs=1e-3)
    assert second.report.cache_bytes == sum(e.file.stat().st_size for e in second.entries)


def test_changed_source_is_rebuilt_alone(tmp_path):
    root = _good_folder(tmp_path / "data", n=3)
    cache = tmp_path / "cache"
    prepare(root, sample_rate=RATE, cache_dir=cache)
    changed = root / "good1.wav"
    tone_wav(changed, 1.5, freq=440.0, rate=SR)
    later = time.time() + 10
    os.utime(changed, (later, later))
    corpus = prepare(root, sample_rate=RATE, cache_dir=cache)
    assert (corpus.report.built, corpus.report.reused) == (1, 2)
    entry = {e.key: e for e in corpus.entries}["good1"]
    assert entry.frames == 4500
    audio, rate = read_audio(changed)
    np.testing.assert_array_equal(corpus.array(entry), resample(audio, rate, RATE))
    again = prepare(root, sample_rate=RATE, cache_dir=cache)
    assert (again.report.built, again.report.reused) == (0, 3)


def test_deleted_cache_file_is_rebuilt(tmp_path):
    root = _good_folder(tmp_path / "data", n=2)
    cache = tmp_path / "cache"
    corpus = prepare(root, sample_rate=RATE, cache_dir=cache)
    corpus.entries[0].file.unlink()
    again = prepare(root, sample_rate=RATE, cache_dir=cache)
    assert (again.report.built, again.report.reused) == (1, 1)


def test_garbage_manifest_is_noted_and_rebuilt(tmp_path):
    root = _good_folder(tmp_path / "data", n=2)
    cache = tmp_path / "cache"
    prepare(root, sample_rate=RATE, cache_dir=cache)
    (cache / MANIFEST).write_text("{not json at all")
    corpus = prepare(root, sample_rate=RATE, cache_dir=cache)
    assert corpus.report.built == 2 and corpus.report.reused == 0
    assert any("unreadable cache manifest" in n for n in corpus.report.notes)
    assert all("\n" not in n for n in corpus.report.notes)
    json.loads((cache / MANIFEST).read_text())  # rewritten as valid JSON
    assert prepare(root, sample_rate=RATE, cache_dir=cache).report.reused == 2


def test_cache_dir_used_at_another_rate_is_rebuilt(tmp_path):
    root = _good_folder(tmp_path / "data", n=2)
    cache = tmp_path / "cache"
    prepare(root, sample_rate=RATE, cache_dir=cache)
    corpus = prepare(root, sample_rate=4000, cache_dir=cache)
    assert corpus.report.built == 2 and corpus.report.reused == 0
    notes = [n for n in corpus.report.notes if "rate" in n]
    assert len(notes) == 1 and "3000" in notes[0] and "4000" in notes[0]
    assert corpus.sample_rate == 4000 and all(e.frames == 4000 for e in corpus.entries)
    for e in corpus.entries:
        assert len(corpus.array(e)) == 4000
    again = prepare(root, sample_rate=4000, cache_dir=cache)
    assert (again.report.built, again.report.reused) == (0, 2) and again.report.notes == []


def test_default_cache_dir_under_kvae_home(tmp_path, kvae_home):
    root = _good_folder(tmp_path / "data", n=1)
    corpus = prepare(root, sample_rate=RATE)
    assert corpus.report.cache_dir.is_relative_to(kvae_home / "cache")
    assert corpus.report.cache_dir.name == f"{RATE}hz"
    assert corpus.entries[0].file.is_relative_to(corpus.report.cache_dir)


def test_cache_under_a_regular_file_is_an_error(tmp_path):
    root = _good_folder(tmp_path / "data", n=1)
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    cache = blocker / "cache"
    with pytest.raises(KvaeError) as err:
        prepare(root, sample_rate=RATE, cache_dir=cache)
    text = _one_line(err.value)
    assert str(cache) in text and "not writable" in text


def test_read_only_cache_folder_is_an_error(tmp_path):
    root = _good_folder(tmp_path / "data", n=1)
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        if os.access(cache, os.W_OK):
            pytest.skip("chmod does not stop this user writing (root)")
        with pytest.raises(KvaeError) as err:
            prepare(root, sample_rate=RATE, cache_dir=cache)
        assert str(cache) in _one_line(err.value)
    finally:
        cache.chmod(0o700)


# ---------------------------------------------------------------- the corpus


def test_corpus_arrays_are_read_only_memory_maps(tmp_path):
    root = _good_folder(tmp_path / "data", n=2)
    corpus = prepare(root, sample_rate=RATE, cache_dir=tmp_path / "cache")
    assert isinstance(corpus, Corpus)
    for entry in corpus.entries:
        arr = corpus.array(entry)
        assert isinstance(arr, np.memmap)
        assert arr.dtype == np.float32 and arr.ndim == 1 and len(arr) == entry.frames
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 1.0
    assert corpus.seconds == pytest.approx(2.0, abs=1e-3)


def test_cached_data_equals_resampled_decoded_audio(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    wav_file(root / "hi.wav", (0.2 * rng.standard_normal(44100 + 123)).astype(np.float32), 44100)
    wav_file(root / "test" / "i16.wav", (rng.standard_normal(30000) * 3000).astype(np.int16), 22050)
    corpus = prepare(root, sample_rate=RATE, cache_dir=tmp_path / "cache")
    by_key = {e.key: e for e in corpus.entries}
    assert by_key["hi"].split == "train" and by_key["test/i16"].split == "test"
    assert [e.key for e in corpus.split("test")] == ["test/i16"]
    for key, name in (("hi", "hi.wav"), ("test/i16", "test/i16.wav")):
        audio, rate = read_audio(root / name)
        expected = resample(audio, rate, RATE)
        got = corpus.array(by_key[key])
        assert by_key[key].frames == len(expected)
        np.testing.assert_array_equal(np.asarray(got), expected)


def test_unknown_rate_is_an_error(tmp_path):
    root = _good_folder(tmp_path / "data", n=1)
    with pytest.raises(KvaeError) as err:
        prepare(root, sample_rate=0, cache_dir=tmp_path / "cache")
    assert "rate" in _one_line(err.value)


def test_same_stem_different_suffix_kept_apart(tmp_path):
    root = tmp_path / "data"
    tone_wav(root / "a.wav", 1.0, freq=200.0, rate=SR)
    tone_wav(root / "a.wave", 2.0, freq=300.0, rate=SR)
    corpus = prepare(root, sample_rate=RATE, cache_dir=tmp_path / "cache")
    assert len({e.key for e in corpus.entries}) == 2
    assert len({e.file for e in corpus.entries}) == 2
    again = prepare(root, sample_rate=RATE, cache_dir=tmp_path / "cache")
    assert again.report.reused == 2


def test_manifest_with_wrong_entry_types_is_rebuilt(tmp_path):
    root = _good_folder(tmp_path / "data", n=1)
    cache = tmp_path / "cache"
    prepare(root, sample_rate=RATE, cache_dir=cache)
    manifest = json.loads((cache / MANIFEST).read_text())
    manifest["entries"] = {"good0": "not a record"}
    (cache / MANIFEST).write_text(json.dumps(manifest))
    corpus = prepare(root, sample_rate=RATE, cache_dir=cache)
    assert corpus.report.built == 1
    assert any("unreadable cache manifest" in n for n in corpus.report.notes)


def test_embedded_default_dataset(tmp_path, embedded):
    corpus = prepare(embedded, sample_rate=RATE, cache_dir=tmp_path / "cache", window_seconds=1.0)
    report = corpus.report
    assert report.layout == "musicnet" and report.skipped == [] and report.short == []
    assert report.found == len(corpus.entries) > 0
    assert corpus.split("train") and corpus.split("test")
    assert all(e.metadata.get("ensemble") for e in corpus.entries)
    default = prepare(None, sample_rate=RATE, cache_dir=tmp_path / "cache")  # None means the embedded dataset
    assert default.report.root == report.root and default.report.reused == report.found


# ---------------------------------------------------------------- damage the cache, fill the disk


@pytest.mark.parametrize("damage, words", [("nan", "it holds 4 NaN or Inf samples"),
                                           ("header", "its .npy header is unreadable")])
def test_corrupted_cache_file_of_the_same_size_is_rebuilt(tmp_path, damage, words):
    root = _good_folder(tmp_path / "data", n=2)
    cache = tmp_path / "cache"
    npy = prepare(root, sample_rate=RATE, cache_dir=cache).entries[0].file
    raw = bytearray(npy.read_bytes())
    if damage == "nan":
        raw[-16:] = np.full(4, np.nan, np.float32).tobytes()
    else:
        raw[:6] = b"GARBLE"  # where the .npy magic string was
    size = npy.stat().st_size
    npy.write_bytes(bytes(raw))
    assert npy.stat().st_size == size
    corpus = prepare(root, sample_rate=RATE, cache_dir=cache)
    report = corpus.report
    assert (report.built, report.reused) == (1, 1)
    [(path, reason)] = report.rebuilt
    assert path == str(npy) and reason.startswith("cache file corrupted") and words in reason, reason
    assert f"rebuilt:    {npy}: {reason}" in report.summary()
    audio, rate = read_audio(root / "good0.wav")
    np.testing.assert_array_equal(corpus.array(corpus.entries[0]), resample(audio, rate, RATE))
    again = prepare(root, sample_rate=RATE, cache_dir=cache).report
    assert (again.built, again.reused, again.rebuilt) == (0, 2, [])


@pytest.mark.parametrize("peak", [3.4e38, 2e4])
def test_a_source_beyond_the_sample_bound_is_skipped_with_its_peak(tmp_path, peak):
    # Values that cannot be music: near the float32 limit (the resampling filter would overflow to Inf,
    # and fit would blame the learning rate), or simply far beyond +-1.
    root = _good_folder(tmp_path / "data", n=1)
    wav_file(root / "loud.wav", np.where(np.arange(SR) % 400 < 200, peak, -peak).astype(np.float32), SR)
    corpus = prepare(root, sample_rate=RATE, cache_dir=tmp_path / "cache")
    assert [e.key for e in corpus.entries] == ["good0"]
    [(path, reason)] = corpus.report.skipped
    assert path == str(root / "loud.wav")
    assert reason.startswith(f"its samples reach {peak:.3g}, beyond +-10000: not audio"), reason


def test_a_cached_file_holding_nan_with_a_valid_crc_is_rebuilt(tmp_path):
    root = _good_folder(tmp_path / "data", n=1)
    cache = tmp_path / "cache"
    corpus = prepare(root, sample_rate=RATE, cache_dir=cache)
    npy = corpus.entries[0].file
    audio = np.load(npy)
    audio[10:13] = np.nan
    np.save(npy, audio)  # same size; now give it a valid CRC, as a hostile or buggy writer could
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["entries"]["good0"]["crc32"] = file_crc32(npy)
    (cache / "manifest.json").write_text(json.dumps(manifest))
    report = prepare(root, sample_rate=RATE, cache_dir=cache).report
    assert report.rebuilt == [(str(npy), "cache file holds 3 NaN or Inf samples")]
    assert np.isfinite(np.load(npy)).all()


def test_links_that_lead_nowhere_are_in_the_report(tmp_path):
    root = _good_folder(tmp_path / "data", n=1)
    (root / "loop.wav").symlink_to("loop.wav")
    report = prepare(root, sample_rate=RATE, cache_dir=tmp_path / "cache").report
    assert report.skipped == [(str(root / "loop.wav"), "symlink loop (the link leads back to itself)")]
    assert (report.found, report.built) == (2, 1)
    assert f"skipped:    {root / 'loop.wav'}: symlink loop (the link leads back to itself)" in report.summary()


def _assert_disk_full(err, cache):
    text = _one_line(err.value)
    assert text.startswith(f"{cache}: disk full (ENOSPC) while writing audio/"), text
    assert not [p for p in cache.rglob("*") if p.name.startswith(".tmp-")]  # no half-written file is left


def test_disk_full_is_one_line_error_simulated(tmp_path, monkeypatch):
    root = _good_folder(tmp_path / "data", n=2)
    cache = tmp_path / "cache"
    real = np.lib.format.write_array
    calls = []

    def write_array(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second file: a few bytes go out, then the disk is full
            fp.write(b"\x93NUMPY")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_array)
    with pytest.raises(KvaeError) as err:
        prepare(root, sample_rate=RATE, cache_dir=cache)
    _assert_disk_full(err, cache)
    assert sorted(json.loads((cache / MANIFEST).read_text())["entries"]) == ["good0"]  # kept for the rerun


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (needs root); skipped where it cannot be mounted."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                              capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f"cannot run mount ({exc}); test_disk_full_is_one_line_error_simulated covers ENOSPC")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({proc.stderr.strip()}); the simulated test covers ENOSPC")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30)


def test_disk_full_on_a_real_small_disk(tmp_path, small_disk):
    root = _good_folder(tmp_path / "data", n=3, seconds=6.4)  # 205 kB each cached at 8 kHz: two fit in 512 KiB
    cache = small_disk / "cache"
    with pytest.raises(KvaeError) as err:
        prepare(root, sample_rate=SR, cache_dir=cache)
    _assert_disk_full(err, cache)
    assert sorted(json.loads((cache / MANIFEST).read_text())["entries"]) == ["good0", "good1"]
    subprocess.run(["mount", "-o", "remount,size=2m", str(small_disk)], check=True, timeout=30)  # space freed
    report = prepare(root, sample_rate=SR, cache_dir=cache).report
    assert (report.built, report.reused) == (1, 2)


def test_fit_names_a_cache_file_that_turns_nan(tmp_path):
    # the cache goes bad after prepare checked it (another program, a failing disk): fit must name the
    # file, not blame the learning rate
    import keras

    import kvae

    root = _good_folder(tmp_path / "data", n=2)
    cache = tmp_path / "cache"

    class SpoilTheCache(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            for npy in (cache / "audio").glob("*.npy"):
                samples = np.load(npy, mmap_mode="r+")
                samples[:] = np.nan
                samples.flush()
                del samples

    config = {
        "name": "nan", "data": {"sample_rate": RATE, "window_seconds": 0.25, "batch_size": 4, "cache": str(cache)},
        "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 16, "latent_dim": 4},
        "train": {"epochs": 1, "steps_per_epoch": 2, "n_samples": 1, "verbose": 0},
    }
    with pytest.raises(KvaeError) as err:
        kvae.fit(config, data=root, run=tmp_path / "run", verbose=False, callbacks=[SpoilTheCache()])
    text = _one_line(err.value)
    assert text.startswith(str(cache / "audio")) and "NaN or Inf samples" in text and "learning_rate" not in text
