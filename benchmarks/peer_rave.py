"""Official RAVE (PyPI acids-rave) beside a kvae model: same training audio, same CPU budget, same judge.

Issue 23's side-by-side. RAVE's pins (lightning 1.9, scipy 1.10, any torch)
clash with kvae's, so RAVE lives in its own virtual environment, which this
script makes. Then, in order:

1. install: `python -m venv VENV`; `pip install torch==2.13.0` (the CPU
   wheel this machine's pip finds in /opt/wheels; `--torch` to change);
   `pip install acids-rave torch==<that version> "nn-tilde<1.6"
   "setuptools<81"` (nn-tilde 1.6 pins torch==2.5, which would replace the
   CPU torch with a CUDA one and GB of nvidia wheels; lightning 1.9 imports
   pkg_resources, gone from recent setuptools). PyPI's torchaudio is a CUDA
   build whose compiled extension does not load beside a CPU torch; RAVE
   uses only its pure-PyTorch transforms, so the extension's .so files are
   removed from the venv. `rave preprocess` needs ffmpeg (Debian:
   `apt-get install -y ffmpeg`).
2. data: the kvae model's training split at its rate, read through kvae's
   own cache (`kvae.data.prepare`), written as WAV files: both see the
   same audio.
3. `rave preprocess` at that rate; `rave train --config v2 --gpu -1`
   (CPU, OMP_NUM_THREADS=--threads) with gin overrides for the rate
   (SAMPLING_RATE, N_BAND, RATIOS; default 4 bands and ratios 4,2,2,2: 128x,
   23.4 latent frames per second at 3000 Hz, about RAVE's 21.5 at 44.1 kHz)
   on examples of `--n-signal` samples (default 16384 at 3000 Hz: shorter
   ones leave too little for the multiband loss's 2048-point STFT after
   the receptive-field crop), stopped (SIGTERM) once its process tree has
   used `--cpu-minutes` of CPU time (user + system, read from /proc:
   startup, validation and checkpoint writes included). It validates and
   checkpoints every `--every` steps; the last checkpoint written before
   the stop is exported (`rave export`, `--fidelity`): the steps after it
   are lost, and the table shows the CPU time at which it was written
   beside the whole budget. `rave export` checks the model on 2**14
   samples, so the compression must be a power of two; held-out windows
   whose length it does not divide are zero-padded on both sides and
   cropped back.
4. the held-out windows `kvae evaluate` reconstructs
   (`kvae.evaluation.evaluate.reference_sets`) go through the exported
   TorchScript model (encode, decode) in RAVE's venv and are saved as .npy,
   with RAVE's KL per window (its encoder's posterior, the same formula as
   kvae's information rate); kvae's model reconstructs the same windows.
5. both are judged by `kvae.evaluation.evaluate.reconstruction_table` (what
   `kvae evaluate` runs: paired C2ST, MR-STFT, LSD, SI-SDR, the codec ladder);
   a table is printed and `peer_rave.json` written.

`--kvae` is a kvae config (trained here for the same CPU budget with
`TimeBudget(clock="cpu")`, as benchmarks/quality.py does) or a trained model
(a .keras file or run folder; give `--kvae-cpu-minutes` for the table). A
failing step ends the script with one line, `peer_rave: <step>: <why>`, and
`peer_rave.json` says which step failed. Rerunning with the same `--out`
reuses the venv, the WAV files, the preprocessed database and a finished RAVE
training (with the same settings), and the trained kvae run.

    python benchmarks/peer_rave.py --install-only                       # make the RAVE venv (/work/rave-venv)
    python benchmarks/peer_rave.py --data /tmp/ufoai-corpus --kvae conv1d --cpu-minutes 7.5 --out runs/peer-rave
    python benchmarks/peer_rave.py --data /tmp/ufoai-corpus --kvae runs/q23/conv1d --kvae-cpu-minutes 7.5 \\
        --cpu-minutes 7.5 --out runs/peer-rave                           # a kvae model trained before
    python benchmarks/peer_rave.py --data /tmp/ufoai-corpus --kvae runs/q23/conv1d --cpu-minutes 1 \\
        --every 2 --n-clips 64 --out /tmp/peer-rave-smoke                # smoke run (RAVE will be bad)

Run on demand, never in CI: the venv is 1.5 GB, every RAVE checkpoint
about 450 MB (the script deletes all but the newest two periodic ones and
Lightning's best), and RAVE's v2 takes about 9 CPU-seconds per step here
(batch 8 of 16384 samples at 3000 Hz, one thread), a checkpoint and
validation a few more. What was measured: docs/benchmarks.md#official-rave-side-by-side.
"""

import argparse
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kvae  # noqa: E402
from kvae.errors import KvaeError  # noqa: E402

kvae.configure()  # before Keras is imported

DEFAULT_VENV = "/work/rave-venv"
DEFAULT_TORCH = "torch==2.13.0"
RAVE_PINS = ["nn-tilde<1.6", "setuptools<81"]  # see the docstring
RAVE_CONFIG = "v2"
CHECKPOINTS_KEPT = 2
POLL_SECONDS = 0.5


class StepFailed(Exception):
    """A step of the benchmark failed; the message is the one line printed."""


# --------------------------------------------------------------------------- code run in RAVE's venv

RAVE_CHECK = r"""
import json, importlib.metadata as md
import torch, torchaudio, pytorch_lightning, rave, rave.model, nn_tilde
print("RESULT " + json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
      "torchaudio": torchaudio.__version__, "lightning": pytorch_lightning.__version__,
      "acids-rave": md.version("acids-rave"), "nn-tilde": md.version("nn-tilde")}))
"""

CHECKPOINT_STEP = r"""
import json, sys, torch
ckpt = torch.load(sys.argv[1], map_location="cpu", mmap=True)
print("RESULT " + json.dumps({"global_step": int(ckpt["global_step"]), "epoch": int(ckpt["epoch"])}))
"""

RAVE_RECONSTRUCT = r"""
import json, sys
import numpy as np
import torch
import torch.nn.functional as F

model_path, windows_path, out_path = sys.argv[1:4]
batch, seed = int(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(seed)
model = torch.jit.load(model_path).eval()
x = np.load(windows_path)
n, window = x.shape
ratio = int(model.encode_params[3])  # samples per latent frame
padded = -(-window // ratio) * ratio
left = (padded - window) // 2
outputs, kls, kl_error = [], [], None
with torch.no_grad():
    for i in range(0, n, batch):
        chunk = F.pad(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])), (left, padded - window - left))
        chunk = chunk.unsqueeze(1)
        outputs.append(model.decode(model.encode(chunk))[:, 0, left:left + window].numpy())
        if kls is None:
            continue
        try:  # RAVE's posterior: VariationalEncoder.reparametrize's mean and softplus scale, on the PQMF bands
            mean, scale = model.encoder(model.pqmf(chunk)).chunk(2, 1)
            std = F.softplus(scale) + 1e-4
            kls.append((0.5 * (mean * mean + std * std - 2.0 * torch.log(std) - 1.0)).sum((1, 2)).numpy())
        except Exception as exc:  # a discrete or non-PQMF configuration: no KL
            kls, kl_error = None, f"{type(exc).__name__}: {exc}"
y = np.concatenate(outputs).astype(np.float32)
np.save(out_path, y)
print("RESULT " + json.dumps({
    "kl_nats": None if kls is None else float(np.mean(np.concatenate(kls))), "kl_error": kl_error,
    "kl_seconds": padded / float(model.sr), "ratio": ratio, "padded_window": padded,
    "latent_dims": int(model.encode_params[2]), "full_latent_dims": int(model.full_latent_size),
    "sample_rate": int(model.sr), "parameters": int(sum(p.numel() for p in model.parameters())),
    "finite": bool(np.all(np.isfinite(y)))}))
"""


# --------------------------------------------------------------------------- processes and logs

def last_error_line(text):
    """The most telling line of a failed command's output: the last error or exception line, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    pattern = re.compile(r"^(ERROR:|error:|[\w.]*(Error|Exception|Interrupt)\b)")
    for line in reversed(lines):
        if pattern.match(line) and "for help visit" not in line:  # pip's last line is boilerplate
            return line[:400]
    return lines[-1][:400] if lines else "no output"


def run_logged(cmd, log, what, env=None, cwd=None):
    """Run `cmd` with its output appended to `log`; return the output; raise StepFailed on a non-zero exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"$ {shlex.join(map(str, cmd))}\n")
    try:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd)
    except OSError as exc:
        raise StepFailed(f"{what}: cannot run {cmd[0]}: {exc.strerror or exc}") from None
    with open(log, "a") as out:
        out.write(proc.stdout + proc.stderr)
    if proc.returncode:
        raise StepFailed(f"{what} exited {proc.returncode}: {last_error_line(proc.stdout + proc.stderr)} (log: {log})")
    return proc.stdout


def child_result(stdout, what):
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise StepFailed(f"{what}: no result line in its output")


def rave_env(threads):
    """The environment of RAVE's commands: `threads` threads, and no PYTHONPATH.

    kvae's repository on the path would shadow RAVE's: gin looks up
    `include "configs/v1.gin"` as a Python package `configs`, finds kvae's
    configs/ folder and fails (TypeError in gin's resource_reader).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"})
    return env


def tree_cpu_seconds(root):
    """(user, system) CPU seconds of process `root` and its descendants (live, and those they reaped): /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children, times = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ..., utime at 11
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[13]), int(fields[12]) + int(fields[14]))
    user = system = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        u, s = times.get(pid, (0, 0))
        user, system = user + u, system + s
        stack.extend(children.get(pid, ()))
    return user / tick, system / tick


# --------------------------------------------------------------------------- 1. install

def venv_python(venv):
    return Path(venv) / "bin" / "python"


def check_rave_venv(venv, log):
    """Versions in the RAVE venv, or StepFailed saying what does not import."""
    out = run_logged([venv_python(venv), "-c", RAVE_CHECK], log, "importing rave in its venv")
    return child_result(out, "importing rave")


def install_rave(venv, torch_spec, log):
    """Make (or reuse) the RAVE venv; return the install record: commands run, versions."""
    venv = Path(venv)
    python, pip = venv_python(venv), venv / "bin" / "pip"
    if (venv / "bin" / "rave").is_file():
        try:
            return {"venv": str(venv), "reused": True, "commands": [], "versions": check_rave_venv(venv, log)}
        except StepFailed as exc:
            print(f"  existing venv {venv} does not work ({exc}); installing into it again", flush=True)
    commands = []

    def run(cmd, what):
        commands.append(shlex.join(map(str, cmd)))
        print(f"  $ {commands[-1]}", flush=True)
        return run_logged(cmd, log, what)

    if not python.is_file():
        run([sys.executable, "-m", "venv", venv], "python -m venv")
    run([pip, "install", torch_spec], f"pip install {torch_spec}")
    version = run([python, "-c", "import torch; print(torch.__version__, torch.version.cuda)"], "importing torch").split()
    if version[1] != "None":
        print(f"  warning: {torch_spec} installed a CUDA build ({version[0]}, CUDA {version[1]}); "
              "give a CPU wheel with --torch", flush=True)
    run([pip, "install", "acids-rave", f"torch=={version[0]}", *RAVE_PINS], "pip install acids-rave")
    probe = subprocess.run([str(python), "-c", "import torchaudio"], capture_output=True, text=True)
    if probe.returncode and "libc10_cuda" in probe.stderr:  # PyPI's torchaudio is a CUDA build
        site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], "locating site-packages")
        libs = sorted((Path(site.strip()) / "torchaudio" / "lib").glob("*.so"))
        print(f"  torchaudio's extension needs CUDA's libc10_cuda.so: removing {', '.join(p.name for p in libs)} "
              "(RAVE uses only torchaudio's pure-PyTorch transforms)", flush=True)
        commands.append(f"rm {' '.join(str(p) for p in libs)}")
        for lib in libs:
            lib.unlink()
    return {"venv": str(venv), "reused": False, "commands": commands, "versions": check_rave_venv(venv, log)}


# --------------------------------------------------------------------------- 2. data

def write_training_audio(corpus, folder):
    """The corpus's training recordings as float WAV files in `folder` (missing ones only); return their keys."""
    from kvae.data import write_wav

    folder.mkdir(parents=True, exist_ok=True)
    entries = corpus.split("train") or corpus.entries
    for entry in entries:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", entry.key) + ".wav"
        if not (folder / name).is_file():
            write_wav(folder / name, corpus.array(entry), corpus.sample_rate)
    return [e.key for e in entries]


# --------------------------------------------------------------------------- 3. RAVE: preprocess, train, export

def rave_overrides(args, rate):
    return [f"SAMPLING_RATE={rate}", f"N_BAND={args.n_band}", f"RATIOS={list(args.ratios)}".replace(" ", ""),
            *args.rave_override]


def preprocess(args, rave_bin, audio, db, rate, n_signal, keys, log):
    """`rave preprocess` into `db` (reused when built with the same settings)."""
    settings = {"rate": rate, "num_signal": n_signal, "recordings": keys}
    stamp = db / "kvae-settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return "reused"
    if db.exists():
        shutil.rmtree(db)
    run_logged([rave_bin, "preprocess", "--input_path", audio.resolve(), "--output_path", db.resolve(),
                "--sampling_rate", rate, "--num_signal", n_signal, "--channels", 1],
               log, "rave preprocess", env=rave_env(args.threads), cwd=db.parent)
    if not (db / "metadata.yaml").is_file():
        raise StepFailed(f"rave preprocess wrote no {db / 'metadata.yaml'} (log: {log})")
    stamp.write_text(json.dumps(settings) + "\n")
    return "built"


def checkpoints(folder):
    return sorted(folder.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.exists() else []


def train_rave(args, rave_bin, db, runs, n_signal, rate, log):
    """`rave train` on the CPU until its process tree has used the budget; return the training record."""
    budget = 60.0 * args.cpu_minutes
    cmd = [rave_bin, "train", "--config", RAVE_CONFIG, *[a for o in rave_overrides(args, rate) for a in ("--override", o)],
           "--db_path", db.resolve(), "--out_path", runs.resolve(), "--name", "rave", "--gpu", -1, "--workers", 0,
           "--channels", 1, "--n_signal", n_signal, "--batch", args.batch, "--val_every", args.every,
           "--save_every", args.every, "--progress=false"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"$ {shlex.join(map(str, cmd))}\n")
    print(f"  $ {shlex.join(map(str, cmd))}", flush=True)
    seen = {}  # checkpoint path -> CPU seconds when first seen
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with open(log, "a") as out:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=rave_env(args.threads),
                                cwd=runs.parent, start_new_session=True)
    cpu, stopped = (0.0, 0.0), False
    while proc.poll() is None:
        time.sleep(POLL_SECONDS)
        cpu = tree_cpu_seconds(proc.pid)
        for path in checkpoints(runs):
            seen.setdefault(str(path), sum(cpu))
        for old in checkpoints(runs)[:-CHECKPOINTS_KEPT]:
            if old.name.startswith("epoch_"):  # RAVE's periodic ones; Lightning's best*.ckpt it replaces itself
                old.unlink(missing_ok=True)
        if sum(cpu) >= budget and not stopped:
            os.killpg(proc.pid, signal.SIGTERM)
            stopped = True
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    for path in checkpoints(runs):  # written after the last look: at most the whole budget
        seen.setdefault(str(path), user + system)
    if not stopped:
        text = log.read_text(errors="replace")
        raise StepFailed(f"rave train exited {proc.returncode} after {(user + system) / 60:.2f} CPU-minutes, "
                         f"before its budget: {last_error_line(text)} (log: {log})")
    return {"cpu_seconds": user + system, "user_seconds": user, "system_seconds": system,
            "wall_seconds": time.monotonic() - start, "checkpoints_seen": seen}


def pick_checkpoint(python, runs, seen, log):
    """The newest checkpoint that loads (a stop can cut one short: those are removed); its step and CPU time."""
    for path in reversed(checkpoints(runs)):
        try:
            info = child_result(run_logged([python, "-c", CHECKPOINT_STEP, path], log, "reading a checkpoint"), "checkpoint")
        except StepFailed as exc:
            print(f"  {path.name} does not load ({exc}); removing it", flush=True)
            path.unlink()
            continue
        return {"checkpoint": str(path), "steps": info["global_step"],
                "cpu_seconds_at_checkpoint": seen.get(str(path))}
    raise StepFailed(f"rave train wrote no loadable checkpoint in {runs} before its budget ran out; "
                     "give more --cpu-minutes or a smaller --every")


# --------------------------------------------------------------------------- the kvae side

def is_model_path(text):
    path = Path(text).expanduser()
    return path.is_file() and path.suffix == ".keras" or (path / "model.keras").is_file()


def kvae_side(args, out):
    """The kvae model and its record: loaded (`--kvae` a model) or trained here for the CPU budget (a config)."""
    import keras

    if args.threads and keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(args.threads)
    if is_model_path(args.kvae):
        model = kvae.load(args.kvae, compile=False)
        config = Path(args.kvae) / "config.json"
        trained_on = json.loads(config.read_text())["data"].get("path") if config.is_file() else None
        if args.data and trained_on and Path(trained_on).resolve() != Path(args.data).resolve():
            print(f"  warning: {args.kvae} was trained on {trained_on}, not on --data {args.data}", flush=True)
        given = "" if args.kvae_cpu_minutes is None else ", CPU-minutes as given"
        return model, {"source": f"{args.kvae}{given}", "trained_here": False, "cpu_minutes": args.kvae_cpu_minutes,
                       "steps": None}
    from kvae.config import load_config
    from kvae.training.callbacks import TimeBudget

    minutes = args.kvae_cpu_minutes or args.cpu_minutes
    overrides = {"train": {"epochs": 100000, "steps_per_epoch": 50, "seed": args.seed, "verbose": 0, "n_samples": 0}}
    if args.data:
        overrides["data"] = {"path": args.data}
    config = load_config(args.kvae, overrides)
    run = out / f"kvae-{config['name']}"
    record_file = out / f"kvae-{config['name']}.json"
    if (run / "model.keras").is_file() and record_file.is_file():
        record = json.loads(record_file.read_text())
        if record["cpu_minutes_budget"] != minutes:
            raise StepFailed(f"{run} was trained for {record['cpu_minutes_budget']} CPU-minutes, not {minutes}; "
                             "use another --out")
        return kvae.load(run, compile=False), record
    if run.exists():
        shutil.rmtree(run)  # an interrupted training: start again, the budget counts from zero
    print(f"  training kvae {args.kvae} for {minutes:g} CPU-minutes ({args.threads} thread(s))", flush=True)
    cpu, wall = time.process_time(), time.monotonic()
    model, _ = kvae.fit(config, run=run, verbose=False, callbacks=[TimeBudget(minutes, clock="cpu")])
    record = {"source": f"config {args.kvae}", "trained_here": True, "run": str(run), "cpu_minutes_budget": minutes,
              "cpu_minutes": (time.process_time() - cpu) / 60.0, "wall_seconds": time.monotonic() - wall,
              "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)) if model.optimizer else None}
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    return model, record


def kvae_rate_and_window(args):
    """(rate, window) of the kvae side without training it: from the model, or from the config."""
    from kvae import bounds

    if is_model_path(args.kvae):
        model = kvae.load(args.kvae, compile=False)
        return model.sample_rate, model.window
    from kvae.config import load_config

    data = load_config(args.kvae)["data"]
    return data["sample_rate"], bounds.window_samples(data["sample_rate"], data["window_seconds"])


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset root (default: the embedded corpus; benchmarks/real_music.py builds "
                                       "the real-music one)")
    parser.add_argument("--kvae", default="conv1d",
                        help="kvae config to train for the same budget, or a trained model (.keras or run folder); "
                             "default conv1d")
    parser.add_argument("--cpu-minutes", type=float, help="RAVE's CPU budget (and the kvae config's)")
    parser.add_argument("--kvae-cpu-minutes", type=float,
                        help="the kvae config's budget if not --cpu-minutes; for a trained model, what it was trained "
                             "for (shown in the table)")
    parser.add_argument("--out", help="folder for everything (WAVs, RAVE's database and runs, .npy, peer_rave.json)")
    parser.add_argument("--venv", default=DEFAULT_VENV, help=f"RAVE's virtual environment (default {DEFAULT_VENV})")
    parser.add_argument("--torch", default=DEFAULT_TORCH, help=f"torch requirement installed first (default {DEFAULT_TORCH})")
    parser.add_argument("--install-only", action="store_true", help="make the RAVE venv and stop")
    parser.add_argument("--threads", type=int, default=1, help="threads of both trainings (default 1)")
    parser.add_argument("--n-band", type=int, default=4, help="RAVE's PQMF bands (gin N_BAND; default 4)")
    parser.add_argument("--ratios", default="4,2,2,2", help="RAVE's encoder strides (gin RATIOS; default 4,2,2,2)")
    parser.add_argument("--rave-override", action="append", default=[], metavar="BINDING",
                        help="more gin bindings for rave train (repeatable)")
    parser.add_argument("--n-signal", type=int,
                        help="RAVE's training example in samples (default: the power of two at or above 5 s)")
    parser.add_argument("--batch", type=int, default=8, help="RAVE's batch size (default 8, RAVE's)")
    parser.add_argument("--every", type=int, default=10,
                        help="RAVE validates and checkpoints every N steps (default 10, about 1.5 CPU-minutes at 3000 Hz)")
    parser.add_argument("--fidelity", type=float, default=0.999,
                        help="rave export --fidelity: latent dimensions kept (default 0.999, the most it takes)")
    parser.add_argument("--n-clips", type=int, default=None, help="held-out windows (default: kvae evaluate's, 256)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.install_only:
        for option in ("cpu_minutes", "out"):
            if getattr(args, option) is None:
                parser.error(f"--{option.replace('_', '-')} is required (unless --install-only)")
    if args.cpu_minutes is not None and not args.cpu_minutes > 0:
        parser.error("--cpu-minutes: must be positive")
    if args.every < 1:
        parser.error("--every: at least 1 step")
    try:
        args.ratios = [int(r) for r in args.ratios.split(",")]
    except ValueError:
        parser.error(f"--ratios: comma-separated whole numbers, got {args.ratios}")
    compression = args.n_band * math.prod(args.ratios)
    if compression & (compression - 1):
        parser.error(f"--n-band x --ratios = {compression}: rave export needs a power of two")
    args.compression = compression
    return args


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out) if args.out else None
    logs = out / "logs" if out else Path(args.venv)
    report = {"settings": {k: v for k, v in vars(args).items() if k != "compression"}, "failed_step": None}
    step = "install"
    try:
        print(f"[install] RAVE venv {args.venv}", flush=True)
        report["install"] = install_rave(args.venv, args.torch, logs / "install.log")
        versions = report["install"]["versions"]
        print("  " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
        if args.install_only:
            return 0
        if shutil.which("ffmpeg") is None:
            raise StepFailed("ffmpeg not found; rave preprocess needs it (Debian: apt-get install -y ffmpeg)")
        out.mkdir(parents=True, exist_ok=True)
        rave_bin, python = Path(args.venv) / "bin" / "rave", venv_python(args.venv)

        step = "data"
        from kvae.data import prepare

        rate, window = kvae_rate_and_window(args)
        n_signal = args.n_signal or 2 ** math.ceil(math.log2(5 * rate))
        if n_signal % args.compression:
            raise StepFailed(f"--n-signal {n_signal} is not a multiple of the compression {args.compression}")
        corpus = prepare(args.data, sample_rate=rate)
        audio = out / "rave" / f"audio-{rate}hz"
        keys = write_training_audio(corpus, audio)
        seconds = sum(e.frames for e in (corpus.split("train") or corpus.entries)) / rate
        print(f"[data] {len(keys)} training recordings ({seconds / 3600:.2f} h at {rate} Hz) as WAV in {audio}", flush=True)
        report["data"] = {"root": args.data or "embedded", "rate": rate, "window": window,
                          "training_recordings": len(keys), "training_seconds": seconds}

        step = "rave preprocess"
        db = out / "rave" / "db"
        how = preprocess(args, rave_bin, audio, db, rate, n_signal, keys, logs / "rave-preprocess.log")
        print(f"[rave preprocess] {db} ({how}; {n_signal}-sample examples)", flush=True)

        step = "rave train"
        runs, record_file = out / "rave" / "runs", out / "rave" / "train.json"
        settings = {"cpu_minutes": args.cpu_minutes, "overrides": rave_overrides(args, rate), "n_signal": n_signal,
                    "batch": args.batch, "every": args.every, "threads": args.threads, "recordings": keys}
        if record_file.is_file():
            train = json.loads(record_file.read_text())
            if train["settings"] != settings:
                raise StepFailed(f"{out} holds a RAVE run trained with other settings; use another --out")
            print(f"[rave train] reusing {train['checkpoint']}", flush=True)
        else:
            if runs.exists():
                shutil.rmtree(runs)  # an interrupted training: start again, the budget counts from zero
            print(f"[rave train] {RAVE_CONFIG} for {args.cpu_minutes:g} CPU-minutes, {args.threads} thread(s)", flush=True)
            train = train_rave(args, rave_bin, db, runs, n_signal, rate, logs / "rave-train.log")
            train.update(pick_checkpoint(python, runs, train.pop("checkpoints_seen"), logs / "rave-train.log"))
            train["settings"] = settings
            record_file.write_text(json.dumps(train, indent=2) + "\n")
        at = train["cpu_seconds_at_checkpoint"]
        print(f"  used {train['cpu_seconds'] / 60:.2f} CPU-minutes ({train['user_seconds']:.0f} s user, "
              f"{train['system_seconds']:.0f} s system) in {train['wall_seconds']:.0f} s; exporting step {train['steps']}"
              + (f", written at {at / 60:.2f} CPU-minutes" if at is not None else ""), flush=True)

        step = "rave export"
        export = out / "rave" / "export"
        run_dir = Path(train["checkpoint"]).parents[2]  # runs/rave_<hash>/version_0/checkpoints/x.ckpt
        run_logged([rave_bin, "export", "--run", run_dir.resolve(), "--fidelity", args.fidelity, "--output",
                    export.resolve(), "--name", "rave"], logs / "rave-export.log", "rave export", env=rave_env(args.threads),
                   cwd=export.parent)
        if not (export / "rave.ts").is_file():
            raise StepFailed(f"rave export wrote no {export / 'rave.ts'}")
        print(f"[rave export] {export / 'rave.ts'}", flush=True)

        step = "kvae model"
        model, kvae_record = kvae_side(args, out)
        if (model.sample_rate, model.window) != (rate, window):
            raise StepFailed(f"the kvae model runs at {model.sample_rate} Hz, {model.window} samples, "
                             f"not {rate} Hz, {window}")

        step = "held-out windows"
        import numpy as np

        from kvae.evaluation.evaluate import DEFAULT_CLIPS, information_rate, reconstruction_table, reference_sets

        n_clips = args.n_clips or DEFAULT_CLIPS
        _, _, test, test_split = reference_sets(corpus, window, rate, n_clips, args.seed)
        np.save(out / "heldout.npy", test)
        print(f"[held-out windows] {len(test)} from the {test_split} split, as kvae evaluate takes them", flush=True)

        step = "rave reconstruct"
        rave_out = out / "rave-reconstructions.npy"
        rave_info = child_result(run_logged([python, "-c", RAVE_RECONSTRUCT, export / "rave.ts", out / "heldout.npy",
                                             rave_out, 32, args.seed], logs / "rave-reconstruct.log",
                                            "RAVE encode/decode", env=rave_env(args.threads)), "RAVE encode/decode")
        if not rave_info["finite"]:
            raise StepFailed("RAVE's reconstructions hold NaN or infinite samples")
        print(f"[rave reconstruct] {rave_out}: {rave_info['latent_dims']} of {rave_info['full_latent_dims']} latent "
              f"dimensions, {rate / rave_info['ratio']:.1f} frames/s, windows padded to {rave_info['padded_window']}",
              flush=True)

        step = "judge"
        from kvae.evaluation.report import write_json
        from kvae.training.callbacks import bits_per_second

        kvae_name = f"kvae {Path(args.kvae).name if is_model_path(args.kvae) else args.kvae}"
        recon = np.concatenate([np.asarray(model.reconstruct(test[i:i + 64]), np.float32)
                                for i in range(0, len(test), 64)])
        np.save(out / "kvae-reconstructions.npy", recon)
        rave_name = f"RAVE {RAVE_CONFIG} (acids-rave {versions['acids-rave']})"
        rave_rate = (None if rave_info["kl_nats"] is None else
                     {"kl_nats": rave_info["kl_nats"],
                      "rate_bps": bits_per_second(rave_info["kl_nats"], rave_info["kl_seconds"])})
        columns = {kvae_name: information_rate(model, test), rave_name: rave_rate or {"rate_bps": None}}
        rows = reconstruction_table(test, {kvae_name: recon, rave_name: np.load(rave_out)}, rate, seed=args.seed,
                                    progress=lambda message: print(f"  {message}", flush=True), columns=columns)
    except (StepFailed, KvaeError) as exc:
        return fail(report, out, step, str(exc))
    except OSError as exc:
        return fail(report, out, step, f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")

    report.update({
        "data": {**report["data"], "held_out_windows": len(test), "held_out_split": test_split},
        "runs": {"kvae": {"name": kvae_name, **kvae_record, "parameters": int(model.count_params()),
                          "rate_bps": columns[kvae_name]["rate_bps"]},
                 "rave": {"name": rave_name, **train, **rave_info, "rate_bps": columns[rave_name]["rate_bps"],
                          "n_signal": n_signal, "config": RAVE_CONFIG, "overrides": rave_overrides(args, rate),
                          "fidelity": args.fidelity,
                          "compression": f"{args.n_band} bands x {','.join(map(str, args.ratios))} = {args.compression}x"}},
        "reconstruction": rows,
    })
    print_tables(report, args)
    print(f"\nwrote {write_json(out / 'peer_rave.json', report)}")
    return 0


def print_tables(report, args):
    """The runs side by side (CPU time, steps, size, rate), then the reconstruction table and the verdicts."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
    from _common import fmt, table

    from kvae.evaluation.report import RECONSTRUCTION_KEYS, format_table, kbit

    kvae_run, rave_run, data, rows = (report["runs"]["kvae"], report["runs"]["rave"], report["data"],
                                      report["reconstruction"])
    at = rave_run["cpu_seconds_at_checkpoint"]
    lines = [
        [kvae_run["name"], fmt(kvae_run["cpu_minutes"], 2), kvae_run["steps"] or "n/a", f"{kvae_run['parameters']:,}",
         kbit(kvae_run["rate_bps"]), kvae_run["source"]],
        [rave_run["name"], f"{rave_run['cpu_seconds'] / 60:.2f} (ckpt {fmt(None if at is None else at / 60, 2)})",
         rave_run["steps"], f"{rave_run['parameters']:,}",
         "n/a" if rave_run["rate_bps"] is None else kbit(rave_run["rate_bps"]),
         f"{rave_run['config']}, {rave_run['compression']}, n_signal {rave_run['n_signal']}"],
    ]
    print(f"\nkvae vs official RAVE on {data['root']} at {data['rate']} Hz: {data['held_out_windows']} held-out "
          f"windows ({data['window']} samples, {data['held_out_split']} split), {args.threads} thread(s), seed {args.seed}")
    print("\n".join(table(["model", "CPU-min", "steps", "parameters", "kbit/s", "what"], lines)))
    print("\nReconstruction of the held-out windows (paired C2ST: each output against its own input, 0.5 = "
          "indistinguishable; the ladder: the same windows through known codecs)")
    print("\n".join(format_table(rows, RECONSTRUCTION_KEYS, "")))
    for run in (kvae_run, rave_run):
        print(f"{run['name']}: {rows[run['name']]['verdict']}")


def fail(report, out, step, message):
    """Record the failed step in peer_rave.json (with --out) and end with one line."""
    report.update({"failed_step": step, "error": message})
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "peer_rave.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"peer_rave: {step}: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
