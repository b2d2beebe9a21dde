"""The comparison that proves it: paper-faithful configs against kvae's, same data, seed and step budget.

Trains each config on the embedded dataset for the same number of optimizer
steps (the same seed, the same data), evaluates each with
`kvae.evaluation.evaluate.evaluate` (what `kvae evaluate` runs), and prints
two tables with one row per config:

- realism of the model's prior samples against real training windows
  (classifier two-sample test C2ST, KID, clip-level and log-mel Fréchet
  distances, temporal std, silence, spectral flatness);
- reconstruction of the held-out windows (MR-STFT distance, log-spectral
  distance, SI-SDR).

Reference rows (real vs real, held-out recordings, drone, white noise,
silence; the data sent through the model's rate and back) come from the
first config's evaluation, so put a config at the common rate first.

    python benchmarks/quality.py                    # all pairs, 600 steps each
    python benchmarks/quality.py --steps 100 --configs paper-conv1d conv1d
    python benchmarks/quality.py --out runs/quality  # keep the runs (samples, curves) and quality.json
    python benchmarks/quality.py --quick            # smoke run: 2 configs, 10 steps, 16 clips
    python benchmarks/quality.py --cpu-minutes 12 --threads 1 --configs conv1d rave-3k rave-3k-adv

`--cpu-minutes` gives every model the same budget of this process's CPU
time (`kvae.training.callbacks.TimeBudget`, clock "cpu"; `--steps` is then
only a ceiling): a fair comparison even while other jobs share the machine,
best with `--threads 1` (idle OpenMP threads spin and count as CPU time).

Rerunning with the same `--out` resumes: finished models are loaded (their
training time shows as nan) and an interrupted training resumes.

Run on demand; it takes minutes per model on a 2-core CPU. The script uses
kvae's public API only.

Measured figures are in docs/results.md.
"""

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

import kvae  # noqa: E402

kvae.configure()  # before Keras is imported


DEFAULT_CONFIGS = ["paper-fc", "fc", "paper-conv1d", "conv1d", "paper-mel", "mel", "paper-transformer"]
QUICK_CONFIGS = ["paper-fc", "fc"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=None,
                        help=f"config names or files (default {' '.join(DEFAULT_CONFIGS)}; --quick {' '.join(QUICK_CONFIGS)})")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per model (default 600; --quick 10)")
    parser.add_argument("--cpu-minutes", type=float, default=None,
                        help="train each model for this much process CPU time (then --steps is a ceiling)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-clips", type=int, default=None,
                        help="clips per evaluated set (default: kvae evaluate's, 256; --quick 16; at least 10)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 configs, 10 steps, 16 clips")
    parser.add_argument("--data", help="dataset root to train and evaluate on (default: the embedded corpus; "
                                       "benchmarks/real_music.py builds the real-music one)")
    parser.add_argument("--out", help="folder for the runs and quality.json (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.configs is None:
        args.configs = QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS
    if args.steps is None:
        args.steps = 10 if args.quick else 600
    if args.n_clips is None and args.quick:
        args.n_clips = 16
    return args


def main(argv=None):
    args = parse_args(argv)

    import keras

    if args.threads and keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(args.threads)
    from kvae.config import load_config
    from kvae.training.callbacks import TimeBudget
    from kvae.evaluation.evaluate import DEFAULT_CLIPS, evaluate
    from kvae.evaluation.report import REALISM_KEYS, RECONSTRUCTION_KEYS, format_table, write_json

    n_clips = args.n_clips or DEFAULT_CLIPS
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kvae-quality-"))
    budget = f"{args.cpu_minutes:g} CPU-minutes (at most {args.steps} steps)" if args.cpu_minutes else f"{args.steps} steps"
    print(f"kvae quality benchmark: {budget} per model, threads {args.threads or 'default'}, seed {args.seed}, {n_clips} clips per set, "
          f"data {args.data or 'embedded'}, backend {keras.backend.backend()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
          flush=True)
    realism, reconstruction, runs = {}, {}, {}
    references = None
    for name in args.configs:
        per_epoch = max(1, min(args.steps, 50))
        overrides = {"train": {"epochs": math.ceil(args.steps / per_epoch), "steps_per_epoch": per_epoch,
                               "seed": args.seed, "verbose": 0, "n_samples": 4}}
        if args.data:
            overrides["data"] = {"path": args.data}
        config = load_config(name, overrides)
        run = out / config["name"]  # a config file's own name, not its path
        start = time.perf_counter()
        if (run / "model.keras").is_file():  # finished by an earlier, interrupted benchmark run
            model, seconds = kvae.load(run), math.nan
        else:  # kvae.fit resumes a run this benchmark was interrupted in
            cbs = [TimeBudget(args.cpu_minutes, clock="cpu")] if args.cpu_minutes else []
            model, _ = kvae.fit(config, run=run, verbose=False, callbacks=cbs)
            seconds = time.perf_counter() - start
        steps_done = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) if model.optimizer else -1
        start = time.perf_counter()
        result = evaluate(model, data=args.data, n_clips=n_clips, seed=args.seed, reference_rate=0 if references else 16000)
        eval_seconds = time.perf_counter() - start
        write_json(run / "eval.json", result)  # what `kvae evaluate --out` writes: `kvae gallery` shows it
        realism[name] = result["realism"]["samples"]
        realism[f"{name} (reconstructions)"] = result["realism"]["reconstructions"]
        reconstruction[name] = result["reconstruction"]["reconstructions"]
        runs[name] = {"train_seconds": seconds, "eval_seconds": eval_seconds, "steps": steps_done, **result["model"]}
        if references is None:
            references = (
                {k: v for k, v in result["realism"].items() if k.startswith("ref: ")},
                {k: v for k, v in result["reconstruction"].items() if k.startswith("ref: ")},
                result["model"]["sample_rate"],
            )
        print(f"  {name:<18} {model.sample_rate} Hz, {steps_done} steps, trained {seconds:.0f} s, evaluated {eval_seconds:.0f} s: "
              f"samples C2ST {realism[name]['c2st']:.3f}, reconstruction MR-STFT {reconstruction[name]['mrstft']:.3f}",
              flush=True)
    ref_realism, ref_reconstruction, ref_rate = references
    print()
    print(f"Realism of prior samples and of reconstructions (C2ST 0.5 = indistinguishable from training windows; reference rows "
          f"at {ref_rate} Hz)")
    print("\n".join(format_table({**realism, **ref_realism}, REALISM_KEYS, "config")))
    print()
    print("Reconstruction of held-out windows (lower is better but for SI-SDR)")
    print("\n".join(format_table({**reconstruction, **ref_reconstruction}, RECONSTRUCTION_KEYS, "config")))
    summary = {"settings": {"steps": args.steps, "cpu_minutes": args.cpu_minutes, "threads": args.threads, "seed": args.seed, "n_clips": n_clips, "data": args.data or "embedded"}, "runs": runs,
               "realism": {**realism, **ref_realism}, "reconstruction": {**reconstruction, **ref_reconstruction}}
    write_json(out / "quality.json", summary)  # strict JSON: -inf SI-SDR becomes null
    print(f"\nruns and quality.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
