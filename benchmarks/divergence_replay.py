"""Replay `kvae.training.callbacks.DivergenceGuard` on finished runs: where would it have stopped them?

Reads each run's `history.csv`, feeds its rows to the guard as `kvae.fit`
would at each epoch's end, and prints the largest ratio of the watched value
to its best so far and the epoch the guard trips at (or "never"). This is
how `train.divergence_factor`'s default was checked against every run behind
docs/results.md: healthy runs stayed within 1.11 x their best, and only
rave-3k's collapse trips (at epoch 114, two epochs after its jump).

    python benchmarks/divergence_replay.py runs/*/*/history.csv
    python benchmarks/divergence_replay.py runs/curves60-rave-3k/rave-3k --factor 2 --patience 2

Run on demand; it trains nothing.
"""

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvae.errors import KvaeError  # noqa: E402
from kvae.runs import RunFolder  # noqa: E402


class _Model:
    stop_training = False


def replay(path, factor, patience, monitor):
    """`(epochs, worst ratio to the best so far, the guard's trip or None)` for one history file; None without
    the watched column."""
    from kvae.runs import read_history
    from kvae.training.callbacks import DivergenceGuard

    guard = DivergenceGuard(factor, patience=patience, monitor=monitor)
    guard.set_model(_Model())
    guard.on_train_begin()
    history = read_history(path)
    values = [(int(e), v) for e, v in zip(history.get("epoch", []), history.get(monitor, [])) if math.isfinite(e)]
    if not values:
        return None
    best, worst = math.inf, 0.0
    for epoch, value in values:
        if math.isfinite(value):
            worst = max(worst, value / best if best < math.inf else 1.0)
            best = min(best, value)
        guard.on_epoch_end(epoch, {monitor: value})
    return len(values), worst, guard.tripped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="history.csv files or run folders holding one")
    parser.add_argument("--factor", type=float, default=3.0, help="train.divergence_factor (default 3)")
    parser.add_argument("--patience", type=int, default=3, help="epochs in a row over it (default 3)")
    parser.add_argument("--monitor", default="val_stft", help="the logged value watched (default val_stft)")
    args = parser.parse_args(argv)
    try:
        for run in args.runs:
            path = RunFolder(run).history if Path(run).is_dir() else Path(run)
            if not path.is_file():
                print(f"{run}: no history.csv (skipped)")
                continue
            result = replay(path, args.factor, args.patience, args.monitor)
            if result is None:
                print(f"{path}: no {args.monitor} column (the guard does not watch this model)")
                continue
            epochs, worst, tripped = result
            where = f"trips at epoch {tripped[0]} ({tripped[1]:.3g} against a best of {tripped[2]:.3g})" \
                if tripped else "never trips"
            print(f"{path}: {epochs} epochs, at most {worst:.2f} x its best so far; {where}")
    except KvaeError as exc:
        print(f"divergence_replay: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
