"""Peak memory of `kvae sample` and `kvae reconstruct`, all at once (before issue 14) against streamed.

Run on demand (it measures, it never asserts)::

    python benchmarks/memory_stream.py                     # 20000 clips; a 20-minute 44.1 kHz WAV
    python benchmarks/memory_stream.py --n 100000 --minutes 120
    python benchmarks/memory_stream.py --quick             # 2000 clips; a 2-minute WAV

The model is the quickstart config's FC VAE (1 s windows at 3000 Hz),
untrained: memory does not depend on the weights' values. Each case runs in
a fresh subprocess and reports its peak resident memory (VmHWM from
/proc/self/status) and that peak minus the resident memory after the imports
and the model build (the case's own memory):

- sample, all at once: `model.sample(n)` then one WAV per clip (what
  `write_samples` did before: every clip, and the decoder's activations for
  all of them, in memory at once).
- sample, streamed: `kvae.training.write_samples` (256 clips at a time).
- reconstruct, all at once: `read_audio` the whole file, `resample` it, frame
  every window at once, overlap-add (kvae's code before issue 14, kept below
  as `reconstruct_all_at_once`), `write_wav`.
- reconstruct, streamed: `kvae.inference.reconstruct_file` (the WAV read,
  resampled and reconstructed 64 windows at a time, written as it goes).

The input WAV (mono int16 at 44.1 kHz, a tone plus noise) is written to a
temporary folder (`--out` to keep the report there) and deleted afterwards.
"""

import argparse
import math
import os
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import _common  # noqa: E402


def reconstruct_all_at_once(model, audio):
    """kvae's `reconstruct_audio` before streaming (every window of the signal in memory at once)."""
    import numpy as np

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


def child(args):
    """One case in this (fresh) process; prints its RESULT line."""
    from kvae._env import configure

    configure()
    import numpy as np

    from kvae.config import load_config
    from kvae.data import read_audio, resample, write_wav
    from kvae.training import build_model, reconstruct_file, write_samples

    model = build_model(load_config("quickstart"))
    model.sample(2, seed=0)  # first call: lazy allocations out of the measure
    model.reconstruct(np.zeros((2, model.window), np.float32))
    base = _common.read_proc_status(("VmRSS",))["VmRSS"]
    work = Path(args.work)
    start = time.perf_counter()
    if args.case == "sample-old":
        clips = model.sample(args.n, seed=0)
        for i, clip in enumerate(clips):
            write_wav(work / "old" / f"sample_{i}.wav", clip, model.sample_rate)
    elif args.case == "sample-stream":
        write_samples(model, work / "stream", n=args.n, seed=0, plots=False)
    elif args.case == "reconstruct-old":
        audio, rate = read_audio(args.input)
        audio = resample(audio, rate, model.sample_rate)
        write_wav(work / "old.wav", reconstruct_all_at_once(model, audio), model.sample_rate)
    else:
        reconstruct_file(model, args.input, work / "stream.wav")
    seconds = time.perf_counter() - start
    peak = _common.read_proc_status(("VmHWM",))["VmHWM"]
    _common.print_result({"peak": peak, "own": peak - base, "seconds": seconds})


def write_input(path, minutes, rate=44100):
    """A mono int16 WAV of a tone plus noise, written in pieces (this process stays small)."""
    import numpy as np

    frames = int(minutes * 60 * rate)
    block = rate * 10
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + 2 * frames) + b"WAVE")
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16))
        f.write(b"data" + struct.pack("<I", 2 * frames))
        for start in range(0, frames, block):
            n = min(block, frames - start)
            t = (start + np.arange(n)) / rate
            x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)
            f.write((x * 32767).astype("<i2").tobytes())
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="clips to sample (default 20000)")
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the WAV to reconstruct (default 20)")
    parser.add_argument("--quick", action="store_true", help="2000 clips and a 2-minute WAV")
    parser.add_argument("--out", type=Path, help="keep the report there as memory_stream.txt")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return child(args)
    from kvae._env import configure

    configure()  # the Keras backend (torch unless KERAS_BACKEND says otherwise), before the header imports keras
    if args.quick:
        args.n, args.minutes = 2000, 2.0
    report = _common.Report()
    report(_common.command_line("memory_stream.py"), *_common.machine_lines())
    work = _common.make_work_dir(args.out, "kvae-memory-")
    try:
        source = work / "long.wav"
        frames = write_input(source, args.minutes)
        report(f"input: {source.name}, {args.minutes:g} min mono int16 at 44100 Hz "
               f"({frames * 2 / _common.MB:.0f} MB); model: quickstart FC VAE, 1 s windows at 3000 Hz")
        rows = []
        for case, what in (("sample-old", f"sample {args.n} clips, all at once"),
                           ("sample-stream", f"sample {args.n} clips, streamed"),
                           ("reconstruct-old", f"reconstruct {args.minutes:g} min, all at once"),
                           ("reconstruct-stream", f"reconstruct {args.minutes:g} min, streamed")):
            proc = _common.run_script(__file__, ["--case", case, "--work", work, "--input", source, "--n", args.n],
                                      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
            res = _common.child_result(proc)
            if "error" in res:
                rows.append([what, "n/a", "n/a", res["error"][:60]])
            else:
                rows.append([what, _common.fmt(res["peak"]), _common.fmt(res["own"]), _common.fmt(res["seconds"])])
        report("", *_common.table(["case", "peak RSS MB", "own MB", "seconds"], rows))
        report.finish(args.out, "memory_stream.txt")
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
