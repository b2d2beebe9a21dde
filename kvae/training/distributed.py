"""Data-parallel `kvae.fit`: the process group under torchrun, the jax device mesh, rank-0 writes, the launcher.

torch backend (`torch.distributed`): `torchrun --nproc-per-node N -m kvae fit ...`
(or `kvae fit --nproc N`, which runs the same through `torch.distributed.run`)
starts N processes; `setup` joins them into one process group from torchrun's
environment (NCCL on GPUs, gloo on CPUs), with a bounded timeout. Every rank
builds the same model (same seed), then takes rank 0's weights
(`broadcast_state`); each draws its own shard of every global batch
(`WindowSource(shards=N, shard=rank)`); the training step averages the
gradients (`kvae.models.torch_step`); `AverageLogs` averages each epoch's
logged metrics; only rank 0 writes the run folder. Multi-node: torchrun's
rendezvous flags (`--nnodes`, `--rdzv-backend c10d --rdzv-endpoint HOST:PORT`),
with the run folder on a file system every node sees.

jax backend: `train.distribution = "data_parallel"` trains under
`keras.distribution.DataParallel` over the visible devices, in one process.
"""

import os
import signal
import sys
import time

import keras

from kvae.errors import KvaeError
from kvae.models.torch_step import collective_error


class Group:
    """This process's place in data-parallel training: `rank` of `world` (1 and 0 when alone)."""

    def __init__(self, rank=0, world=1, local_rank=0, jax_devices=0):
        self.rank, self.world, self.local_rank = int(rank), int(world), int(local_rank)
        self.jax_devices = int(jax_devices)  # > 0: `setup` set keras.distribution.DataParallel over them

    @property
    def writes(self):
        """Whether this process writes the run folder (rank 0)."""
        return self.rank == 0


def _launched_by_torchrun():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(train):
    """Join the torchrun process group (torch) or set the jax data-parallel distribution; return a `Group`.

    Args:
        train: dict. The config's `train` section (`distribution`,
            `distributed_timeout`, `seed`).

    Raises:
        KvaeError: torchrun on another backend than torch; `data_parallel` on
            TensorFlow; the group cannot form within the timeout.
    """
    backend = keras.backend.backend()
    if train["distribution"] == "data_parallel" and backend == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return Group(jax_devices=len(devices))
    if train["distribution"] == "data_parallel" and backend == "tensorflow":
        raise KvaeError("train.distribution = data_parallel: supported on jax (keras.distribution) and torch "
                        "(torchrun), not tensorflow")
    if not _launched_by_torchrun():
        return Group()
    if backend != "torch":
        raise KvaeError(f"torchrun: data-parallel kvae fit runs on the torch backend, not {backend} "
                        "(on jax set train.distribution = data_parallel in one process)")
    import datetime

    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_nccl = torch.cuda.is_available() and dist.is_nccl_available()
        if use_nccl:
            torch.cuda.set_device(local_rank)  # Keras's "cuda" device is then this rank's GPU
        timeout = datetime.timedelta(seconds=float(train["distributed_timeout"]))
        try:
            dist.init_process_group("nccl" if use_nccl else "gloo", timeout=timeout)
        except (RuntimeError, ValueError) as exc:
            raise collective_error(exc, "forming the process group") from None
    group = Group(dist.get_rank(), dist.get_world_size(), local_rank)
    signal.signal(signal.SIGTERM, _stopped_by_agent)
    _watch_agent()
    return group


def _stopped_by_agent(signum, frame):
    raise KvaeError(f"rank {os.environ.get('RANK', '?')}: stopped by torchrun (another rank failed, or the job "
                    "was stopped); rerun the same command to resume from the run folder")


def _watch_agent(interval=1.0):
    """Stop this rank (SIGTERM to itself) if torchrun's agent, its parent, dies without stopping it (kill -9):
    torchrun starts each rank in a session of its own, so it would otherwise train on, orphaned."""
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="kvae-watch-torchrun", daemon=True).start()


def teardown(group):
    """Leave the process group (torch) or drop the jax distribution that `setup` set."""
    if group.jax_devices:
        keras.distribution.set_distribution(None)
    if group.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _device():
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier(group):
    """Wait for every rank (a no-op alone)."""
    if group.world > 1:
        import torch.distributed as dist

        try:
            dist.barrier()
        except (RuntimeError, ValueError) as exc:
            raise collective_error(exc, "waiting for the other ranks") from None


def broadcast_object(group, value):
    """Rank 0's `value` on every rank (a picklable object)."""
    if group.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    try:
        dist.broadcast_object_list(box, src=0, device=_device())
    except (RuntimeError, ValueError) as exc:
        raise collective_error(exc, "sharing the run folder") from None
    return box[0]


def broadcast_state(model, group):
    """Give every rank rank 0's weights and optimizer state; give each rank its own latent noise.

    Each rank draws its reparameterisation noise from its own stream of the
    model's seed (`VAE.set_noise_stream(rank)`), so the ranks do not draw the
    same noise for their different windows.
    """
    if group.world == 1:
        return
    import torch
    import torch.distributed as dist

    variables = list(model.variables) + list(model.optimizer.variables if model.optimizer else [])
    with torch.no_grad():
        for v in variables:
            if "seed_generator_state" in v.path or v.value.dtype not in (
                    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32):
                continue
            try:
                dist.broadcast(v.value.data, src=0)
            except (RuntimeError, ValueError) as exc:
                raise collective_error(exc, "sharing the initial weights") from None
    model.set_noise_stream(group.rank)


class AverageLogs(keras.callbacks.Callback):
    """Replaces each epoch's logged values by their mean over the ranks (one all-reduce per epoch).

    Put it before the callbacks that read the logs (history file, History):
    they all see the group's means. Validation runs in full on every rank
    (its windows are not sharded), so its values are the same everywhere.
    """

    def __init__(self, group):
        super().__init__()
        self.group = group

    def on_epoch_end(self, epoch, logs=None):
        if not logs or self.group.world == 1:
            return
        import torch
        import torch.distributed as dist

        keys = sorted(k for k, v in logs.items() if isinstance(v, (int, float)))
        values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=_device())
        try:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        except (RuntimeError, ValueError) as exc:
            raise collective_error(exc, "averaging the epoch's metrics") from None
        for key, value in zip(keys, (values / self.group.world).tolist()):
            logs[key] = value


def agreed_stop(group, stop):
    """Rank 0's stop decision on every rank (a one-element broadcast), so the ranks stop at the same step."""
    if group.world == 1:
        return stop
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if stop else 0], dtype=torch.int32, device=_device())
    try:
        dist.broadcast(flag, src=0)
    except (RuntimeError, ValueError) as exc:
        raise collective_error(exc, "agreeing to stop") from None
    return bool(flag.item())


# ------------------------------------------------------------------ `kvae fit --nproc N`

def launch(nproc, argv):
    """Run `kvae <argv>` on `nproc` local ranks through `torch.distributed.run` (torchrun), here; return 0.

    Args:
        nproc: int. Processes (ranks) on this machine; one per GPU.
        argv: list of str. The `kvae` arguments each rank runs (`fit ...`,
            without `--nproc`).

    Raises:
        KvaeError: not the torch backend; a rank failed (the one line names
            it and how it ended; torchrun stops the others).
    """
    if keras.backend.backend() != "torch":
        raise KvaeError(f"--nproc: data-parallel training runs on the torch backend, not {keras.backend.backend()}")
    if int(nproc) < 1:
        raise KvaeError(f"--nproc: must be at least 1, got {nproc}")
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default when it starts several ranks
    args = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(int(nproc)), "--module", "kvae"])
    args.training_script_args = list(argv)  # set here: argparse would read them as torchrun's options
    try:
        run(args)
    except SignalException as exc:  # Ctrl-C (or a kill) reached torchrun: it has stopped the ranks
        if exc.sigval == signal.SIGINT:
            if finished_run(argv):  # the ranks had saved the model: Ctrl-C came during torchrun's teardown
                print(f"kvae: interrupted after the run finished ({finished_run(argv)} is saved)", file=sys.stderr)
                return 0
            raise KeyboardInterrupt from None
        raise KvaeError(f"torchrun got {exc.sigval.name} and stopped the ranks; rerun the same command to resume "
                        "from the run folder") from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with status {failure.exitcode}")
        raise KvaeError(f"rank {rank} {how}; torchrun stopped the other ranks (their messages are above); "
                        "rerun the same command to resume from the run folder") from None
    return 0


def finished_run(argv):
    """The finished model of the run folder `argv` names (`--run`, `--run-dir`), or None (not finished, none named)."""
    from kvae.runs import RunFolder
    from kvae.runs.folder import complete_model

    for i, item in enumerate(argv):
        name, _, value = item.partition("=")
        if name in ("--run", "--run-dir"):
            value = value or (argv[i + 1] if i + 1 < len(argv) else "")
            folder = RunFolder(value)
            if value and complete_model(folder.model) and not folder.backup.exists():
                return folder.model
    return None


def strip_nproc(argv):
    """`argv` without `--nproc N` / `--nproc=N` (what each rank of `kvae fit --nproc N` runs)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out
