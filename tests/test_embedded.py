"""Tests of the embedded synthetic corpus (kvae.data.embedded)."""

import csv
import re
import time

import numpy as np
import pytest
from scipy.io import wavfile

from kvae.data import embedded
from kvae.errors import KvaeError

GM_PROGRAMS = {1, 7, 41, 42, 43, 61, 69, 71, 72, 74}
LABEL_HEADER = "start_time,end_time,instrument,note,start_beat,end_beat,note_value"
METADATA_HEADER = "id,composer,composition,movement,ensemble,source,transcriber,catalog_name,seconds"
NOTE_VALUES = {
    "Sixteenth": 0.25, "Dotted Sixteenth": 0.375, "Eighth": 0.5, "Dotted Eighth": 0.75,
    "Quarter": 1.0, "Dotted Quarter": 1.5, "Double Dotted Quarter": 1.75, "Half": 2.0,
    "Dotted Half": 3.0, "Double Dotted Half": 3.5, "Whole": 4.0, "Dotted Whole": 6.0,
}
SMALL = {"n_train": 3, "n_test": 2, "seconds": 6.0}
SR = 44100
BUILD_TIME = {}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The default corpus (12 + 3 recordings of 20 s), built once for the module."""
    root = tmp_path_factory.mktemp("embedded-default")
    start = time.perf_counter()
    assert embedded.generate_corpus(root) == root
    BUILD_TIME["default"] = time.perf_counter() - start
    return root


def _files(root, split, kind, suffix):
    return sorted((root / "musicnet" / f"{split}_{kind}").glob(f"*{suffix}"))


def _recordings(root):
    """(split, id, audio, label rows) for every recording under root."""
    out = []
    for split in ("train", "test"):
        for wav in _files(root, split, "data", ".wav"):
            sr, audio = wavfile.read(wav)
            assert sr == SR
            labels = root / "musicnet" / f"{split}_labels" / f"{wav.stem}.csv"
            with open(labels, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            out.append((split, wav.stem, audio, rows))
    return out


def _frame_rms(x, frame):
    count = len(x) // frame
    return np.sqrt(np.mean(x[: count * frame].reshape(count, frame).astype(np.float64) ** 2, axis=1))


def _metadata(root):
    with open(root / "musicnet_metadata.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- layout and formats

def test_layout_and_counts(corpus):
    base = corpus / "musicnet"
    assert sorted(p.name for p in corpus.iterdir()) == ["musicnet", "musicnet_metadata.csv"]
    splits = ["test_data", "test_labels", "train_data", "train_labels"]
    assert sorted(p.name for p in base.iterdir()) == splits
    train = [p.stem for p in _files(corpus, "train", "data", ".wav")]
    test = [p.stem for p in _files(corpus, "test", "data", ".wav")]
    assert len(train) == 12 and len(test) == 3
    assert [p.stem for p in _files(corpus, "train", "labels", ".csv")] == train
    assert [p.stem for p in _files(corpus, "test", "labels", ".csv")] == test
    assert not set(train) & set(test)
    assert all(name.isdigit() for name in train + test)
    assert min(int(i) for i in train + test) == embedded.FIRST_ID == 9000
    for kind in ("train_data", "test_data", "train_labels", "test_labels"):
        assert all(p.is_file() for p in (base / kind).iterdir())


def test_wav_is_mono_44k1_ieee_float(corpus):
    for split in ("train", "test"):
        for wav in _files(corpus, split, "data", ".wav"):
            head = wav.read_bytes()[:44]
            assert head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt "
            assert int.from_bytes(head[20:22], "little") == 3   # WAVE_FORMAT_IEEE_FLOAT
            assert int.from_bytes(head[22:24], "little") == 1   # mono
            assert int.from_bytes(head[24:28], "little") == SR
            assert int.from_bytes(head[34:36], "little") == 32  # bits per sample
            sr, audio = wavfile.read(wav)
            assert sr == SR and audio.dtype == np.float32 and audio.ndim == 1
            assert len(audio) == 20 * SR


def test_labels_follow_musicnet(corpus):
    assert set(embedded.INSTRUMENTS) == GM_PROGRAMS
    for split, rec_id, audio, rows in _recordings(corpus):
        path = corpus / "musicnet" / f"{split}_labels" / f"{rec_id}.csv"
        assert path.read_text(encoding="utf-8").splitlines()[0] == LABEL_HEADER
        assert len(rows) >= 20
        starts = [int(r["start_time"]) for r in rows]
        assert starts == sorted(starts)
        beats, lengths, onsets, durations = [], [], [], []
        for r in rows:
            start, end = int(r["start_time"]), int(r["end_time"])
            assert r["start_time"] == str(start) and r["end_time"] == str(end)  # integer samples
            assert 0 <= start < end <= len(audio)
            assert int(r["instrument"]) in GM_PROGRAMS
            assert 36 <= int(r["note"]) <= 91  # fundamentals between 65 Hz and 1.6 kHz
            start_beat, length = float(r["start_beat"]), float(r["end_beat"])
            assert start_beat >= 0 and length > 0
            value = r["note_value"]
            if value in NOTE_VALUES:
                assert NOTE_VALUES[value] == length, (value, length)
            else:
                assert value.startswith("Tied "), value
            beats.append(start_beat)
            lengths.append(length)
            onsets.append(start)
            durations.append(end - start)
        # One tempo per recording: sample positions are linear in beats, and end_beat
        # is a length in beats (MusicNet semantics), not a position.
        slope, offset = np.polyfit(beats, onsets, 1)
        assert np.max(np.abs(np.polyval((slope, offset), beats) - onsets)) <= 1.0
        assert np.max(np.abs(np.asarray(lengths) * slope - durations)) <= 2.0
        assert 60 * SR / 133 <= slope <= 60 * SR / 71  # 72-132 bpm


def test_metadata(corpus):
    lines = (corpus / "musicnet_metadata.csv").read_bytes().decode("utf-8").splitlines()
    assert lines[0] == METADATA_HEADER
    text = r'"[^"]*"'
    pattern = re.compile(rf"^\d+,{text},{text},{text},{text},{text},{text},{text},\d+$")
    assert all(pattern.match(line) for line in lines[1:]), lines[1:]
    rows = _metadata(corpus)
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows) == 15
    recordings = _recordings(corpus)
    assert set(by_id) == {rec_id for _, rec_id, _, _ in recordings}
    for split, rec_id, audio, _ in recordings:
        assert int(by_id[rec_id]["seconds"]) == round(len(audio) / SR) == 20
        assert all(by_id[rec_id][name] for name in embedded.METADATA_HEADER)
    ensembles = {r["ensemble"] for r in rows}
    assert len(ensembles) >= 2
    for split in ("train", "test"):
        ids = {rec_id for s, rec_id, _, _ in recordings if s == split}
        assert "Solo Piano" in {by_id[i]["ensemble"] for i in ids}


# --------------------------------------------------------------------------- the audio

def test_audio_is_loud_enough_and_never_clips(corpus):
    for _, rec_id, audio, _ in _recordings(corpus):
        assert np.all(np.isfinite(audio))
        assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 0.02, rec_id
        assert 0.5 <= np.max(np.abs(audio)) < 0.8, rec_id


def test_music_has_rests(corpus):
    """Between the first note and the last, some 100 ms is near-silent."""
    for _, rec_id, audio, rows in _recordings(corpus):
        first = min(int(r["start_time"]) for r in rows)
        last = max(int(r["end_time"]) for r in rows)
        rms = _frame_rms(audio[first:last], SR // 10)
        assert rms.min() < np.median(rms) / 20, rec_id


def _flatness(x, frame=2048):
    """Mean spectral flatness (geometric / arithmetic mean of the power) of the louder frames."""
    count = len(x) // frame
    frames = x[: count * frame].reshape(count, frame).astype(np.float64)
    frames = frames[_frame_rms(x, frame) > 0.1 * np.median(_frame_rms(x, frame))]
    power = np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1)) ** 2 + 1e-20
    return float(np.mean(np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)))


def test_audio_is_tonal_not_noise(corpus):
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    assert _flatness(noise) > 0.3  # the measure does tell noise apart
    for _, rec_id, audio, _ in _recordings(corpus):
        assert _flatness(audio) < 0.05, rec_id


def _pitch_agreement(audio, rows, shift=0):
    """Share of frames whose strongest peak (55 Hz - 2 kHz) is a low harmonic of a sounding note."""
    notes = [(int(r["start_time"]), int(r["end_time"]), int(r["note"]) + shift) for r in rows]
    frame = 4096
    freqs = np.fft.rfftfreq(frame, 1 / SR)
    band = (freqs > 55) & (freqs < 2000)
    window = np.hanning(frame)
    hits = total = 0
    for s in range(0, len(audio) - frame, frame):
        if not any(a <= s and b >= s + frame for a, b, _ in notes):
            continue  # no note held through the whole frame
        sounding = [p for a, b, p in notes if a <= s + frame and b + SR * 0.15 >= s]
        peak = freqs[band][np.argmax(np.abs(np.fft.rfft(audio[s:s + frame] * window))[band])]
        harmonics = np.outer(440 * 2 ** ((np.asarray(sounding) - 69) / 12), np.arange(1, 5))
        total += 1
        hits += bool(np.any(np.abs(harmonics - peak) <= np.maximum(0.03 * harmonics, SR / frame)))
    return hits / total


def test_labels_match_the_rendered_audio(corpus):
    for _, rec_id, audio, rows in _recordings(corpus):
        assert _pitch_agreement(audio, rows) > 0.95, rec_id
        assert _pitch_agreement(audio, rows, shift=6) < 0.5, rec_id  # wrong labels are caught


def test_frames_without_notes_are_quiet(corpus):
    for _, rec_id, audio, rows in _recordings(corpus):
        active = np.zeros(len(audio), dtype=bool)
        for r in rows:  # a note sounds from its onset to 0.4 s after its offset (release, room)
            active[int(r["start_time"]): int(r["end_time"]) + int(0.4 * SR)] = True
        frame = SR // 10
        rms = _frame_rms(audio, frame)
        idle = ~_frame_rms(active.astype(np.float32), frame).astype(bool)
        assert idle.any() and np.all(rms[idle] < np.median(rms) / 50), rec_id


def test_default_build_time(corpus):
    print(f"default embedded corpus built in {BUILD_TIME['default']:.2f} s")
    assert BUILD_TIME["default"] < 60  # target: a few seconds; this only catches a pathology


# --------------------------------------------------------------------------- determinism and arguments

def _tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(tmp_path):
    first = _tree_bytes(embedded.generate_corpus(tmp_path / "a", seed=3, **SMALL))
    second = _tree_bytes(embedded.generate_corpus(tmp_path / "b", seed=3, **SMALL))
    other = _tree_bytes(embedded.generate_corpus(tmp_path / "c", seed=4, **SMALL))
    assert len(first) == 2 * 5 + 1
    assert first == second
    assert set(other) == set(first)
    for name in first:
        if name.endswith(".wav"):
            assert first[name] != other[name], name


def test_parameters_shape_the_corpus(tmp_path):
    root = embedded.generate_corpus(tmp_path / "c", seed=1, n_train=2, n_test=1, seconds=4.0,
                                    sample_rate=22050)
    recordings = [p for p in (root / "musicnet").rglob("*.wav")]
    assert len(recordings) == 3
    for wav in recordings:
        sr, audio = wavfile.read(wav)
        assert sr == 22050 and len(audio) == 4 * 22050
    assert [r["seconds"] for r in _metadata(root)] == ["4", "4", "4"]
    assert [r["ensemble"] for r in _metadata(root)][::2] == ["Solo Piano", "Solo Piano"]


@pytest.mark.parametrize("kwargs", [
    {"seconds": 1.0}, {"n_train": 0, "n_test": 0}, {"n_train": -1}, {"sample_rate": 4000},
])
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(KvaeError):
        embedded.generate_corpus(tmp_path, **kwargs)


# --------------------------------------------------------------------------- the cache

@pytest.fixture
def home(tmp_path, monkeypatch):
    """KVAE_HOME in a temporary folder, and a generate_corpus that builds a tiny corpus and counts."""
    monkeypatch.setenv("KVAE_HOME", str(tmp_path / "home"))
    calls = []
    real = embedded.generate_corpus

    def tiny(root, seed=0, **_):
        calls.append(seed)
        return real(root, seed=seed, n_train=1, n_test=1, seconds=3.0)

    monkeypatch.setattr(embedded.writer, "generate_corpus", tiny)
    return tmp_path / "home", calls


def _mtimes(root):
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_embedded_root_builds_once_then_reuses(home):
    kvae_home, calls = home
    root = embedded.embedded_root(seed=5)
    assert root == kvae_home / "embedded" / f"v{embedded.EMBEDDED_VERSION}-seed5"
    assert (root / embedded.MARKER_FILE).is_file()
    assert (root / "musicnet_metadata.csv").is_file()
    assert len(list((root / "musicnet").rglob("*.wav"))) == 2
    assert calls == [5]
    before = _mtimes(root)
    time.sleep(0.01)
    assert embedded.embedded_root(seed=5) == root
    assert calls == [5] and _mtimes(root) == before
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temporary folders left


def test_embedded_root_rebuilds_a_folder_without_marker(home):
    kvae_home, calls = home
    half = kvae_home / "embedded" / f"v{embedded.EMBEDDED_VERSION}-seed0"
    (half / "musicnet").mkdir(parents=True)
    (half / "musicnet" / "leftover.txt").write_text("from an interrupted build")
    root = embedded.embedded_root()
    assert root == half and calls == [0]
    assert (root / embedded.MARKER_FILE).is_file()
    assert not (root / "musicnet" / "leftover.txt").exists()
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_interrupted_build_leaves_no_corpus(home, monkeypatch):
    kvae_home, _ = home

    def crash(root, seed=0, **_):
        (root / "musicnet").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded.writer, "generate_corpus", crash)
    with pytest.raises(KeyboardInterrupt):
        embedded.embedded_root(seed=2)
    assert list((kvae_home / "embedded").iterdir()) == []


def test_embedded_root_uses_a_corpus_another_process_finished(home, monkeypatch):
    kvae_home, _ = home
    final = kvae_home / "embedded" / f"v{embedded.EMBEDDED_VERSION}-seed7"
    builder = embedded.writer.generate_corpus

    def racing(root, seed=0, **kwargs):
        builder(root, seed=seed, **kwargs)
        builder(final, seed=seed, **kwargs)  # meanwhile another process completes the cache
        (final / embedded.MARKER_FILE).write_text("theirs")

    monkeypatch.setattr(embedded.writer, "generate_corpus", racing)
    assert embedded.embedded_root(seed=7) == final
    assert (final / embedded.MARKER_FILE).read_text() == "theirs"
    assert [p.name for p in final.parent.iterdir()] == [final.name]


def test_embedded_root_honours_seed_in_folder_name(home):
    kvae_home, calls = home
    assert embedded.embedded_root(seed=1) != embedded.embedded_root(seed=2)
    assert calls == [1, 2]
    names = sorted(p.name for p in (kvae_home / "embedded").iterdir())
    assert names == [f"v{embedded.EMBEDDED_VERSION}-seed1", f"v{embedded.EMBEDDED_VERSION}-seed2"]
