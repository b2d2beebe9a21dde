"""kvae's reaches into Keras internals: all in kvae/_keras_private.py, version-checked, each with a fallback
or a one-line error; the jax KL warm-up hook (the step count read from the traced optimizer state) works."""

import math
import re
from pathlib import Path

import keras
import pytest

from backends import INSTALLED, current_backend, run_on_backend
from kvae import _keras_private
from model_checks import kl_warmup_beta, rate_controlled_beta

PACKAGE = Path(__file__).resolve().parents[1] / "kvae"
SOURCE = re.compile(r"^\s*(from|import)\s+keras\.src", re.MULTILINE)


def keras_private_names():
    """Every underscored (not dunder) name of the Keras classes kvae uses or subclasses, and of their instances."""
    objects = [keras.callbacks.BackupAndRestore("unused-backup"), keras.callbacks.CSVLogger("unused.csv"),
               keras.callbacks.ModelCheckpoint("unused.weights.h5", save_weights_only=True),
               keras.callbacks.TerminateOnNaN(), keras.callbacks.Callback(), keras.optimizers.Adam(),
               keras.metrics.Mean(), keras.layers.Dense(2), keras.Model(), keras.utils.PyDataset(),
               keras.random.SeedGenerator(0), keras.losses.Loss()]
    names = set()
    for obj in objects:
        names |= {n for n in set(dir(obj)) | set(vars(obj)) if n.startswith("_") and not n.startswith("__")}
    return names


def test_only_the_fence_reaches_into_keras_internals():
    # a keras.src import, or a Keras-private name read (`x._name`) or overridden (a method `def _name`)
    names = keras_private_names()
    assert {"_save_model", "_weights_path", "_parallel_update_step", "_compute_loss"} <= names
    reaching = {}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        used = {m.group(1) or m.group(2) for m in re.finditer(r"\.(_[A-Za-z]\w*)|^[ \t]+def (_[A-Za-z]\w*)", text,
                                                              re.MULTILINE)} & names
        if used or SOURCE.search(text):
            reaching[str(path.relative_to(PACKAGE))] = sorted(used)
    assert list(reaching) == ["_keras_private.py"], reaching
    assert _keras_private.supported()  # setup.cfg pins the version the fence was checked against


@pytest.mark.skipif(current_backend() != "torch", reason="the fused Adam is a torch fast path")
def test_another_keras_version_falls_back_to_the_stock_paths(monkeypatch):
    from kvae.training.fast_adam import fuse_adam

    assert _keras_private.adam_internals(keras.optimizers.Adam(1e-3)) is not None
    monkeypatch.setattr(keras, "version", lambda: "3.16.0")
    assert not _keras_private.supported()
    assert _keras_private.set_global_seed(0) is False  # seed_everything then pays for keras.utils.set_random_seed
    optimizer = keras.optimizers.Adam(1e-3)
    assert fuse_adam(optimizer) is False and "fuse_adam" not in optimizer._parallel_update_step.__qualname__


@pytest.mark.parametrize("backend", INSTALLED)
def test_the_kl_warmup_reads_the_step_inside_the_step_on_every_backend(backend):
    # 3 steps of a linear warm-up over 10: the last step (step count 2) set beta to 0.2
    result = kl_warmup_beta(3) if backend == current_backend() else run_on_backend(backend,
                                                                                   "model_checks:kl_warmup_beta", 3)
    assert result["iterations"] == 3
    assert result["beta"] == pytest.approx(0.2, abs=1e-6)


@pytest.mark.parametrize("backend", INSTALLED)
def test_the_rate_controller_takes_over_from_the_warmup_on_every_backend(backend):
    # a warm-up over 2 steps (0, 0.5, then 1.0 at step 2), then two controlled steps, each exp(-0.1) lower
    result = rate_controlled_beta(5, 2) if backend == current_backend() else run_on_backend(
        backend, "model_checks:rate_controlled_beta", 5, 2)
    assert result["beta"] == pytest.approx(math.exp(-0.2), rel=1e-5)
