"""Decode and resample a dataset once, into an on-disk cache read by memory map.

Training never decodes or resamples: `prepare` writes each recording, mono
float32 at the target rate, as one ``.npy`` file, and `Corpus` opens them with
``np.load(mmap_mode="r")``, so memory does not grow with the corpus.

``manifest.json`` records the cache's settings (format version, rate,
resampler) and, per recording, what it was built from (source path, size and
mtime). A recording whose source changed, or a cache built with other
settings, is rebuilt; a recording that cannot be read is skipped and listed.
"""

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvae.data.audio_io import AudioFileError, read_audio, resample
from kvae.data.sources import find_recordings
from kvae.errors import KvaeError
from kvae.paths import kvae_home

CACHE_FORMAT_VERSION = 1
RESAMPLER = "scipy.signal.resample_poly"
MANIFEST = "manifest.json"


@dataclass
class Entry:
    """One cached recording.

    Attributes:
        key: str. The recording's id.
        split: str. `"train"` or `"test"`.
        file: Path. The cached `.npy` (mono float32 at the cache's rate).
        frames: int. Its length in samples.
        metadata: dict. Its metadata row, if any.
    """

    key: str
    split: str
    file: Path
    frames: int
    metadata: dict = field(default_factory=dict)


@dataclass
class PrepareReport:
    """What `prepare` found and did; `summary()` prints it for people."""

    root: Path
    cache_dir: Path
    layout: str
    rate: int
    found: int = 0
    built: int = 0
    reused: int = 0
    skipped: list = field(default_factory=list)  # (path, reason)
    notes: list = field(default_factory=list)
    seconds_of_audio: float = 0.0
    cache_bytes: int = 0
    wall_seconds: float = 0.0
    short: list = field(default_factory=list)  # keys shorter than the window
    window_seconds: float = 0.0

    def summary(self):
        """Return the report as printable lines."""
        lines = [
            f"data:       {self.root} ({self.layout} layout)",
            f"cache:      {self.cache_dir} at {self.rate} Hz",
            f"recordings: {self.found} found, {self.built} built, {self.reused} reused, "
            f"{len(self.skipped)} skipped",
            f"audio:      {self.seconds_of_audio / 3600:.3f} hours ({self.seconds_of_audio:.1f} s)",
            f"cache size: {self.cache_bytes / 1e6:.1f} MB",
            f"time:       {self.wall_seconds:.1f} s",
        ]
        if self.short:
            lines.append(
                f"short:      {len(self.short)} recording(s) shorter than the "
                f"{self.window_seconds:g} s window will be zero-padded: {', '.join(self.short)}"
            )
        for note in self.notes:
            lines.append(f"note:       {note}")
        for path, reason in self.skipped:
            lines.append(f"skipped:    {path}: {reason}")
        return lines


class Corpus:
    """The cached recordings of one dataset at one rate, opened by memory map.

    Args:
        entries: list of Entry.
        rate: int. Sample rate of every entry.
        report: PrepareReport or None. What built it.
    """

    def __init__(self, entries, rate, report=None):
        self.entries = list(entries)
        self.rate = int(rate)
        self.report = report
        self._arrays = {}

    def split(self, name):
        """Return the entries of one split (`"train"` or `"test"`)."""
        return [e for e in self.entries if e.split == name]

    def array(self, entry):
        """Return an entry's samples as a read-only memory-mapped float32 array."""
        arr = self._arrays.get(entry.file)
        if arr is None:
            try:
                arr = np.load(entry.file, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise KvaeError(f"{entry.file}: unreadable cache file ({exc}); run `kvae prepare` again") from None
            self._arrays[entry.file] = arr
        return arr

    @property
    def seconds(self):
        """Total duration in seconds."""
        return sum(e.frames for e in self.entries) / self.rate


def default_cache_dir(root, rate):
    """Return the cache folder kvae uses for a dataset root at a rate when none is given."""
    root = Path(root).expanduser().resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    return kvae_home() / "cache" / f"{root.name}-{digest}" / f"{int(rate)}hz"


def _entry_name(key):
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(key).name)[:40]
    return f"{stem}-{digest}.npy"


def _load_manifest(cache_dir, settings, report):
    """Return the manifest's entries if usable, noting why not otherwise."""
    path = cache_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
        entries = manifest["entries"]
        built_with = {k: manifest[k] for k in settings}
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise TypeError("entries is not a table of records")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.notes.append(f"{path}: unreadable cache manifest ({type(exc).__name__}); rebuilding the cache")
        return {}
    if built_with != settings:
        diff = ", ".join(f"{k}={built_with[k]} (now {settings[k]})" for k in settings if built_with[k] != settings[k])
        report.notes.append(f"{path}: cache built with other settings: {diff}; rebuilding the cache")
        return {}
    return entries


def _write_atomic(path, write):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cached_ok(record, source_stat, npy):
    return (
        record is not None
        and record.get("source_size") == source_stat.st_size
        and record.get("source_mtime_ns") == source_stat.st_mtime_ns
        and npy.is_file()
        and npy.stat().st_size == record.get("npy_bytes")
    )


def prepare(root=None, rate=3000, cache_dir=None, select=None, window_seconds=None, progress=None):
    """Decode, resample and cache every recording of a dataset.

    Args:
        root: str, Path or None. Dataset root (MusicNet in either layout, or
            any folder of audio). None means the embedded default dataset.
        rate: int. Target sample rate in Hz. Defaults to 3000, the paper's.
        cache_dir: str, Path or None. Where to cache; defaults to a folder
            under `$KVAE_HOME/cache` named after the root and the rate.
        select: dict or None. MusicNet metadata filter, see `find_recordings`.
        window_seconds: float or None. Training window length; recordings
            shorter than it are counted in the report (they are zero-padded
            when windowed).
        progress: callable or None. Called as `progress(done, total, key)`.

    Returns:
        A `Corpus` whose `report` says what was found, built, reused and skipped.

    Raises:
        KvaeError: the root is missing or holds no usable audio, or the cache
            folder cannot be written.
    """
    start = time.perf_counter()
    rate = int(rate)
    if rate <= 0:
        raise KvaeError(f"rate: must be a positive number of Hz, got {rate}")
    if root is None:
        from kvae.data.embedded import embedded_root

        root = embedded_root()
    source = find_recordings(root, select=select)
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(source.root, rate)
    try:
        (cache_dir / "audio").mkdir(parents=True, exist_ok=True)
        probe = cache_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise KvaeError(f"{cache_dir}: cache folder is not writable ({exc.strerror or exc})") from None

    report = PrepareReport(source.root, cache_dir, source.layout, rate, notes=list(source.notes))
    report.found = len(source.recordings)
    settings = {"format_version": CACHE_FORMAT_VERSION, "rate": rate, "resampler": RESAMPLER}
    old = _load_manifest(cache_dir, settings, report)
    # Keep other recordings' records (e.g. those a `select` left out) while their source exists.
    records = {k: v for k, v in old.items() if Path(v.get("source", "")).is_file()}
    entries = []
    for i, rec in enumerate(source.recordings):
        if progress:
            progress(i, report.found, rec.key)
        npy = cache_dir / "audio" / _entry_name(rec.key)
        stat = rec.path.stat()
        record = old.get(rec.key)
        if _cached_ok(record, stat, npy):
            report.reused += 1
        else:
            try:
                audio, source_rate = read_audio(rec.path)
            except AudioFileError as exc:
                report.skipped.append((str(exc.path), exc.reason))
                continue
            audio = resample(audio, source_rate, rate)
            _write_atomic(npy, lambda tmp, a=audio: np.save(tmp, a, allow_pickle=False))
            record = {
                "file": npy.name,
                "split": rec.split,
                "frames": int(audio.shape[0]),
                "source": str(rec.path),
                "source_size": stat.st_size,
                "source_mtime_ns": stat.st_mtime_ns,
                "source_rate": int(source_rate),
                "npy_bytes": npy.stat().st_size,
            }
            report.built += 1
        records[rec.key] = record
        entries.append(Entry(rec.key, rec.split, npy, int(record["frames"]), rec.metadata))
        report.seconds_of_audio += record["frames"] / rate
        report.cache_bytes += record["npy_bytes"]
    if progress:
        progress(report.found, report.found, None)

    manifest = dict(settings, root=str(source.root), layout=source.layout, entries=records)
    _write_atomic(cache_dir / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    if window_seconds:
        report.window_seconds = float(window_seconds)
        need = int(round(window_seconds * rate))
        report.short = [e.key for e in entries if e.frames < need]
    report.wall_seconds = time.perf_counter() - start
    if not entries:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in report.skipped[:3])
        error = KvaeError(f"{source.root}: no usable audio ({len(report.skipped)} file(s) skipped: {reasons})")
        error.report = report
        raise error
    return Corpus(entries, rate, report)
