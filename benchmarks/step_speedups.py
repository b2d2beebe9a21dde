"""Steps per CPU-second of the spectral presets, each speed-up an A/B in one run (issue 31).

Every row is a model built as `kvae.fit` builds it (`build_model`,
`compile_model`: fused Adam, per-weight clipping) at its preset's batch size:

    vocos-mel, before            the ConvNeXt blocks' tanh-approximate GELU (kvae before issue 31), float32
    magnitude, before            the same for the magnitude preset
    magnitude, exact GELU        the erf GELU (ConvNeXtBlock now), float32
    magnitude, exact GELU, bf16  the same under Keras's mixed_bfloat16 policy (`train.precision`)
    magnitude-bf16-dw            + ConvNeXtBlock's torch channels-last depthwise path (bias outside the conv)
    magnitude-bf16-fused         + the block's norm, MLP and skip as fused torch kernels (the preset now)
    ... with --compile: the last row under `jit_compile=True` (torch.compile; inductor needs a C++ compiler)
    ... with --vocos-mel-after: vocos-mel as it is now (exact GELU, torch paths), float32 and mixed_bfloat16

The torch paths are switches in `kvae.models.blocks` (`TORCH_DEPTHWISE`,
`TORCH_FUSED`), set before each row's steps.

"before" puts the tanh GELU back on the built model's ConvNeXt blocks (the old
`call`, line for line), so the rows differ in exactly one change each.

Timing: `--rounds` rounds; each round times `--steps` calls of every row's
Keras train function in turn (after `--warmup` untimed calls per row), so a
change of load falls on every row alike. Per row: the median wall ms per
step, the median process CPU ms per step (`time.process_time`: every thread
of this process, the data included), steps per CPU-second, the counted GFLOP
of a step (`flops.count_step`: matmuls, convolutions, FFTs), and the
utilisation against a float32 matmul on the same threads and against a
bfloat16 one (what the matrix units give where a row computes in bfloat16).

Loss per step (`--loss-steps N`, 0 to skip): every row's model, from the
same initial weights (same seed), trains N steps on the same windows of the
embedded corpus; the table gives its mean loss over steps 1-10 and over the
last 20, so a change that buys speed with worse steps shows.

    python benchmarks/step_speedups.py                      # about 6 minutes alone on one core
    python benchmarks/step_speedups.py --rounds 3 --steps 10 --loss-steps 0 --compile

Run on demand, alone on the machine. Figures in docs/benchmarks.md#speed-ups.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kvae  # noqa: E402

kvae.configure()

import numpy as np  # noqa: E402
from _common import load_line, machine_lines, table  # noqa: E402
from flops import count_step, matmul_peak  # noqa: E402

NONE = {"TORCH_DEPTHWISE": False, "TORCH_FUSED": False}
DW = {**NONE, "TORCH_DEPTHWISE": True}
ALL = {"TORCH_DEPTHWISE": True, "TORCH_FUSED": True}
ROWS = {  # preset, GELU, precision, jit_compile, ConvNeXtBlock's torch paths (kvae.models.blocks switches)
    "vocos-mel-before": ("vocos-mel", "tanh", "float32", False, NONE),
    "magnitude-before": ("magnitude", "tanh", "float32", False, NONE),
    "magnitude-exact": ("magnitude", "exact", "float32", False, NONE),
    "magnitude-bf16": ("magnitude", "exact", "mixed_bfloat16", False, NONE),
    "magnitude-bf16-dw": ("magnitude", "exact", "mixed_bfloat16", False, DW),
    "magnitude-bf16-fused": ("magnitude", "exact", "mixed_bfloat16", False, ALL),
    "magnitude-bf16-fused-compile": ("magnitude", "exact", "mixed_bfloat16", True, ALL),
    "vocos-mel-now": ("vocos-mel", "exact", "float32", False, ALL),
    "vocos-mel-bf16": ("vocos-mel", "exact", "mixed_bfloat16", False, ALL),
}


def _tanh_call(self, x):
    """ConvNeXtBlock.call before issue 31: `ops.gelu`'s default, the tanh approximation."""
    from keras import ops

    h = self.project(ops.gelu(self.expand(self.norm(self.depthwise(x)))))
    return x + self.gamma * h


def build(row, seed=0):
    """The row's compiled model (`kvae.fit`'s build and compile), its ConvNeXt GELU set as the row says."""
    from kvae.config import load_config
    from kvae.models.blocks import ConvNeXtBlock
    from kvae.training import build_model, compile_model

    preset, gelu, precision, jit, _ = ROWS[row]
    train = {"seed": seed, "verbose": 0, "precision": precision, "jit_compile": jit}
    config = load_config(preset, {"train": train})
    model = compile_model(build_model(config), config)
    if gelu == "tanh":
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, ConvNeXtBlock):
                layer.call = types.MethodType(_tanh_call, layer)
    return model, int(config["data"]["batch_size"])


def _set_paths(row):
    """Set ConvNeXtBlock's torch paths for `row` (module switches, read at call time)."""
    from kvae.models import blocks

    for name, value in ROWS[row][4].items():
        setattr(blocks, name, value)


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def windows(batch, n, rate=3000, seconds=1.0):
    """`n` batches of real windows from the embedded corpus (kvae's cache in a temporary folder)."""
    from kvae.data import WindowSource, prepare

    with tempfile.TemporaryDirectory() as tmp:
        corpus = prepare(None, sample_rate=rate, cache_dir=tmp)
        src = WindowSource(corpus, "train", window=int(rate * seconds), batch_size=batch, windows_per_recording=1,
                           random=True, seed=0, batches_per_epoch=n)
        return [src.batch(0, i) for i in range(n)]


def loss_curve(row, batches):
    """Training losses of `row`'s model, one per batch, from the seed-0 initial weights."""
    import torch

    _set_paths(row)
    model, _ = build(row)
    model.fit(batches[0], batch_size=len(batches[0]), epochs=1, shuffle=False, verbose=0)  # builds the step
    fn = model.train_function
    losses = []
    for x in batches[1:]:
        logs = fn([(torch.as_tensor(x),)])
        losses.append(float(logs["loss"]))
    return losses


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", choices=list(ROWS),
                   default=["vocos-mel-before", "magnitude-before", "magnitude-exact", "magnitude-bf16",
                            "magnitude-bf16-dw", "magnitude-bf16-fused"])
    p.add_argument("--compile", action="store_true", help="add magnitude-bf16-fused-compile (torch.compile)")
    p.add_argument("--vocos-mel-after", action="store_true",
                   help="add vocos-mel with the exact GELU, float32 and mixed_bfloat16")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=6, help="timed steps per row per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--loss-steps", type=int, default=150, help="steps of the loss-per-step check (0: skip)")
    args = p.parse_args(argv)
    import keras
    import torch

    if keras.backend.backend() != "torch":
        raise SystemExit("step_speedups.py: needs the torch backend (KERAS_BACKEND=torch)")
    torch.set_num_threads(args.threads)
    rows = list(args.rows) + (["magnitude-bf16-fused-compile"] if args.compile else []) + \
        (["vocos-mel-now", "vocos-mel-bf16"] if args.vocos_mel_after else [])
    peak32, peak16 = (matmul_peak(1024, args.threads, dtype=dtype) for dtype in ("float32", "bfloat16"))
    print("\n".join(machine_lines()))
    print(f"peak on {args.threads} thread(s): float32 matmul 1024^2 {peak32:.1f} GFLOP/s, bfloat16 {peak16:.1f}; "
          f"{load_line()}", flush=True)

    models, batch_of, gflop, times, build_s = {}, {}, {}, {row: [] for row in rows}, {}
    gen = torch.Generator().manual_seed(0)
    for row in list(rows):
        start = time.perf_counter()
        _set_paths(row)
        try:
            models[row], batch_of[row] = build(row)
            x = 0.1 * torch.randn(batch_of[row], models[row].window, generator=gen)
            models[row].fit(x.numpy(), batch_size=len(x), epochs=1, shuffle=False, verbose=0)
            gflop[row] = sum(count_step(models[row], x).values()) / 1e9
            for _ in range(args.warmup):
                models[row].train_function([(x,)])
        except Exception as exc:  # a row the backend cannot run (torch.compile without a compiler) hides no other
            print(f"  {row}: not measured ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})", flush=True)
            rows.remove(row)
            continue
        build_s[row] = time.perf_counter() - start
        print(f"  {row}: built, {gflop[row]:.2f} GFLOP counted, {build_s[row]:.0f} s to build and warm up",
              flush=True)
    for r in range(args.rounds):
        for row in rows:
            _set_paths(row)
            x = 0.1 * torch.randn(batch_of[row], models[row].window, generator=gen)
            fn = models[row].train_function
            times[row] += [_timed(lambda: fn([(x,)])) for _ in range(args.steps)]
        print(f"  round {r + 1}/{args.rounds}; {load_line()}", flush=True)

    losses = {}
    if args.loss_steps:
        batches = windows(32, args.loss_steps + 1)
        for row in rows:
            # a compiled row computes the uncompiled one's loss; vocos-mel-now is skipped for time
            if batch_of[row] == 32 and not ROWS[row][3] and row != "vocos-mel-now":
                losses[row] = loss_curve(row, batches)
    ref = rows[0]
    ref_cpu = statistics.median(c for _, c in times[ref])
    out = []
    for row in rows:
        wall = statistics.median(w for w, _ in times[row]) * 1e3
        cpu = statistics.median(c for _, c in times[row]) * 1e3
        peak = peak16 if ROWS[row][2] == "mixed_bfloat16" else peak32
        curve = losses.get(row)
        out.append([row, batch_of[row], f"{gflop[row]:.2f}", f"{wall:.0f}", f"{cpu:.0f}", f"{1000 / cpu:.2f}",
                    f"{ref_cpu * 1e3 / cpu:.2f}x", f"{gflop[row] / (cpu / 1e3):.0f}",
                    f"{100 * gflop[row] / (cpu / 1e3) / peak32:.0f} %",
                    f"{100 * gflop[row] / (cpu / 1e3) / peak:.0f} %",
                    f"{np.mean(curve[:10]):,.0f}" if curve else "n/a",
                    f"{np.mean(curve[-20:]):,.0f}" if curve else "n/a"])
    print()
    print("\n".join(table(["row", "batch", "GFLOP/step", "wall ms", "CPU ms", "steps/CPU-s", f"vs {ref}",
                           "GFLOP/CPU-s", "of fp32 peak", "of its dtype's peak", "loss 1-10",
                           f"loss last 20 of {args.loss_steps}"], out)))
    print(f"\ncommand: python benchmarks/step_speedups.py {' '.join(sys.argv[1:] if argv is None else argv)}; "
          f"{os.cpu_count()} CPUs; {args.rounds} rounds x {args.steps} steps per row; {load_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
