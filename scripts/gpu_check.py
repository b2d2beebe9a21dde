"""The device check behind scripts/gpu_check.sh: kvae.fit on a GPU against the plain PyTorch loop.

    scripts/gpu_check.sh                # on a GPU machine: about 3-6 minutes
    scripts/gpu_check.sh --cpu --quick  # anywhere: the quickstart rows only, a few steps (what the test runs)

Prints torch, CUDA and Keras versions and the device, then one row per run,
each in a fresh process, trained for a fixed number of steps after a warm-up:

* plain PyTorch loop - `benchmarks/train_benchmark.py`'s hand-written loop
  (its `--child torch`) on the quickstart's FC VAE without the STFT loss.
* kvae.fit fc         - the same model through kvae.fit (STFT loss off).
* kvae.fit quickstart - the quickstart preset (FC, 3 kHz, MR-STFT loss, KL warm-up),
  in float32 and in mixed precision (mixed_bfloat16 where the GPU has bf16,
  else mixed_float16).
* kvae.fit rave       - the 16 kHz convolutional `rave` preset, float32 and mixed.
* kvae fit, 2 ranks   - quickstart on 2 GPUs through torchrun (only with 2+ GPUs).

Columns: steps/s over the timed steps (the device synchronised at both ends),
audio seconds/s (steps/s x global batch x window seconds), and peak GPU memory
(`torch.cuda.max_memory_allocated`; on the CPU, peak RSS).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kvae._env import configure  # noqa: E402

configure()


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_mb():
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e6
    from _common import read_proc_status

    return read_proc_status(("VmHWM",)).get("VmHWM")


def child_fit(args):
    """One kvae.fit row (in this process; under torchrun, one rank of it)."""
    import keras

    import kvae
    from kvae.config import load_config

    stamps = {}

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch in (args.warmup, args.warmup + args.steps):
                _sync()
                stamps[batch] = time.perf_counter()

    overrides = {"train": {"epochs": 1, "steps_per_epoch": args.warmup + args.steps + 1, "n_samples": 0,
                           "gallery": False, "verbose": 0, "precision": args.precision},
                 "data": {"val_windows_per_recording": 1, "workers": args.workers}}
    if args.no_stft:
        overrides["model"] = {"loss_weights": {"stft": 0.0}}
        overrides["train"].update(kl_schedule="constant")
    cfg = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as run:
        model, _ = kvae.fit(cfg, run=Path(run) / "run", verbose=False, callbacks=[Timer()])
    if os.environ.get("RANK", "0") != "0":
        return None
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    seconds = stamps[args.warmup + args.steps] - stamps[args.warmup]
    return {"steps_per_s": args.steps / seconds, "batch": cfg["data"]["batch_size"] * ranks,
            "window_s": cfg["data"]["window_seconds"], "peak_mb": _peak_mb(), "params": model.count_params()}


def child_torch(args):
    """The plain PyTorch row: train_benchmark.py's loop, on the quickstart's FC VAE and windows."""
    import numpy as np
    import torch

    import train_benchmark
    from kvae.config import load_config
    from kvae.training import make_datasets

    cfg = load_config(args.config, {"train": {"steps_per_epoch": args.warmup + args.steps + 2}})
    _, _, source, _ = make_datasets(cfg, verbose=False)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        data = Path(folder) / "windows.npy"
        np.save(data, np.concatenate([source.batch(0, i) for i in range(args.warmup + args.steps + 1)]))
        model = cfg["model"]
        ns = argparse.Namespace(child="torch", data=data, batch=cfg["data"]["batch_size"],
                                layers=model["hidden_layers"],
                                units=model["hidden_units"], latent=model["latent_dim"], warmup=args.warmup,
                                steps=args.steps, threads=torch.get_num_threads(),
                                device="cuda" if torch.cuda.is_available() else "cpu")
        res = train_benchmark.child_torch(ns)
    (start, _), (end, _) = res["stamps"][args.warmup], res["stamps"][-1]
    return {"steps_per_s": args.steps / (end - start), "batch": ns.batch, "window_s": cfg["data"]["window_seconds"],
            "peak_mb": res["peak_gpu_mb"] or res["peak"].get("VmHWM"), "params": res["params"]}


def header(cpu):
    import importlib.metadata

    import torch

    lines = [f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}, "
             f"cuDNN {torch.backends.cudnn.version()}), keras {importlib.metadata.version('keras')}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"device {i}: {p.name}, {p.total_memory / 2 ** 30:.0f} GiB, capability {p.major}.{p.minor}")
    else:
        lines.append(f"device: CPU ({os.cpu_count()} logical CPUs){' (--cpu)' if cpu else ', no CUDA device'}")
    return lines


def run_row(kind, extra, env, nproc=1, timeout=900):
    """Run one row in a fresh process (under torchrun with `nproc` > 1); its result dict, or an error."""
    script = [str(Path(__file__).resolve()), "--child", kind, *extra]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *script]
           if nproc > 1 else [sys.executable, *script])
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
    return {"error": f"exit {proc.returncode}: {tail[-300:]}"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="hide the GPUs (CUDA_VISIBLE_DEVICES=)")
    p.add_argument("--quick", action="store_true", help="quickstart rows only, few steps")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default 200 on a GPU, 10 on CPU)")
    p.add_argument("--child", choices=("fit", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--config", default="quickstart", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--no-stft", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        result = child_fit(args) if args.child == "fit" else child_torch(args)
        if result is not None:
            print("RESULT " + json.dumps(result), flush=True)
        return 0

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if args.cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    gpus = torch.cuda.device_count()
    steps = args.steps or (200 if gpus else (3 if args.quick else 10))
    warmup = 20 if gpus else 2
    mixed = "mixed_bfloat16" if not gpus or torch.cuda.is_bf16_supported() else "mixed_float16"
    common = ["--steps", str(steps), "--warmup", str(warmup), "--workers", "2" if gpus else "0"]
    rows = [("plain PyTorch loop, fc (no STFT loss)", "torch", [], 1),
            ("kvae.fit, fc (no STFT loss)", "fit", ["--no-stft"], 1),
            ("kvae.fit, quickstart", "fit", [], 1),
            (f"kvae.fit, quickstart, {mixed}", "fit", ["--precision", mixed], 1)]
    if not args.quick:
        rows += [("kvae.fit, rave (16 kHz conv)", "fit", ["--config", "rave"], 1),
                 (f"kvae.fit, rave, {mixed}", "fit", ["--config", "rave", "--precision", mixed], 1)]
    if gpus >= 2:
        rows.append(("kvae fit, quickstart, 2 ranks (DDP, NCCL)", "fit", [], 2))
    started = time.perf_counter()
    for line in header(args.cpu):
        print(line)
    print(f"{steps} timed steps per row after {warmup} warm-up; each row a fresh process\n", flush=True)
    print(f"{'row':<44} {'steps/s':>8} {'audio s/s':>10} {'batch':>6} {'peak MB':>9} {'params':>11}")
    for name, kind, extra, nproc in rows:
        res = run_row(kind, common + extra, env, nproc)
        if "error" in res:
            print(f"{name:<44} error: {res['error']}", flush=True)
            continue
        audio = res["steps_per_s"] * res["batch"] * res["window_s"]
        print(f"{name:<44} {res['steps_per_s']:8.2f} {audio:10.1f} {res['batch']:6d} {res['peak_mb'] or 0:9.0f} "
              f"{res['params']:11,}", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; peak MB is GPU memory allocated by torch on a GPU, "
          "peak RSS on the CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
