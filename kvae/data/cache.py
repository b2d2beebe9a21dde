"""Decode and resample a dataset once, into an on-disk cache read by memory map.

Training never decodes or resamples: `prepare` writes each recording, mono
float32 at the target rate, as one ``.npy`` file, and `Corpus`
(`kvae.data.corpus`, importable from here too) opens them with
``np.load(mmap_mode="r")``, so memory does not grow with the corpus.

``manifest.json`` records the cache's settings (format version, rate,
resampler) and, per recording, what it was built from (source path, size and
mtime) and the size and CRC-32 of the cached file. A recording whose source
changed, or a cache built with other settings, is rebuilt; so is a cached
file that is missing or no longer matches its size and CRC-32 (the report
lists it with the reason). A recording that cannot be read is skipped and
listed. Every cache file and the manifest are written to a temporary file in
the same folder and renamed into place, so an interrupted `prepare` leaves
no half-written file under a cache name.

Verifying the CRC-32 (and that the samples are finite) reads every cached
file once per `prepare` (and so per `fit`): a small fraction of building the
cache (``benchmarks/cache_checksum_benchmark.py``; figures in docs/guides/data.md).
The manifest is saved after every recording built, so a kill keeps them.
"""

import errno
import hashlib
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvae.data.audio_io import AudioFileError, os_reason, read_audio, resample
from kvae.data.corpus import Corpus, Entry, count_non_finite
from kvae.data.sources import find_recordings
from kvae import bounds
from kvae._deprecated import renamed
from kvae.errors import KvaeError
from kvae.paths import atomic_path, kvae_home, remove_stale_temporaries

CACHE_FORMAT_VERSION = 2  # 2: the manifest holds each cached file's CRC-32
RESAMPLER = "scipy.signal.resample_poly"
MANIFEST = "manifest.json"
MAX_PEAK = 1e4  # a decoded sample beyond this is not audio (float WAVs hold values near +-1)


@dataclass
class PrepareReport:
    """What `prepare` found and did; `summary()` prints it for people."""

    root: Path
    cache_dir: Path
    layout: str
    sample_rate: int
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
    rebuilt: list = field(default_factory=list)  # (cache file, why it could not be reused)
    upsampled: list = field(default_factory=list)  # (source path, its rate) of sources below `sample_rate`

    def summary(self):
        """Return the report as printable lines."""
        lines = [
            f"data:       {self.root} ({self.layout} layout)",
            f"cache:      {self.cache_dir} at {self.sample_rate} Hz",
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
        if self.upsampled:
            shown = ", ".join(f"{Path(p).name} ({r} Hz)" for p, r in self.upsampled[:3])
            more = f" and {len(self.upsampled) - 3} more" if len(self.upsampled) > 3 else ""
            lines.append(
                f"upsampled:  {len(self.upsampled)} recording(s) have a lower sample rate than {self.sample_rate} Hz "
                f"and are upsampled (nothing above half their rate): {shown}{more}"
            )
        for note in self.notes:
            lines.append(f"note:       {note}")
        for path, reason in self.rebuilt:
            lines.append(f"rebuilt:    {path}: {reason}")
        for path, reason in self.skipped:
            lines.append(f"skipped:    {path}: {reason}")
        return lines


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
    """Call `write(tmp)` on a temporary file next to `path`, then rename it to `path` (`kvae.paths.atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)


def _sweep(cache_dir):
    """Delete the temporary files a killed prepare left (today's names, and the `.tmp-*` of earlier versions)."""
    for folder in (cache_dir, cache_dir / "audio"):
        remove_stale_temporaries(folder)
        for old in folder.glob(".tmp-*"):
            old.unlink(missing_ok=True)


class _CrcWriter:
    """A write-only file wrapper that keeps a running CRC-32 and byte count of what passes through."""

    def __init__(self, f):
        self.f, self.crc, self.size = f, 0, 0

    def write(self, data):
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        return self.f.write(data)


def _save_npy(path, audio):
    """Write `audio` to `path` as .npy, atomically; return `(bytes, crc32)` of the file written."""
    done = {}

    def write(tmp):
        with open(tmp, "wb") as f:
            out = _CrcWriter(f)
            np.lib.format.write_array(out, audio, allow_pickle=False)
        done["size"], done["crc"] = out.size, out.crc

    _write_atomic(path, write)
    return done["size"], done["crc"]


def file_crc32(path, chunk=1 << 22):
    """CRC-32 (zlib) of a file's bytes, read in 4 MiB chunks."""
    crc = 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return crc
            crc = zlib.crc32(view[:n], crc)


def _damage(npy):
    """What a cached file that fails its CRC-32 holds, for the report: NaN/Inf samples or an unreadable header."""
    try:
        array = np.load(npy, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return f"; its .npy header is unreadable ({str(exc).splitlines()[0][:80]})" if str(exc) else ""
    if array.dtype != np.float32 or array.ndim != 1:
        return f"; it holds {array.dtype} {array.shape} instead of float32 samples"
    bad = count_non_finite(array)
    return f"; it holds {bad} NaN or Inf samples" if bad else ""


def _reuse_problem(record, source_stat, npy):
    """None if the cached file can be reused; else why not: "" for a new or changed source, words otherwise."""
    if (
        record is None
        or record.get("source_size") != source_stat.st_size
        or record.get("source_mtime_ns") != source_stat.st_mtime_ns
    ):
        return ""
    try:
        size = npy.stat().st_size
    except FileNotFoundError:
        return "cache file missing"
    except OSError as exc:
        return f"cache file unreadable ({os_reason(exc)})"
    if size != record.get("npy_bytes"):
        return f"cache file is {size} bytes, {record.get('npy_bytes')} were written"
    try:
        crc = file_crc32(npy)
    except OSError as exc:
        return f"cache file unreadable ({os_reason(exc)})"
    if crc != record.get("crc32"):
        return f"cache file corrupted (its CRC-32 differs from the one recorded when it was written{_damage(npy)})"
    try:
        bad = count_non_finite(np.load(npy, mmap_mode="r"))
    except (OSError, ValueError) as exc:
        return f"cache file unreadable ({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})"
    if bad:  # a valid CRC over values that cannot be music: rebuild, never train on it
        return f"cache file holds {bad} NaN or Inf samples"
    return None


def _write_error(cache_dir, path, exc):
    """A one-line KvaeError for an OSError met writing the cache: disk full in those words."""
    where = Path(path).relative_to(cache_dir) if Path(path).is_relative_to(cache_dir) else path
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
        what = "disk full (ENOSPC)" if exc.errno == errno.ENOSPC else "disk quota exceeded (EDQUOT)"
        return KvaeError(
            f"{cache_dir}: {what} while writing {where}; free some space or choose another cache folder "
            f"(--cache, data.cache); recordings cached so far are kept"
        )
    return KvaeError(f"{cache_dir}: cannot write {where} to the cache ({os_reason(exc)})")


def prepare(root=None, sample_rate=bounds.DEFAULT_RATE, cache_dir=None, select=None, window_seconds=None, progress=None,
            rate=None):
    """Decode, resample and cache every recording of a dataset.

    Args:
        root: str, Path or None. Dataset root (MusicNet in either layout, or
            any folder of audio). None means the embedded default dataset.
        sample_rate: int. Target sample rate in Hz. Defaults to 3000, the paper's.
        cache_dir: str, Path or None. Where to cache; defaults to a folder
            under `$KVAE_HOME/cache` named after the root and the rate.
        select: dict or None. MusicNet metadata filter, see `find_recordings`.
        window_seconds: float or None. Training window length; recordings
            shorter than it are counted in the report (they are zero-padded
            when windowed).
        progress: callable or None. Called as `progress(done, total, key)`.
        rate: int or None. kvae 0.1's name of `sample_rate` (read as it, with a warning).

    Returns:
        A `Corpus` whose `report` says what was found, built, reused and skipped.

    Raises:
        KvaeError: the root is missing, cannot be listed or holds no usable
            audio, or the cache folder cannot be written (disk full says so).
    """
    start = time.perf_counter()
    if rate is not None:
        renamed("prepare(rate=...)", "prepare(sample_rate=...)")
        sample_rate = rate
    rate = bounds.check("data.sample_rate", sample_rate, "sample_rate")
    if root is None:
        from kvae.data.embedded import embedded_root

        root = embedded_root()
    source = find_recordings(root, select=select)
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(source.root, rate)
    probe = cache_dir / ".write-test"
    try:
        (cache_dir / "audio").mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
            raise _write_error(cache_dir, Path(exc.filename or probe), exc) from None
        raise KvaeError(f"{cache_dir}: cache folder is not writable ({exc.strerror or exc})") from None

    _sweep(cache_dir)
    report = PrepareReport(source.root, cache_dir, source.layout, rate, notes=list(source.notes),
                           skipped=list(source.skipped))
    report.found = len(source.recordings) + len(source.skipped)
    settings = {"format_version": CACHE_FORMAT_VERSION, "rate": rate, "resampler": RESAMPLER}
    old = _load_manifest(cache_dir, settings, report)
    # Keep other recordings' records (e.g. those a `select` left out) while their source exists.
    records = {k: v for k, v in old.items() if os.path.isfile(v.get("source", ""))}

    def save_manifest():
        manifest = dict(settings, root=str(source.root), layout=source.layout, entries=records)
        text = json.dumps(manifest, indent=1)
        _write_atomic(cache_dir / MANIFEST, lambda tmp: Path(tmp).write_text(text))

    entries = []
    for i, rec in enumerate(source.recordings):
        if progress:
            progress(i, report.found, rec.key)
        npy = cache_dir / "audio" / _entry_name(rec.key)
        try:
            stat = rec.path.stat()
        except OSError as exc:  # gone or unreadable since it was listed
            report.skipped.append((str(rec.path), f"cannot read file ({os_reason(exc)})"))
            continue
        record = old.get(rec.key)
        problem = _reuse_problem(record, stat, npy)
        if problem is None:
            report.reused += 1
        else:
            try:
                audio, source_rate = read_audio(rec.path)
            except AudioFileError as exc:
                report.skipped.append((str(exc.path), exc.reason))
                records.pop(rec.key, None)
                continue
            peak = float(np.abs(audio).max()) if audio.size else 0.0
            if not peak <= MAX_PEAK:  # NaN compares false too
                report.skipped.append((str(rec.path), f"its samples reach {peak:.3g}, beyond +-{MAX_PEAK:g}: "
                                                      "not audio (a float WAV holds values near +-1)"))
                records.pop(rec.key, None)
                continue
            audio = resample(audio, source_rate, rate)
            bad = count_non_finite(audio)
            if bad:  # finite samples near the float32 limit can overflow in the resampling filter
                report.skipped.append((str(rec.path), f"resampling {source_rate} -> {rate} Hz gives {bad} NaN or "
                                                      f"Inf samples (its peak, {peak:.3g}, is near the float32 limit)"))
                records.pop(rec.key, None)
                continue
            try:
                npy_bytes, crc = _save_npy(npy, audio)
            except OSError as exc:  # the manifest already lists what was built: a rerun resumes
                raise _write_error(cache_dir, npy, exc) from None
            if problem:
                report.rebuilt.append((str(npy), problem))
            record = {
                "file": npy.name,
                "split": rec.split,
                "frames": int(audio.shape[0]),
                "source": str(rec.path),
                "source_size": stat.st_size,
                "source_mtime_ns": stat.st_mtime_ns,
                "source_rate": int(source_rate),
                "npy_bytes": npy_bytes,
                "crc32": crc,
            }
            report.built += 1
            records[rec.key] = record
            try:  # after each file: a kill or a full disk later keeps every recording cached so far
                save_manifest()
            except OSError as exc:
                raise _write_error(cache_dir, cache_dir / MANIFEST, exc) from None
        records[rec.key] = record
        entries.append(Entry(rec.key, rec.split, npy, int(record["frames"]), rec.metadata))
        report.seconds_of_audio += record["frames"] / rate
        report.cache_bytes += record["npy_bytes"]
        if record.get("source_rate", rate) < rate:
            report.upsampled.append((str(rec.path), int(record["source_rate"])))
    if progress:
        progress(report.found, report.found, None)

    try:
        save_manifest()
    except OSError as exc:
        raise _write_error(cache_dir, cache_dir / MANIFEST, exc) from None
    if window_seconds:
        report.window_seconds = float(window_seconds)
        need = bounds.window_samples(rate, window_seconds)
        report.short = [e.key for e in entries if e.frames < need]
    report.wall_seconds = time.perf_counter() - start
    if not entries:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in report.skipped[:3])
        error = KvaeError(f"{source.root}: no usable audio ({len(report.skipped)} file(s) skipped: {reasons})")
        error.report = report
        raise error
    return Corpus(entries, rate, report)
