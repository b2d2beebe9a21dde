"""A run's `history.csv`: the one reader, and the truncation a resumed run starts with.

The file is Keras's `CSVLogger` output (`kvae.training.callbacks.EpochHistory`
writes it): a header, then one row per epoch with its logged values. A run
that resumes at epoch `e` first drops the rows of epoch `e` and later
(`truncate_history`), so each epoch the model went through is listed once.
A history kvae cannot read (binary content, another program's header) is
set aside as `history.corrupt.csv` with one warning line, never a run that
cannot resume or finish; `read_history` reads it as empty.
"""

import csv
import math
import os

from kvae.paths import atomic_path


def read_history(path, before=math.inf):
    """Read a history file into `{column: [floats]}`, one value per epoch, in epoch order.

    A file that lists an epoch twice (written by an older kvae that appended
    after a resume or a divergence) gives that epoch's last row. A value that
    is not a number is NaN; a missing file gives `{}`.

    Args:
        path: str or Path. The `history.csv`.
        before: number. Only the epochs before this one (a resumed run
            replays the epochs it keeps). Defaults to all of them.
    """
    if not os.path.isfile(path):
        return {}
    try:
        return _read(path, before)
    except (OSError, UnicodeDecodeError, csv.Error):  # not a history kvae wrote: nothing known of it
        return {}


def _read(path, before):
    rows = {}
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f)):
            try:
                key = int(float(row.get("epoch")))
            except (TypeError, ValueError):
                key = ("row", i)  # no epoch column: keep every row
            if isinstance(key, int) and key >= before:
                continue
            rows.pop(key, None)
            rows[key] = row
    ordered = sorted(rows.items(), key=lambda item: (0, item[0]) if isinstance(item[0], int) else (1, item[0][1]))
    columns = {}
    for _, row in ordered:
        for key, value in row.items():
            if key is None:  # a ragged row's extra fields
                continue
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(float("nan"))
    return columns


def truncate_history(path, epoch):
    """Drop the rows of epoch `epoch` and later (and any cut-short row) from a history file, atomically.

    Returns:
        The number of rows kept.
    """
    if not os.path.isfile(path):
        return 0
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
        why = None if header and "epoch" in header and "loss" in header else "its header is not a kvae history's"
    except (UnicodeDecodeError, csv.Error) as exc:
        why = f"it is not text kvae wrote ({type(exc).__name__.replace('Error', '').lower() or 'csv'} error)"
    if why:
        return set_aside(path, why, epoch)
    at = header.index("epoch")

    def keep(row):
        try:
            return len(row) == len(header) and int(float(row[at])) < epoch
        except ValueError:
            return False

    kept = [row for row in rows if keep(row)]
    if not kept:
        os.remove(path)
    elif len(kept) != len(rows):
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(kept)
    return len(kept)


def set_aside(path, why, epoch):
    """Move a history kvae cannot read to `history.corrupt.csv` beside it (one warning line) and start anew: the
    epochs from `epoch` on are written again as they are trained (the model resumes from its backup). Returns 0."""
    import warnings
    from pathlib import Path

    from kvae.errors import KvaeNote

    path = Path(path)
    aside = path.with_name(f"{path.stem}.corrupt{path.suffix}")
    os.replace(path, aside)
    warnings.warn(f"{path}: {why}; set aside as {aside.name}, the history restarts at epoch {epoch + 1} (the "
                  "model resumes from its backup; the loss curves show the epochs from there)", KvaeNote, stacklevel=2)
    return 0
