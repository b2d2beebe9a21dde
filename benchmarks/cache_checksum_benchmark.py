"""Benchmark what the cache's CRC-32 costs: against decoding and resampling, and per hour of cached audio.

`kvae.prepare` records a CRC-32 (zlib) of every cached ``.npy`` and checks it
whenever it reuses one, so a corrupted cache file of the right size is rebuilt
instead of reused for ever. This measures, on `--minutes` of 44.1 kHz float32
WAVs (noisy tones, written to a temporary folder and deleted unless `--keep`):

1. the checksum alone: zlib.crc32 (what kvae uses) and hashlib.blake2b, in
   GB/s over a file already in the page cache;
2. `prepare` building the cache (decode + resample + write, CRC included),
   `prepare` reusing it (every CRC verified), and `file_crc32` over the cache
   files alone, at 3 kHz and 16 kHz;
3. from (1), the CRC's cost per hour of audio cached at 3, 16 and 44.1 kHz,
   and for MusicNet's 34 hours.

Run on demand (it measures, it never asserts)::

    python benchmarks/cache_checksum_benchmark.py              # 10 minutes of audio
    python benchmarks/cache_checksum_benchmark.py --minutes 30 --out /tmp/kvae-bench
"""

import argparse
import hashlib
import shutil
import sys
import time
import zlib
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

import kvae  # noqa: E402

kvae.configure()

import numpy as np  # noqa: E402
from _common import Report, command_line, machine_lines, make_work_dir, table  # noqa: E402

from kvae.data import prepare, write_wav  # noqa: E402
from kvae.data.cache import file_crc32  # noqa: E402

SOURCE_RATE = 44100
MUSICNET_HOURS = 34.0


def best_of(n, fn):
    """Smallest wall time of `n` calls (the least disturbed by other load), and the last result."""
    best, result = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def write_sources(folder, minutes, file_minutes=2.5):
    """44.1 kHz float32 WAVs of noisy harmonic tones, `minutes` in all."""
    rng = np.random.default_rng(0)
    n = max(1, round(minutes / file_minutes))
    frames = int(minutes * 60 * SOURCE_RATE / n)
    t = np.arange(frames) / SOURCE_RATE
    for i in range(n):
        f0 = 110 * 2 ** (i / 5)
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3)) * 0.2 + 0.01 * rng.standard_normal(frames)
        write_wav(folder / f"rec{i:03d}.wav", x.astype(np.float32), SOURCE_RATE)
    return n


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of 44.1 kHz audio (default 10)")
    parser.add_argument("--out", type=Path, help="keep the report (and, with --keep, the files) here")
    parser.add_argument("--keep", action="store_true", help="keep the audio and caches")
    args = parser.parse_args()

    say = Report()
    say(command_line("cache_checksum_benchmark.py"), *machine_lines(modules=("scipy",)))
    work = make_work_dir(args.out, "kvae-crc-")
    try:
        data = work / "data"
        data.mkdir()
        files = write_sources(data, args.minutes)
        seconds = args.minutes * 60

        say.section("1. Checksum throughput (64 MiB in the page cache, best of 5)")
        blob = data / "blob.bin"
        blob.write_bytes(np.random.default_rng(1).bytes(64 << 20))
        buf = blob.read_bytes()
        rows, speed = [], {}
        for name, fn in (
            ("zlib.crc32 (bytes in memory)", lambda: zlib.crc32(buf)),
            ("hashlib.blake2b (bytes in memory)", lambda: hashlib.blake2b(buf).digest()),
            ("kvae file_crc32 (read + crc32)", lambda: file_crc32(blob)),
        ):
            dt, _ = best_of(5, fn)
            speed[name] = len(buf) / dt / 1e9
            rows.append((name, f"{speed[name]:.2f}"))
        blob.unlink()
        say(*table(("checksum", "GB/s"), rows))

        say.section(f"2. prepare on {args.minutes:g} min of 44.1 kHz float32 audio ({files} files)")
        rows = []
        for rate in (3000, 16000):
            cache = work / f"cache-{rate}"
            t = time.perf_counter()
            corpus = prepare(data, sample_rate=rate, cache_dir=cache)
            build = time.perf_counter() - t
            assert corpus.report.built == files
            reuse, again = best_of(3, lambda: prepare(data, sample_rate=rate, cache_dir=cache))
            assert again.report.reused == files
            crc, _ = best_of(3, lambda: [file_crc32(e.file) for e in corpus.entries])
            mb = corpus.report.cache_bytes / 1e6
            rows.append((f"{rate} Hz", f"{mb:.1f}", f"{build:.2f}", f"{seconds / build:.0f}x", f"{reuse:.3f}",
                         f"{crc:.3f}", f"{100 * crc / build:.2f} %"))
        say(*table(("cache rate", "cache MB", "build s", "realtime", "reuse s", "CRC alone s", "CRC / build"),
                   rows))
        say("build: decode + resample + write with the CRC; reuse: a second prepare, every CRC checked "
            "(best of 3, files in the page cache)")

        say.section("3. CRC cost per hour of cached audio (file_crc32 speed from 1; warm page cache)")
        gbps = speed["kvae file_crc32 (read + crc32)"]
        rows = []
        for rate in (3000, 16000, 44100):
            gb_per_hour = 3600 * rate * 4 / 1e9
            rows.append((f"{rate} Hz", f"{gb_per_hour * 1000:.0f}", f"{gb_per_hour / gbps:.2f}",
                         f"{MUSICNET_HOURS * gb_per_hour / gbps:.1f}"))
        say(*table(("cache rate", "MB per hour", "s per hour", f"s for MusicNet ({MUSICNET_HOURS:g} h)"), rows))
        say("a cache not in the page cache is read at the disk's speed instead (e.g. 43 MB per hour at "
            "3 kHz: 0.3 s at 150 MB/s)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    say.finish(args.out, "cache_checksum_benchmark.txt")


if __name__ == "__main__":
    main()
