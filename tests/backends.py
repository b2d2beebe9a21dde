"""Cross-backend checks, one mechanism: run a function, or whole test files, in a fresh Python on a Keras backend.

`run_on_backend("tensorflow", "model_checks:saved_model_outputs", path, z)` imports the module
(tests/ and the repository root are on its path), calls the function there with the arguments and
returns its result. Arguments and results cross as JSON, with numpy arrays (at any depth in lists,
tuples and dicts) in an .npz beside it; `Path`s become strings. A failure in the child fails the
calling test with the child's stderr tail.

Functions meant to run on the other side live in the helper modules (`model_checks`) or here,
so the child imports only what it needs (never a test module and its torch or auraloss).
"""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
INSTALLED = [b for b in ("torch", "tensorflow", "jax") if importlib.util.find_spec(b)]


def current_backend():
    """The backend this process runs (conftest set KERAS_BACKEND before Keras was imported)."""
    return os.environ.get("KERAS_BACKEND", "torch")


def other_backends():
    """The installed Keras backends other than this process's."""
    return [b for b in INSTALLED if b != current_backend()]


def backend_env(backend):
    """The environment of a child process on `backend`: kvae and the test helpers importable, no GPU."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(TESTS), env.get("PYTHONPATH")]))
    return env


def _tail(text, n=3000):
    return text[-n:] if text else ""


def run_on_backend(backend, function, *args, timeout=300, **kwargs):
    """Call `function` ("module:name") with `args` and `kwargs` in a fresh Python on `backend`.

    Returns:
        The function's result, arrays restored.

    Raises:
        AssertionError: the child failed (its stderr tail is the message) or ran another backend.
    """
    with tempfile.TemporaryDirectory(prefix="kvae-backend-") as folder:
        folder = Path(folder)
        _dump({"function": function, "args": list(args), "kwargs": kwargs}, folder / "call")
        proc = subprocess.run(
            [sys.executable, "-c", "import backends, sys; backends._serve(sys.argv[1])", str(folder)],
            cwd=ROOT, env=backend_env(backend), capture_output=True, text=True, timeout=timeout,
        )
        assert proc.returncode == 0, (
            f"{function} on {backend} failed (exit {proc.returncode}):\n{_tail(proc.stderr)}{_tail(proc.stdout, 1000)}"
        )
        reply = _load(folder / "result")
    assert reply["backend"] == backend, f"{function} ran on {reply['backend']}, not {backend}"
    return reply["result"]


def rerun_tests(backend, *files, timeout=600):
    """Run test files with pytest (stopping at the first failure) in a fresh Python on `backend`."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", *files], cwd=ROOT, env=backend_env(backend),
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- the child side


def _serve(folder):
    """Child entry point: set up like conftest, run the call in `folder`, write its result there."""
    from kvae._env import configure

    configure()
    folder = Path(folder)
    call = _load(folder / "call")
    module, name = call["function"].split(":")
    result = getattr(importlib.import_module(module), name)(*call["args"], **call["kwargs"])
    import keras

    _dump({"backend": keras.backend.backend(), "result": result}, folder / "result")


def _dump(value, stem):
    arrays = {}

    def pack(v):
        if isinstance(v, np.ndarray):
            arrays[f"a{len(arrays)}"] = v
            return {"__array__": f"a{len(arrays) - 1}"}
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [pack(x) for x in v]
        if isinstance(v, dict):
            return {str(k): pack(x) for k, x in v.items()}
        return v

    text = json.dumps(pack(value))
    np.savez(stem.with_suffix(".npz"), **arrays)
    stem.with_suffix(".json").write_text(text)


def _load(stem):
    with np.load(stem.with_suffix(".npz")) as npz:
        arrays = {k: npz[k] for k in npz.files}

    def unpack(v):
        if isinstance(v, dict):
            if set(v) == {"__array__"}:
                return arrays[v["__array__"]]
            return {k: unpack(x) for k, x in v.items()}
        if isinstance(v, list):
            return [unpack(x) for x in v]
        return v

    return unpack(json.loads(stem.with_suffix(".json").read_text()))


# ---------------------------------------------------------------- functions run on the other side


def call_serialized(serialized, *args):
    """Rebuild a Keras object from `keras.saving.serialize_keras_object` output and call it on `args`.

    Returns:
        Its output as a numpy array.
    """
    import keras

    importlib.import_module(serialized["module"])  # registers kvae's classes
    obj = keras.saving.deserialize_keras_object(serialized)
    return np.asarray(keras.ops.convert_to_numpy(obj(*args)))
