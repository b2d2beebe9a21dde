"""Process set-up done by entry points (the CLI, tests, benchmarks), never by library modules.

`configure()` must run before Keras or TensorFlow is imported: it picks the
Keras backend (torch unless the user chose one) and quietens TensorFlow's
start-up chatter while leaving real warnings visible.
"""

import contextlib
import logging
import os
import warnings


class _DropWhileLoopNotice(logging.Filter):
    """Drops tensorflow-io's 'while_loop ... back_prop=False is deprecated' notice."""

    def filter(self, record):
        return "while_loop" not in record.getMessage()


def _keep_freed_memory():
    """Let glibc keep big freed blocks instead of returning them to the OS.

    Keras's optimizers on torch make parameter-sized temporaries every step;
    by default glibc maps and unmaps each one, so every step page-faults them
    afresh (`benchmarks/train_benchmark.py` measures the difference; see
    docs/benchmarks.md). No-op off glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return
    if mallopt is None:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 1 << 30)
    mallopt(m_trim_threshold, 1 << 30)


def configure(default_backend="torch"):
    """Set `KERAS_BACKEND` (if unset) and silence TensorFlow's start-up noise.

    Args:
        default_backend: str. Backend used when `KERAS_BACKEND` is not set.
            Defaults to `"torch"`.

    Returns:
        The backend name in effect.
    """
    os.environ.setdefault("KERAS_BACKEND", default_backend)
    _keep_freed_memory()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").addFilter(_DropWhileLoopNotice())
    warnings.filterwarnings("ignore", message=r".*while_loop.*")
    return os.environ["KERAS_BACKEND"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt so that every `kvae.paths.atomic_path` removes its temporary file."""


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the block, SIGTERM (a `kill`, a scheduler's stop) raises `Terminated` in the main thread, where it
    would end the process at once and leave the temporaries of the files being written; outside the main
    thread, nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_AFTER_INTERRUPT = {
    "fit": "an interrupted fit resumes with the same --run",
    "tune": "an interrupted search resumes with the same --dir",
    "prior": "an interrupted prior fit resumes when run again",
    "prepare": "an interrupted prepare keeps every recording cached so far",
    "evaluate": "nothing was written; run it again",
    "gallery": "the files written so far are whole; run it again",
}


def interrupted(command, exc):
    """`(line, exit code)` for a command stopped by Ctrl-C (130) or SIGTERM (`Terminated`, 143)."""
    again = _AFTER_INTERRUPT.get(command, "no partial file is left")
    if isinstance(exc, Terminated):
        return f"kvae: stopped by SIGTERM ({again})", 143
    return f"kvae: interrupted ({again})", 130
