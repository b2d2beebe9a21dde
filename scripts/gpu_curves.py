"""Issue 23's learning curve in GPU-minutes: vocos-mel (the CPU winner) and vocos on a real-music subset that travels.

Two steps, the first here (where tensorflow-io decodes Ogg Vorbis), the second on the GPU machine:

    python scripts/gpu_curves.py prepare --source /tmp/ufoai-corpus --out runs/ufoai-subset   # ~45 MB of WAV
    scripts/gpu_curves.sh run --data runs/ufoai-subset            # on a GPU: ~8 min of training + evaluation
    scripts/gpu_curves.sh run --data runs/ufoai-subset --cpu --minutes 1 --snapshots 0.5   # anywhere, as a check

`prepare` takes the held-out tracks and then training tracks of a corpus built by
`benchmarks/real_music.py` (train/ and test/ folders), resamples each to the model rate and
writes it as 16-bit WAV (kvae's `WavWriter`), until `--max-mb` is reached: WAV needs no decoder
on the GPU machine, and the subset stays small enough to go with the working tree (name it in
the device call's `carry`; never commit it). A track that does not decode is skipped and
reported.

`run` trains each config for `--minutes` of wall-clock time on the GPU (CPU time with `--cpu`,
which also hides the GPUs), saving snapshots at `--snapshots`, and evaluates every snapshot
with `kvae evaluate`'s paired test and ladder: `benchmarks/quality.py --clock wall`. The table
and the plot (`--out`/curves.png) compare directly with the CPU curves in docs/results.md only
in shape: the subset is smaller than the whole corpus.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))


def prepare(args):
    import kvae

    kvae.configure()
    from kvae.data import AudioFileError, read_audio, resample, write_wav
    from kvae.errors import KvaeError

    source, out = Path(args.source), Path(args.out)
    if not (source / "train").is_dir() or not (source / "test").is_dir():
        raise KvaeError(f"{source}: expected train/ and test/ folders (benchmarks/real_music.py builds them)")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise KvaeError(f"--out {out}: must not be inside the source corpus {source}")
    budget, used = args.max_mb * 2 ** 20, 0
    tracks = [("test", p) for p in sorted((source / "test").iterdir())][: args.test]
    tracks += [("train", p) for p in sorted((source / "train").iterdir())]
    for split, path in tracks:
        target = out / split / (path.stem + ".wav")
        if target.is_file():
            used += target.stat().st_size
            continue
        try:
            audio, rate = read_audio(path)
        except (AudioFileError, KvaeError) as exc:
            print(f"skipped {path}: {exc}")
            continue
        audio = resample(audio, rate, args.rate)
        if used + 2 * len(audio) > budget:
            break
        write_wav(target, audio, args.rate, bits=16, inputs=[path])
        used += target.stat().st_size
        print(f"{split}/{target.name}: {len(audio) / args.rate:.0f} s", flush=True)
    counts = {split: len(list((out / split).glob("*.wav"))) for split in ("train", "test")}
    print(f"{out}: {counts['train']} training and {counts['test']} held-out tracks, {used / 2**20:.1f} MB")
    return 0


def run(args):
    env = dict(os.environ)
    if args.cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    out = Path(args.out)
    command = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--clock", "cpu" if args.cpu else "wall",
               "--minutes", str(args.minutes), "--snapshots", *map(str, args.snapshots), "--steps", "100000000",
               "--configs", *args.configs, "--data", str(args.data), "--out", str(out),
               "--plot", str(out / "curves.png"), "--n-clips", str(args.n_clips)]
    if args.cpu:
        command += ["--threads", "1"]
    print(" ".join(command), flush=True)
    return subprocess.call(command, env=env)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("prepare", help="write the WAV subset here")
    p.add_argument("--source", required=True, help="a corpus of benchmarks/real_music.py (train/, test/)")
    p.add_argument("--out", required=True, help="the subset's folder (inside the repository, ignored, to carry)")
    p.add_argument("--max-mb", type=float, default=45.0, help="size of the subset in MB (default 45: under 60)")
    p.add_argument("--test", type=int, default=2, help="held-out tracks (default 2)")
    p.add_argument("--rate", type=int, default=3000, help="sample rate of the WAVs (default 3000, the presets')")
    r = verbs.add_parser("run", help="the learning curves (on the GPU machine)")
    r.add_argument("--data", required=True, help="the subset written by prepare")
    r.add_argument("--out", default=os.environ.get("OUT", "runs") + "/gpu-curves", help="runs, quality.json, curves.png")
    r.add_argument("--configs", nargs="+", default=["vocos-mel", "vocos"])
    r.add_argument("--minutes", type=float, default=3.0, help="training per config (default 3)")
    r.add_argument("--snapshots", nargs="+", type=float, default=[0.75, 1.5], help="also evaluated (default 0.75 1.5)")
    r.add_argument("--n-clips", type=int, default=128, help="clips per evaluated set (default 128)")
    r.add_argument("--cpu", action="store_true", help="hide the GPUs; minutes are CPU time on 1 thread")
    args = parser.parse_args(argv)
    try:
        return prepare(args) if args.verb == "prepare" else run(args)
    except Exception as exc:  # one line, as kvae's commands
        from kvae.errors import KvaeError

        if isinstance(exc, KvaeError):
            print(f"gpu_curves: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
