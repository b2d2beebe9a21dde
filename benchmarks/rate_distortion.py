"""A rate-distortion curve, the way codecs are compared: one model trained at several bitrates beside Opus.

Trains one config at each `--rates` target (kbit/s; the VAE's rate
controller, `model.bitrate_target`, steers its KL there) for the same CPU budget
with `benchmarks/quality.py` (one model after the other, 1 thread; a rerun
resumes), then judges every model's reconstructions of the same held-out
windows, and Opus at `--opus-rates`, with kvae evaluate's reconstruction
table (paired C2ST with its 95 % interval, LSD, MR-STFT, beside the ladder and
the reference rows), and plots paired C2ST and LSD against bits per second.
A model's rate is its measured information rate on those windows (its KL in
bits per second of audio), Opus's the coded file's.

    python benchmarks/rate_distortion.py --config magnitude --rates 1.5 3 6 12 --cpu-minutes 60 \\
        --data /tmp/ufoai-corpus --out runs/rd-ufoai --plot docs/results/rd-ufoai.png
    python benchmarks/rate_distortion.py --no-train --out runs/rd-ufoai --data /tmp/ufoai-corpus \\
        --models "vocos-mel=runs/curves-vocos-mel/vocos-mel/model.keras"   # add other models as points

`--no-train` only evaluates what `--out` holds (and `--models`). Run on
demand; it takes the CPU budget per rate plus minutes of evaluation.
"""

import argparse
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kvae  # noqa: E402

kvae.configure()  # before Keras is imported

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OPUS = (6, 8, 10, 12, 16, 24)


def rate_configs(config, rates, folder):
    """Config files `<name>-<rate>k.toml` in `folder`, each `config` with `model.bitrate_target` at one rate."""
    folder.mkdir(parents=True, exist_ok=True)
    base = str(Path(config).resolve()) if Path(config).is_file() else config
    stem = Path(config).stem
    files = []
    for kbps in rates:
        name = f"{stem}-{kbps:g}k"
        path = folder / f"{name}.toml"
        text = f'name = "{name}"\nbase = "{base}"\n\n[model]\nbitrate_target = {float(kbps) * 1000:.1f}\n'
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        files.append(path)
    return files


def train(files, args):
    """Train every config with benchmarks/quality.py into `--out` (it resumes what an earlier run left)."""
    command = [sys.executable, str(HERE / "quality.py"), "--configs", *map(str, files), "--cpu-minutes",
               f"{args.cpu_minutes:g}", "--threads", "1", "--steps", "1000000", "--out", args.out,
               "--n-clips", str(args.n_clips)]
    if args.snapshots:
        command += ["--snapshots", *(f"{m:g}" for m in args.snapshots)]
    if args.data:
        command += ["--data", args.data]
    print("training:", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def plot(rows, path):
    """Paired C2ST and LSD against kbit/s: the models as one line, Opus as another, the ladder's other rows flat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kvae.paths import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    series = {"Opus": [], "model": []}
    for name, row in rows.items():
        if row.get("rate_bps") and row.get("paired_c2st") is not None:
            kind = "Opus" if name.startswith(("Opus", "ladder: Opus")) else (
                "model" if not name.startswith(("ladder: ", "ref: ")) else None)
            if kind:
                series[kind].append((row["rate_bps"] / 1000, row, name))
    for kind, style in (("model", "o-"), ("Opus", "s--")):
        points = sorted(series[kind], key=lambda p: p[0])
        if not points:
            continue
        x = [p[0] for p in points]
        c2st = [p[1]["paired_c2st"] for p in points]
        err = [[p[1]["paired_c2st"] - p[1]["paired_c2st_low"] for p in points],
               [p[1]["paired_c2st_high"] - p[1]["paired_c2st"] for p in points]]
        axes[0].errorbar(x, c2st, yerr=err, fmt=style, capsize=3, label=kind if kind == "Opus" else "kvae models")
        axes[1].plot(x, [p[1]["lsd_db"] for p in points], style, label=kind if kind == "Opus" else "kvae models")
        if kind == "model":
            for xi, yi, (_, _, name) in zip(x, c2st, points):
                axes[0].annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for name in ("ref: white noise", "ladder: noise 30 dB SNR"):
        if name in rows and rows[name].get("paired_c2st") is not None:
            axes[0].axhline(rows[name]["paired_c2st"], color="grey", lw=0.8, ls=":")
            axes[0].annotate(name, (1.0, rows[name]["paired_c2st"]), xycoords=("axes fraction", "data"), ha="right",
                             va="bottom", fontsize=7, color="grey")
    axes[0].set_ylabel("paired C2ST (0.5 = indistinguishable)")
    axes[1].set_ylabel("log-spectral distance, dB")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in axes:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("kbit/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="magnitude", help="config name or file (default magnitude)")
    parser.add_argument("--rates", type=float, nargs="+", default=[1.5, 3, 6, 12], help="rate targets, kbit/s")
    parser.add_argument("--cpu-minutes", type=float, default=60.0, help="CPU budget per rate (default 60)")
    parser.add_argument("--snapshots", type=float, nargs="*", default=(), help="CPU-minutes to snapshot at too")
    parser.add_argument("--no-train", action="store_true", help="evaluate what --out holds, train nothing")
    parser.add_argument("--models", nargs="*", default=(), metavar="LABEL=PATH", help="more models to put on the plot")
    parser.add_argument("--opus-rates", type=float, nargs="*", default=DEFAULT_OPUS, help="Opus rates, kbit/s")
    parser.add_argument("--data", help="dataset root (default: the embedded corpus)")
    parser.add_argument("--n-clips", type=int, default=256, help="held-out windows (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-visqol", action="store_true", help="leave out the ViSQOL column (minutes per table)")
    parser.add_argument("--out", required=True, help="folder of the trained runs (and rd.json)")
    parser.add_argument("--plot", help="PNG of the curves")
    args = parser.parse_args(argv)
    extra = []
    for item in args.models:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            parser.error(f"--models: expected LABEL=PATH, got {item!r}")
        extra.append((label, path))
    out = Path(args.out)
    files = rate_configs(args.config, args.rates, out / "configs")
    if not args.no_train:
        train(files, args)

    import torch

    torch.set_num_threads(1)
    from kvae.data import prepare
    from kvae.evaluation import ladder
    from kvae.evaluation.evaluate import information_rate, reconstruction_table, windows
    from kvae.evaluation.report import RECONSTRUCTION_KEYS, format_table, write_json

    models = [(f.stem, out / f.stem / "model.keras") for f in files]
    models = [(label, path) for label, path in models if path.is_file()] + [(lab, Path(p)) for lab, p in extra]
    if not models:
        raise SystemExit(f"rate_distortion.py: no trained model in {out} (train first, without --no-train)")
    loaded = [(label, kvae.load(path)) for label, path in models]
    rate, window = loaded[0][1].sample_rate, loaded[0][1].window
    corpus = prepare(args.data, sample_rate=rate)
    test, split = windows(corpus, "test", window, args.n_clips, random=False, seed=args.seed)
    outputs, columns = {}, {}
    for label, model in loaded:
        if (model.sample_rate, model.window) != (rate, window):
            raise SystemExit(f"rate_distortion.py: {label} is not at {rate} Hz with {window}-sample windows")
        outputs[label] = np.concatenate([model.reconstruct(test[i:i + 64]) for i in range(0, len(test), 64)])
        columns[label] = information_rate(model, test)
    tools = ladder.opus_tools()
    for kbps in args.opus_rates if tools else ():
        coded, bps = ladder.opus(test, rate, kbps, tools)
        outputs[f"Opus {kbps:g} kbit/s"] = coded
        columns[f"Opus {kbps:g} kbit/s"] = {"rate_bps": float(kbps) * 1000, "coded_bps": bps}
    if not tools:
        print(ladder.OPUS_MISSING)
    rows = reconstruction_table(test, outputs, rate, seed=args.seed, columns=columns,
                                visqol=False if args.no_visqol else None)
    print(f"Rate-distortion: {len(test)} {split} windows at {rate} Hz; models: "
          + ", ".join(f"{label} ({path})" for label, path in models))
    print("\n".join(format_table(rows, RECONSTRUCTION_KEYS, "")))
    print(f"\ncommand: python benchmarks/rate_distortion.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    write_json(out / "rd.json", {"settings": {k: v for k, v in vars(args).items()}, "rows": rows})
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    best = {k: v for k, v in rows.items() if k in dict(models)}
    opus6 = rows.get("Opus 6 kbit/s") or rows.get("ladder: Opus 6 kbit/s")
    if opus6 and opus6.get("paired_c2st") is not None:
        at_or_below = [k for k, v in best.items() if v["rate_bps"] <= 6000 and v["paired_c2st"] <= opus6["paired_c2st"]]
        print(f"at 6 kbit/s or less and at or below Opus 6 kbit/s's paired C2ST ({opus6['paired_c2st']:.3f}): "
              + (", ".join(at_or_below) if at_or_below else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
