"""Process set-up done by entry points (the CLI, tests, benchmarks), never by library modules.

`configure()` must run before Keras or TensorFlow is imported: it picks the
Keras backend (torch unless the user chose one) and quietens TensorFlow's
start-up chatter while leaving real warnings visible.
"""

import logging
import os
import warnings


class _DropWhileLoopNotice(logging.Filter):
    """Drops tensorflow-io's 'while_loop ... back_prop=False is deprecated' notice."""

    def filter(self, record):
        return "while_loop" not in record.getMessage()


def configure(default_backend="torch"):
    """Set `KERAS_BACKEND` (if unset) and silence TensorFlow's start-up noise.

    Args:
        default_backend: str. Backend used when `KERAS_BACKEND` is not set.
            Defaults to `"torch"`.

    Returns:
        The backend name in effect.
    """
    os.environ.setdefault("KERAS_BACKEND", default_backend)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").addFilter(_DropWhileLoopNotice())
    warnings.filterwarnings("ignore", message=r".*while_loop.*")
    return os.environ["KERAS_BACKEND"]
