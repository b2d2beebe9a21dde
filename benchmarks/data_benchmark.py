"""Benchmark kvae's data pipeline: decode + resample, window throughput, memory.

Run on demand (it measures, it never asserts)::

    python benchmarks/data_benchmark.py                 # full run, 2 h corpus
    python benchmarks/data_benchmark.py --quick         # smoke run, a few minutes of audio
    python benchmarks/data_benchmark.py --hours 4 --out /tmp/kvae-bench --keep

Parts, each printed as a plain-text table:

1. Preprocessing speed (audio-seconds per wall-second) of decoding 44.1 kHz
   float32 WAVs and of resampling them to 3 kHz and 16 kHz with
   `scipy.signal.resample_poly` (what `kvae.data.resample` uses) and with
   `tfio.audio.resample`, side by side; plus each resampler's delay and
   accuracy against an analytically known signal, and tfio's lag against
   resample_poly on music.
2. Window throughput (windows/s, MB/s) of the two front ends over the cache:
   `WindowSource.py_dataset()` (indexed batch by batch, as Keras does) and
   `WindowSource.tf_dataset()`, at 3 kHz / 1 s and 16 kHz / 5 s windows, batch 32.
3. Memory: a synthetic corpus of `--hours` hours (44.1 kHz float32 WAVs of
   5 minutes each) is prepared at 3 kHz in fresh subprocesses (one file, half
   the corpus, all of it) to report peak RSS against the largest file; then an
   epoch that reads the whole corpus is iterated (fresh subprocess per front
   end) to report RSS before and after, split into anonymous and file-backed
   (memory-mapped cache) pages.

Audio comes from `kvae.data.embedded.generate_corpus` (polyphonic additive
synthesis). Everything is written to a temporary folder (under `--out` if
given) and deleted at the end unless `--keep`; with `--out` the printed
report is also saved there as `data_benchmark.txt`. The script uses kvae's
public API only.

Measured figures are in docs/benchmarks.md, section "Data pipeline".
"""

import argparse
import math
import resource
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

import kvae  # noqa: E402

kvae.configure()  # before Keras or TensorFlow is imported

import numpy as np  # noqa: E402
from _common import (MB, Report, child_result, command_line, fmt, machine_lines, make_work_dir,  # noqa: E402
                     print_result, read_proc_status, run_script, table)

SOURCE_RATE = 44100


# --------------------------------------------------------------------------- helpers

def proc_status():
    """Return VmRSS, VmHWM, RssAnon, RssFile of this process in MB (from /proc)."""
    out = read_proc_status(("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"))
    if "VmRSS" not in out:
        try:
            import psutil

            out["VmRSS"] = psutil.Process().memory_info().rss / MB
        except ImportError:
            pass
    return out


def peak_rss_mb():
    """Peak RSS of this process so far (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB


# --------------------------------------------------------------------------- audio synthesis

def make_music_files(folder, count, seconds, seed=0):
    """Write `count` music-like 44.1 kHz float32 WAVs of `seconds` each; return (paths, generator name)."""
    from kvae.data.embedded import generate_corpus

    folder = Path(folder)
    generate_corpus(folder, seed=seed, n_train=count, n_test=0, seconds=float(seconds), sample_rate=SOURCE_RATE)
    paths = sorted((folder / "musicnet" / "train_data").glob("*.wav"))
    if len(paths) != count:
        raise RuntimeError(f"expected {count} files, found {len(paths)}")
    return paths, "kvae.data.embedded.generate_corpus"


# --------------------------------------------------------------------------- part 1: decode + resample

def _lag(a, b, maxlag):
    """Lag L (fractional, parabolic peak) maximising sum a[n+L] * b[n] over a central stretch."""
    m = min(len(a), len(b))
    lo, hi = m // 4, 3 * m // 4
    lags = np.arange(-maxlag, maxlag + 1)
    c = np.array([np.dot(a[lo + L:hi + L], b[lo:hi]) for L in lags])
    i = int(np.argmax(c))
    frac = 0.0
    if 0 < i < len(c) - 1:
        y0, y1, y2 = c[i - 1], c[i], c[i + 1]
        den = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / den if den != 0 else 0.0
    return lags[i] + frac, int(lags[i])


def _snr_db(out, ideal, lag):
    m = min(len(out), len(ideal))
    lo, hi = m // 4, 3 * m // 4
    err = out[lo + lag:hi + lag] - ideal[lo:hi]
    return 10 * np.log10(np.sum(ideal[lo:hi] ** 2) / max(np.sum(err ** 2), 1e-30))


def _tone_gain_db(out, freq, rate, lag):
    """Amplitude gain (dB) of a unit sine of `freq` after resampling, measured by projection."""
    m = len(out)
    lo, hi = m // 4, 3 * m // 4
    t = (np.arange(lo, hi) - lag) / rate
    seg = out[lo:hi].astype(np.float64)
    c, s = np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)
    amp = 2 * math.hypot(np.dot(seg, c), np.dot(seg, s)) / len(seg)
    return 20 * np.log10(max(amp, 1e-12))


def part_preprocess(say, work, args):
    import tensorflow as tf
    import tensorflow_io as tfio

    from kvae.data import read_audio, resample

    # tfio.audio.resample retraces a tf.function on every call; TensorFlow warns about it each time.
    tf.get_logger().setLevel("ERROR")

    def tfio_resample(x, source, target):
        return tfio.audio.resample(tf.constant(x), rate_in=source, rate_out=target).numpy()

    rates = (3000, 16000)
    n_files, seconds, repeats = args.p1_files, args.p1_seconds, args.repeats
    t0 = time.perf_counter()
    paths, generator = make_music_files(work / "p1", n_files, seconds, seed=1)
    gen_s = time.perf_counter() - t0
    audio_s = n_files * seconds
    say.section("1. Preprocessing: decode + resample (44.1 kHz float32 WAV)")
    say(f"input:  {n_files} files x {seconds:g} s = {audio_s:g} s of audio, {sum(p.stat().st_size for p in paths) / MB:.0f} MB of WAV",
        f"source: {generator} ({gen_s:.1f} s to write)",
        f"timing: best of {repeats} passes over all files, single thread of Python; "
        "files are in the OS page cache (just written)")

    # Warm up both resamplers (tfio's first call loads ops and traces).
    probe = np.zeros(SOURCE_RATE, np.float32)
    t = time.perf_counter()
    for r in rates:
        tfio_resample(probe, SOURCE_RATE, r)
    tfio_first = time.perf_counter() - t
    for r in rates:
        resample(probe, SOURCE_RATE, r)

    def best(fn):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    decoded = [read_audio(p)[0] for p in paths]
    t_decode = best(lambda: [read_audio(p) for p in paths])

    def tfio_decode():
        for p in paths:
            tfio.audio.AudioIOTensor(str(p)).to_tensor().numpy()

    try:
        tfio_decode()
        t_tfio_decode = best(tfio_decode)
    except Exception:  # tfio cannot read this WAV flavour
        t_tfio_decode = None

    t_poly = {r: best(lambda r=r: [resample(x, SOURCE_RATE, r) for x in decoded]) for r in rates}
    t_tfio = {r: best(lambda r=r: [tfio_resample(x, SOURCE_RATE, r) for x in decoded]) for r in rates}

    rows = [["decode  kvae read_audio (scipy wavfile)", "-", fmt(t_decode, 3), fmt(audio_s / t_decode)]]
    if t_tfio_decode is not None:
        rows.append(["decode  tfio AudioIOTensor (reference)", "-", fmt(t_tfio_decode, 3), fmt(audio_s / t_tfio_decode)])
    for r in rates:
        rows += [
            ["resample  scipy resample_poly (kvae)", f"{r} Hz", fmt(t_poly[r], 3), fmt(audio_s / t_poly[r])],
            ["resample  tfio.audio.resample", f"{r} Hz", fmt(t_tfio[r], 3), fmt(audio_s / t_tfio[r])],
            ["decode + resample_poly (kvae prepare)", f"{r} Hz", fmt(t_decode + t_poly[r], 3), fmt(audio_s / (t_decode + t_poly[r]))],
            ["decode + tfio.audio.resample", f"{r} Hz", fmt(t_decode + t_tfio[r], 3), fmt(audio_s / (t_decode + t_tfio[r]))],
        ]
    say("", *table(["step", "target", "wall s", "audio-s/s"], rows))
    say("", "tfio.audio.resample time / resample_poly time: "
        + ", ".join(f"{r} Hz {t_tfio[r] / t_poly[r]:.1f}x" for r in rates)
        + f"  (tfio first call, excluded: {tfio_first:.2f} s)")

    # Delay and accuracy against an analytically known signal.
    tone_s = 10.0
    ts = np.arange(int(tone_s * SOURCE_RATE)) / SOURCE_RATE
    say("", "Delay and accuracy against the exact signal (10 s linear chirp from 50 Hz to 0.4 x target rate, "
        "amplitude 0.5;", "lag > 0 means the output is late; lag and SNR use the central half of the output)")
    rows, gain_tables = [], []

    def chirp(t, f1):
        f0 = 50.0
        return 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * tone_s)))

    for r in rates:
        x = chirp(ts, 0.4 * r).astype(np.float32)
        ideal = chirp(np.arange(int(tone_s * r)) / r, 0.4 * r)
        outs = {"scipy resample_poly": resample(x, SOURCE_RATE, r), "tfio.audio.resample": tfio_resample(x, SOURCE_RATE, r)}
        for name, out in outs.items():
            lag, ilag = _lag(out, ideal, 200)
            rows.append([name, f"{r} Hz", f"{len(out)} / {len(ideal)}", f"{lag:+.2f}", f"{lag * SOURCE_RATE / r:+.1f}",
                         f"{1000 * lag / r:+.2f}", fmt(_snr_db(out, ideal, ilag)), fmt(_snr_db(out, ideal, 0))])
        # Frequency response at a few points up to near Nyquist.
        probe_freqs = [f * r for f in (0.02, 0.2, 0.35, 0.42, 0.45, 0.48)]
        gain_rows = []
        for name in outs:
            gains = []
            for f in probe_freqs:
                xs = np.sin(2 * np.pi * f * ts).astype(np.float32)
                if name.startswith("scipy"):
                    out, lag = resample(xs, SOURCE_RATE, r), 0
                else:
                    out = tfio_resample(xs, SOURCE_RATE, r)
                    lag = _lag(out, np.sin(2 * np.pi * f * np.arange(len(out)) / r), 200)[1]
                gains.append(f"{_tone_gain_db(out, f, r, lag):+.2f}")
            gain_rows.append([name, f"{r} Hz"] + gains)
        gain_tables.append((["resampler", "target"] + [f"{f:g} Hz" for f in probe_freqs], gain_rows))
    say(*table(["resampler", "target", "out/ideal len", "lag out-smp", "lag @44.1k", "lag ms",
                "SNR aligned dB", "SNR unshifted dB"], rows))
    say("", "SNR aligned: after compensating the integer lag; SNR unshifted: the output as returned.")

    say("", "Frequency response: gain in dB of a unit sine (0.02, 0.2, 0.35, 0.42, 0.45, 0.48 x target rate)")
    for headers, block in gain_tables:
        say(*table(headers, block))

    # tfio vs resample_poly on music (no ground truth: relative lag).
    music = decoded[0][: int(min(20.0, seconds) * SOURCE_RATE)]
    lags = []
    for r in rates:
        a, b = tfio_resample(music, SOURCE_RATE, r), resample(music, SOURCE_RATE, r)
        lag, _ = _lag(a, b, 200)
        lags.append(f"{r} Hz: {lag:+.2f} output samples ({1000 * lag / r:+.2f} ms)")
    say("", f"tfio lag vs resample_poly on a {len(music) / SOURCE_RATE:g} s music clip (cross-correlation): " + "; ".join(lags))


# --------------------------------------------------------------------------- part 2: window throughput

def part_windows(say, work, args):
    import tensorflow as tf  # noqa: F401  (imported before timing tf.data)

    from kvae.data import WindowSource, prepare

    say.section("2. Window throughput from the cache (batch 32, random windows, normalize='none')")
    n_files, seconds = args.p2_files, args.p2_seconds
    t0 = time.perf_counter()
    paths, generator = make_music_files(work / "p2", n_files, seconds, seed=2)
    say(f"corpus: {n_files} files x {seconds:g} s ({generator}, {time.perf_counter() - t0:.1f} s to write); "
        f"{args.batches} batches per epoch, {args.epochs} epochs per front end",
        "PyDataset: `ds[i]` for every batch, `on_epoch_end()` between epochs (what Keras does with workers=1);",
        "tf.data: `for x in ds.take(batches * epochs): x.numpy()`; cache files are in the OS page cache.",
        "first batch = latency of the first batch (tf.data: pipeline start); steady = epochs 2.. only.")
    rows = []
    for rate, win_s in ((3000, 1.0), (16000, 5.0)):
        t = time.perf_counter()
        corpus = prepare(work / "p2", sample_rate=rate, cache_dir=work / f"p2-cache-{rate}")
        prep_s = time.perf_counter() - t
        window = int(round(win_s * rate))
        for front in ("PyDataset", "tf.data"):
            source = WindowSource(corpus, "train", window, 32, seed=0, batches_per_epoch=args.batches)
            nb = source.num_batches
            epoch_times, nbytes, nwin = [], 0, 0
            first = None
            if front == "PyDataset":
                ds = source.py_dataset()
                for _ in range(args.epochs):
                    t = time.perf_counter()
                    for i in range(len(ds)):
                        x = ds[i]
                        if first is None:
                            first = time.perf_counter() - t
                        nbytes += x.nbytes
                        nwin += x.shape[0]
                    ds.on_epoch_end()
                    epoch_times.append(time.perf_counter() - t)
            else:
                it = iter(source.tf_dataset().take(nb * args.epochs))
                for _ in range(args.epochs):
                    t = time.perf_counter()
                    for i in range(nb):
                        x = next(it).numpy()
                        if first is None:
                            first = time.perf_counter() - t
                        nbytes += x.nbytes
                        nwin += x.shape[0]
                    epoch_times.append(time.perf_counter() - t)
                del it
            per_epoch_win = nwin / args.epochs
            per_epoch_bytes = nbytes / args.epochs
            steady = sum(epoch_times[1:]) if len(epoch_times) > 1 else epoch_times[0]
            n_steady = max(len(epoch_times) - 1, 1)
            rows.append([front, f"{rate} Hz", f"{win_s:g} s", f"{window * 4 / 1e3:g} KB", nb, f"{1000 * first:.1f}",
                         fmt(per_epoch_win / epoch_times[0]), fmt(per_epoch_win * n_steady / steady),
                         fmt(per_epoch_bytes * n_steady / steady / MB), fmt(1000 * steady / n_steady / nb, 2)])
        say(f"  prepare at {rate} Hz: {prep_s:.1f} s ({corpus.seconds:.0f} s of audio)")
    say("", *table(["front end", "rate", "window", "window size", "batches/epoch", "first batch ms",
                    "epoch-1 win/s", "steady win/s", "steady MB/s", "ms/batch"], rows))


# --------------------------------------------------------------------------- part 3: memory

def make_big_corpus(root, hours, file_seconds, seed=3):
    """Write a corpus of at least `hours` hours as 44.1 kHz float32 WAVs of `file_seconds` each.

    A few synthesised 60 s clips are tiled with variations (random clip,
    circular shift, gain, polarity, fade at joins) so writing 2 h takes seconds.
    Layout: root/a/one/<1 file>, root/a/<rest of the first half>, root/b/<second half>,
    so root/a/one, root/a and root are corpora of 1, n//2 and n files.
    """
    from kvae.data import read_audio, write_wav

    root = Path(root)
    n_files = max(2, math.ceil(hours * 3600 / file_seconds))
    clip_s = min(60.0, file_seconds)
    clips, generator = make_music_files(root.parent / (root.name + "-clips"), 4, clip_s, seed=seed)
    clips = [read_audio(p)[0] for p in clips]
    shutil.rmtree(root.parent / (root.name + "-clips"), ignore_errors=True)
    rng = np.random.default_rng(seed)
    n = int(file_seconds * SOURCE_RATE)
    fade = np.linspace(0.0, 1.0, 441, dtype=np.float32)
    paths = []
    for i in range(n_files):
        out = np.empty(n, np.float32)
        pos = 0
        while pos < n:
            clip = clips[rng.integers(len(clips))]
            seg = np.roll(clip, int(rng.integers(len(clip)))) * np.float32(rng.uniform(0.5, 1.0) * rng.choice([-1, 1]))
            seg[: len(fade)] *= fade
            seg[-len(fade):] *= fade[::-1]
            k = min(len(seg), n - pos)
            out[pos:pos + k] = seg[:k]
            pos += k
        if i == 0:
            folder = root / "a" / "one"
        elif i < n_files // 2:
            folder = root / "a"
        else:
            folder = root / "b"
        paths.append(write_wav(folder / f"rec{i:03d}.wav", out, SOURCE_RATE))
        del out
    return paths, generator


def run_child(part, *extra):
    """Run this script in a fresh interpreter for one memory part; return its JSON result or an error."""
    return child_result(run_script(__file__, ["--part", part, *extra]))


def child_prepare_memory(root, cache, rate):
    from kvae.data import prepare

    before = proc_status()
    t = time.perf_counter()
    corpus = prepare(root, sample_rate=rate, cache_dir=cache)
    wall = time.perf_counter() - t
    rep = corpus.report
    return {"wall_s": wall, "audio_s": rep.seconds_of_audio, "files": rep.found, "built": rep.built,
            "skipped": len(rep.skipped), "cache_mb": rep.cache_bytes / MB,
            "baseline_mb": before.get("VmRSS"), "peak_mb": proc_status().get("VmHWM", peak_rss_mb()),
            "ru_maxrss_mb": peak_rss_mb(), "after": proc_status()}


def child_iterate_memory(root, cache, rate, front, window_s, epochs):
    if front == "py":
        import keras  # noqa: F401
    else:
        import tensorflow as tf  # noqa: F401
    from kvae.data import WindowSource, prepare

    corpus = prepare(root, sample_rate=rate, cache_dir=cache)  # everything reused: opens the cache
    window = int(round(window_s * rate))
    longest = max(e.frames for e in corpus.entries)
    wpr = max(1, math.ceil(longest / window))  # an epoch reads about the whole corpus
    source = WindowSource(corpus, "train", window, 32, windows_per_recording=wpr, seed=0)
    nb = source.num_batches
    if front == "py":
        ds = source.py_dataset()
        get = ds.__getitem__
        ds[0]
    else:
        it = iter(source.tf_dataset().take(nb * epochs + 1))
        get = None
        next(it)
    before = proc_status()
    samples = [before.get("VmRSS")]
    t = time.perf_counter()
    n = 0
    for e in range(epochs):
        for i in range(nb):
            x = get(i) if get else next(it).numpy()
            n += x.shape[0]
        if get:
            ds.on_epoch_end()
        samples.append(proc_status().get("VmRSS"))
    wall = time.perf_counter() - t
    return {"windows": n, "batches": nb * epochs, "epochs": epochs, "wpr": wpr, "wall_s": wall,
            "before": before, "after": proc_status(), "per_epoch_rss": samples,
            "peak_mb": proc_status().get("VmHWM", peak_rss_mb()),
            "read_mb": n * window * 4 / MB, "cache_mb": sum(e.file.stat().st_size for e in corpus.entries) / MB}


def part_memory(say, work, args):
    say.section(f"3. Memory: {args.hours:g} h corpus prepared at 3000 Hz (fresh subprocess per row)")
    t = time.perf_counter()
    root = work / "big"
    paths, generator = make_big_corpus(root, args.hours, args.file_seconds)
    gen_s = time.perf_counter() - t
    sizes = [p.stat().st_size for p in paths]
    total_audio = len(paths) * args.file_seconds
    say(f"corpus: {len(paths)} files x {args.file_seconds:g} s = {total_audio / 3600:.2f} h, "
        f"{sum(sizes) / MB:,.0f} MB of 44.1 kHz float32 WAV (largest file {max(sizes) / MB:.1f} MB); "
        f"written in {gen_s:.1f} s from clips by {generator}",
        "RSS = resident set size; 'peak RSS' is the child's peak, which includes the interpreter and the",
        "numpy/scipy imports ('baseline', measured just before prepare).")

    subsets = [("1 file", root / "a" / "one")]
    if len(paths) // 2 > 1:
        subsets.append((f"{len(paths) // 2} files (half)", root / "a"))
    subsets.append((f"{len(paths)} files (all)", root))
    rows, full, ru_maxrss = [], None, []
    for label, sub in subsets:
        cache = work / f"cache-{sub.relative_to(work).as_posix().replace('/', '-')}"
        res = run_child("prepare-memory", "--root", sub, "--cache", cache, "--rate", 3000)
        if "error" in res:
            rows.append([label] + ["error"] * 8)
            say(f"  {label}: {res['error']}")
            continue
        if sub == root:
            full = (res, cache)
        sub_sizes = [p.stat().st_size for p in sub.rglob("*.wav")]
        grow = res["peak_mb"] - res["baseline_mb"]
        ru_maxrss.append(res["ru_maxrss_mb"])
        rows.append([label, f"{res['audio_s'] / 3600:.2f}", fmt(sum(sub_sizes) / MB, 0), fmt(res["wall_s"]),
                     fmt(res["audio_s"] / res["wall_s"]), fmt(res["cache_mb"], 2), fmt(res["baseline_mb"]),
                     fmt(res["peak_mb"]), fmt(grow), f"{grow / (max(sub_sizes) / MB):.2f}"])
    say("", *table(["corpus", "hours", "WAV MB", "prepare s", "audio-s/s", "cache MB", "baseline MB",
                    "peak RSS MB", "peak-baseline", "/ largest file"], rows))
    say("", f"largest single file: {max(sizes) / MB:.1f} MB of float32 WAV = "
        f"{max(sizes) / 4 / SOURCE_RATE:.0f} s; '/ largest file' is (peak - baseline) / its size.",
        "peak RSS is the child's VmHWM (/proc/self/status). resource.getrusage().ru_maxrss is not used: on Linux",
        "it keeps the parent's peak across fork+exec, and read "
        + ", ".join(f"{v:,.0f}" for v in ru_maxrss) + " MB in these children (this script's own peak).")

    if full is None:
        return
    res, cache = full
    say("", f"Iterating the {args.hours:g} h cache at 3000 Hz, 1 s windows, batch 32, windows_per_recording chosen so "
        "an epoch reads about the whole corpus;",
        "RSS measured after the first batch ('before') and after all epochs; RssAnon = heap (numpy, Python), "
        "RssFile = pages of the memory-mapped cache (reclaimable by the OS).")
    rows = []
    for front, label in (("py", "PyDataset"), ("tf", "tf.data")):
        it = run_child("iterate-memory", "--root", root, "--cache", cache, "--rate", 3000, "--front", front,
                       "--window-seconds", 1.0, "--child-epochs", args.mem_epochs)
        if "error" in it:
            say(f"  {label}: {it['error']}")
            continue
        b, a = it["before"], it["after"]
        per_epoch = " ".join(fmt(v, 0) for v in it["per_epoch_rss"])
        rows.append([label, f"{it['windows']:,}", fmt(it["read_mb"], 0), fmt(it["cache_mb"], 0), fmt(it["wall_s"]),
                     fmt(b.get("VmRSS")), fmt(a.get("VmRSS")), f"{a.get('VmRSS', 0) - b.get('VmRSS', 0):+.1f}",
                     f"{a.get('RssAnon', 0) - b.get('RssAnon', 0):+.1f}", f"{a.get('RssFile', 0) - b.get('RssFile', 0):+.1f}",
                     fmt(it["peak_mb"]), per_epoch])
        nonlocal_note = f"{it['epochs']} epoch(s) of {it['batches'] // it['epochs']} batches ({it['wpr']} windows per recording)"
    say("", *table(["front end", "windows", "read MB", "cache MB", "wall s", "RSS before", "RSS after", "RSS growth",
                    "anon growth", "file growth", "peak RSS", "RSS after each epoch (MB)"], rows))
    if rows:
        say("", f"each: {nonlocal_note}; RSS in MB; 'RSS before' includes the Keras/torch or TensorFlow import.")


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=None, help="size of the memory-test corpus (default 2; --quick 0.05)")
    p.add_argument("--out", type=Path, default=None, help="folder for the temporary data and the saved report")
    p.add_argument("--keep", action="store_true", help="keep the generated audio and caches")
    p.add_argument("--quick", action="store_true", help="small smoke run (a few minutes of audio)")
    p.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. '1,3'")
    # internal: memory children
    p.add_argument("--part", default=None, choices=("prepare-memory", "iterate-memory"), help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--rate", type=int, default=3000, help=argparse.SUPPRESS)
    p.add_argument("--front", default="py", help=argparse.SUPPRESS)
    p.add_argument("--window-seconds", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--child-epochs", type=int, default=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        defaults = dict(hours=0.05, file_seconds=60.0, p1_files=2, p1_seconds=10.0, repeats=2,
                        p2_files=4, p2_seconds=20.0, batches=8, epochs=2, mem_epochs=1)
    else:
        defaults = dict(hours=2.0, file_seconds=300.0, p1_files=4, p1_seconds=60.0, repeats=5,
                        p2_files=6, p2_seconds=60.0, batches=64, epochs=3, mem_epochs=2)
    for k, v in defaults.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.part == "prepare-memory":
        print_result(child_prepare_memory(args.root, args.cache, args.rate))
        return 0
    if args.part == "iterate-memory":
        res = child_iterate_memory(args.root, args.cache, args.rate, args.front, args.window_seconds, args.child_epochs)
        print_result(res)
        return 0

    import scipy

    say = Report()
    say("kvae data pipeline benchmark" + (" (--quick)" if args.quick else ""), command_line("data_benchmark.py"))
    say(*machine_lines(("tensorflow", "tensorflow_io", "keras", "torch"), [f"scipy {scipy.__version__}"]))
    work = make_work_dir(args.out, "kvae-data-bench-")
    parts = {p.strip() for p in args.parts.split(",")}
    try:
        if "1" in parts:
            part_preprocess(say, work, args)
        if "2" in parts:
            part_windows(say, work, args)
        if "3" in parts:
            part_memory(say, work, args)
    finally:
        if args.keep:
            say("", f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    say.finish(args.out, "data_benchmark.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
