"""Data-parallel training: torchrun (gloo on CPU) against one process, a killed rank, resuming the group;
jax's keras.distribution.DataParallel; mixed precision; no host read in the training step."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import kvae
from backends import ROOT, backend_env, current_backend, run_on_backend
from kvae.config import load_config
from kvae.errors import KvaeError

torch_only = pytest.mark.skipif(current_backend() != "torch", reason="torch.distributed runs on the torch backend")

EQUIVALENCE = {
    "name": "ddp",
    "data": {"sample_rate": 3000, "window_seconds": 0.25, "windows_per_recording": 1, "val_windows_per_recording": 1,
             "batch_size": 4},
    "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 32, "latent_dim": 8},
    "train": {"epochs": 2, "steps_per_epoch": 3, "n_samples": 0, "gallery": False, "verbose": 0,
              "kl_schedule": "linear", "kl_warmup_steps": 10, "kl_start": 0.0},
}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _env(tmp_path):
    env = backend_env("torch")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(nproc, *args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]


def _weights(path):
    model = kvae.load(path, compile=False)
    return {v.path: np.asarray(keras.ops.convert_to_numpy(v)) for v in model.weights}


# ------------------------------------------------------------------ the windows each rank draws

def test_shards_split_every_global_batch_between_the_ranks(embedded):
    from kvae.data import WindowSource, prepare

    corpus = prepare(embedded, sample_rate=3000, window_seconds=0.25)
    common = dict(window=750, seed=3, batches_per_epoch=5, random=True)
    whole = WindowSource(corpus, "train", batch_size=8, **common)
    ranks = [WindowSource(corpus, "train", batch_size=4, shards=2, shard=r, **common) for r in (0, 1)]
    for epoch in (0, 1):
        assert all(r.num_batches == whole.num_batches == 5 for r in ranks)
        for k in range(5):
            together = np.concatenate([r.plan(epoch)[4 * k:4 * k + 4] for r in ranks])
            np.testing.assert_array_equal(together, whole.plan(epoch)[8 * k:8 * k + 8])
            np.testing.assert_array_equal(np.concatenate([r.batch(epoch, k) for r in ranks]), whole.batch(epoch, k))
    # an incomplete last global batch is dropped, so both ranks take the same number of steps
    odd = [WindowSource(corpus, "train", batch_size=4, shards=2, shard=r, window=750, seed=3) for r in (0, 1)]
    assert odd[0].num_batches == odd[1].num_batches == len(odd[0].entries) // 8
    with pytest.raises(KvaeError, match="data.batch_size: 16 per rank x 2 ranks"):
        WindowSource(corpus, "train", batch_size=16, shards=2, shard=0, window=750).num_windows
    with pytest.raises(KvaeError, match="shard"):
        WindowSource(corpus, "train", batch_size=4, shards=2, shard=2, window=750)


def test_distributed_config_keys_are_checked_on_one_line():
    for key, value, word in (("precision", "float8", "train.precision"),
                             ("distribution", "model_parallel", "train.distribution"),
                             ("distributed_timeout", 0, "train.distributed_timeout")):
        with pytest.raises(KvaeError, match=word) as info:
            load_config({"train": {key: value}})
        assert "\n" not in str(info.value)
    with pytest.raises(KvaeError, match="data.workers"):
        load_config({"data": {"workers": -1}})


def test_nproc_is_taken_out_of_what_the_ranks_run():
    from kvae.training.distributed import strip_nproc

    assert strip_nproc(["fit", "--nproc", "2", "--run", "r"]) == ["fit", "--run", "r"]
    assert strip_nproc(["fit", "--nproc=4", "--epochs", "3"]) == ["fit", "--epochs", "3"]


# ------------------------------------------------------------------ torchrun on CPU (gloo)

@torch_only
def test_two_ranks_train_the_weights_one_process_trains_with_twice_the_batch(embedded, tmp_path):
    """2 gloo ranks with batch 4 each = 1 process with batch 8 on the same windows, to float32 rounding.

    The latent noise is off in both runs (tests/ddp_worker.py): it is drawn per rank. The KL warm-up
    is on, computed in the step from the optimizer's step count, the same on every rank.
    """
    config = tmp_path / "ddp.json"
    config.write_text(json.dumps(EQUIVALENCE))
    single = dict(EQUIVALENCE, data=dict(EQUIVALENCE["data"], batch_size=8))
    (tmp_path / "single.json").write_text(json.dumps(single))
    worker = str(ROOT / "tests" / "ddp_worker.py")
    env = _env(tmp_path)
    one = subprocess.run([sys.executable, worker, "--config", str(tmp_path / "single.json"), "--run",
                          str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    # --run-dir: torchrun's own parser would take --run for its --run-path
    two = subprocess.run(_torchrun(2, worker, "--config", str(config), "--run-dir", str(tmp_path / "two")),
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:] + two.stdout[-2000:]
    assert "global batch 8 = 4 per rank x 2" in two.stdout
    a, b = _weights(tmp_path / "one" / "model.keras"), _weights(tmp_path / "two" / "model.keras")
    assert a.keys() == b.keys()
    worst = 0.0
    for name in a:
        # float32 sums in another order (two half-batch means, then their mean): 1e-5 of the weights' scale
        scale = max(np.abs(a[name]).max(), 1e-3)
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-5 * scale, err_msg=name)
        worst = max(worst, np.abs(b[name] - a[name]).max() / scale)
    print(f"largest weight difference, 2 ranks vs 1 process: {worst:.2e} of the weight's scale")
    assert float(a["fcvae/beta"]) == pytest.approx(0.5)  # the warm-up ran: the 6th step is step 5 of 10
    # the logged epoch means are the group's: equal to the single process's
    for r1, r2 in zip(rows(tmp_path / "one" / "history.csv"), rows(tmp_path / "two" / "history.csv")):
        for key in ("loss", "reconstruction", "kl", "val_loss", "beta"):
            assert float(r2[key]) == pytest.approx(float(r1[key]), rel=1e-4, abs=1e-5), key
    # only rank 0 wrote: one history row per epoch, no leftovers of a second writer
    assert [r["epoch"] for r in rows(tmp_path / "two" / "history.csv")] == ["0", "1"]
    assert not (tmp_path / "two" / "backup").exists()


def _children(pid):
    """The process ids below `pid` (from /proc), depth first."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            kids = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            found += [kid] + _children(kid)
    return found


def _rank_pid(pid, rank):
    for kid in _children(pid):
        try:
            env = Path(f"/proc/{kid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=%d" % rank in env:
            return kid
    return None


def _wait_for(predicate, proc, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-3000:]}"
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


def _epochs_done(run):
    meta = run / "backup" / "training_metadata.json"
    try:
        return json.loads(meta.read_text())["epoch"] + 1
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow  # about 140 s on a 2-core CPU: three launches of two ranks
@torch_only
def test_a_killed_rank_stops_the_group_on_one_line_and_the_group_resumes_after_kill_9(embedded, tmp_path):
    """kvae fit --nproc 2 (gloo): kill -9 of one rank ends the command within a bounded time with one line
    naming the rank; kill -9 of the whole group (agent and ranks) leaves a run folder that resumes."""
    config = dict(EQUIVALENCE, train=dict(EQUIVALENCE["train"], epochs=5, steps_per_epoch=1000))
    (tmp_path / "run.json").write_text(json.dumps(config))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "kvae", "fit", "--nproc", "2", "--config", str(tmp_path / "run.json"),
           "--run", str(run)]
    env = _env(tmp_path)

    # 1. kill -9 the whole group (the launcher and both ranks) once an epoch is backed up
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for(lambda: _epochs_done(run) >= 1, proc, 240, "backed-up epoch")
    finally:
        for pid in [proc.pid] + _children(proc.pid):  # torchrun starts each rank in a session of its own
            os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    done = _epochs_done(run)
    assert 1 <= done < 5 and not (run / "model.keras").exists()

    # 2. the same command resumes; kill -9 rank 1 once it has trained an epoch more
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for(lambda: _epochs_done(run) > done, proc, 240, "resumed epoch")
        assert _epochs_done(run) < 5, "training ended before the kill; give it more steps"
        rank1 = _rank_pid(proc.pid, 1)
        assert rank1 is not None
        killed = time.monotonic()
        os.kill(rank1, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        stopped_after = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("kvae: error: rank 1 was killed by SIGKILL"), err[-3000:]
    assert "rerun the same command to resume" in last
    assert stopped_after < 60, stopped_after
    assert not _rank_pid(proc.pid, 0)

    # 3. and once more: the run finishes, each epoch in the history once
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert [int(r["epoch"]) for r in rows(run / "history.csv")] == list(range(5))
    assert (run / "model.keras").is_file() and not (run / "backup").exists()
    print(f"group stopped {stopped_after:.1f} s after rank 1 was killed")


# ------------------------------------------------------------------ GPU readiness, checked on CPU

HOST_READS = ("item", "numpy", "tolist", "cpu", "__float__", "__int__", "__bool__", "__index__", "__array__")


@torch_only
def test_no_host_read_from_a_batch_start_to_the_end_of_its_training_step(embedded, tmp_path, monkeypatch):
    """On a GPU, reading a tensor on the host (`.item()`, `.numpy()`, `.cpu()`, `float(t)`, `if t:`,
    `keras.ops.convert_to_numpy`) waits for the device. On the CPU the same calls are counted, on the
    main thread, from the start of each batch's callbacks to the end of its training step: the KL
    warm-up, the MR-STFT loss, the free-bits floor and the learned variance must not make any."""
    import threading

    import torch

    from kvae.models.vae import VAE

    main, window, reads = threading.get_ident(), {"open": False}, []

    def counted(name, original):
        def wrapper(*args, **kwargs):
            if window["open"] and threading.get_ident() == main:
                reads.append(name)
            return original(*args, **kwargs)
        return wrapper

    for name in HOST_READS:
        if hasattr(torch.Tensor, name):
            monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(keras.ops, "convert_to_numpy", counted("convert_to_numpy", keras.ops.convert_to_numpy))
    batch_begin = keras.callbacks.CallbackList.on_train_batch_begin

    def open_window(self, batch, logs=None):
        window["open"] = True
        return batch_begin(self, batch, logs)

    monkeypatch.setattr(keras.callbacks.CallbackList, "on_train_batch_begin", open_window)
    make = VAE.make_train_function
    steps = []

    def make_train_function(self, force=False):
        result = make(self, force)
        step = self.train_function

        def closed_after(data):
            try:
                return step(data)
            finally:
                window["open"] = False
                steps.append(len(reads))
        self.train_function = closed_after
        return result

    monkeypatch.setattr(VAE, "make_train_function", make_train_function)
    config = dict(EQUIVALENCE, model=dict(EQUIVALENCE["model"], loss_weights={"stft": 10.0}, free_bits=0.01),
                  train=dict(EQUIVALENCE["train"], epochs=1, steps_per_epoch=4, kl_schedule="log", kl_start=1e-4,
                             # The fused Adam (kvae.training.fast_adam) runs only where the weights are CPU
                             # tensors and reads the step count there (free: no device); on a GPU it leaves
                             # the update to Keras's, which is what runs here.
                             fused_adam=False))
    kvae.fit(config, run=tmp_path / "run", verbose=False)
    assert len(steps) == 4, steps  # the window closed after each of the 4 steps
    assert reads == [], f"host reads in the training step: {sorted(set(reads))} ({len(reads)} in {len(steps)} steps)"


# ------------------------------------------------------------------ jax: keras.distribution.DataParallel

@pytest.mark.skipif("jax" not in __import__("backends").INSTALLED, reason="jax is not installed")
def test_jax_data_parallel_over_two_host_devices_trains_as_one_device(embedded, tmp_path, monkeypatch):
    """XLA_FLAGS=--xla_force_host_platform_device_count=2: the weights are laid out over both devices,
    and training gives the weights one device gives (the same noise: jax's seeded draw), to rounding."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    config = dict(EQUIVALENCE, data=dict(EQUIVALENCE["data"], batch_size=8))
    result = run_on_backend("jax", "ddp_worker:jax_data_parallel_fit", config, tmp_path, timeout=600)
    assert result["devices"] == 2
    assert result["none"]["on_devices"] == 1 and result["data_parallel"]["on_devices"] == 2
    for a, b in zip(result["none"]["weights"], result["data_parallel"]["weights"]):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * max(np.abs(a).max(), 1e-3))
    np.testing.assert_allclose(result["data_parallel"]["loss"], result["none"]["loss"], rtol=1e-4)
    assert "data.batch_size: 7 does not split over the 2 devices" in result["odd_batch"]


# ------------------------------------------------------------------ mixed precision

@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_computes_in_half_and_keeps_the_loss_in_float32(embedded, tmp_path, precision):
    config = dict(EQUIVALENCE, model=dict(EQUIVALENCE["model"], loss_weights={"stft": 10.0}),
                  train=dict(EQUIVALENCE["train"], epochs=1, precision=precision))
    model, history = kvae.fit(config, run=tmp_path / "run", verbose=False)
    half = precision.split("_")[1]
    assert model.dtype_policy.name == precision and keras.config.dtype_policy().name == "float32"
    x = np.random.default_rng(0).normal(0, 0.1, (4, model.window)).astype("float32")
    decoded, z_mean, z_log_var = model(x)
    assert keras.backend.standardize_dtype(decoded.dtype) == half
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in model.weights)
    loss = model.compute_loss(x, y_pred=(decoded, z_mean, z_log_var), training=False)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert np.isfinite(history["loss"]).all()
    if precision == "mixed_float16":  # Keras scales the loss so float16 gradients do not underflow
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    loaded = kvae.load(tmp_path / "run")
    assert loaded.dtype_policy.name == precision


# ------------------------------------------------------------------ the prepared device check, on the CPU

@pytest.mark.slow  # about 90 s on a 2-core CPU: four fresh processes
@torch_only
def test_gpu_check_script_runs_on_the_cpu(embedded):
    env = dict(backend_env("torch"), KVAE_HOME=os.environ["KVAE_HOME"])
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu", "--quick"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torch 2." in out.stdout and "device: CPU" in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith(("plain PyTorch", "kvae.fit"))]
    assert len(rows) == 4 and not any("error" in r for r in rows), out.stdout
    for row in rows:  # steps/s, audio s/s, batch, peak MB: numbers, positive
        numbers = [float(v.replace(",", "")) for v in row.split()[-5:]]
        assert all(v > 0 for v in numbers), row


# ------------------------------------------------------------------ issue 23's learning curves, ready for a GPU

def test_gpu_curves_prepare_writes_a_small_wav_subset_and_never_its_source(tmp_path):
    import audio

    source = tmp_path / "corpus"
    for split, names in (("train", ["a", "b", "c"]), ("test", ["t1", "t2", "t3"])):
        for i, name in enumerate(names):
            audio.tone_wav(source / split / f"{name}.wav", seconds=2.0, freq=220.0 * (i + 1), rate=8000)
    (source / "train" / "broken.wav").write_bytes(b"RIFF....WAVE")
    script = [sys.executable, str(ROOT / "scripts" / "gpu_curves.py"), "prepare", "--source", str(source)]
    out = subprocess.run(script + ["--out", str(tmp_path / "subset"), "--test", "2", "--max-mb", "0.055"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "subset" / "test").iterdir()) == ["t1.wav", "t2.wav"]
    train = sorted(p.name for p in (tmp_path / "subset" / "train").iterdir())
    assert train == ["a.wav", "b.wav"]  # 12 kB each at 3000 Hz, 16 bits: c would pass 0.055 MB
    assert "skipped" in out.stdout and "broken.wav" in out.stdout
    rate, data = __import__("scipy.io.wavfile", fromlist=["read"]).read(tmp_path / "subset" / "train" / "a.wav")
    assert rate == 3000 and data.dtype == np.int16 and len(data) == 6000
    inside = subprocess.run(script + ["--out", str(source / "sub")], capture_output=True, text=True, timeout=300)
    assert inside.returncode == 2 and "must not be inside the source corpus" in inside.stderr
    assert not (source / "sub").exists()
