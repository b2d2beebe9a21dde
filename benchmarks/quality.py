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

`--snapshots 7.5 15 30` (with `--cpu-minutes 60`) saves each model as its
training passes those CPU-minutes (`kvae.training.callbacks.Snapshots`),
evaluates every snapshot and the final model the same way, and prints the
learning curves (paired reconstruction C2ST, rate in bit/s, MR-STFT, SI-SDR
against CPU-minutes) beside the ladder's Opus rows; `--plot` draws them.
`--merge A B ...` shows the curves of earlier `--out` folders together (one
process per config can then share a machine's cores) and plots them. A run
folder whose training was stopped early can be merged too: its snapshots are
evaluated then (on `--data`), so an interrupted hour still gives its curve.
Under the table it prints the steps at which each curve would reach Opus 6
kbit/s's MR-STFT if it kept falling as it did (an extrapolation).

    python benchmarks/quality.py --cpu-minutes 60 --snapshots 7.5 15 30 --threads 1 --steps 1000000 \
        --configs vocos vocos-gan --data /tmp/ufoai-corpus --out runs/curves --plot docs/assets/curves.png

`--cpu-minutes` gives every model the same budget of this process's CPU
time (`kvae.training.callbacks.TimeBudget`, clock "cpu"; `--steps` is then
only a ceiling): a fair comparison even while other jobs share the machine,
best with `--threads 1` (idle OpenMP threads spin and count as CPU time).

Rerunning with the same `--out` resumes: finished models are loaded (their
training time shows as nan) and an interrupted training resumes where its
backup left it, budget and snapshots included (the backup records the
CPU-minutes spent), so a killed hour still gives one curve.

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
    parser.add_argument("--cpu-minutes", "--minutes", dest="cpu_minutes", type=float, default=None,
                        help="train each model for this many minutes of --clock (then --steps is a ceiling)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="what --cpu-minutes and --snapshots count: this process's CPU time (default; fair on "
                             "a shared CPU) or elapsed time (on a GPU, where CPU time says little)")
    parser.add_argument("--snapshots", nargs="+", type=float, default=(),
                        help="CPU-minutes at which to save and evaluate each model too (below --cpu-minutes)")
    parser.add_argument("--plot", help="PNG of the learning curves (with --snapshots or --merge)")
    parser.add_argument("--merge", nargs="+", metavar="FOLDER",
                        help="only show the curves of earlier --out folders (or run folders with snapshots: those not "
                             "yet evaluated are, on --data, as a run stopped early left them) together, and --plot "
                             "them; trains nothing")
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
    if args.snapshots and not (args.cpu_minutes and all(0 < m < args.cpu_minutes for m in args.snapshots)):
        parser.error("--snapshots: needs --cpu-minutes, and every snapshot below it")
    return args


def curve_row(result, minutes, steps):
    """One point of a learning curve from an evaluation result."""
    rec = {k: math.nan if v is None else v for k, v in result["reconstruction"]["reconstructions"].items()}
    return {"cpu_minutes": minutes, "steps": steps, "rate_bps": result["rate_bps"],
            "paired_c2st": rec["paired_c2st"], "mrstft": rec["mrstft"], "si_sdr_db": rec["si_sdr_db"],
            "samples_c2st": result["realism"]["samples"]["c2st"]}


def steps_to_reach(rows, target):
    """Optimizer steps at which MR-STFT would reach `target` if it kept falling as a power of the steps
    (`mrstft ~ steps ** -a`), from the slope of the last two points and of all points (least squares in
    log-log); None where the curve is not falling. An extrapolation, not a measurement."""
    points = [(math.log(r["steps"]), math.log(r["mrstft"])) for r in rows if r["steps"] and r["mrstft"] > 0]
    if len(points) < 2:
        return None, None

    def reach(pts):
        n = len(pts)
        mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
        slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        if slope >= 0:
            return None
        return math.exp(pts[-1][0] + (math.log(target) - pts[-1][1]) / slope)

    return reach(points[-2:]), reach(points)


def show_curves(curves, ladder, plot, unit, xlabel):
    """Print the learning curves beside the ladder's rows; draw them into `plot` (a PNG path) when given."""
    print(f"Learning curves on {device_name()}: held-out reconstructions after each budget of {unit}; "
          "paired C2ST 0.5 = not told from the inputs")
    for row, metrics in ladder.items():
        print(f"  {row:<38} paired C2ST {metrics['paired_c2st']:.3f}  MR-STFT {metrics['mrstft']:.3f}")
    print(f"  {'config':<18} {'minutes':>7} {'steps':>7} {'bit/s':>7} {'paired C2ST':>11} {'MR-STFT':>8} "
          f"{'SI-SDR':>7} {'samples C2ST':>12}")
    for name, rows in curves.items():
        for r in rows:
            print(f"  {name:<18} {r['cpu_minutes']:>7g} {r['steps']:>7} {r['rate_bps']:>7.0f} {r['paired_c2st']:>11.3f} "
                  f"{r['mrstft']:>8.3f} {r['si_sdr_db']:>7.2f} {r['samples_c2st']:>12.3f}")
    opus = ladder.get("ladder: Opus 6 kbit/s")
    if opus:
        print(f"  Extrapolated steps to Opus 6 kbit/s's MR-STFT {opus['mrstft']:.3f} (mrstft ~ steps^-a; "
              "last two points / all points):")
        for name, rows in curves.items():
            if len(rows) < 2:
                continue
            last, fitted = steps_to_reach(rows, opus["mrstft"])
            words = [("over 1e9" if v > 1e9 else f"{v:,.0f}") if v else "not falling" for v in (last, fitted)]
            print(f"    {name:<18} {words[0]} / {words[1]}")
    print()
    if plot:
        plot_curves(curves, ladder, plot, xlabel)
        print(f"learning curves plotted in {plot}\n")


def merge(folders, args):
    """`--merge`: the curves of earlier `--out` folders (their quality.json) or run folders (their
    snapshots, evaluated here if they were not: a run stopped before its end) in one table and plot; the
    ladder from the first quality.json."""
    import json

    from kvae.evaluation.evaluate import DEFAULT_CLIPS

    curves, ladder, settings = {}, {}, {}
    for folder in map(Path, folders):
        if (folder / "quality.json").is_file():
            summary = json.loads((folder / "quality.json").read_text())
            curves.update(summary.get("curves", {}))
            settings = settings or summary["settings"]
            ladder = ladder or {k: v for k, v in summary["reconstruction"].items() if k.startswith("ladder: ")}
            for evaluation in sorted(folder.glob("*/eval.json")):  # the ladder of a config's final evaluation
                rows = json.loads(evaluation.read_text())["reconstruction"]
                ladder = ladder or {k: v for k, v in rows.items() if k.startswith("ladder: ")}
        else:  # a run whose training was stopped: its evaluated snapshots
            rows = []
            for path in folder.glob("snapshots/*-*min.keras"):  # Snapshots.name: <clock>-<minutes>min.keras
                result = evaluated_snapshot(path, args, args.n_clips or DEFAULT_CLIPS)
                rows.append(curve_row(result, float(path.name.split("-", 1)[1][:-len("min.keras")]), result["steps"]))
            rows.sort(key=lambda r: r["cpu_minutes"])
            if not rows:
                raise SystemExit(f"quality.py --merge: {folder} has neither quality.json nor evaluated snapshots")
            curves[folder.name] = rows
    clock = settings.get("clock", "cpu")
    show_curves(curves, ladder, args.plot, "CPU-minutes" if clock == "cpu" else "minutes (wall clock)",
                "CPU-minutes (1 thread)" if clock == "cpu" else "minutes")
    return 0


def device_name():
    """The device training ran on, in words ("the CPU", or the GPU's name)."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    return "the CPU"


def plot_curves(curves, ladder, path, xlabel="CPU-minutes (1 thread)"):
    """Paired C2ST and MR-STFT against CPU-minutes, one line per config, the ladder's Opus rows dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in curves.items():
        x = [r["cpu_minutes"] for r in rows]
        axes[0].plot(x, [r["paired_c2st"] for r in rows], "o-", label=name)
        axes[1].plot(x, [r["mrstft"] for r in rows], "o-", label=name)
    marks = sorted({r["cpu_minutes"] for rows in curves.values() for r in rows})
    for row, metrics in ladder.items():
        if "Opus" in row or "low-pass" in row:
            axes[0].axhline(metrics["paired_c2st"], ls="--", lw=1, color="grey")
            axes[0].annotate(row.replace("ladder: ", ""), (marks[0], metrics["paired_c2st"]),
                             fontsize=7, color="grey", va="bottom")
    axes[0].axhline(0.5, ls=":", color="black", lw=1)
    axes[0].set(xscale="log", xlabel=xlabel, ylabel="paired reconstruction C2ST (0.5 = not told apart)",
                ylim=(0.45, 1.02))
    for row, metrics in ladder.items():
        if "Opus 6" in row:
            axes[1].axhline(metrics["mrstft"], ls="--", lw=1, color="grey")
            axes[1].annotate(row.replace("ladder: ", ""), (marks[0], metrics["mrstft"]), fontsize=7, color="grey",
                             va="bottom")
    axes[1].set(xscale="log", yscale="log", xlabel=xlabel, ylabel="MR-STFT distance (lower is better, log scale)")
    for ax in axes:
        ax.set_xticks(marks, [f"{m:g}" for m in marks])
        ax.minorticks_off()
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluated_snapshot(path, args, n_clips):
    """kvae evaluate's result for the snapshot at `path` (with its optimizer step count), kept beside it as
    `<snapshot>.eval.json`; an earlier evaluation is reused."""
    import json

    from kvae.evaluation.evaluate import evaluate
    from kvae.evaluation.report import write_json

    done = path.with_suffix(".eval.json")
    if done.is_file():
        return json.loads(done.read_text())
    model = kvae.load(path)
    result = evaluate(model, data=args.data, n_clips=n_clips, seed=args.seed, reference_rate=0)
    result["steps"] = int(kvae_steps(model))
    write_json(done, result)
    return result


def snapshot_curve(run, args, n_clips):
    """Evaluate each snapshot of `run` (an earlier evaluation is reused); the curve's points, earliest first."""
    from kvae.training.callbacks import Snapshots

    rows = []
    for minutes in sorted(args.snapshots):
        path = run / "snapshots" / Snapshots.name(minutes, args.clock)
        done = path.with_suffix(".eval.json")
        if not path.is_file():
            print(f"  no snapshot at {minutes:g} {args.clock} minutes in {run} (training ended before it)", flush=True)
            continue
        result = evaluated_snapshot(path, args, n_clips)
        steps = result["steps"]
        rows.append(curve_row(result, minutes, steps))
        print(f"  {run.name:<18} at {minutes:g} CPU-minutes ({steps} steps): paired C2ST "
              f"{rows[-1]['paired_c2st']:.3f}, MR-STFT {rows[-1]['mrstft']:.3f}, {rows[-1]['rate_bps']:.0f} bit/s", flush=True)
    return rows


def kvae_steps(model):
    import keras

    return keras.ops.convert_to_numpy(model.optimizer.iterations) if model.optimizer else -1


def main(argv=None):
    args = parse_args(argv)
    import keras

    if args.threads and keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(args.threads)
    if args.merge:
        return merge(args.merge, args)
    from kvae.config import load_config
    from kvae.training.callbacks import Snapshots, TimeBudget
    from kvae.evaluation.evaluate import DEFAULT_CLIPS, evaluate
    from kvae.evaluation.report import REALISM_KEYS, RECONSTRUCTION_KEYS, format_table, write_json

    n_clips = args.n_clips or DEFAULT_CLIPS
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kvae-quality-"))
    unit = "CPU-minutes" if args.clock == "cpu" else "minutes (wall clock)"
    budget = f"{args.cpu_minutes:g} {unit} (at most {args.steps} steps)" if args.cpu_minutes else f"{args.steps} steps"
    print(f"kvae quality benchmark: {budget} per model, threads {args.threads or 'default'}, seed {args.seed}, {n_clips} clips per set, "
          f"data {args.data or 'embedded'}, backend {keras.backend.backend()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
          flush=True)
    realism, reconstruction, runs, curves = {}, {}, {}, {}
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
            cbs = [TimeBudget(args.cpu_minutes, clock=args.clock)] if args.cpu_minutes else []
            if args.snapshots:
                cbs.append(Snapshots(run / "snapshots", args.snapshots, clock=args.clock))
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
        if args.snapshots:
            curves[name] = snapshot_curve(run, args, n_clips)
            curves[name].append(curve_row(result, args.cpu_minutes, steps_done))
        if references is None:
            references = (
                {k: v for k, v in result["realism"].items() if k.startswith("ref: ")},
                {k: v for k, v in result["reconstruction"].items() if k.startswith(("ref: ", "ladder: "))},
                result["model"]["sample_rate"],
            )
        print(f"  {name:<18} {model.sample_rate} Hz, {steps_done} steps, trained {seconds:.0f} s, evaluated {eval_seconds:.0f} s: "
              f"samples C2ST {realism[name]['c2st']:.3f}, reconstruction MR-STFT {reconstruction[name]['mrstft']:.3f}",
              flush=True)
    ref_realism, ref_reconstruction, ref_rate = references
    if curves:
        ladder = {k: v for k, v in ref_reconstruction.items() if k.startswith("ladder: ")}
        show_curves(curves, ladder, args.plot, unit, "CPU-minutes (1 thread)" if args.clock == "cpu"
                    else f"minutes on {device_name()}")
    print()
    print(f"Realism of prior samples and of reconstructions (C2ST 0.5 = indistinguishable from training windows; reference rows "
          f"at {ref_rate} Hz)")
    print("\n".join(format_table({**realism, **ref_realism}, REALISM_KEYS, "config")))
    print()
    print("Reconstruction of held-out windows (lower is better but for SI-SDR)")
    print("\n".join(format_table({**reconstruction, **ref_reconstruction}, RECONSTRUCTION_KEYS, "config")))
    summary = {"settings": {"steps": args.steps, "cpu_minutes": args.cpu_minutes, "clock": args.clock, "threads": args.threads, "seed": args.seed, "n_clips": n_clips, "data": args.data or "embedded"}, "runs": runs,
               "curves": curves, "realism": {**realism, **ref_realism}, "reconstruction": {**reconstruction, **ref_reconstruction}}
    write_json(out / "quality.json", summary)  # strict JSON: -inf SI-SDR becomes null
    print(f"\nruns and quality.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
