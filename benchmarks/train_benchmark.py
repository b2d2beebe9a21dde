"""Benchmark kvae's training loop against a plain hand-written PyTorch loop.

Run on demand (it measures, it never asserts)::

    python benchmarks/train_benchmark.py              # 4 sizes x 6 rows x 3 repeats + malloc re-run, ~20 min
    python benchmarks/train_benchmark.py --quick      # smoke run: tiny and small sizes, 1 repeat, few steps
    python benchmarks/train_benchmark.py --sizes small,large --repeats 5 --out /tmp/kvae-bench

The same fully connected VAE (kvae.models.FCVAE: Dense stacks with gelu,
z_mean / z_log_var heads, a learned scalar log-sigma Gaussian NLL summed over
the samples of a window plus the KL, Adam at lr 1e-3 with per-weight
`clipnorm=1.0` as `kvae.training.compile_model` sets it up), the same batch
and the same windows (drawn from the embedded dataset by `kvae.data.prepare`
and `WindowSource` with kvae.fit's seed, so every row sees the same batches:
in the same order, except that the PyDataset rows get them in the order
`fit`'s default `shuffle=True` gives) are trained for the same number of steps by:

* plain PyTorch    - a hand-written `torch.nn` model and loop (the paper's own
                     stack): forward, loss, backward, per-tensor grad clipping
                     (as Keras's `clipnorm`), `torch.optim.Adam` (eps 1e-7 as
                     Keras), windows pre-read into a numpy array.
* keras step only  - kvae's FCVAE, `model.train_function` called in a Python
                     loop on pre-made torch tensors: Keras's train step without
                     `fit`'s loop, data adapter and callbacks (a diagnostic row).
* keras fit array  - kvae's FCVAE, `model.fit(x=numpy array, shuffle=False)`.
* keras fit PyDataset - kvae's FCVAE, `model.fit` on `WindowSource.py_dataset()`
                     (windows read from the cache batch by batch, no callbacks).
* kvae.fit         - the whole `kvae.fit` path: config, PyDataset front end and
                     kvae's callbacks (BackupAndRestore, TerminateOnNaN,
                     CSVLogger, WindowEpochs); validation, saving and samples
                     happen after the timed steps.
* keras fit, array, in-place Adam* - not kvae today: the 'keras fit, numpy
                     array' row with a sketch of an Adam for Keras's torch
                     backend that does the same update in place (see
                     `inplace_adam_class`), to show what the optimizer costs.
                     It subclasses Keras's torch Adam and uses Keras
                     internals; nothing of kvae's beyond its public API.

The small size is then run again with glibc's malloc thresholds pinned by
environment variables (see the report's note). `kvae.configure()`, which every
row calls, now pins them itself with `mallopt`, so this section checks that
the rows above already have what pinning gives.

Every row runs in a fresh subprocess (so peak memories are separate), with
`torch.set_num_threads` equal in all (1 by default: on a shared 2-core
machine a second intra-op thread that gets descheduled stalls every op; the
header prints a matmul timed at 1 and 2 threads as a gauge). Each step's wall
and process CPU time is taken at the start of every batch (a Keras
`on_train_batch_begin` callback, which keeps Keras's asynchronous batch-end
dispatch as it would be without it); a step's time thus includes fetching its
batch. ms/step is the median over the timed steps of a run, then the median
over repeats (runs interleaved row by row to spread load changes); steps/s =
1000 / that. Peak RSS is VmHWM from
/proc/self/status, read right after the timed steps; 'RSS after imports' is
VmRSS before the data is loaded and the model is built. 'loss' is the mean
training loss over the last 20 timed steps (a sanity check: Keras and torch
rows should be close; they start from different random weights); the Keras
rows get it from the running mean `loss` that `fit` hands to callbacks (and
`model.train_function` returns).

With `--out DIR` the printed report is also saved as `DIR/train_benchmark.txt`.

Measured figures are in the README, section "Benchmarks" > "Training loop".
"""

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

import kvae  # noqa: E402

kvae.configure()  # before Keras is imported; also pins glibc's malloc thresholds

import numpy as np  # noqa: E402
from _common import (MB, Report, child_result, comma_list, command_line, fmt, load_line,  # noqa: E402
                     machine_lines, make_work_dir, print_result, read_proc_status, run_script, table)

LOSS_TAIL = 20  # the loss column averages this many last steps
ROWS = {
    "torch": "plain PyTorch loop",
    "keras-step": "keras train step only",
    "keras-array": "keras fit, numpy array",
    "keras-pydataset": "keras fit, PyDataset",
    "kvae-fit": "kvae.fit (PyDataset + callbacks)",
    "keras-inplace": "keras fit, array, in-place Adam*",
}
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
# name: (rate, window_seconds, hidden_layers, hidden_units, latent_dim, timed steps, warm-up steps)
SIZES = {
    "tiny": (3000, 1.0, 1, 32, 8, 200, 20),
    "small": (3000, 1.0, 2, 512, 64, 200, 20),
    "large": (3000, 1.0, 8, 1024, 64, 50, 6),
    "16k": (16000, 1.0, 2, 512, 64, 50, 6),
}
SIZE_NOTES = {
    "tiny": "per-step overhead: 3000 Hz, 1 s window, 1 hidden layer of 32 (compute is negligible)",
    "small": "paper-like: 3000 Hz, 1 s window, 2 hidden layers of 512",
    "large": "3000 Hz, 1 s window, 8 hidden layers of 1024",
    "16k": "16000 Hz, 1 s window, 2 hidden layers of 512",
}


# --------------------------------------------------------------------------- helpers

def proc_status():
    """Return VmRSS, VmHWM, RssAnon, RssFile of this process in MB (from /proc)."""
    return read_proc_status(("VmRSS", "VmHWM", "RssAnon", "RssFile"))


def n_batches(warmup, steps):
    """Batches in the one training epoch of every row: warm-up, timed steps, one whose start ends the timing,
    and one spare (so Keras never reaches the end of its data inside the timing)."""
    return warmup + steps + 2


def now():
    """(wall, process CPU) time in seconds; CPU time counts every thread of the process."""
    return time.perf_counter(), time.process_time()


def step_stats(stamps, warmup):
    """Per-step wall and CPU durations (s) of the timed steps from batch-start stamps."""
    d = np.diff(np.asarray(stamps, dtype=np.float64), axis=0)[warmup:]
    return d[:, 0], d[:, 1]


# --------------------------------------------------------------------------- children

def child_torch(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    imports = proc_status()
    x_all = np.load(args.data)
    batch = args.batch
    window = x_all.shape[1]
    layers, units, latent = args.layers, args.units, args.latent
    log_2pi = math.log(2.0 * math.pi)

    class FC(torch.nn.Module):
        def __init__(self):
            super().__init__()
            enc, d = [], window
            for _ in range(layers):
                enc += [torch.nn.Linear(d, units), torch.nn.GELU()]
                d = units
            self.enc = torch.nn.Sequential(*enc)
            self.z_mean = torch.nn.Linear(units, latent)
            self.z_log_var = torch.nn.Linear(units, latent)
            dec, d = [], latent
            for _ in range(layers):
                dec += [torch.nn.Linear(d, units), torch.nn.GELU()]
                d = units
            dec.append(torch.nn.Linear(units, window))
            self.dec = torch.nn.Sequential(*dec)
            self.log_sigma = torch.nn.Parameter(torch.tensor(-2.0))
            for m in self.modules():  # Keras's Dense defaults: glorot uniform, zero bias
                if isinstance(m, torch.nn.Linear):
                    torch.nn.init.xavier_uniform_(m.weight)
                    torch.nn.init.zeros_(m.bias)
            torch.nn.init.zeros_(self.z_log_var.weight)

        def forward(self, x):
            h = self.enc(x)
            mu = self.z_mean(h)
            log_var = self.z_log_var(h).clamp(-20.0, 10.0)
            z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
            return self.dec(z), mu, log_var

    device = torch.device(getattr(args, "device", None) or "cpu")  # scripts/gpu_check.py passes cuda
    model = FC().to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3, eps=1e-7)
    n_steps = args.warmup + args.steps + 1  # batch starts timed; the last one is not run
    tensors = [torch.from_numpy(x_all[i * batch:(i + 1) * batch]).to(device) for i in range(n_steps)]
    stamps, tail = [], torch.zeros(())
    model.train()
    for i in range(n_steps - 1):
        stamps.append(now())
        x = tensors[i]
        opt.zero_grad(set_to_none=True)
        out, mu, log_var = model(x)
        ls = model.log_sigma
        rec = (0.5 * torch.square(x - out) * torch.exp(-2.0 * ls) + ls + 0.5 * log_2pi).sum(1).mean()
        kl = (-0.5 * (1.0 + log_var - torch.square(mu) - torch.exp(log_var))).sum(1).mean()
        loss = rec + kl
        loss.backward()
        grads = [p.grad for p in params]
        norms = torch._foreach_norm(grads)  # Keras clipnorm: each gradient to norm <= 1
        torch._foreach_clamp_min_(norms, 1.0)
        torch._foreach_div_(grads, norms)
        opt.step()
        if i >= n_steps - 1 - LOSS_TAIL:
            tail = tail + loss.detach()
    if device.type == "cuda":
        torch.cuda.synchronize()  # the last stamp after the GPU is done (earlier ones time the queueing)
        peak_gpu = torch.cuda.max_memory_allocated() / MB
    stamps.append(now())
    peak = proc_status()
    n_params = sum(p.numel() for p in params)
    return {"stamps": stamps, "imports": imports, "peak": peak, "loss": float(tail) / LOSS_TAIL,
            "peak_gpu_mb": peak_gpu if device.type == "cuda" else None,
            "params": n_params, "data_mb": x_all.nbytes / MB, "tensorflow": "tensorflow" in sys.modules}


def running_loss(logs, batches):
    """(running mean loss, batches it covers) from the logs of a train step: fit's `loss` is the
    mean over the epoch's batches so far (all of one size here)."""
    return logs["loss"], batches


def tail_loss(first, last):
    """Mean loss over the batches between two `running_loss` readings."""
    (m0, c0), (m1, c1) = first, last
    m0, m1 = float(m0), float(m1)  # 0-d tensors or floats
    return (m1 * c1 - m0 * c0) / max(c1 - c0, 1)


def timer_callback(n_steps, result):
    import keras

    class BatchTimer(keras.callbacks.Callback):
        """Timestamps every batch start and reads VmHWM once; keeps the running loss after two batches."""

        # Its batch-end hook only keeps a reference, so Keras may keep dispatching batch ends
        # asynchronously, as it would without this callback.
        async_safe = True

        def on_train_batch_begin(self, batch, logs=None):
            stamps = result["stamps"]
            stamps.append(now())
            if len(stamps) == n_steps:  # the extra last batch starts: the timed steps are over
                result["peak"] = proc_status()

        def on_train_batch_end(self, batch, logs=None):
            # after batch b, b + 1 batches are in fit's running mean
            if batch == n_steps - 2 - LOSS_TAIL:
                result["loss0"] = running_loss(logs, batch + 1)
            elif batch == n_steps - 2:  # the last timed batch
                result["loss1"] = running_loss(logs, batch + 1)

    return BatchTimer()


def inplace_adam_class():
    """A sketch of a faster Adam for Keras's torch backend (the '*' row; not part of kvae).

    Same update as `keras.optimizers.Adam` (and the same per-weight
    `clipnorm`), written with in-place `torch._foreach_*` ops: Keras's torch
    Adam allocates five parameter-sized temporaries per step and its
    `clipnorm` six more ops per weight; this one allocates one (the sqrt).
    """
    import torch
    from keras.src.backend.torch.optimizers.torch_adam import Adam as TorchAdam

    class InplaceAdam(TorchAdam):
        def _clip_gradients(self, grads):
            if not self.clipnorm:
                return super()._clip_gradients(grads)
            norms = torch._foreach_norm(grads)  # g * clipnorm / max(|g|, clipnorm), as Keras's clip_by_norm
            torch._foreach_clamp_min_(norms, self.clipnorm)
            torch._foreach_div_(grads, norms)
            if self.clipnorm != 1.0:
                torch._foreach_mul_(grads, self.clipnorm)
            return grads

        def _parallel_update_step(self, grads, variables, learning_rate):
            params = [v.value for v in variables]
            m = [self._momentums[self._get_variable_index(v)].value for v in variables]
            v2 = [self._velocities[self._get_variable_index(v)].value for v in variables]
            step = float(self.iterations.value) + 1.0
            alpha = float(learning_rate) * math.sqrt(1.0 - self.beta_2 ** step) / (1.0 - self.beta_1 ** step)
            torch._foreach_lerp_(m, grads, 1.0 - self.beta_1)
            torch._foreach_mul_(v2, self.beta_2)
            torch._foreach_addcmul_(v2, grads, grads, 1.0 - self.beta_2)
            denom = torch._foreach_sqrt(v2)
            torch._foreach_add_(denom, self.epsilon)
            torch._foreach_addcdiv_(params, m, denom, -alpha)

    return InplaceAdam


def _config(args, run_dir=None, cache=None):
    from kvae.config import load_config

    return load_config({
        "name": "train-benchmark",
        "data": {"rate": args.rate, "window_seconds": args.window_seconds, "batch_size": args.batch,
                 "cache": str(cache or ""), "val_windows_per_recording": 1},
        "model": {"type": "fc", "hidden_layers": args.layers, "hidden_units": args.units, "latent_dim": args.latent},
        "train": {"epochs": 1, "steps_per_epoch": n_batches(args.warmup, args.steps), "n_samples": 0, "verbose": 0,
                  "learning_rate": 1e-3, "clipnorm": 1.0, "seed": 0},
    })


def child_keras(args):
    import torch

    torch.set_num_threads(args.threads)
    import keras

    from kvae.training import build_model, compile_model

    imports = proc_status()
    if args.child != "kvae-fit":  # kvae.fit seeds itself; keras.utils.set_random_seed would import TensorFlow
        import random

        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
    data_mb = 0.0
    n_steps = args.warmup + args.steps + 1  # timed: steps between the first n_steps batch starts
    result = {"stamps": []}
    timer = timer_callback(n_steps, result)
    if args.child == "kvae-fit":
        import kvae

        model, _ = kvae.fit(_config(args, cache=args.cache), run=args.run, verbose=False, callbacks=[timer])
    else:
        cfg = _config(args)
        model = compile_model(build_model(cfg), cfg)
        if args.child == "keras-inplace":
            model.compile(optimizer=inplace_adam_class()(cfg["train"]["learning_rate"], clipnorm=cfg["train"]["clipnorm"]))
        if args.child in ("keras-array", "keras-inplace"):
            x_all = np.load(args.data)
            data_mb = x_all.nbytes / MB
            model.fit(x_all[: n_batches(args.warmup, args.steps) * args.batch], batch_size=args.batch, epochs=1,
                      shuffle=False, verbose=0, callbacks=[timer])
        elif args.child == "keras-pydataset":
            from kvae.data import WindowSource, prepare

            corpus = prepare(None, rate=args.rate, cache_dir=args.cache)
            src = WindowSource(corpus, "train", window=int(round(args.rate * args.window_seconds)),
                               batch_size=args.batch, windows_per_recording=1, random=True, seed=0,
                               batches_per_epoch=n_batches(args.warmup, args.steps))
            model.fit(src.py_dataset(), epochs=1, verbose=0, callbacks=[timer])
        elif args.child == "keras-step":
            x_all = np.load(args.data)
            data_mb = x_all.nbytes / MB
            tensors = [torch.from_numpy(x_all[i * args.batch:(i + 1) * args.batch]) for i in range(n_steps)]
            stamps = result["stamps"]
            stamps.append(now())
            # a one-batch fit builds the optimizer and the train function: it is warm-up step 0
            model.fit(x_all[: args.batch], batch_size=args.batch, epochs=1, shuffle=False, verbose=0)
            # Its running mean continues from there (the one-batch fit's epoch ends without resetting
            # the metrics; the next fit would reset them), so after step i it covers i + 1 batches.
            fn = model.train_function
            model.train()
            for i in range(1, n_steps - 1):
                stamps.append(now())
                logs = fn([(tensors[i],)])
                if i == n_steps - 2 - LOSS_TAIL:
                    result["loss0"] = running_loss(logs, i + 1)
            stamps.append(now())
            result["loss1"] = running_loss(logs, n_steps - 1)
            result["peak"] = proc_status()
        else:
            raise SystemExit(f"unknown row {args.child}")
    return {"stamps": result["stamps"][:n_steps], "imports": imports, "peak": result["peak"],
            "loss": tail_loss(result["loss0"], result["loss1"]), "params": model.count_params(), "data_mb": data_mb,
            "tensorflow": "tensorflow" in sys.modules}


def run_child(row, size, data, cache, work, args, env=None):
    rate, wsec, layers, units, latent, steps, warmup = size
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    child_args = ["--child", row, "--data", data, "--cache", cache, "--run", run_dir, "--rate", rate,
                  "--window-seconds", wsec, "--layers", layers, "--units", units, "--latent", latent,
                  "--steps", steps, "--warmup", warmup, "--batch", args.batch, "--threads", args.threads]
    child_env = {k: v for k, v in os.environ.items() if k not in PINNED_MALLOC}
    child_env.update(env or {})
    proc = run_script(__file__, child_args, env=child_env)
    shutil.rmtree(run_dir, ignore_errors=True)
    return child_result(proc)


# --------------------------------------------------------------------------- parent

def prepare_windows(work, rate, window_seconds, batch, n_batches):
    """Prepare the embedded dataset at `rate` and pre-read kvae.fit's first epoch of windows."""
    from kvae.data import WindowSource, prepare

    cache = work / f"cache-{rate}"
    corpus = prepare(None, rate=rate, cache_dir=cache)
    window = int(round(rate * window_seconds))
    src = WindowSource(corpus, "train", window=window, batch_size=batch, windows_per_recording=1, random=True,
                       seed=0, batches_per_epoch=n_batches)
    x = np.concatenate([src.batch(0, i) for i in range(n_batches)])
    path = work / f"windows-{rate}-{window}.npy"
    np.save(path, x)
    return path, cache, corpus, x


def thread_probe():
    """Median wall ms of a 64x3000 @ 3000x512 matmul at 1 and 2 torch threads (a contention gauge)."""
    import torch

    old = torch.get_num_threads()
    a, b = torch.randn(64, 3000), torch.randn(3000, 512)
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for _ in range(5):
            a @ b
        times = []
        for _ in range(40):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        out[threads] = 1000 * statistics.median(times)
    torch.set_num_threads(old)
    return out


def bench_size(say, work, name, size, args, rows=None, env=None, title=""):
    rate, wsec, layers, units, latent, steps, warmup = size
    rows_wanted = rows or args.rows
    say.section(f"{title}{name}: {SIZE_NOTES[name]}, latent {latent}, batch {args.batch}, {steps} timed steps after "
                f"{warmup} warm-up")
    data, cache, corpus, x = prepare_windows(work, rate, wsec, args.batch, n_batches(warmup, steps))
    say(f"data: embedded dataset at {rate} Hz ({corpus.seconds:.0f} s, {len(corpus.entries)} recordings); "
        f"{x.shape[0]:,} windows of {x.shape[1]} samples pre-read ({x.nbytes / MB:.0f} MB) for the array rows,",
        "the same batches in the same order in every row; " + load_line())
    del x
    runs = {row: [] for row in rows_wanted}
    for rep in range(args.repeats):
        for row in rows_wanted:
            res = run_child(row, size, data, cache, work, args, env)
            if "error" in res:
                say(f"  repeat {rep + 1} {ROWS[row]}: {res['error']}")
                continue
            wall, cpu = step_stats(res["stamps"], warmup)
            res["median_ms"] = 1000 * float(np.median(wall))
            res["mean_ms"] = 1000 * float(np.mean(wall))
            res["cpu_ms"] = 1000 * float(np.median(cpu))
            runs[row].append(res)
            say(f"  repeat {rep + 1}/{args.repeats} {ROWS[row]:<34} median {res['median_ms']:7.1f} ms/step, "
                f"mean {res['mean_ms']:7.1f}, CPU {res['cpu_ms']:7.1f}; " + load_line())
    med = statistics.median
    ref = med(r["median_ms"] for r in runs["torch"]) if runs.get("torch") else None
    ref_cpu = med(r["cpu_ms"] for r in runs["torch"]) if runs.get("torch") else None
    rows = []
    for row in rows_wanted:
        rs = runs[row]
        if not rs:
            rows.append([ROWS[row]] + ["error"] * 12)
            continue
        ms = med(r["median_ms"] for r in rs)
        cpu = med(r["cpu_ms"] for r in rs)
        imp = med(r["imports"]["VmRSS"] for r in rs)
        peak = med(r["peak"]["VmHWM"] for r in rs)
        rows.append([
            ROWS[row], f"{ms:.1f}", f"{min(r['median_ms'] for r in rs):.1f}-{max(r['median_ms'] for r in rs):.1f}",
            f"{med(r['mean_ms'] for r in rs):.1f}", f"{1000 / ms:.1f}", f"{ref / ms:.2f}" if ref else "n/a",
            f"{cpu:.1f}", f"{ref_cpu / cpu:.2f}" if ref_cpu else "n/a",
            fmt(imp, 0), fmt(peak, 0), fmt(peak - imp, 0), fmt(rs[0]["data_mb"], 0),
            "yes" if any(r["tensorflow"] for r in rs) else "no", f"{med(r['loss'] for r in rs):,.1f}"])
    n_params = next((r[0]["params"] for r in runs.values() if r), None)
    say("", f"{n_params:,} parameters; {args.repeats} fresh-process run(s) per row" if n_params else "", *table(
        ["variant", "ms/step", "range", "mean ms", "steps/s", "vs torch", "CPU ms", "CPU vs torch",
         "RSS imports", "peak RSS", "peak-imports", "array MB", "TF loaded", "loss (last 20)"], rows))
    if "keras-inplace" in rows_wanted:
        say("* not kvae today: kvae's FCVAE and model.fit with a sketch of an in-place Adam for Keras's torch backend",
            "  (same update and per-weight clipnorm; see inplace_adam_class in this file) to show what the optimizer costs.")
    return runs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny and small sizes, 1 repeat, 30 steps")
    p.add_argument("--out", type=Path, default=None, help="folder for temporary data and the saved report")
    p.add_argument("--sizes", default=None, help=f"comma list of {', '.join(SIZES)} (default all; --quick tiny,small)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    p.add_argument("--repeats", type=int, default=None, help="fresh-process runs per row (default 3; --quick 1)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in every row (default 1: see the contention probe in the header)")
    p.add_argument("--no-malloc-section", dest="malloc_section", action="store_false",
                   help="skip the re-run of the small size with glibc's malloc thresholds pinned")
    p.add_argument("--steps-scale", type=float, default=None,
                   help="multiply each size's timed and warm-up steps (default 1; --quick 0.15)")
    # internal: one child row
    p.add_argument("--child", default=None, choices=tuple(ROWS), help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--rate", type=int, help=argparse.SUPPRESS)
    p.add_argument("--window-seconds", type=float, help=argparse.SUPPRESS)
    p.add_argument("--layers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--units", type=int, help=argparse.SUPPRESS)
    p.add_argument("--latent", type=int, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)  # plain PyTorch row only (gpu_check.py)
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = "tiny,small" if args.quick else ",".join(SIZES)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.steps_scale is None:
        args.steps_scale = 0.15 if args.quick else 1.0
    args.sizes = comma_list(p, args.sizes, SIZES, "--sizes", "size")
    args.rows = comma_list(p, args.rows, ROWS, "--rows", "row")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        res = child_torch(args) if args.child == "torch" else child_keras(args)
        print_result(res)
        return 0

    say = Report()
    say("kvae training-loop benchmark: kvae (Keras, torch backend) vs plain PyTorch"
        + (" (--quick)" if args.quick else ""), command_line("train_benchmark.py"))
    say(*machine_lines(note=f"torch threads {args.threads} in every row; "))
    probe = thread_probe()
    say(f"contention probe (64x3000 @ 3000x512 matmul, median): {probe[1]:.2f} ms at 1 torch thread, "
        f"{probe[2]:.2f} ms at 2 threads",
        "(on a shared 2-core machine a second thread that gets descheduled stalls every op at its barrier, hence the",
        "default --threads 1 here; pass --threads 2 on an idle machine)")
    say("", "Columns: ms/step = median wall time of the timed steps of a run, then the median over repeats; range =",
        "min-max of the runs' medians; mean ms = wall time / steps (includes stalls caused by other processes);",
        "steps/s = 1000 / ms/step; vs torch = steps/s relative to the plain PyTorch loop (below 1 is slower);",
        "CPU ms = median process CPU time per step (all threads; less sensitive to other processes on the machine);",
        "RSS in MB: 'RSS imports' after importing (numpy, torch; plus keras and kvae in the Keras rows), 'peak RSS'",
        "= VmHWM after the timed steps, 'peak-imports' what the data, model, optimizer and training added; 'array MB'",
        "= pre-read input windows held by that row; 'TF loaded' = whether TensorFlow got imported in the process.")
    work = make_work_dir(args.out, "kvae-train-bench-")
    sizes = {}
    try:
        for name in args.sizes:
            rate, wsec, layers, units, latent, steps, warmup = SIZES[name]
            steps = max(LOSS_TAIL + 5, int(round(steps * args.steps_scale)))
            warmup = max(3, int(round(warmup * args.steps_scale)))
            sizes[name] = (rate, wsec, layers, units, latent, steps, warmup)
            bench_size(say, work, name, sizes[name], args)
        if args.malloc_section and args.sizes:
            name = "small" if "small" in sizes else args.sizes[0]
            say("", "",
                "glibc malloc: by default big blocks (>= 128 KiB, a threshold glibc raises as the process frees",
                "such blocks, up to 32 MiB) are mmap'd and returned to the OS on free, so a parameter-sized temporary",
                "made every step is page-faulted (zero-filled) afresh every step. Below, the same runs with",
                "MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set to 1 GiB in the child's environment (freed",
                "blocks stay in the heap and are reused). kvae could get this without an environment variable by",
                "calling glibc's mallopt(M_MMAP_THRESHOLD, ...) and mallopt(M_TRIM_THRESHOLD, ...) through ctypes at",
                "start-up.")
            rows = [r for r in ("torch", "keras-step", "keras-array", "keras-inplace") if r in args.rows]
            bench_size(say, work, name, sizes[name], args, rows=rows, env=PINNED_MALLOC,
                       title="malloc thresholds pinned at 1 GiB, ")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say.finish(args.out, "train_benchmark.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
