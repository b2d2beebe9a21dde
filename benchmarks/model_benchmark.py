"""Benchmark kvae's model variants: training speed, peak memory per window length, sampling speed.

Run on demand (it measures, it never asserts)::

    python benchmarks/model_benchmark.py             # full run (~3-4 min on 2 cores)
    python benchmarks/model_benchmark.py --quick     # smoke run: 1 s speed, memory at 1 and 5 s only
    python benchmarks/model_benchmark.py --variants fc,transformer --out /tmp/kvae-bench
    python benchmarks/model_benchmark.py --variants rave,rave-adv --parts 1   # RaveVAE's speed, both stages

`rave-adv` is the `rave` preset in its adversarial stage (`model.adversarial
= {after = 0}`: every step trains the decoder against the discriminators, then the
discriminators). Every variant (FCVAE, Conv1DVAE, TransformerVAE, MelVAE, RaveVAE) is built at its
default config: the built-in preset of its name (`kvae.presets.find_preset`,
loaded with `kvae.config.load_config("fc")`, ...) when there is one, else the
constructor defaults; always at 16000 Hz. Parts, each a plain-text table:

1. Training and sampling speed: `model.fit` on a numpy array of windows from
   the embedded dataset (prepared at 16 kHz), batch 8, at a 1 s window and at
   the model's default window (the config's `data.window_seconds`, else the
   VAE default of 1 s). ms/step is the median over the timed steps (after
   warm-up, until a time budget); audio-s/s = steps/s * batch * window
   seconds, the seconds of audio trained on per wall second. Sampling speed:
   output samples per second of `model.sample(8)` after a warm-up call (median
   of several calls), and the same as a multiple of real time.
2. Peak memory of one training step (`model.fit` on one batch of 8: forward,
   backward, clipping, Adam with its moment slots created) at windows of 1, 5
   and 30 s at 16 kHz, each in a fresh subprocess: peak RSS (VmHWM from
   /proc/self/status) minus the RSS after the imports and the data. On CPU
   torch has no allocator statistics, so RSS is the measure; it stands in
   for the GPU memory the paper ran out of (8 GB cards: 'fits in 8 GiB' is
   whether the step's own memory, peak - baseline, stays under 8 GiB). When
   weights + gradients + the two Adam moments (16 bytes per parameter) alone
   exceed 8 GiB the step is not run. Otherwise the child runs under an
   address-space limit (RLIMIT_AS, baseline + `--guard-gb`, capped by the
   free memory) and a MemoryError or failed allocation reads "does not fit".
3. The Transformer's attention matrix: the paper made every sample a token;
   the size of one layer's attention scores, tokens^2 * 4 bytes * heads *
   batch, for per-sample tokens against this package's frames.

torch runs with 1 intra-op thread by default (`--threads`): on a shared
2-core machine a second thread that gets descheduled stalls every op. The
load average is printed at the start and the end. With `--out DIR` the report
is also saved as `DIR/model_benchmark.txt`. The script uses kvae's public API
only.

Measured figures are in docs/benchmarks.md, section "Model variants".
"""

import argparse
import math
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

import kvae  # noqa: E402

kvae.configure()  # before Keras is imported

import numpy as np  # noqa: E402
from _common import (Report, comma_list, command_line, fmt, load_line, machine_lines,  # noqa: E402
                     make_work_dir, parse_result, print_result, read_proc_status, run_script, table)

RATE = 16000
GIB = 1024 ** 3
GPU_BYTES = 8 * GIB  # the paper's GPU
VARIANTS = ("fc", "conv1d", "transformer", "mel", "rave", "rave-adv")
CLASS_NAMES = {"fc": "FCVAE", "conv1d": "Conv1DVAE", "transformer": "TransformerVAE", "mel": "MelVAE",
               "rave": "RaveVAE", "rave-adv": "RaveVAE, adversarial"}
# not a model type: the rave preset in its adversarial stage from step 0 (discriminators at their default width)
STAGES = {"rave-adv": ("rave", {"adversarial": {"after": 0}})}


# --------------------------------------------------------------------------- helpers

def proc_status():
    """Return VmRSS, VmHWM, VmSize of this process in bytes (from /proc)."""
    return read_proc_status(("VmRSS", "VmHWM", "VmSize", "VmPeak"), unit=None)


def mem_available():
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def human_bytes(n):
    if n is None:
        return "n/a"
    for unit, size in (("TiB", 1024 ** 4), ("GiB", GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:.0f} B"


def resolve_config(variant, window_seconds=None):
    """The variant's default config at 16 kHz (its built-in preset if there is one) and its source."""
    from kvae.config import load_config
    from kvae.presets import find_preset

    if variant in STAGES:
        preset, model = STAGES[variant]
        cfg, source = load_config(preset, {"model": model}), f"preset {preset} with {model}"
    elif find_preset(variant) is not None:
        cfg = load_config(variant)
        if cfg["model"].get("type", "fc") != variant:
            other = cfg["model"].get("type")
            cfg = load_config({"model": {"type": variant}})
            source = f"constructor defaults (preset {variant} has model.type={other!r})"
        else:
            source = f"preset {variant}"
    else:
        cfg = load_config({"model": {"type": variant}})
        source = "constructor defaults"
    cfg["data"]["sample_rate"] = RATE
    if window_seconds is not None:
        cfg["data"]["window_seconds"] = float(window_seconds)
    return cfg, source


def model_summary(model):
    """Model-specific facts for the tables (tokens, heads, frames, ...)."""
    out = {"params": int(model.count_params()), "window": int(model.window),
           "latent_shape": list(model.latent_shape)}
    for attr in ("hidden_layers", "hidden_units", "channels", "strides", "tokens", "frame_size", "num_heads",
                 "num_layers", "n_mels", "griffin_lim_iters", "latent_dim", "capacity", "ratios",
                 "n_bands", "compression"):
        value = getattr(model, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[attr] = value
    if getattr(model, "loss_weights", {}).get("stft"):
        out["stft_weight"] = model.loss_weights["stft"]
        elif isinstance(value, (list, tuple)):
            out[attr] = [int(v) for v in value]
    if getattr(model, "stft_loss", None) is not None:
        out["stft_fft_sizes"] = [int(v) for v in getattr(model.stft_loss, "fft_sizes", [])]
    return out


# --------------------------------------------------------------------------- children

def _child_setup(args):
    import torch

    torch.set_num_threads(args.threads)
    import keras  # noqa: F401

    import kvae.models  # noqa: F401
    return torch


def child_speed(args):
    torch = _child_setup(args)
    import keras

    from kvae.training import build_model, compile_model

    cfg, _ = resolve_config(args.variant, args.window_seconds)
    np.random.seed(0)  # not keras.utils.set_random_seed: it would import TensorFlow
    torch.manual_seed(0)
    x = np.load(args.data)
    batch = args.batch
    model = compile_model(build_model(cfg), cfg)
    stamps = []
    budget = args.time_budget
    max_steps = args.max_steps
    warmup = args.warmup

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            stamps.append(time.perf_counter())
            timed = len(stamps) - 1 - warmup
            if timed >= max_steps or (timed >= args.min_steps and stamps[-1] - stamps[warmup] >= budget):
                self.model.stop_training = True  # this batch still runs, untimed

    n_batches = warmup + max_steps + 2
    reps = math.ceil(n_batches * batch / len(x))
    data = np.concatenate([x] * reps)[: n_batches * batch] if reps > 1 else x[: n_batches * batch]
    t0 = time.perf_counter()
    model.fit(data, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[Timer()])
    fit_wall = time.perf_counter() - t0
    d = np.diff(stamps)[warmup:]
    result = dict(model_summary(model), step_ms=1000 * float(np.median(d)) if len(d) else None,
                  steps=len(d), first_ms=1000 * float(stamps[1] - stamps[0]) if len(stamps) > 1 else None,
                  fit_wall=fit_wall)
    # sampling: warm up, then the median of several calls
    n = args.sample_n
    model.sample(n, seed=0)
    times = []
    t_all = time.perf_counter()
    while len(times) < args.sample_reps and (len(times) < 2 or time.perf_counter() - t_all < budget):
        t = time.perf_counter()
        out = model.sample(n, seed=len(times))
        times.append(time.perf_counter() - t)
    result.update(sample_s=float(np.median(times)), sample_calls=len(times), sample_shape=list(out.shape),
                  peak=proc_status().get("VmHWM"))
    return result


def child_memory(args):
    torch = _child_setup(args)
    from kvae.training import build_model, compile_model

    cfg, _ = resolve_config(args.variant, args.window_seconds)
    np.random.seed(0)
    torch.manual_seed(0)
    x = np.load(args.data)[: args.batch]
    base = proc_status()
    result = {"baseline": base.get("VmRSS"), "vmsize": base.get("VmSize")}
    limit = None
    if args.guard_bytes:
        limit = int(base.get("VmSize", 0) + args.guard_bytes)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    result["as_limit"] = limit
    try:
        model = build_model(cfg)
        result.update(model_summary(model))
        result["built_peak"] = proc_status().get("VmHWM")
        state = result["params"] * 16
        if state > GPU_BYTES:
            result["skipped"] = f"weights+grads+Adam moments = {human_bytes(state)} > 8 GiB"
            return result
        compile_model(model, cfg)
        t = time.perf_counter()
        model.fit(x, batch_size=args.batch, epochs=1, shuffle=False, verbose=0)
        result["step_s"] = time.perf_counter() - t
    except MemoryError as exc:
        result["oom"] = f"MemoryError {str(exc)[:80]}"
    except RuntimeError as exc:
        msg = str(exc)
        if "alloc" in msg.lower() or "memory" in msg.lower():
            result["oom"] = msg.splitlines()[0].split("DefaultCPUAllocator: ")[-1][:100]
        else:
            raise
    result["peak"] = proc_status().get("VmHWM")
    return result


def run_child(kind, variant, window_seconds, data, args, guard_bytes=0):
    child_args = ["--child", kind, "--variant", variant, "--window-seconds", window_seconds, "--data", data,
                  "--threads", args.threads, "--batch", args.batch, "--guard-bytes", int(guard_bytes),
                  "--time-budget", args.time_budget, "--max-steps", args.max_steps, "--min-steps", args.min_steps,
                  "--warmup", args.warmup, "--sample-n", args.sample_n, "--sample-reps", args.sample_reps]
    t = time.perf_counter()
    try:
        proc = run_script(__file__, child_args, timeout=args.child_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.child_timeout} s", "wall": time.perf_counter() - t}
    res = parse_result(proc.stdout)
    if res is not None:
        res["wall"] = time.perf_counter() - t
        return res
    tail = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()][-2:]
    code = proc.returncode
    why = "killed (out of memory?)" if code in (-9, 137) else f"exit {code}"
    return {"error": f"{why}: " + " | ".join(s.strip()[:160] for s in tail), "wall": time.perf_counter() - t}


# --------------------------------------------------------------------------- parent

def prepare_windows(work, windows_s, n_windows):
    """Prepare the embedded dataset at 16 kHz and write `n_windows` windows per length to .npy files."""
    from kvae.data import WindowSource, prepare

    corpus = prepare(None, sample_rate=RATE, cache_dir=work / "cache-16000")
    paths = {}
    for w in windows_s:
        window = int(round(w * RATE))
        n = n_windows(w)
        src = WindowSource(corpus, "train", window=window, batch_size=n, windows_per_recording=1, random=True,
                           seed=0, batches_per_epoch=1)
        x = src.batch(0, 0)
        path = work / f"windows-{window}.npy"
        np.save(path, x)
        paths[w] = path
    return corpus, paths


def part_speed(say, variants, defaults, paths, args):
    say.section(f"1. Training and sampling speed at {RATE} Hz, batch {args.batch} (model.fit on a numpy array)")
    say(f"ms/step: median wall time per step after {args.warmup} warm-up steps (a run stops after "
        f"~{args.time_budget:g} s or {args.max_steps} timed steps);",
        f"audio-s/s = seconds of audio trained on per wall second = steps/s x {args.batch} x window;",
        f"sampling: model.sample({args.sample_n}), median of up to {args.sample_reps} calls after a warm-up call; "
        "x real time = output audio seconds per wall second.")
    rows = []
    for v in variants:
        windows = sorted({1.0, defaults[v]}) if not args.quick else [1.0]
        for w in windows:
            res = run_child("speed", v, w, paths[w], args)
            label = f"{w:g} s" + (" (default)" if w == defaults[v] else "")
            if "error" in res:
                rows.append([CLASS_NAMES[v], label] + ["error"] * 8)
                say(f"  {CLASS_NAMES[v]} {label}: {res['error']}")
                continue
            ms = res["step_ms"]
            sps = 1000 / ms if ms else None
            out_samples = res["sample_shape"][0] * res["sample_shape"][1]
            rows.append([CLASS_NAMES[v], label, f"{res['params']:,}", fmt(ms), fmt(sps, 2), res["steps"],
                         fmt(sps * args.batch * w if sps else None, 1),
                         fmt(1000 * res["sample_s"], 1), f"{out_samples / res['sample_s']:,.0f}",
                         f"{out_samples / RATE / res['sample_s']:,.1f}x"])
            say(f"  {CLASS_NAMES[v]:<15} {label:<14} {fmt(ms):>8} ms/step over {res['steps']} steps, "
                f"sample {1000 * res['sample_s']:.0f} ms; child {res['wall']:.0f} s; " + load_line())
    say("", *table(["variant", "window", "params", "ms/step", "steps/s", "timed steps", "audio-s/s",
                    f"sample({args.sample_n}) ms", "out samples/s", "x real time"], rows, align=["l", "l"] + ["r"] * 8))


def part_memory(say, variants, paths, args):
    windows = [1.0, 5.0] if args.quick else [1.0, 5.0, 30.0]
    say.section(f"2. Peak memory of one training step at {RATE} Hz, batch {args.batch} (fresh subprocess per cell)")
    avail = mem_available()
    guard = args.guard_gb * GIB
    if avail is not None:
        guard = min(guard, max(avail - 2 * GIB, 0))
    say("step = model.fit on one batch (forward, backward, clipnorm, Adam incl. creating its moments); 'baseline' =",
        "RSS after imports and data, before the model is built; 'step memory' = peak RSS (VmHWM) - baseline;",
        "'state' = 16 bytes per parameter (weights, gradients, two Adam moments). Fits in 8 GiB: step memory < 8 GiB.",
        f"guard: RLIMIT_AS = the child's address space after imports + {human_bytes(guard)} "
        f"(--guard-gb {args.guard_gb:g}, capped at MemAvailable",
        f"{human_bytes(avail)} - 2 GiB). Data: windows longer than the 20 s recordings are zero-padded.")
    if guard < GPU_BYTES:
        say("note: the guard is under 8 GiB (little free memory), so a cell that hits it is not called 'does not fit'.")
    rows, cells = [], {}
    for v in variants:
        for w in windows:
            res = run_child("memory", v, w, paths[w], args, guard_bytes=guard)
            cells[(v, w)] = res
            label = f"{w:g} s"
            samples = int(round(w * RATE))
            if "error" in res:
                verdict = "does not fit?" if "memory" in res["error"] else "error"
                rows.append([CLASS_NAMES[v], label, f"{samples:,}", "n/a", "n/a", "n/a", "n/a", "n/a", verdict])
                say(f"  {CLASS_NAMES[v]} {label}: {res['error']}")
                continue
            params = res.get("params")
            state = params * 16 if params else None
            step_mem = res["peak"] - res["baseline"] if res.get("peak") else None
            if res.get("skipped"):
                verdict, step_txt = "no (state alone)", "not run"
            elif res.get("oom"):
                verdict = "does not fit" if guard >= GPU_BYTES else "unknown (guard < 8 GiB)"
                step_txt = f"> {human_bytes(guard)} (guard)"
            else:
                verdict = "yes" if step_mem < GPU_BYTES else "no"
                step_txt = human_bytes(step_mem)
            rows.append([CLASS_NAMES[v], label, f"{samples:,}", f"{params:,}" if params else "n/a",
                         human_bytes(state), human_bytes(res["baseline"]), step_txt,
                         fmt(res.get("step_s"), 1) if res.get("step_s") is not None else "-", verdict])
            note = res.get("skipped") or res.get("oom") or ""
            say(f"  {CLASS_NAMES[v]:<15} {label:>5}: step memory {step_txt}{'; ' + note if note else ''}; "
                f"child {res['wall']:.0f} s; " + load_line())
    say("", *table(["variant", "window", "samples", "params", "state", "baseline RSS", "step memory", "step s",
                    "fits in 8 GiB"], rows, align=["l"] + ["r"] * 7 + ["l"]))
    return cells


def part_attention(say, variants, infos, args):
    say.section("3. Transformer attention scores per layer: per-sample tokens (the paper) vs frames (kvae)")
    info = infos.get("transformer")
    if info is None:
        say("TransformerVAE not benchmarked.")
        return
    heads, frame = info.get("num_heads", 4), info.get("frame_size", 256)
    layers = info.get("num_layers")
    say(f"bytes = tokens^2 x 4 (float32) x {heads} heads x batch {args.batch}, for one attention layer's score matrix",
        "(kept for the backward pass when not fused);",
        f"kvae's TransformerVAE: frames of {frame} samples"
        + (f", {layers} blocks in the encoder and {layers} in the decoder" if layers else "") + ".")
    rows = []
    for w in (1.0, 5.0, 30.0):
        n = int(round(w * RATE))
        per_sample = n * n * 4 * heads * args.batch
        tokens = math.ceil(n / frame)
        ours = tokens * tokens * 4 * heads * args.batch
        rows.append([f"{w:g} s", f"{n:,}", human_bytes(per_sample), f"{tokens:,}", human_bytes(ours),
                     f"{per_sample / ours:,.0f}x"])
    say("", *table(["window", "per-sample tokens", "scores (paper)", "frame tokens", "scores (kvae)", "ratio"], rows))
    say("", f"at 1 s the paper's layout needs {human_bytes(int(RATE) ** 2 * 4 * heads * args.batch)} for one layer's "
        "scores, far over 8 GiB on its own. torch's fused attention",
        "(scaled_dot_product_attention, which Keras's MultiHeadAttention reaches when it has no dropout) need not",
        "keep the full matrix, but its compute still grows as tokens^2.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: speed at 1 s only, memory at 1 and 5 s")
    p.add_argument("--out", type=Path, default=None, help="folder for temporary data and the saved report")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. '1,3'")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--guard-gb", type=float, default=10.0,
                   help="address-space allowance of a memory child beyond its size after imports (GiB)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds of timed steps per speed run")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--child-timeout", type=int, default=600)
    # internal
    p.add_argument("--child", default=None, choices=("speed", "memory"), help=argparse.SUPPRESS)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--window-seconds", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--guard-bytes", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--min-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--sample-n", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--sample-reps", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = dict(time_budget=3.0, max_steps=8, min_steps=2, warmup=2, sample_reps=2) if args.quick else \
        dict(time_budget=10.0, max_steps=40, min_steps=3, warmup=3, sample_reps=5)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.variants = comma_list(p, args.variants, VARIANTS, "--variants", "variant")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        args.guard_bytes = int(args.guard_bytes)
        res = child_speed(args) if args.child == "speed" else child_memory(args)
        print_result(res)
        return 0

    say = Report()
    say("kvae model variants benchmark" + (" (--quick)" if args.quick else ""), command_line("model_benchmark.py"))
    say(*machine_lines(note=f"torch threads {args.threads}; "))
    import keras  # noqa: F401  (after configure: the backend is set)

    import kvae.models  # noqa: F401
    variants = []
    defaults, infos = {}, {}
    rows = []
    for v in args.variants:
        cfg, source = resolve_config(v)
        try:
            from kvae.training import build_model

            model = build_model(cfg)
        except Exception as exc:
            say(f"note: {CLASS_NAMES[v]} skipped: cannot be built at {RATE} Hz ({type(exc).__name__}: {exc})")
            continue
        variants.append(v)
        defaults[v] = float(cfg["data"]["window_seconds"])
        info = model_summary(model)
        infos[v] = info
        extra = {k: info[k] for k in ("hidden_layers", "hidden_units", "channels", "strides", "frame_size",
                                      "num_heads", "num_layers", "n_mels", "griffin_lim_iters", "capacity",
                                      "ratios", "n_bands", "compression") if k in info}
        if info.get("stft_weight"):
            extra["loss_weights.stft"] = f"{info['stft_weight']:g}"
        rows.append([CLASS_NAMES[v], source, f"{cfg['data']['sample_rate']} Hz", f"{defaults[v]:g} s", f"{info['params']:,}",
                     "x".join(str(d) for d in info["latent_shape"]),
                     ", ".join(f"{k}={val}" for k, val in extra.items()).replace(" ", "") or "-"])
        del model
    say("", f"variants at their default config, built at {RATE} Hz (a config's data.sample_rate is overridden) and",
        "its default window (data.window_seconds; the VAE default 1 s without a config); loss_weights.stft > 0 adds the",
        "multi-resolution STFT loss to every training step:", *table(
            ["variant", "config", "rate", "window", "params", "latent", "notes"], rows,
            align=["l", "l", "r", "r", "r", "r", "l"]))
    work = make_work_dir(args.out, "kvae-model-bench-")
    parts = {p.strip() for p in args.parts.split(",")}
    try:
        windows = {1.0, 5.0} | ({30.0} if not args.quick else set()) | set(defaults.values())
        speed_windows = args.batch * (args.warmup + args.max_steps + 2)

        def n_windows(w):  # speed runs cycle through at most ~64 MB of windows
            return max(args.batch, min(speed_windows, int(64e6 // (w * RATE * 4)) // args.batch * args.batch))

        t = time.perf_counter()
        corpus, paths = prepare_windows(work, sorted(windows), n_windows)
        lo = min(e.frames for e in corpus.entries) / RATE
        hi = max(e.frames for e in corpus.entries) / RATE
        say("", f"data: embedded dataset prepared at {RATE} Hz in {time.perf_counter() - t:.1f} s "
            f"({corpus.seconds:.0f} s of audio, {len(corpus.entries)} recordings of "
            + (f"{lo:g} s" if lo == hi else f"{lo:g}-{hi:g} s") + "; longer windows are zero-padded)")
        if "1" in parts and variants:
            part_speed(say, variants, defaults, paths, args)
        if "2" in parts and variants:
            part_memory(say, variants, paths, args)
        if "3" in parts:
            part_attention(say, variants, infos, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say.finish(args.out, "model_benchmark.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
