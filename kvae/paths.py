"""Where kvae keeps what it builds (``$KVAE_HOME``, else ``~/.cache/kvae``), and kvae's one output policy.

Every file kvae writes goes through `atomic_path`: it is written under a
temporary name in the same folder and renamed over the destination only
when complete, so an interrupted or failed write (a kill, a full disk)
leaves the old file or none, never half of one; the new file gets the
permissions the umask gives (not a temporary file's 0600).

What a command may write is decided here, in one place:

- `check_output_file`: an output file is never a folder, never one of the
  command's inputs, never a model (`*.keras`) nor a run's own file
  (`config.json`, `history.csv`, ... in a run folder), and never an
  existing file unless the caller says `overwrite`;
- `check_output_folder`: an output folder is not a file;
- `OwnedFolder`: a folder a command fills (the gallery) is written only if
  the command created it or it holds the command's marker, and only the
  files the marker lists as written by it are replaced or deleted;
- `run_lock`: one process at a time works in a run folder (fit, prior fit,
  tune); the second gets one line naming the first's PID.
"""

import contextlib
import errno
import json
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


RUN_FILES = frozenset({"config.json", "model.keras", "prior.keras", "history.csv", "latents.npz",
                       "loss_curves.png", "best.weights.h5"})
"""The files a run folder (or its `prior/` folder) owns: no other output may take their place."""


def is_run_folder(folder):
    """True for a folder `kvae fit` or `kvae prior fit` wrote: a `config.json` beside a model, backup or history."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and any(
        (folder / name).exists() for name in ("model.keras", "prior.keras", "backup", "history.csv", "latents.npz"))


def check_output_file(path, inputs=(), example="out.wav", overwrite=False):
    """Refuse an output file that would replace something it must not (one line each).

    Args:
        path: str or Path. The output file.
        inputs: iterable of str or Path. The command's input files; a run
            folder among them stands for its `model.keras`.
        example: str. A file name suggested in the message.
        overwrite: bool. Allow replacing an existing file that is neither an
            input, nor a model, nor a run's own file. Defaults to False.

    Raises:
        KvaeError: `path` is a folder (or ends with a separator), is one of
            `inputs` (the same file, a symbolic or a hard link to it), is a
            `.keras` model or a run's own file, or exists and `overwrite` is
            false.
    """
    text = str(path)
    path = Path(path)
    if path.is_dir() or text.endswith((os.sep, "/")):
        raise KvaeError(f"{text}: is a folder; give a file name such as {example}")
    for other in inputs:
        if other is None:
            continue
        other = Path(other)
        candidates = [other, other / "model.keras"] if other.is_dir() else [other]
        if path.exists() and any(_same_file(path, c) for c in candidates):
            raise KvaeError(f"{text}: is an input of this command ({other}); choose another output file")
    if path.name in RUN_FILES and is_run_folder(path.parent):
        raise KvaeError(f"{text}: is a file of the run folder {path.parent}; choose another output file")
    if not path.exists():
        return
    if path.name.endswith(".keras"):
        raise KvaeError(f"{text}: is a model; kvae never writes over one; choose another output file")
    if not overwrite:
        raise KvaeError(f"{text}: exists; choose another output file (or pass --overwrite)")


def check_output_folder(path):
    """Refuse an output folder that exists as a file.

    Raises:
        KvaeError: `path` is an existing file (or a link to one).
    """
    if Path(path).exists() and not Path(path).is_dir():
        raise KvaeError(f"{path}: is a file, not a folder; give a folder name")


class OwnedFolder:
    """A folder a command fills with files of its own, and the marker that says which ones.

    The folder is used only if it is new, empty, or holds this owner's
    marker (`.kvae-<owner>.json`, listing every file written into it,
    relative to it). A file is recorded in the marker before it is written,
    so an interrupted command still owns what it left; an existing file not
    in the marker is never replaced, and `remove` deletes only recorded
    files. So a command never overwrites nor deletes what it did not write.

    Args:
        path: str or Path. The folder.
        owner: str. The command ("gallery"), in the marker's name and in messages.

    Raises:
        KvaeError: `path` is a file, or a folder with other content and no marker.
    """

    def __init__(self, path, owner):
        self.path = Path(path)
        self.owner = owner
        self.marker = self.path / f".kvae-{owner}.json"
        if self.path.exists() and not self.path.is_dir():
            raise KvaeError(f"{self.path}: is a file, not a folder; give a folder name")
        self.written = set()
        if self.marker.is_file():
            try:
                self.written = set(json.loads(self.marker.read_text(encoding="utf-8"))["written"])
            except (OSError, ValueError, KeyError, TypeError):
                raise KvaeError(f"{self.marker}: unreadable marker; delete the folder or choose another") from None
        elif self.path.is_dir() and any(self.path.iterdir()):
            raise KvaeError(f"{self.path}: exists and was not written by kvae {owner}; "
                            "choose a new or empty folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self._save()

    def _save(self):
        with atomic_path(self.marker) as tmp:
            tmp.write_text(json.dumps({"owner": f"kvae {self.owner}", "written": sorted(self.written)}, indent=1),
                           encoding="utf-8")

    def file(self, relative):
        """The path of `relative` inside the folder, recorded as this owner's before it is written.

        Raises:
            KvaeError: the file exists and was not written by this owner.
        """
        relative = Path(relative).as_posix()
        path = self.path / relative
        if relative not in self.written:
            if path.exists():
                raise KvaeError(f"{path}: was not written by kvae {self.owner}; it is left as it is "
                                "(move it away or choose another folder)")
            self.written.add(relative)
            self._save()
        return path

    def remove(self, relative):
        """Delete a file this owner wrote (nothing else); forget it."""
        relative = Path(relative).as_posix()
        if relative in self.written:
            with contextlib.suppress(FileNotFoundError):
                (self.path / relative).unlink()
            self.written.discard(relative)
            self._save()

    def owned(self, folder=""):
        """The recorded files directly inside `folder` (relative to this folder), as relative paths."""
        prefix = f"{Path(folder).as_posix()}/" if folder else ""
        return sorted(r for r in self.written if r.startswith(prefix) and "/" not in r[len(prefix):])


LOCK_FILE = ".kvae.lock"


@contextlib.contextmanager
def run_lock(folder, command):
    """Hold an advisory lock on a run (or search) folder for as long as the block runs.

    The lock is `fcntl.flock` on `<folder>/.kvae.lock`, released by the
    operating system when the process ends however it ends (no stale lock
    after a kill). The file keeps the holder's PID and command, for the
    second process's message. On systems without `fcntl` it does nothing.

    Raises:
        KvaeError: another process holds the folder ("in use by process PID (kvae fit)").
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        yield
        return
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise save_error(exc, folder, "creating the run folder", then="run the command again") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise KvaeError(f"{folder}: in use by {holder}; wait for it to end or choose another folder") from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} (kvae {command})".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_text(path, text, durable=False):
    """Write `text` (UTF-8) to `path` through `atomic_path`; return the path."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def check_free_space(folder, needed, what, advice):
    """Refuse, before the work starts, output that will not fit on the disk (one line).

    Args:
        folder: str or Path. Where it goes (the nearest existing parent is measured).
        needed: int. Bytes.
        what: str. What the bytes are ("of audio to write").
        advice: str. What to do instead.
    """
    import shutil

    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed > free:
        raise KvaeError(f"{folder}: {needed / 2**20:,.1f} MiB {what}, {free / 2**20:,.1f} MiB free; "
                        f"free space or {advice}")
