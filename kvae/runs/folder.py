"""A run folder and every file in it, by name: the one place kvae spells them.

`kvae fit --run DIR` writes::

    config.json        the fully resolved config (a run can be redone from it)
    model.keras        the trained model (weights, config, sample rate)
    history.csv        one row per epoch the model went through (`kvae.runs.history`)
    loss_curves.png    total, reconstruction and KL against epoch
    samples/           sample_<i>.wav and sample_<i>.png (waveform + spectrogram)
    gallery/           index.html, to listen to the run (`kvae gallery`)
    backup/            the training state while training runs and until
                       everything above is written; an interrupted
                       `kvae fit --run DIR` resumes from it
    .kvae.lock         held while a process works in the folder (`run_lock`)

`kvae prior fit RUN` writes `RUN/prior/`, a folder of the same kind
(`RunFolder.prior`): its `config.json`, `latents.npz`, `model.keras` (the VAE
with its latent mixture), `prior.keras`, `history.csv`, `loss_curves.png`
and, while it trains, `backup/` and `best.weights.h5`. `kvae evaluate` may
add `eval.json`, `kvae prior fit --pieces` the folder `pieces/`, and a
search's trial folders hold a history and a backup.

Every file is written under a temporary name and renamed into place, so a
killed or failed write never leaves half a file; `RunFolder.sweep` deletes
the temporaries a killed process left.
"""

import contextlib
import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

from kvae.errors import KvaeError
from kvae.paths import remove_stale_temporaries, save_error

CONFIG = "config.json"
MODEL = "model.keras"
HISTORY = "history.csv"
CURVES = "loss_curves.png"
SAMPLES = "samples"
GALLERY = "gallery"
BACKUP = "backup"
EVALUATION = "eval.json"
PIECES = "pieces"
PRIOR = "prior"
PRIOR_MODEL = "prior.keras"
LATENTS = "latents.npz"
BEST_WEIGHTS = "best.weights.h5"
LOCK_FILE = ".kvae.lock"

RUN_FILES = frozenset({CONFIG, MODEL, PRIOR_MODEL, HISTORY, LATENTS, CURVES, BEST_WEIGHTS})
"""The files a run folder (or its `prior/` folder) owns: no other output may take their place."""

RESUMABLE = {
    # what it prints and writes beside the model, how it reads and waits: any run or search may change them
    ("data", "cache"): "any",
    ("data", "workers"): "any",
    ("train", "verbose"): "any",
    ("train", "n_samples"): "any",
    ("train", "gallery"): "any",
    ("train", "tensorboard"): "any",
    ("train", "tensorboard_every"): "any",
    ("train", "distributed_timeout"): "any",
    # how long it trains and where its data is: a run may go on longer or find its data moved, while a
    # search's trials must stay comparable with the trials it has run
    ("train", "epochs"): "run",
    ("train", "max_minutes"): "run",
    ("data", "path"): "run",
}
"""The one table of the settings that may change when a run or a search resumes, and which of the two may."""


def resumable(section, key, kind="run"):
    """Whether `section.key` may change when a `kind` ("run" or "search") resumes (see `RESUMABLE`)."""
    return RESUMABLE.get((section, key)) in ("any", kind)


def comparable(config, kind="search"):
    """A copy of a resolved config without its name and the settings a `kind` may change on resuming: two
    configs whose comparable forms are equal describe the same run (or search)."""
    out = json.loads(json.dumps(config))
    out.pop("name", None)
    for section, key in RESUMABLE:
        if resumable(section, key, kind):
            out.get(section, {}).pop(key, None)
    return out


def is_run_folder(folder):
    """True for a folder `kvae fit` or `kvae prior fit` wrote: a `config.json` beside a model, backup or history."""
    folder = Path(folder)
    return (folder / CONFIG).is_file() and any(
        (folder / name).exists() for name in (MODEL, PRIOR_MODEL, BACKUP, HISTORY, LATENTS))


def complete_model(path):
    """True when `path` looks like a complete `.keras` archive (a zip holding its config and weights)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return "config.json" in names and any(n.endswith(".h5") for n in names)  # the archive's own members


class RunFolder:
    """A run folder (or a prior's, or a search trial's): its files by name, its lock, its resume check.

    Args:
        path: str or Path. The folder (it need not exist yet).

    Example:
    ```python
    run = RunFolder("runs/conv1d")
    model = kvae.load(run.model)
    prior = kvae.load(run.prior.prior_model)
    ```
    """

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self):
        return str(self.path)

    config = property(lambda self: self.path / CONFIG, doc="`config.json`: the resolved config.")
    model = property(lambda self: self.path / MODEL, doc="`model.keras`: the trained model.")
    history = property(lambda self: self.path / HISTORY, doc="`history.csv`: one row per epoch.")
    curves = property(lambda self: self.path / CURVES, doc="`loss_curves.png`.")
    samples = property(lambda self: self.path / SAMPLES, doc="`samples/`: prior samples as WAV and PNG.")
    gallery = property(lambda self: self.path / GALLERY, doc="`gallery/`: the run's listening page.")
    backup = property(lambda self: self.path / BACKUP, doc="`backup/`: what an interrupted run resumes from.")
    evaluation = property(lambda self: self.path / EVALUATION, doc="`eval.json`: a `kvae evaluate` report.")
    pieces = property(lambda self: self.path / PIECES, doc="`pieces/`: generated pieces.")
    prior_model = property(lambda self: self.path / PRIOR_MODEL, doc="`prior.keras`: the autoregressive prior.")
    latents = property(lambda self: self.path / LATENTS, doc="`latents.npz`: the encoded frames of a prior fit.")
    best_weights = property(lambda self: self.path / BEST_WEIGHTS, doc="`best.weights.h5`: a prior's best epoch.")

    @property
    def prior(self):
        """The run's prior folder, `prior/`, a `RunFolder` of its own."""
        return RunFolder(self.path / PRIOR)

    def is_run(self):
        """True when `kvae fit` or `kvae prior fit` wrote this folder (`is_run_folder`)."""
        return is_run_folder(self.path)

    def read_config(self, what="run config"):
        """The saved `config.json` as a dict, or None when there is none.

        Raises:
            KvaeError: the file is there but unreadable.
        """
        if not self.config.is_file():
            return None
        try:
            return json.loads(self.config.read_text())
        except (OSError, ValueError) as exc:
            raise KvaeError(f"{self.config}: unreadable {what} ({exc})") from None

    def lock(self, command):
        """`run_lock` on this folder for `command` ("fit", "prior fit", ...)."""
        return run_lock(self.path, command)

    def sweep(self):
        """Delete the temporary files a killed process left in the folder, its backup and its samples."""
        return sum(remove_stale_temporaries(folder) for folder in (self.path, self.backup, self.samples))

    def drop_backup(self):
        """Delete `backup/`: once everything is saved, or when it holds a diverged state."""
        shutil.rmtree(self.backup, ignore_errors=True)

    def check_model(self):
        """Refuse a finished run, and a run whose model is unreadable with no backup to resume from."""
        if self.model.exists() and not self.backup.exists():
            if self.model.is_dir():
                raise KvaeError(f"{self.model}: is a folder; move it away or choose another --run")
            if complete_model(self.model):
                raise KvaeError(f"{self.path}: run folder already holds a finished model; choose another --run")
            raise KvaeError(f"{self.model}: unreadable model (a save cut short?) and no backup/ to resume from; "
                            "delete it and rerun the same command to train the run again")

    def check_resume(self, config, upgrade=None):
        """Refuse to resume a backup with settings it was not trained with, before anything is written.

        Only the settings `RESUMABLE` lets a run change may differ. The saved
        `config.json` stays as it was, so the plain `kvae fit --run DIR` still resumes.

        Args:
            config: dict. The resolved config the run would resume with.
            upgrade: callable or None. Puts an older kvae's saved config under
                today's names first (`kvae.config.upgrade`), quietly.

        Raises:
            KvaeError: a setting differs; the message names the first three.
        """
        if not self.backup.exists() or not self.config.is_file():
            return
        try:
            before = json.loads(self.config.read_text())
        except (OSError, ValueError):
            return  # unreadable: the backup decides (RunBackup says what to do)
        if upgrade is not None:
            with warnings.catch_warnings():  # the config was read, and said so, when it was resolved
                warnings.simplefilter("ignore")
                before = upgrade(before)
        changed = []
        for section in ("data", "model", "train"):
            old, new = before.get(section), config.get(section)
            if not isinstance(old, dict) or not isinstance(new, dict):
                continue
            for key in sorted(set(old) & set(new)):  # a key only one side knows is a default of another version
                if not resumable(section, key, "run") and old[key] != new[key]:
                    changed.append(f"{section}.{key} {old.get(key)!r} -> {new.get(key)!r}")
        if changed:
            raise KvaeError(f"{self.path}: an interrupted run resumes with the settings it was trained with, but "
                            f"{', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}; drop those --set (or the other "
                            "--config) (only train.epochs, train.max_minutes and where the data is may change) or choose "
                            "another --run")


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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
        candidates = [other, other / MODEL] if other.is_dir() else [other]
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
    if folder.exists() and not folder.is_dir():
        raise KvaeError(f"{folder}: is a file, not a run folder; give --run a folder (new, or one kvae fit wrote)")
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
