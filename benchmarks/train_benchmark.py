"""Benchmark kvae's training loop against a plain hand-written PyTorch loop.

Run on demand (it measures, it never asserts)::

    python benchmarks/train_benchmark.py              # all 9 sizes x their rows x 3 repeats + malloc re-run (the first 7 took ~35 min)
    python benchmarks/train_benchmark.py --quick      # smoke run: tiny and small sizes, 1 repeat, few steps
    python benchmarks/train_benchmark.py --sizes small,rave --repeats 5 --out /tmp/kvae-bench
    python benchmarks/train_benchmark.py --rows torch,keras-step,keras-array,keras-pydataset,kvae-fit  # diagnostics

The last line printed, `kvae/torch ratio (paper-like): X.XX`, is the steps/s
of `kvae.fit` (its default settings) over the plain PyTorch loop's at the
paper-like size, for scripts to read.

FC sizes: the same fully connected VAE (kvae.models.FCVAE: Dense stacks with
gelu, z_mean / z_log_var heads, a learned scalar log-sigma Gaussian NLL summed
over the samples of a window plus the KL, Adam at lr 1e-3 with per-weight
`clipnorm=1.0` as `kvae.training.compile_model` sets it up), the same batch
and the same windows (drawn from the embedded dataset by `kvae.data.prepare`
and `WindowSource` with kvae.fit's seed, so every row sees the same batches:
in the same order, except that the PyDataset rows get them in the order
`fit`'s default `shuffle=True` gives) are trained for the same number of steps by:

* plain PyTorch    - a hand-written `torch.nn` twin of the model and loop (the
                     paper's own stack): forward, loss, backward, per-tensor
                     grad clipping (as Keras's `clipnorm`), `torch.optim.Adam`
                     with its defaults (eps 1e-7 as Keras), windows pre-read.
* plain PyTorch, fused Adam - the same with `torch.optim.Adam(fused=True)`
                     (the kernel kvae's fused path uses).
* plain PyTorch + torch.compile - the same (default Adam) with the model's forward compiled
                     (`torch.compile(model)`; its compile time falls in the
                     warm-up steps).
* keras step only  - kvae's FCVAE, `model.train_function` called in a Python
                     loop on pre-made torch tensors: Keras's train step without
                     `fit`'s loop, data adapter and callbacks (a diagnostic row).
* keras fit array  - kvae's FCVAE, `model.fit(x=numpy array, shuffle=False)`.
* keras fit PyDataset - kvae's FCVAE, `model.fit` on `WindowSource.py_dataset()`
                     (windows read from the cache batch by batch, no callbacks).
* kvae.fit         - the whole `kvae.fit` path with its defaults: config,
                     PyDataset front end, kvae's callbacks (BackupAndRestore,
                     TerminateOnNaN, CSVLogger, WindowEpochs) and the fused
                     Adam of `kvae.training.fast_adam`; validation, saving and
                     samples happen after the timed steps.
* kvae.fit, Keras's stock Adam - the same with `train.fused_adam = false`.

Preset sizes (conv1d, transformer, rave, vocos, vocos-mel: the model of that preset at its
batch size) have no hand-written twin; their reference is

* PyTorch loop on kvae's model - kvae's model (on the torch backend a
                     `torch.nn.Module`) driven by a plain loop: `model(x)`,
                     `model.compute_loss`, backward, per-tensor clipping,
                     `torch.optim.Adam` on its parameters: the same compute,
                     without Keras's trainer and optimizer.

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

Measured figures are in docs/benchmarks.md, section "Training loop".
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
LOG_2PI = math.log(2.0 * math.pi)
ROWS = {
    "torch": "plain PyTorch loop",
    "torch-fused": "plain PyTorch, fused Adam",
    "torch-compile": "plain PyTorch + torch.compile",
    "torch-loop": "PyTorch loop on kvae's model",
    "keras-step": "keras train step only",
    "keras-array": "keras fit, numpy array",
    "keras-pydataset": "keras fit, PyDataset",
    "kvae-fit": "kvae.fit (default: fused Adam)",
    "kvae-fit-stock": "kvae.fit, Keras's stock Adam",
}
DEFAULT_ROWS = ("torch", "torch-fused", "torch-compile", "torch-loop", "kvae-fit", "kvae-fit-stock")
FC_ROWS = ("torch", "torch-fused", "torch-compile", "keras-step", "keras-array", "keras-pydataset")  # need the FC twin / FC data
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
# name: (rate, window_seconds, hidden_layers, hidden_units, latent_dim, timed steps, warm-up steps)
# name: (rate, window_seconds, hidden_layers, hidden_units, latent_dim, timed steps, warm-up steps, preset)
# FC sizes build kvae's FCVAE (and its plain-PyTorch twin); a preset size trains that preset's model
# (rate and window from the preset) and compares with a plain PyTorch loop driving the same model.
SIZES = {
    "tiny": (3000, 1.0, 1, 32, 8, 200, 20, None),
    "small": (3000, 1.0, 2, 512, 64, 200, 20, None),
    "large": (3000, 1.0, 8, 1024, 64, 50, 6, None),
    "16k": (16000, 1.0, 2, 512, 64, 50, 6, None),
    "conv1d": (3000, 1.0, 0, 0, 0, 30, 4, "conv1d"),
    "transformer": (3000, 1.0, 0, 0, 0, 20, 4, "transformer-3k"),
    "rave": (3000, 1.0, 0, 0, 0, 30, 4, "rave-3k"),
    "vocos": (3000, 1.0, 0, 0, 0, 60, 6, "vocos"),
    "vocos-mel": (3000, 1.0, 0, 0, 0, 60, 6, "vocos-mel"),
    "magnitude": (3000, 1.0, 0, 0, 0, 60, 6, "magnitude"),
}
SIZE_NOTES = {
    "tiny": "per-step overhead: 3000 Hz, 1 s window, 1 hidden layer of 32 (compute is negligible)",
    "small": "paper-like: 3000 Hz, 1 s window, 2 hidden layers of 512",
    "large": "3000 Hz, 1 s window, 8 hidden layers of 1024",
    "16k": "16000 Hz, 1 s window, 2 hidden layers of 512",
    "conv1d": "the conv1d preset (Conv1DVAE, MR-STFT loss), 3000 Hz, 1 s",
    "transformer": "the transformer-3k preset (TransformerVAE, MR-STFT loss), 3000 Hz, 1 s",
    "rave": "the rave-3k preset (RaveVAE: PQMF, residual units, MR-STFT loss), 3000 Hz, 1 s",
    "vocos": "the vocos preset (VocosVAE: STFT-frame encoder, ConvNeXt decoder, inverse-STFT head), 3000 Hz, 1 s",
    "vocos-mel": "the vocos-mel preset (vocos with the multi-scale mel loss and the rate controller), 3000 Hz, 1 s",
    "magnitude": "the magnitude preset (log-magnitude likelihood, precision auto: bfloat16 where torch has AMX), 3000 Hz, 1 s",
}
RATIO_SIZE = "small"  # the final `kvae/torch ratio (paper-like)` line


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

def torch_fc(window, layers, units, latent):
    """The plain-PyTorch twin of kvae's FCVAE (Keras's Dense initialisers), with a learned scalar log-sigma."""
    import torch

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

    return FC()


def torch_fc_loss(model, x, outputs):
    """The negative ELBO kvae's FCVAE computes (Gaussian NLL summed over samples, batch-mean KL) from `model(x)`."""
    import torch

    out, mu, log_var = outputs
    ls = model.log_sigma
    rec = (0.5 * torch.square(x - out) * torch.exp(-2.0 * ls) + ls + 0.5 * LOG_2PI).sum(1).mean()
    kl = (-0.5 * (1.0 + log_var - torch.square(mu) - torch.exp(log_var))).sum(1).mean()
    return rec + kl


def torch_clip_(params, clipnorm=1.0):
    """Keras's per-weight clipnorm on the gradients of `params`, in place."""
    import torch

    grads = [p.grad for p in params]
    norms = torch._foreach_norm(grads)
    torch._foreach_clamp_min_(norms, clipnorm)
    torch._foreach_div_(grads, norms)


def child_torch(args):
    """The plain-PyTorch rows: the FC twin (eager or torch.compile'd), or a plain loop on a preset's kvae model."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    imports = proc_status()
    x_all = np.load(args.data)
    batch = args.batch
    window = x_all.shape[1]
    device = torch.device(getattr(args, "device", None) or "cpu")  # scripts/gpu_check.py passes cuda
    if args.child == "torch-loop":  # kvae's model, built as kvae.fit does, driven without Keras's trainer
        from kvae.training import build_model, seed_everything

        seed_everything(0)
        keras_model = build_model(_config(args))
        params = [v.value for v in keras_model.trainable_weights]
        keras_model.train()

        def loss_of(x):
            return keras_model.compute_loss(x=x, y_pred=keras_model(x, training=True), training=True)
    else:
        model = torch_fc(window, args.layers, args.units, args.latent).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        forward = torch.compile(model) if args.child == "torch-compile" else model
        model.train()

        def loss_of(x):
            return torch_fc_loss(model, x, forward(x))
    opt = torch.optim.Adam(params, lr=1e-3, eps=1e-7, **({"fused": True} if args.child == "torch-fused" else {}))
    n_steps = args.warmup + args.steps + 1  # batch starts timed; the last one is not run
    tensors = [torch.from_numpy(x_all[i * batch:(i + 1) * batch]).to(device) for i in range(n_steps)]
    stamps, tail = [], torch.zeros(())
    for i in range(n_steps - 1):
        stamps.append(now())
        for p in params:
            p.grad = None
        loss = loss_of(tensors[i])
        loss.backward()
        torch_clip_(params)  # Keras clipnorm: each gradient to norm <= 1
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


def _config(args, cache=None, fused=True):
    """kvae's config of a row: the FC size from the arguments, or the preset (its model, rate and batch)."""
    from kvae.config import load_config

    train = {"epochs": 1, "steps_per_epoch": n_batches(args.warmup, args.steps), "n_samples": 0, "verbose": 0,
             "learning_rate": 1e-3, "clipnorm": 1.0, "seed": 0, "gallery": False, "fused_adam": fused}
    data = {"batch_size": args.batch, "cache": str(cache or ""), "val_windows_per_recording": 1}
    if args.preset:
        return load_config(args.preset, {"data": data, "train": train})
    return load_config({
        "name": "train-benchmark",
        "data": {"sample_rate": args.rate, "window_seconds": args.window_seconds, **data},
        "model": {"type": "fc", "hidden_layers": args.layers, "hidden_units": args.units, "latent_dim": args.latent},
        "train": train,
    })


def child_keras(args):
    import torch

    torch.set_num_threads(args.threads)
    from kvae.training import build_model, compile_model

    imports = proc_status()
    if not args.child.startswith("kvae-fit"):  # kvae.fit seeds itself; set_random_seed would import TensorFlow
        import random

        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
    data_mb = 0.0
    n_steps = args.warmup + args.steps + 1  # timed: steps between the first n_steps batch starts
    result = {"stamps": []}
    timer = timer_callback(n_steps, result)
    if args.child.startswith("kvae-fit"):
        import kvae

        cfg = _config(args, cache=args.cache, fused=args.child == "kvae-fit")
        model, _ = kvae.fit(cfg, run=args.run, verbose=False, callbacks=[timer])
    else:
        cfg = _config(args)
        model = compile_model(build_model(cfg), cfg)
        if args.child == "keras-array":
            x_all = np.load(args.data)
            data_mb = x_all.nbytes / MB
            model.fit(x_all[: n_batches(args.warmup, args.steps) * args.batch], batch_size=args.batch, epochs=1,
                      shuffle=False, verbose=0, callbacks=[timer])
        elif args.child == "keras-pydataset":
            from kvae.data import WindowSource, prepare

            corpus = prepare(None, sample_rate=args.rate, cache_dir=args.cache)
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
    from flops import count_step  # this step's counted FLOPs (benchmarks/flops.py), for the utilisation column

    gflop = sum(count_step(model, torch.from_numpy(np.asarray(0.1 * np.random.default_rng(0).standard_normal(
        (args.batch, model.window)), dtype="float32"))).values()) / 1e9
    return {"stamps": result["stamps"][:n_steps], "imports": imports, "peak": result["peak"], "gflop": gflop,
            "loss": tail_loss(result["loss0"], result["loss1"]), "params": model.count_params(), "data_mb": data_mb,
            "tensorflow": "tensorflow" in sys.modules}


def run_child(row, size, data, cache, work, args, env=None):
    rate, wsec, layers, units, latent, steps, warmup, preset, batch = size
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    child_args = ["--child", row, "--data", data, "--cache", cache, "--run", run_dir, "--rate", rate,
                  "--window-seconds", wsec, "--layers", layers, "--units", units, "--latent", latent,
                  "--steps", steps, "--warmup", warmup, "--batch", batch, "--threads", args.threads]
    if preset:
        child_args += ["--preset", preset]
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
    corpus = prepare(None, sample_rate=rate, cache_dir=cache)
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


def resolve_size(name, args):
    """A size's tuple with its steps scaled, the preset's rate, window and batch filled in, and its batch last."""
    rate, wsec, layers, units, latent, steps, warmup, preset = SIZES[name]
    steps = max(LOSS_TAIL + 5, int(round(steps * args.steps_scale)))
    warmup = max(3, int(round(warmup * args.steps_scale)))
    batch = args.batch
    if preset:
        from kvae.config import load_config

        cfg = load_config(preset)
        rate, wsec, batch = cfg["data"]["sample_rate"], cfg["data"]["window_seconds"], cfg["data"]["batch_size"]
    return rate, wsec, layers, units, latent, steps, warmup, preset, batch


def rows_for(size, rows):
    """The rows that apply to a size: the FC twin's rows only for FC sizes, the loop on kvae's model only for presets."""
    preset = size[7]
    return [r for r in rows if (r != "torch-loop" if not preset else r not in FC_ROWS)]


def bench_size(say, work, name, size, args, rows=None, env=None, title=""):
    rate, wsec, layers, units, latent, steps, warmup, preset, batch = size
    rows_wanted = rows_for(size, rows or args.rows)
    what = f"latent {latent}, " if not preset else ""
    say.section(f"{title}{name}: {SIZE_NOTES[name]}, {what}batch {batch}, {steps} timed steps after {warmup} warm-up")
    data, cache, corpus, x = prepare_windows(work, rate, wsec, batch, n_batches(warmup, steps))
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
    reference = "torch" if not preset else "torch-loop"
    ref = med(r["median_ms"] for r in runs[reference]) if runs.get(reference) else None
    ref_cpu = med(r["cpu_ms"] for r in runs[reference]) if runs.get(reference) else None
    gflops = [r["gflop"] for rs in runs.values() for r in rs if r.get("gflop")]  # the same model in every row
    gflop = med(gflops) if gflops else None
    rows = []
    for row in rows_wanted:
        rs = runs[row]
        if not rs:
            rows.append([ROWS[row]] + ["error"] * 14)
            continue
        ms = med(r["median_ms"] for r in rs)
        cpu = med(r["cpu_ms"] for r in rs)
        imp = med(r["imports"]["VmRSS"] for r in rs)
        peak = med(r["peak"]["VmHWM"] for r in rs)
        rows.append([
            ROWS[row], f"{ms:.1f}", f"{min(r['median_ms'] for r in rs):.1f}-{max(r['median_ms'] for r in rs):.1f}",
            f"{med(r['mean_ms'] for r in rs):.1f}", f"{1000 / ms:.1f}", f"{ref / ms:.2f}" if ref else "n/a",
            f"{cpu:.1f}", f"{ref_cpu / cpu:.2f}" if ref_cpu else "n/a", f"{1000 / cpu:.2f}",
            f"{100 * gflop / (cpu / 1000) / args.peak:.0f} %" if gflop and args.peak else "n/a",
            fmt(imp, 0), fmt(peak, 0), fmt(peak - imp, 0), fmt(rs[0]["data_mb"], 0),
            "yes" if any(r["tensorflow"] for r in rs) else "no", f"{med(r['loss'] for r in rs):,.1f}"])
    n_params = next((r[0]["params"] for r in runs.values() if r), None)
    say("", f"{n_params:,} parameters; {args.repeats} fresh-process run(s) per row" if n_params else "", *table(
        ["variant", "ms/step", "range", "mean ms", "steps/s", "vs torch", "CPU ms", "CPU vs torch", "steps/CPU-s",
         "utilisation",
         "RSS imports", "peak RSS", "peak-imports", "array MB", "TF loaded", "loss (last 20)"], rows))
    if preset:
        say("('vs torch' here: against the PyTorch loop on kvae's model)")
    return runs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny and small sizes, 1 repeat, 30 steps")
    p.add_argument("--out", type=Path, default=None, help="folder for temporary data and the saved report")
    p.add_argument("--sizes", default=None, help=f"comma list of {', '.join(SIZES)} (default all; --quick tiny,small)")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                   help=f"comma list of {', '.join(ROWS)} (default {','.join(DEFAULT_ROWS)})")
    p.add_argument("--repeats", type=int, default=None, help="fresh-process runs per row (default 3; --quick 1)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in every row (default 1: see the contention probe in the header)")
    p.add_argument("--malloc-section", action="store_true",
                   help="re-run the small size with glibc's malloc thresholds pinned by environment variables")
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
    p.add_argument("--preset", default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)  # plain PyTorch rows only (gpu_check.py)
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
        res = child_torch(args) if args.child.startswith("torch") else child_keras(args)
        print_result(res)
        return 0

    say = Report()
    say("kvae training-loop benchmark: kvae (Keras, torch backend) vs plain PyTorch"
        + (" (--quick)" if args.quick else ""), command_line("train_benchmark.py"))
    say(*machine_lines(note=f"torch threads {args.threads} in every row; "))
    probe = thread_probe()
    from flops import matmul_peak

    args.peak = matmul_peak(1024, args.threads)
    say(f"peak: float32 matmul 1024^2 on {args.threads} thread(s): {args.peak:.1f} GFLOP/s (benchmarks/flops.py); the "
        "utilisation column = the step's counted GFLOP / its CPU seconds / this peak")
    say(f"contention probe (64x3000 @ 3000x512 matmul, median): {probe[1]:.2f} ms at 1 torch thread, "
        f"{probe[2]:.2f} ms at 2 threads",
        "(on a shared 2-core machine a second thread that gets descheduled stalls every op at its barrier, hence the",
        "default --threads 1 here; pass --threads 2 on an idle machine)")
    say("", "Columns: ms/step = median wall time of the timed steps of a run, then the median over repeats; range =",
        "min-max of the runs' medians; mean ms = wall time / steps (includes stalls caused by other processes);",
        "steps/s = 1000 / ms/step; vs torch = steps/s relative to the plain PyTorch loop (below 1 is slower);",
        "CPU ms = median process CPU time per step (all threads; less sensitive to other processes on the machine);",
        "steps/CPU-s = 1000 / CPU ms (what a CPU-minute budget buys); utilisation = the step's matmul, convolution and",
        "FFT FLOPs (benchmarks/flops.py's count, element-wise work not counted) per CPU second over the matmul peak;",
        "RSS in MB: 'RSS imports' after importing (numpy, torch; plus keras and kvae in the Keras rows), 'peak RSS'",
        "= VmHWM after the timed steps, 'peak-imports' what the data, model, optimizer and training added; 'array MB'",
        "= pre-read input windows held by that row; 'TF loaded' = whether TensorFlow got imported in the process.")
    work = make_work_dir(args.out, "kvae-train-bench-")
    sizes, results = {}, {}
    try:
        for name in args.sizes:
            sizes[name] = resolve_size(name, args)
            results[name] = bench_size(say, work, name, sizes[name], args)
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
            rows = [r for r in ("torch", "keras-step", "keras-array") if r in args.rows]
            bench_size(say, work, name, sizes[name], args, rows=rows, env=PINNED_MALLOC,
                       title="malloc thresholds pinned at 1 GiB, ")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    runs = results.get(RATIO_SIZE, {})
    if runs.get("torch") and runs.get("kvae-fit"):
        ratio = statistics.median(r["median_ms"] for r in runs["torch"]) / statistics.median(
            r["median_ms"] for r in runs["kvae-fit"])
        last = f"kvae/torch ratio (paper-like): {ratio:.2f}"
    else:
        last = "kvae/torch ratio (paper-like): n/a (needs --sizes small and --rows torch,kvae-fit)"
    say.finish(args.out, "train_benchmark.txt", last=[last])
    return 0


if __name__ == "__main__":
    sys.exit(main())
