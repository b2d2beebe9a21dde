"""The comparison that proves it: paper-faithful configs against kvae's, same data, seed and step budget.

Trains each config on the embedded dataset for the same number of optimizer
steps (the same seed, the same data), evaluates each with `kvae.evaluate`, and
prints one table: reconstruction MR-STFT distance and SI-SDR on the test
split's fixed windows; sample silence, spectral flatness and Fréchet log-mel
distance to the test windows. Reference rows (silence, white noise, real
training windows) come from the first model's evaluation.

    python benchmarks/quality.py                    # all pairs, 600 steps each
    python benchmarks/quality.py --steps 100 --configs paper-conv1d conv1d
    python benchmarks/quality.py --out runs/quality  # keep the runs (samples, curves)

Run on demand; it takes minutes per model on a 2-core CPU.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kvae._env import configure  # noqa: E402

configure()

DEFAULT_CONFIGS = ["paper-fc", "fc", "paper-conv1d", "conv1d", "paper-mel", "mel", "paper-transformer"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per model (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-samples", type=int, default=32)
    parser.add_argument("--out", help="folder for the runs and quality.json (default: a temporary folder)")
    args = parser.parse_args()

    import keras

    import kvae
    from kvae.config import load_config
    from kvae.evaluate import COLUMNS, evaluate, format_table

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kvae-quality-"))
    print(f"kvae quality benchmark: {args.steps} steps per model, seed {args.seed}, embedded data, "
          f"backend {keras.backend.backend()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    table = {"rows": {}}
    references = None
    for name in args.configs:
        config = load_config(name)
        per_epoch = max(1, min(args.steps, 50))
        overrides = {"train": {"epochs": math.ceil(args.steps / per_epoch), "steps_per_epoch": per_epoch,
                               "seed": args.seed, "verbose": 0, "n_samples": 4}}
        config = load_config(config, overrides)
        start = time.perf_counter()
        model, history = kvae.fit(config, run=out / name, verbose=False)
        seconds = time.perf_counter() - start
        result = evaluate(model, n_samples=args.n_samples, seed=args.seed,
                          reference_rate=0 if references else 16000)
        row = dict(result["rows"]["model"], train_seconds=seconds, rate=model.sample_rate)
        table["rows"][name] = row
        if references is None:
            references = {k: v for k, v in result["rows"].items() if k != "model"}
        print(f"  {name:<18} {seconds:6.0f} s  " + "  ".join(
            f"{title} {fmt.format(row[key])}" for key, title, fmt in COLUMNS if key in row), flush=True)
    table["rows"].update({f"[ref] {k}": v for k, v in (references or {}).items()})
    print()
    print(format_table(table))
    (out / "quality.json").write_text(json.dumps(table, indent=2, default=float))
    print(f"\nruns and quality.json in {out}")


if __name__ == "__main__":
    main()
