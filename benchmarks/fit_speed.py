"""Steps per CPU-second of whole `kvae.fit` trainings, config against config, and where the CPU goes (issue 31).

`step_speedups.py` times the train function alone; a real training also
validates every epoch, writes its backup and history, runs its callbacks and
reads its windows. Here every row is a real `kvae.fit` of a config (its own
run folder, every callback it has by default) for `--cpu-seconds` of process
CPU time (`TimeBudget(clock="cpu")`), in a fresh subprocess with 1 torch
thread. The rows alternate (A B A B ...) for `--rounds` rounds, so a change
of load on the machine falls on every row alike. A callback splits each
row's process CPU time into

    step         the train function (forward, losses, backward, optimizer)
    validation   the epoch's validation pass
    epoch end    the callbacks after it (history row, backup, KL weight, ...)
    data         between batches: reading the next batch of windows

and the table gives each in ms per training step (the median over rounds),
the steps per CPU-second of the whole, and the ratio to the first row.

A config named `<preset>-before` is that preset as kvae trained it before
issue 31: the ConvNeXt blocks' tanh GELU and Keras's paths
(`step_speedups.py`'s "before" rows), so `vocos-mel-before` is the
reference the issue's target is set against.

    python benchmarks/fit_speed.py --configs vocos-mel-before vocos-mel magnitude --data /tmp/ufoai-corpus
    python benchmarks/fit_speed.py --configs vocos-mel-before magnitude --rounds 1 --cpu-seconds 20   # smoke

Run on demand, alone on the machine (or pin it: `taskset -c 0`). Figures in
docs/benchmarks.md#speed-ups.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

PHASES = ("step", "validation", "epoch end", "data")


def child(args):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    import torch

    import kvae
    from kvae.training.callbacks import TimeBudget

    torch.set_num_threads(1)
    clock = time.process_time

    class Phases(keras.callbacks.Callback):
        """Charges the CPU time between callback events to the phase it belongs to."""

        def __init__(self):
            super().__init__()
            self.spent = dict.fromkeys(PHASES, 0.0)
            self.steps, self.open = 0, None  # open: (phase, start) of the time not yet charged

        def _close(self, now):
            if self.open is not None:
                self.spent[self.open[0]] += now - self.open[1]
            self.open = None

        def on_train_batch_begin(self, batch, logs=None):
            self._close(now := clock())
            self.open = ("step", now)

        def on_train_batch_end(self, batch, logs=None):
            self._close(now := clock())
            self.steps += 1
            self.open = ("data", now)

        def on_test_begin(self, logs=None):
            self._close(now := clock())
            self.open = ("validation", now)

        def on_test_end(self, logs=None):
            self._close(now := clock())
            self.open = ("epoch end", now)

        def on_train_end(self, logs=None):
            self._close(clock())

    config = args.child
    if config.endswith("-before"):
        from step_speedups import _tanh_call

        from kvae.models import blocks

        config = config[: -len("-before")]
        blocks.ConvNeXtBlock.call = _tanh_call
        blocks.TORCH_DEPTHWISE = blocks.TORCH_FUSED = False
    phases = Phases()
    settings = {"train": {"epochs": 10 ** 6, "steps_per_epoch": 50, "verbose": 0}}
    with tempfile.TemporaryDirectory(dir=args.out) as run:
        kvae.fit(config, data=args.data, run=Path(run) / "run", verbose=False, settings=settings,
                 callbacks=[phases, TimeBudget(args.cpu_seconds / 60.0, clock="cpu")])
    _common.print_result({"steps": phases.steps, **phases.spent})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["vocos-mel-before", "magnitude"],
                        help="configs (presets or files); the first is the reference of the ratio")
    parser.add_argument("--data", default=None, help="dataset root (default: the embedded corpus)")
    parser.add_argument("--cpu-seconds", type=float, default=120.0, help="process CPU seconds of training per row")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="save the report (and the runs, while they run) here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    report = _common.Report()
    report(_common.command_line("fit_speed.py"), *_common.machine_lines())
    work = _common.make_work_dir(args.out, "fit-speed-")
    results = {name: [] for name in args.configs}
    for r in range(args.rounds):
        for name in args.configs:
            extra = ["--data", args.data] if args.data else []
            proc = _common.run_script(__file__, ["--child", name, "--cpu-seconds", args.cpu_seconds, "--out", work,
                                                 *extra], env={**os.environ, "OMP_NUM_THREADS": "1"})
            res = _common.child_result(proc)
            if "error" in res:
                report(f"round {r + 1} {name}: {res['error']}")
                continue
            results[name].append(res)
            total = sum(res[p] for p in PHASES)
            report(f"round {r + 1} {name}: {res['steps']} steps, {1000 * total / max(res['steps'], 1):.1f} CPU ms/step")
    rows, reference = [], None
    for name, runs in results.items():
        if not runs:
            continue
        per = {p: statistics.median(1000 * x[p] / x["steps"] for x in runs) for p in PHASES}
        whole = statistics.median(1000 * sum(x[p] for p in PHASES) / x["steps"] for x in runs)
        reference = reference or whole
        rows.append([name, *(_common.fmt(per[p]) for p in PHASES), _common.fmt(whole),
                     _common.fmt(1000 / whole, 2), _common.fmt(reference / whole, 2)])
    report.section(f"kvae.fit, {args.cpu_seconds:g} CPU-s per row, median of {args.rounds} rounds (CPU ms per step)")
    report(*_common.table(["config", *PHASES, "whole", "steps/CPU-s", "x first"], rows))
    report.finish(args.out, "fit_speed.txt")


if __name__ == "__main__":
    main()
