"""Where a training step's time goes: kvae's Keras step (stock and fused Adam) against the plain PyTorch loop.

Run on demand (it measures, it never asserts)::

    python benchmarks/profile_step.py                       # fc, conv1d, transformer-3k, rave-3k; ~3 min
    python benchmarks/profile_step.py --variants fc --steps 100 --torch-profile

For each variant (the FC VAE at the paper-like size of
benchmarks/train_benchmark.py: 3000 Hz, 1 s, 2 x 512, batch 64; the
`conv1d`, `transformer-3k` and `rave-3k` presets at their batch sizes) the
model is built and compiled as `kvae.fit` does, warmed up, then
`model.train_function` (Keras's torch train step, what `fit` calls per batch)
runs `--steps` times on pre-made batches with a timer around each phase:

    forward   the model's `call` (encoder, noise, decoder)
    loss      `compute_loss` (likelihood, KL, STFT loss, metric trackers)
    backward  `loss.backward()`
    clip      the optimizer's per-weight `clipnorm`
    update    the Adam update
    metrics   `compute_metrics` (reading the trackers into the logs)
    other     the rest of Keras's step and the optimizer's `apply`
              (variable filtering, the iteration counter, the learning rate)

once with Keras's stock Adam (`train.fused_adam = false`) and once with
kvae's fused path (the default). For the FC VAE the plain PyTorch loop of
train_benchmark.py (the same model in `torch.nn`, the same loss, per-weight
clipping, `torch.optim.Adam` with its CPU default) is timed the same way.
`--torch-profile` adds torch.profiler's table of the busiest operators for
the FC step. 1 torch thread by default (see train_benchmark.py).
"""

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kvae  # noqa: E402

kvae.configure()

import numpy as np  # noqa: E402
from _common import load_line, machine_lines, table  # noqa: E402

PHASES = ("forward", "loss", "backward", "clip", "update", "metrics", "other")
FC_PAPER_LIKE = {"name": "fc-paper-like", "data": {"sample_rate": 3000, "window_seconds": 1.0, "batch_size": 64},
                 "model": {"type": "fc", "hidden_layers": 2, "hidden_units": 512, "latent_dim": 64}}
VARIANTS = {"fc": FC_PAPER_LIKE, "conv1d": "conv1d", "transformer-3k": "transformer-3k", "rave-3k": "rave-3k",
            "vocos-mel": "vocos-mel", "magnitude": "magnitude",
            "magnitude-float32": ("magnitude", {"train": {"precision": "float32"}})}  # before its precision = auto
# torch.profiler's operators in families (the first pattern an operator's name contains wins; the rest is "other ops")
FAMILIES = (
    ("STFT / FFT", ("fft", "stft")),
    ("convolution", ("conv",)),
    ("dense (matmul)", ("addmm", "::mm", "bmm", "matmul", "linear")),
    ("LayerNorm", ("layer_norm",)),
    ("GELU", ("gelu",)),
    ("optimizer (Adam)", ("_foreach", "adam", "lerp", "addcdiv", "addcmul")),
    ("element-wise", ("::add", "::sub", "::mul", "::div", "::exp", "::log", "::pow", "::sqrt", "::abs", "::neg",
                      "clamp", "::where", "::sgn", "::square", "::maximum", "::minimum", "::sin", "::cos", "atan2",
                      "::relu", "threshold", "::fill", "::zero")),
    ("reductions", ("::sum", "::mean", "::max", "::min", "::norm", "::amax")),
    ("copies and layout", ("copy", "::cat", "pad", "::stack", "::clone", "contiguous", "::slice", "::index",
                           "reflection", "::select", "::narrow", "unfold", "::flip", "::view", "::reshape",
                           "::transpose", "::permute", "::expand", "::t", "::empty", "::as_strided")),
)


class PhaseTimer:
    """Accumulates wall time per phase; `wrap(obj, name, phase)` times a method of one object."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self._undo = []

    def wrap(self, obj, name, phase):
        own = vars(obj).get(name)  # a class's own method (restored as it was), or None for an instance's
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        setattr(obj, name, timed)
        self._undo.append((obj, name, own))

    def restore(self):
        for obj, name, own in reversed(self._undo):
            if own is not None:
                setattr(obj, name, own)
            else:
                delattr(obj, name)  # the instance attribute goes; the class's method shows again
        self._undo.clear()


def _batches(window, batch, n, seed=0):
    import torch

    rng = np.random.default_rng(seed)
    return [torch.from_numpy((rng.standard_normal((batch, window)) * 0.1).astype("float32")) for _ in range(n)]


def profile_keras(spec, fused, steps, warmup):
    """Per-phase ms/step of `model.train_function` for one config, stock or fused Adam."""
    import torch

    from kvae.config import load_config, merge_config
    from kvae.training import build_model, compile_model, seed_everything

    spec, over = spec if isinstance(spec, tuple) else (spec, {})
    cfg = load_config(spec, merge_config(over, {"train": {"fused_adam": fused}}))
    seed_everything(0)
    model = compile_model(build_model(cfg), cfg)
    batches = _batches(model.window, cfg["data"]["batch_size"], 8)
    model.fit(batches[0].numpy(), batch_size=len(batches[0]), epochs=1, verbose=0)  # builds the train function
    fn = model.train_function
    model.train()
    for i in range(warmup):
        fn([(batches[i % len(batches)],)])
    timer = PhaseTimer()
    timer.wrap(model, "call", "forward")
    timer.wrap(model, "compute_loss", "loss")
    timer.wrap(model, "compute_metrics", "metrics")
    timer.wrap(model.optimizer, "_clip_gradients", "clip")
    timer.wrap(model.optimizer, "_parallel_update_step", "update")
    timer.wrap(torch.Tensor, "backward", "backward")
    try:
        start = time.perf_counter()
        for i in range(steps):
            fn([(batches[i % len(batches)],)])
        total = time.perf_counter() - start
    finally:
        timer.restore()
    return _per_step(timer.seconds, total, steps), model.count_params()


def profile_torch(steps, warmup):
    """Per-phase ms/step of train_benchmark.py's plain PyTorch loop on the paper-like FC VAE."""
    import torch

    from train_benchmark import torch_clip_, torch_fc, torch_fc_loss

    torch.manual_seed(0)
    model = torch_fc(3000, 2, 512, 64)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, eps=1e-7)
    batches = _batches(3000, 64, 8)
    seconds = defaultdict(float)
    start_all = None
    for i in range(warmup + steps):
        if i == warmup:
            seconds.clear()
            start_all = time.perf_counter()
        x = batches[i % len(batches)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(x)
        t1 = time.perf_counter()
        loss = torch_fc_loss(model, x, out)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch_clip_(params)
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        for phase, dt in zip(("forward", "loss", "backward", "clip", "update"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3,
                                                                               t5 - t4)):
            seconds[phase] += dt
    return _per_step(seconds, time.perf_counter() - start_all, steps), sum(p.numel() for p in params)


def _per_step(seconds, total, steps):
    out = {phase: 1000 * seconds.get(phase, 0.0) / steps for phase in PHASES[:-1]}
    out["total"] = 1000 * total / steps
    out["other"] = out["total"] - sum(out[p] for p in PHASES[:-1])
    return out


def torch_profile_table(steps):
    """torch.profiler's busiest operators (self CPU time) over `steps` fused-Adam FC steps."""
    from torch.profiler import ProfilerActivity, profile

    from kvae.config import load_config
    from kvae.training import build_model, compile_model

    cfg = load_config(FC_PAPER_LIKE)
    model = compile_model(build_model(cfg), cfg)
    batches = _batches(model.window, 64, 4)
    model.fit(batches[0].numpy(), batch_size=64, epochs=1, verbose=0)
    fn = model.train_function
    model.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            fn([(batches[i % 4],)])
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)


def family(name):
    """The family of a torch.profiler operator name (`FAMILIES`), else "other ops"."""
    lowered = name.lower()
    for title, patterns in FAMILIES:
        if any(p in lowered for p in patterns):
            return title
    return "other ops"


def op_families(spec, steps, warmup):
    """ms per step of each operator family (self CPU time, torch.profiler) in kvae's fused step of one config,
    and the rest of the step's wall time (Python, Keras, the autograd engine: "not in an operator")."""
    from torch.profiler import ProfilerActivity, profile

    from kvae.config import load_config
    from kvae.training import build_model, compile_model, seed_everything

    cfg = load_config(*spec) if isinstance(spec, tuple) else load_config(spec)
    seed_everything(0)
    model = compile_model(build_model(cfg), cfg)
    batches = _batches(model.window, cfg["data"]["batch_size"], 4)
    model.fit(batches[0].numpy(), batch_size=len(batches[0]), epochs=1, verbose=0)
    fn = model.train_function
    model.train()
    for i in range(warmup):
        fn([(batches[i % 4],)])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for i in range(steps):
            fn([(batches[i % 4],)])
        wall = time.perf_counter() - start
    ms = defaultdict(float)
    for event in prof.key_averages():
        ms[family(event.key)] += event.self_cpu_time_total / 1000.0 / steps
    ms["not in an operator"] = max(0.0, 1000.0 * wall / steps - sum(ms.values()))
    return dict(ms), 1000.0 * wall / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=40, help="timed steps per row (default 40)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--torch-profile", action="store_true", help="also print torch.profiler's operator table (FC)")
    p.add_argument("--families", action="store_true",
                   help="only the time per operator family (STFT, convolutions, dense, ...) of each variant's step")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print("kvae step profile: where a train step's time goes (ms per step; 'other' = the rest of the step)")
    print("\n".join(machine_lines(note=f"torch threads {args.threads}; ")))
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for name in names:
        if name not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {name!r} (known: {', '.join(VARIANTS)})")
    if args.families:
        columns = {}
        for name in names:
            columns[name] = op_families(VARIANTS[name], args.steps, args.warmup)
            print(f"  {name} done; {load_line()}", flush=True)
        titles = [t for t, _ in FAMILIES] + ["other ops", "not in an operator"]
        rows = [[t] + [f"{columns[n][0].get(t, 0.0):.1f} ({100 * columns[n][0].get(t, 0.0) / columns[n][1]:.0f} %)"
                       for n in names] for t in titles]
        rows.append(["step (wall)"] + [f"{columns[n][1]:.1f}" for n in names])
        print("\nms per step by operator family (self CPU time under torch.profiler, kvae's fused step):")
        print("\n".join(table(["family", *names], rows)))
        return 0
    rows = []
    for name in names:
        results = []
        if name == "fc":
            results.append(("plain PyTorch", *profile_torch(args.steps, args.warmup)))
        results.append(("Keras stock Adam", *profile_keras(VARIANTS[name], False, args.steps, args.warmup)))
        results.append(("kvae fused Adam", *profile_keras(VARIANTS[name], True, args.steps, args.warmup)))
        for setting, ms, n_params in results:
            rows.append([name, f"{n_params / 1e6:.2f} M", setting] + [f"{ms[ph]:.1f}" for ph in PHASES]
                        + [f"{ms['total']:.1f}"])
        print(f"  {name} done; {load_line()}", flush=True)
    print()
    print("\n".join(table(["variant", "params", "step", *PHASES, "total"], rows)))
    if args.torch_profile:
        print("\ntorch.profiler, kvae fused Adam, FC paper-like, busiest operators by self CPU time:")
        print(torch_profile_table(args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
