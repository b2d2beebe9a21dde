"""A run's `history.csv`: the one reader, and the truncation a resumed run starts with.

The file is Keras's `CSVLogger` output (`kvae.training.callbacks.EpochHistory`
writes it): a header, then one row per epoch with its logged values. A run
that resumes at epoch `e` first drops the rows of epoch `e` and later
(`truncate_history`), so each epoch the model went through is listed once.
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
    rows = {}
    with open(path, newline="") as f:
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
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    if not header or "epoch" not in header:
        os.remove(path)
        return 0
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
