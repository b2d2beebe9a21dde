"""FLOPs and utilisation of one training step, per preset: how far a step is from what this core can do.

For each preset (or config) the model is built and compiled as `kvae.fit`
builds it, at the preset's batch size, and one training step on random
windows is taken apart under `torch.utils.flop_counter.FlopCounterMode`
(torch backend):

    model fwd   the model's forward pass (`model(x, training=True)`)
    loss fwd    `compute_loss` (likelihood on the target, KL, spectral losses)
    backward    `loss.backward()` (model and losses together)

The counter counts matrix products and convolutions (depthwise ones
included) as PyTorch does; FFTs it misses are counted here (`fft_flops`:
2.5 N log2 N real FLOPs per real FFT of N points, 5 N log2 N per complex one,
as FFT benchmarks count them). Element-wise work (GELU, LayerNorm, exp, log,
Adam's update) is not counted, so the utilisation below is an upper bound of
useful work over time.

The step time is the median process CPU time of `--steps` timed calls of
Keras's train function (what `fit` calls per batch) after `--warmup`, on `--threads`
torch threads (1 by default, as kvae's CPU-minute budgets use). The peak is
a matmul of `--peak-size` squared on the same threads (the best of
several) in the dtype the model's layers compute in (float32, or bfloat16
under `train.precision = mixed_bfloat16`, where the CPU's matrix units give
several times float32's), so
`utilisation = counted GFLOP per step / step seconds / that peak`.

    python benchmarks/flops.py                                   # every preset; a few minutes
    python benchmarks/flops.py --configs vocos-mel magnitude --steps 20

Run on demand, alone on the machine for the timings (the FLOP counts do not
depend on the load). Public API only; figures in docs/benchmarks.md.
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kvae  # noqa: E402

kvae.configure()

import numpy as np  # noqa: E402
from _common import load_line, machine_lines, table  # noqa: E402


def _fft_points(shape, dims):
    return int(np.prod([shape[d] for d in dims])) if dims else 1


def fft_flops():
    """FLOP formulas for the aten FFT ops FlopCounterMode does not count (real FFTs: 2.5 N log2 N, complex: 5 N log2 N)."""
    import torch

    aten = torch.ops.aten

    def count(shape, n, factor):
        return int(factor * (math.prod(shape) / max(n, 1)) * n * math.log2(max(n, 2)))

    def r2c(x_shape, dim, normalization, onesided, *args, out_shape=None, **kwargs):
        return count(x_shape, _fft_points(x_shape, dim), 2.5)

    def c2r(x_shape, dim, normalization, last_dim_size, *args, out_shape=None, **kwargs):
        return count(out_shape, _fft_points(out_shape, dim), 2.5)

    def c2c(x_shape, dim, normalization, forward, *args, out_shape=None, **kwargs):
        return count(x_shape, _fft_points(x_shape, dim), 5.0)

    return {aten._fft_r2c: r2c, aten._fft_c2r: c2r, aten._fft_c2c: c2c}


def matmul_peak(size, threads, repeats=10, dtype="float32"):
    """GFLOP/s of a `size` x `size` matmul in `dtype` on `threads` torch threads (the best of `repeats`)."""
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.process_time()
        torch.mm(a, b)
        best = min(best, time.process_time() - start)
    return 2 * size ** 3 / best / 1e9


def count_step(model, x):
    """Counted FLOPs `{model_fwd, loss_fwd, backward}` of one training step on batch `x` (torch tensors)."""
    from torch.utils.flop_counter import FlopCounterMode

    custom = fft_flops()
    counts = {}
    model.zero_grad() if hasattr(model, "zero_grad") else None
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        y_pred = model(x, training=True)
    counts["model_fwd"] = counter.get_total_flops()
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        loss = model.compute_loss(x=x, y_pred=y_pred, training=True)
    counts["loss_fwd"] = counter.get_total_flops()
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        loss.backward()
    counts["backward"] = counter.get_total_flops()
    return counts


def time_steps(model, batches, warmup):
    """Median CPU seconds (this process, every thread) of Keras's train function per batch, after `warmup` calls."""
    model.fit(batches[0].numpy(), batch_size=len(batches[0]), epochs=1, shuffle=False, verbose=0)  # builds it all
    fn = model.train_function
    model.train() if hasattr(model, "train") else None
    times = []
    for i, x in enumerate(batches[1:]):
        start = time.process_time()  # CPU time: what kvae's budgets count, and robust to a time-shared core
        fn([(x,)])
        if i >= warmup:
            times.append(time.process_time() - start)
    return statistics.median(times)


def measure(name, args):
    """One preset's row: parameters, counted GFLOP per step (model fwd, loss fwd, backward), ms/step, GFLOP/s."""
    import torch

    from kvae.config import load_config
    from kvae.training import build_model, compile_model

    config = load_config(name, {"train": {"seed": 0, "verbose": 0, **({"precision": args.precision}
                                                                     if args.precision else {})}})
    model = compile_model(build_model(config), config)
    batch = int(args.batch or config["data"]["batch_size"])
    gen = torch.Generator().manual_seed(0)
    batches = [0.1 * torch.randn(batch, model.window, generator=gen) for _ in range(args.warmup + args.steps + 1)]
    counts = count_step(model, batches[0])
    seconds = time_steps(model, batches, args.warmup)
    total = sum(counts.values())
    return {"config": name, "params": model.count_params(), "batch": batch,
            **{k: v / 1e9 for k, v in counts.items()}, "gflop": total / 1e9, "ms": seconds * 1e3,
            "compute": "bfloat16" if model.dtype_policy.compute_dtype == "bfloat16" else "float32",
            "gflops": total / 1e9 / seconds}


def main(argv=None):
    from kvae.presets import preset_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", help="presets or config files (default: every preset)")
    parser.add_argument("--batch", type=int, help="batch size (default: each preset's)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--peak-size", type=int, default=1024, help="matmul size of the peak (default 1024)")
    parser.add_argument("--precision", choices=("float32", "mixed_bfloat16", "auto"),
                        help="train.precision of every config (default: each config's); the utilisation is then "
                             "against the peak of the dtype the layers compute in")
    args = parser.parse_args(argv)
    import keras
    import torch

    if keras.backend.backend() != "torch":
        raise SystemExit("flops.py: needs the torch backend (KERAS_BACKEND=torch)")
    torch.set_num_threads(args.threads)
    names = args.configs or [n for n in preset_names() if not n.startswith("paper-")] + \
        [n for n in preset_names() if n.startswith("paper-")]
    peaks = {dtype: matmul_peak(args.peak_size, args.threads, dtype=dtype) for dtype in ("float32", "bfloat16")}
    print("\n".join(machine_lines()))
    print(f"peak: matmul {args.peak_size}^2 on {args.threads} thread(s): float32 {peaks['float32']:.1f} GFLOP/s, "
          f"bfloat16 {peaks['bfloat16']:.1f} GFLOP/s; {load_line()}")
    rows = []
    for name in names:
        try:
            r = measure(name, args)
        except Exception as exc:  # one preset that cannot be measured (a backend limit) must not hide the others
            print(f"{name}: not measured ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})", flush=True)
            continue
        rows.append([r["config"], f"{r['params'] / 1e6:.2f} M", r["batch"], f"{r['model_fwd']:.2f}",
                     f"{r['loss_fwd']:.2f}", f"{r['backward']:.2f}", f"{r['gflop']:.2f}", f"{r['ms']:.0f}",
                     f"{1000 / r['ms']:.2f}", f"{r['gflops']:.1f}", r["compute"],
                     f"{100 * r['gflops'] / peaks[r['compute']]:.0f} %"])
        print(f"  {name}: {r['ms']:.0f} ms/step, {r['gflop']:.2f} GFLOP counted", flush=True)
    print()
    print("\n".join(table(["config", "params", "batch", "model fwd GFLOP", "loss fwd GFLOP", "backward GFLOP",
                           "step GFLOP", "CPU ms/step", "steps/CPU-s", "GFLOP/CPU-s", "computes in",
                           "utilisation (of its dtype's peak)"], rows)))
    print(f"\ncommand: python benchmarks/flops.py {' '.join(sys.argv[1:] if argv is None else argv)}; "
          f"{os.cpu_count()} CPUs; {load_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
