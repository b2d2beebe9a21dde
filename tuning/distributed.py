"""Run a kvae search with keras-tuner's chief and workers on one machine.

Starts one chief (`KERASTUNER_TUNER_ID=chief`: it serves the oracle over gRPC
and, once the workers are done, writes the table, the plot and the retrained
best model) and N workers (`tuner0`, `tuner1`, ...: each asks the chief for a
trial, trains it and reports back), all running `kvae tune` on the same
search folder. Each process logs to `<dir>/logs/<id>.log`. With `--gpus 0,1`
the workers are spread over those GPUs (`CUDA_VISIBLE_DEVICES`, round robin).

Needs grpcio and protobuf<5 (`pip install 'kvae[distributed]'`). Across
machines, run `kvae tune` yourself with the three variables set: the chief
with `KERASTUNER_TUNER_ID=chief`, each worker with its own id, all with
`KERASTUNER_ORACLE_IP`/`KERASTUNER_ORACLE_PORT` pointing at the chief and
`--dir` on a shared file system.

    python tuning/distributed.py --workers 2 --config tiny --dir tuning-runs/dist

Exit status: 0 when every process ended well, 1 when one failed, 3 on timeout
(all processes are then stopped; run the same command again to resume).
"""

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from kvae._env import configure  # noqa: E402

configure()  # sets KERAS_BACKEND (torch by default) for the processes started below


def free_port(ip="127.0.0.1"):
    """Return a TCP port that is free on `ip` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def tune_command(args):
    """The `kvae tune` command line every process runs."""
    cmd = [sys.executable, "-m", "kvae.cli", "tune", "--dir", str(args.dir)]
    for flag, value in (("--config", args.config), ("--data", args.data), ("--cache", args.cache),
                        ("--tuner", args.tuner), ("--max-trials", args.max_trials), ("--epochs", args.epochs)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def _stop(procs):
    for _, proc, _ in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 10
    for _, proc, _ in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path, n=40):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run(args):
    """Start the chief and the workers, wait for them; return the exit status."""
    port = args.port or free_port(args.ip)
    logs = Path(args.dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = tune_command(args)
    gpus = [g.strip() for g in args.gpus.split(",")] if args.gpus else []
    procs = []
    try:
        for i, tuner_id in enumerate(["chief"] + [f"tuner{k}" for k in range(args.workers)]):
            env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=args.ip,
                       KERASTUNER_ORACLE_PORT=str(port), PYTHONUNBUFFERED="1",
                       PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
            if tuner_id == "chief":
                env["CUDA_VISIBLE_DEVICES"] = gpus[0] if gpus else env.get("CUDA_VISIBLE_DEVICES", "")
            elif gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[(i - 1) % len(gpus)]
            log = open(logs / f"{tuner_id}.log", "w")
            procs.append((tuner_id, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        print(f"chief and {args.workers} workers on {args.ip}:{port}; logs in {logs}", flush=True)
        deadline = time.monotonic() + args.timeout if args.timeout else None
        while True:
            codes = {tid: proc.poll() for tid, proc, _ in procs}
            failed = [tid for tid, code in codes.items() if code not in (None, 0)]
            if failed:
                _stop(procs)
                print(f"distributed: {failed[0]} failed (exit {codes[failed[0]]}); see {logs / failed[0]}.log:",
                      file=sys.stderr)
                print(_tail(logs / f"{failed[0]}.log", 15), file=sys.stderr)
                return 1
            if all(code == 0 for code in codes.values()):
                break
            if deadline is not None and time.monotonic() > deadline:
                _stop(procs)
                running = [tid for tid, code in codes.items() if code is None]
                print(f"distributed: timed out after {args.timeout:g} s ({', '.join(running)} still running); "
                      "run the same command again to resume", file=sys.stderr)
                return 3
            time.sleep(0.5)
    except KeyboardInterrupt:
        _stop(procs)
        print("distributed: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        for _, _, log in procs:
            log.close()
    print(_tail(logs / "chief.log"))
    return 0


def build_parser():
    p = argparse.ArgumentParser(
        description="Run a kvae search with one keras-tuner chief and N workers on this machine.")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="worker processes (default 2)")
    p.add_argument("--ip", default="127.0.0.1", help="address the chief listens on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="chief's port (default: a free one)")
    p.add_argument("--dir", default="tuning-runs/distributed", metavar="DIR", help="search folder, shared by all")
    p.add_argument("--config", metavar="FILE",
                   help="search config file or built-in name (default: fc_depth_lr)")
    p.add_argument("--data", metavar="ROOT", help="dataset root (default: the embedded dataset)")
    p.add_argument("--cache", metavar="DIR", help="cache folder")
    p.add_argument("--tuner", help="random, bayesian or hyperband")
    p.add_argument("--max-trials", type=int, metavar="N")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--gpus", metavar="LIST", help="comma-separated GPU ids to spread the workers over, e.g. 0,1")
    p.add_argument("--timeout", type=float, default=0, metavar="SECONDS",
                   help="stop everything after this long (default: no limit)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        print("distributed: error: --workers must be at least 1", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
