"""Where kvae keeps what it builds (``$KVAE_HOME``, else ``~/.cache/kvae``), and how it writes a file.

Every file kvae writes goes through `atomic_path`: it is written under a
temporary name in the same folder and renamed over the destination only
when complete, so an interrupted or failed write (a kill, a full disk)
leaves the old file or none, never half of one; the new file gets the
permissions the umask gives (not a temporary file's 0600).

What a command may write is decided in two places: here for any folder, in
`kvae.runs` for a run folder and its files:

- `check_output_folder`: an output folder is not a file;
- `OwnedFolder`: a folder a command fills (the gallery) is written only if
  the command created it or it holds the command's marker, and only the
  files the marker lists as written by it are replaced or deleted;
- `kvae.runs.check_output_file`: an output file is never a folder, never
  one of the command's inputs, never a model nor a run's own file, and never
  an existing file unless the caller says `overwrite`;
- `kvae.runs.run_lock`: one process at a time works in a run folder (fit,
  prior fit, tune); the second gets one line naming the first's PID.
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


def _writing(name):
    """Whether the process a temporary's name gives (see `temporary_name`) still runs kvae (this one included):
    its file is being written, not left by a kill. Where /proc is not there, no process counts as running."""
    pid = int(name.rsplit(".tmp", 1)[0].rsplit(".", 1)[-1].split("-")[0])
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
    except OSError:
        return False
    return b"python" in command or b"kvae" in command


def remove_stale_temporaries(folder):
    """Delete the temporary files (see `temporary_name`) a killed process left in `folder`; return how many.

    Every command that writes files sweeps the folders it writes to first; the
    temporaries of a kvae process still running (writing into the same
    folder) are left to it."""
    removed = 0
    with contextlib.suppress(OSError):
        for path in Path(folder).iterdir():
            if _TEMPORARY.match(path.name) and path.is_file() and not _writing(path.name):
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
    with atomic_path(folder / "piece.npy") as tmp:
        np.save(tmp, piece)
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
        self.written, self.info = set(), {}
        if self.marker.is_file():
            try:
                saved = json.loads(self.marker.read_text(encoding="utf-8"))
                self.written = set(saved["written"])
                self.info = {k: v for k, v in saved.items() if k not in ("owner", "written")}
            except (OSError, ValueError, KeyError, TypeError):
                raise KvaeError(f"{self.marker}: unreadable marker; delete the folder or choose another") from None
        elif self.path.is_dir() and any(self.path.iterdir()):
            raise KvaeError(f"{self.path}: exists and was not written by kvae {owner}; "
                            "choose a new or empty folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self._save()

    def _save(self):
        with atomic_path(self.marker) as tmp:
            tmp.write_text(json.dumps({"owner": f"kvae {self.owner}", "written": sorted(self.written), **self.info},
                                      indent=1), encoding="utf-8")

    def describe(self, **info):
        """Record more about the folder's content in its marker (what it was made from); saved at once."""
        self.info.update(info)
        self._save()

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
