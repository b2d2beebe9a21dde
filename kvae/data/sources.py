"""Find the recordings of a dataset: a MusicNet tree (either published layout) or any folder of audio.

MusicNet's original release keeps its audio in ``ROOT/musicnet/{train,test}_data``
and the Kaggle edition one level deeper, in ``ROOT/musicnet/musicnet/...``; both
have ``ROOT/musicnet_metadata.csv``. Any other folder is searched recursively
for audio files; files under a folder named ``test``, ``valid`` or
``validation`` form the held-out split.
"""

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from kvae.data.audio_io import AUDIO_SUFFIXES, file_problem, os_reason
from kvae.errors import KvaeError

METADATA_FILE = "musicnet_metadata.csv"
METADATA_COLUMNS = (
    "id", "composer", "composition", "movement", "ensemble",
    "source", "transcriber", "catalog_name", "seconds",
)
LABEL_COLUMNS = (
    "start_time", "end_time", "instrument", "note", "start_beat", "end_beat", "note_value",
)
MUSICNET_TEST_IDS = ("1759", "1819", "2106", "2191", "2298", "2303", "2382", "2416", "2556", "2628")
_HELD_OUT_FOLDERS = {"test", "valid", "validation", "val"}


@dataclass
class Recording:
    """One source recording.

    Attributes:
        key: str. Stable identifier: the MusicNet id, or the path relative to the root.
        path: Path. The audio file.
        split: str. `"train"` or `"test"`.
        metadata: dict. The recording's metadata row, if any.
    """

    key: str
    path: Path
    split: str
    metadata: dict = field(default_factory=dict)


@dataclass
class Source:
    """The recordings found under a root, and what was noticed on the way.

    Attributes:
        root: Path. The folder the user pointed at.
        layout: str. `"musicnet"`, `"musicnet-kaggle"` or `"folder"`.
        recordings: list of Recording.
        notes: list of str. One-line remarks for the summary (e.g. no metadata).
        skipped: list of `(path, reason)`. What the search could not use: a
            folder that cannot be listed, an audio file name that is a
            symlink loop or a broken link, ...
    """

    root: Path
    layout: str
    recordings: list
    notes: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


def read_metadata(path):
    """Read a MusicNet metadata CSV into `{id: row}`.

    Args:
        path: str or Path. The `musicnet_metadata.csv` file.

    Returns:
        A dict from id (str) to the row (dict of str, with `seconds` as int).

    Raises:
        KvaeError: the file is missing, unreadable or lacks expected columns.
    """
    path = Path(path)
    if not path.is_file():
        raise KvaeError(f"{path}: metadata CSV not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM (Excel) is not part of "id"
            reader = csv.DictReader(f)
            columns = tuple(reader.fieldnames or ())
            missing = [c for c in METADATA_COLUMNS if c not in columns]
            if missing:
                raise KvaeError(
                    f"{path}: unexpected metadata columns: missing {', '.join(missing)} "
                    f"(found {', '.join(columns) or 'none'})"
                )
            rows = {}
            for line, row in enumerate(reader, start=2):
                try:
                    row["seconds"] = int(row["seconds"])
                except (TypeError, ValueError):
                    raise KvaeError(f"{path}: line {line}: seconds is not an integer") from None
                rows[str(row["id"]).strip()] = row
    except UnicodeDecodeError as exc:
        raise KvaeError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return rows


def _musicnet_data_dir(root):
    """Return (data_dir, layout) if root is a MusicNet tree, else (None, None)."""
    for data_dir, layout in (
        (root / "musicnet" / "musicnet", "musicnet-kaggle"),
        (root / "musicnet", "musicnet"),
        (root, "musicnet"),
    ):
        if (data_dir / "train_data").is_dir() or (data_dir / "test_data").is_dir():
            return data_dir, layout
    return None, None


def _audio_files(folder, skipped):
    """The audio files under `folder`, sorted; what cannot be searched or used is added to `skipped`.

    Symlinked folders are followed, each real folder once (a link back to a
    folder being searched, or already searched, is skipped with that reason).
    An entry with an audio suffix that is no readable regular file (a
    symlink loop, a broken link, a socket), and any symlink that leads
    nowhere, is skipped with its reason; other files are not audio and are
    passed over.

    Raises:
        KvaeError: `folder` itself cannot be listed.
    """
    found = []
    searched = {}  # (st_dev, st_ino) -> the path it was searched as
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            st = os.stat(current)
            key = (st.st_dev, st.st_ino)
            if key in searched:
                skipped.append((str(current), f"leads to the folder {searched[key]}, which is searched already"))
                continue
            searched[key] = current
            with os.scandir(current) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if current == folder:
                raise KvaeError(f"{folder}: cannot list the data folder ({os_reason(exc)})") from None
            skipped.append((str(current), f"cannot list this folder ({os_reason(exc)}); its audio is not used"))
            continue
        folders = []
        for entry in children:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                folders.append(path)
            elif path.suffix.lower() in AUDIO_SUFFIXES:
                problem = file_problem(path)
                if problem:
                    skipped.append((str(path), problem))
                else:
                    found.append(path)
            elif entry.is_symlink() and not os.path.exists(path):  # it may have led to a folder of audio
                skipped.append((str(path), file_problem(path)))
        stack.extend(reversed(folders))
    return sorted(found)


def _select(recordings, select, metadata_path):
    """Keep recordings whose metadata matches every `{field: value or [values]}` in select."""
    if not select:
        return recordings
    kept = []
    for rec in recordings:
        ok = True
        for key, wanted in select.items():
            if key == "id":
                values = {str(v) for v in (wanted if isinstance(wanted, (list, tuple)) else [wanted])}
                ok &= rec.key in values
                continue
            if not rec.metadata:
                raise KvaeError(
                    f"{rec.path}: no metadata row for id {rec.key} in {metadata_path}, "
                    f"cannot select by {key}"
                )
            if key not in rec.metadata:
                raise KvaeError(f"select: unknown metadata field '{key}' (fields: {', '.join(METADATA_COLUMNS)})")
            values = [str(v).lower() for v in (wanted if isinstance(wanted, (list, tuple)) else [wanted])]
            ok &= str(rec.metadata[key]).lower() in values
        if ok:
            kept.append(rec)
    return kept


def find_recordings(root, select=None):
    """Find the recordings under a dataset root.

    Args:
        root: str or Path. A MusicNet root (original or Kaggle layout) or any
            folder of WAV/FLAC/OGG/MP3 files.
        select: dict or None. MusicNet metadata filter, e.g.
            `{"ensemble": "Solo Piano"}`, `{"composer": ["Bach", "Mozart"]}` or
            `{"id": [1727, 1728]}`; values match case-insensitively. Needs the
            metadata CSV for anything but `id`.

    Returns:
        A `Source`.

    Raises:
        KvaeError: the root is missing, not a folder, cannot be listed, or
            holds no audio, or the selection cannot be applied or matches
            nothing. Subfolders that cannot be listed and audio files that
            cannot be opened are not errors: they are in `Source.skipped`.
    """
    root = Path(root).expanduser()
    try:
        if not root.exists():
            raise KvaeError(f"{root}: data path does not exist")
        if not root.is_dir():
            raise KvaeError(f"{root}: data path is not a folder")
        with os.scandir(root):
            pass
        data_dir, layout = _musicnet_data_dir(root)
    except OSError as exc:  # e.g. a folder this user may not list
        raise KvaeError(f"{exc.filename or root}: cannot list the data folder ({os_reason(exc)})") from None
    notes, skipped = [], []
    if data_dir is not None:
        metadata_path = root / METADATA_FILE
        if not metadata_path.is_file() and (data_dir / METADATA_FILE).is_file():
            metadata_path = data_dir / METADATA_FILE
        metadata = {}
        if metadata_path.is_file():
            metadata = read_metadata(metadata_path)
        elif select and set(select) - {"id"}:
            raise KvaeError(f"{metadata_path}: metadata CSV not found, cannot select by {', '.join(select)}")
        else:
            notes.append(f"{metadata_path}: metadata CSV not found; recordings used without metadata")
        recordings = []
        for split in ("train", "test"):
            folder = data_dir / f"{split}_data"
            if folder.is_dir():
                for path in _audio_files(folder, skipped):
                    recordings.append(Recording(path.stem, path, split, metadata.get(path.stem, {})))
    else:
        layout, metadata_path = "folder", None
        if select and set(select) - {"id"}:
            raise KvaeError(f"{root}: not a MusicNet tree, cannot select by {', '.join(select)}")
        files = [p.relative_to(root) for p in _audio_files(root, skipped)]
        stems = [rel.with_suffix("").as_posix() for rel in files]
        recordings = []
        for rel, stem in zip(files, stems):
            held_out = any(part.lower() in _HELD_OUT_FOLDERS for part in rel.parts[:-1])
            key = stem if stems.count(stem) == 1 else rel.as_posix()  # a.wav and a.flac stay apart
            recordings.append(Recording(key, root / rel, "test" if held_out else "train"))
    if not recordings:
        if skipped:
            reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
            raise KvaeError(f"{root}: no usable audio found ({len(skipped)} skipped: {reasons})")
        if not any(root.iterdir()):
            raise KvaeError(f"{root}: empty folder")
        raise KvaeError(f"{root}: no audio found (looked for {', '.join(AUDIO_SUFFIXES)})")
    chosen = _select(recordings, select, metadata_path)
    if not chosen:
        raise KvaeError(f"{root}: no recording matches select={select}")
    return Source(root, layout, chosen, notes, skipped)
