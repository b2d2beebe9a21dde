"""Where kvae keeps what it builds (``$KVAE_HOME``, else ``~/.cache/kvae``), and how it writes files.

Every file kvae writes goes through `atomic_path`: it is written under a
temporary name in the same folder and renamed over the destination only
when complete, so an interrupted or failed write (a kill, a full disk)
leaves the old file or none, never half of one. `check_output_file` and
`check_output_folder` refuse an output that is an input of the command, or
a folder where a file is wanted (and the reverse), on one line.
"""

import contextlib
import errno
import os
import re
import uuid
from pathlib import Path

from kvae.errors import KvaeError


def kvae_home():
    """Return kvae's own folder (caches, the embedded dataset), creating nothing."""
    home = os.environ.get("KVAE_HOME")
    if home:
        return Path(home).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kvae"


def temporary_name(path):
    """A hidden, unique name beside `path` with the same suffix (writers that pick the format by suffix,
    such as `keras.Model.save` and matplotlib's `savefig`, still see it)."""
    path = Path(path)
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix  # Keras insists on these
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}")


_TEMPORARY = re.compile(r"^\..+\.\d+-[0-9a-f]{8}\.tmp(\.[^.]+)*$")


def remove_stale_temporaries(folder):
    """Delete the temporary files (see `temporary_name`) a killed process left in `folder`; return how many."""
    removed = 0
    with contextlib.suppress(OSError):
        for path in Path(folder).iterdir():
            if _TEMPORARY.match(path.name) and path.is_file():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(path, durable=False):
    """Yield a temporary path beside `path`; when the block ends without error, rename it onto `path`.

    On an error (or a KeyboardInterrupt) the temporary file is removed and
    `path` is left as it was. The parent folder is created. The rename makes
    the write all-or-nothing for a killed or failing process; `durable` also
    flushes the file to the disk first (fsync, milliseconds), so that a
    power cut cannot leave the new name on unwritten data: for what costs
    training time to redo (the model, the backup), not for each of many
    sample WAVs.

    Example:
    ```python
    with atomic_path(run / "model.keras") as tmp:
        model.save(tmp)
    ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if durable and tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Truncate before unlinking: a writer that still holds the file open (h5py after a failed
        # write, closed only when the exception is dropped) then has the room to close it cleanly,
        # where on a full disk it would fail again and crash the interpreter at exit.
        with contextlib.suppress(OSError):
            os.truncate(tmp, 0)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def disk_full(exc):
    """True when an `OSError` (h5py's included, which may say so only in its message) means the disk is full."""
    text = str(exc)
    return (getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text
            or "errno = 28" in text)


def save_error(exc, where, what, then="rerun the same command to resume"):
    """A one-line `KvaeError` for an `OSError` met while writing `where`.

    Args:
        exc: OSError. What the write raised.
        where: str or Path. The file or folder being written.
        what: str. What was being done ("saving the model", ...).
        then: str. What to do once the cause is fixed.
    """
    if disk_full(exc):
        return KvaeError(f"{where}: disk full while {what}; free space and {then}")
    text = str(exc)
    reason = getattr(exc, "strerror", None) or (text.strip().splitlines() or [type(exc).__name__])[0][:160]
    return KvaeError(f"{where}: cannot write while {what} ({reason}); fix that and {then}")


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path, inputs=(), example="out.wav"):
    """Refuse an output file that is a folder or one of the command's inputs (also through links).

    Args:
        path: str or Path. The output file.
        inputs: iterable of str or Path. The command's input files; a run
            folder among them stands for its `model.keras`.
        example: str. A file name suggested in the message.

    Raises:
        KvaeError: `path` is a folder (or ends with a separator), or is one of
            `inputs` (the same file, a symbolic or a hard link to it).
    """
    text = str(path)
    path = Path(path)
    if path.is_dir() or text.endswith((os.sep, "/")):
        raise KvaeError(f"{text}: is a folder; give a file name such as {example}")
    if not path.exists():
        return
    for other in inputs:
        other = Path(other)
        candidates = [other, other / "model.keras"] if other.is_dir() else [other]
        if any(_same_file(path, c) for c in candidates):
            raise KvaeError(f"{text}: is an input of this command ({other}); choose another output file")


def check_output_folder(path):
    """Refuse an output folder that exists as a file.

    Raises:
        KvaeError: `path` is an existing file (or a link to one).
    """
    if Path(path).exists() and not Path(path).is_dir():
        raise KvaeError(f"{path}: is a file, not a folder; give a folder name")
