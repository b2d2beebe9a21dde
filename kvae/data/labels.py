"""Labels of recordings, for a conditioned latent prior (`kvae prior fit RUN --condition SOURCE`).

A condition's source is one of:

- a metadata column of a MusicNet-layout dataset (`composer`, `ensemble`, ...,
  any column of its `musicnet_metadata.csv`): each recording's value;
- `file`: each recording is its own label (its key: the MusicNet id, or the
  path under the data folder without the suffix), for any folder;
- a CSV file (a name ending in `.csv`) with columns `file` and `label`: `file`
  names a recording by its key, its path under the data folder (with or
  without the suffix) or, where that is unambiguous, its file name.

A recording without a label (an empty metadata cell, no row in the CSV) is
counted and reported by `label_summary`; its audio trains only the
unconditional side of the prior.
"""

import csv
from pathlib import Path

from kvae.errors import KvaeError

FILE = "file"


def is_csv(condition):
    """Whether a condition names a CSV file of labels."""
    return str(condition).lower().endswith(".csv")


def normalize_condition(condition):
    """The condition as saved with a prior: a CSV's path made absolute (a resumed fit finds it from anywhere)."""
    condition = str(condition or "").strip()
    return str(Path(condition).expanduser().resolve()) if is_csv(condition) else condition


def read_label_csv(path):
    """`[(file, label), ...]` from a CSV with columns `file` and `label` (other columns are ignored).

    Raises:
        KvaeError: the file is missing, unreadable, not UTF-8 or lacks a column.
    """
    path = Path(path)
    if not path.is_file():
        raise KvaeError(f"--condition {path}: label CSV not found (give a file with columns file,label)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or ()]
            if "file" not in columns or "label" not in columns:
                found = ", ".join(columns) or "none"
                raise KvaeError(f"--condition {path}: expected columns file,label (found {found})")
            reader.fieldnames = columns
            return [(str(row["file"] or "").strip(), str(row["label"] or "").strip()) for row in reader]
    except UnicodeDecodeError as exc:
        raise KvaeError(f"--condition {path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise KvaeError(f"--condition {path}: cannot read it ({exc.strerror or exc})") from None


def _csv_labels(keys, path):
    """`({key: label}, rows naming no recording)` of a label CSV."""
    known = set(keys)
    by_name = {}
    for key in keys:
        by_name.setdefault(Path(key).name, []).append(key)
    labels, unmatched = {}, []
    for name, label in read_label_csv(path):
        plain = Path(name).with_suffix("").as_posix() if Path(name).suffix else name
        stem = Path(plain).name
        key = next((k for k in (name, plain) if k in known), None)
        if key is None and len(by_name.get(stem, ())) == 1:
            key = by_name[stem][0]
        if key is None:
            unmatched.append(name)
        elif label:
            labels[key] = label
    return labels, unmatched


def recording_labels(corpus, condition):
    """`({key: label or None} for every recording of the corpus, notes)` for a condition source (module docstring).

    Raises:
        KvaeError: a metadata column the data does not have (its columns listed), metadata asked of a
            folder that has none, or a bad CSV.
    """
    condition = str(condition).strip()
    keys = [e.key for e in corpus.entries]
    notes = []
    if condition == FILE:
        return {k: k for k in keys}, notes
    if is_csv(condition):
        labels, unmatched = _csv_labels(keys, condition)
        if unmatched:
            notes.append(f"{len(unmatched)} rows of {Path(condition).name} name no recording of the data "
                         f"(first: {unmatched[0]})")
        return {k: labels.get(k) for k in keys}, notes
    columns = sorted({c for e in corpus.entries for c in e.metadata} - {"id"})
    if not columns:
        raise KvaeError(f"--condition {condition}: the data has no metadata (a MusicNet layout's "
                        f"musicnet_metadata.csv); for any folder give --condition file or a CSV of file,label")
    if condition not in columns:
        raise KvaeError(f"--condition {condition}: not a metadata column (columns: {', '.join(columns)}; "
                        f"or file, or a CSV of file,label)")
    return {e.key: (str(e.metadata.get(condition, "")).strip() or None) for e in corpus.entries}, notes


def label_summary(condition, labels, keys):
    """One line: how many labels the training sequences of `keys` carry, and how many recordings have none."""
    name = Path(condition).name if is_csv(condition) else condition
    values = sorted({labels[k] for k in keys if labels.get(k)})
    missing = sorted({k for k in keys if not labels.get(k)})
    line = f"condition:  {name}, {len(values)} labels over {len(set(keys))} training recordings"
    if missing:
        line += (f"; {len(missing)} recordings without a label (first: {missing[0]}) train only the "
                 f"unconditional prior")
    return line
