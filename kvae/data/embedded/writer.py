"""Writing the corpus: label and metadata CSVs, `generate_corpus` and the cached `embedded_root`.

The CSV columns are MusicNet's, as `kvae.data.sources` reads them.
"""

import csv
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from kvae.data.embedded.parts import _COMPOSERS, _ENSEMBLES, _FORMS, _compose
from kvae.data.embedded.score import _make_plan
from kvae.data.embedded.synthesis import _render_recording
from kvae.data.sources import LABEL_COLUMNS, METADATA_COLUMNS, METADATA_FILE
from kvae.errors import KvaeError
from kvae.paths import kvae_home, save_error

EMBEDDED_VERSION = 1

FIRST_ID = 9000
MARKER_FILE = ".complete"


# --------------------------------------------------------------------------- files

def _write_labels(path, rows):
    """Write one MusicNet label CSV (header, then one row per note, by start time)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(LABEL_COLUMNS)
        writer.writerows(rows)


def _write_metadata(path, rows):
    """Write musicnet_metadata.csv: unquoted header and numbers, quoted text, as MusicNet does."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(",".join(METADATA_COLUMNS) + "\n")
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        writer.writerows([[row[name] for name in METADATA_COLUMNS] for row in rows])


def _ensemble_schedule(rng, count):
    """Every other recording is Solo Piano (as in MusicNet); the rest cycle through the others."""
    others = [name for name in _ENSEMBLES if name != "Solo Piano"]
    order = [others[i] for i in rng.permutation(len(others))]
    return ["Solo Piano" if i % 2 == 0 else order[(i // 2) % len(order)] for i in range(count)]


def _tempo_marking(bpm):
    for limit, word in ((76, "Adagio"), (92, "Andante"), (108, "Moderato"), (120, "Allegretto")):
        if bpm < limit:
            return word
    return "Allegro"


def generate_corpus(root, seed=0, n_train=12, n_test=3, seconds=20.0, sample_rate=44100):
    """Write the embedded corpus under `root` in MusicNet's original layout.

    Args:
        root: str or Path. Folder to write into; created if missing. Files already
            there with the same names are overwritten, others are left alone.
        seed: int. Determines every choice: the same seed writes byte-identical files
            (on one platform; other CPUs or numpy builds may differ in the last bits).
        n_train: int. Number of training recordings (ids from 9000).
        n_test: int. Number of test recordings (ids following the training ones).
        seconds: float. Length of each recording, at least 2 seconds.
        sample_rate: int. Sample rate of the WAV files, in Hz.

    Returns:
        Path: `root`.

    Raises:
        KvaeError: if a count is negative, there is no recording at all, `seconds`
            is below 2 or `sample_rate` below 8000.
    """
    if n_train < 0 or n_test < 0 or n_train + n_test == 0:
        raise KvaeError(f"the embedded corpus needs recordings, got n_train={n_train}, n_test={n_test}")
    if seconds < 2:
        raise KvaeError(f"embedded recordings must last at least 2 seconds, got {seconds}")
    if sample_rate < 8000:
        raise KvaeError(f"the embedded corpus needs a sample rate of at least 8000 Hz, got {sample_rate}")
    root = Path(root)
    base = root / "musicnet"
    for split in ("train", "test"):
        (base / f"{split}_data").mkdir(parents=True, exist_ok=True)
        (base / f"{split}_labels").mkdir(parents=True, exist_ok=True)

    schedule_rng = np.random.default_rng(seed)
    ensembles = _ensemble_schedule(schedule_rng, n_train) + _ensemble_schedule(schedule_rng, n_test)
    splits = ["train"] * n_train + ["test"] * n_test
    children = np.random.SeedSequence(seed).spawn(n_train + n_test)
    jobs, numbers = [], {}
    for index, (split, ensemble, child) in enumerate(zip(splits, ensembles, children)):
        numbers[ensemble] = numbers.get(ensemble, 0) + 1
        jobs.append(_Job(FIRST_ID + index, split, ensemble, numbers[ensemble], child))

    def build(job):
        return _build_recording(job, base, seconds, sample_rate)

    # Recordings are independent (one random stream each) and numpy releases the
    # GIL in its array loops, so threads speed the build up without changing a byte.
    workers = max(1, min(len(jobs), os.cpu_count() or 1, 4))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        metadata = list(pool.map(build, jobs))
    _write_metadata(root / METADATA_FILE, metadata)
    return root


@dataclass(frozen=True)
class _Job:
    """One recording to build."""

    rec_id: int
    split: str
    ensemble: str
    number: int               # its number among the corpus's pieces for this ensemble
    seed: np.random.SeedSequence


def _build_recording(job, base, seconds, sample_rate):
    """Compose, render and write one recording and its labels; returns its metadata row."""
    rng = np.random.default_rng(job.seed)
    plan = _make_plan(rng, seconds)
    notes = _compose(rng, plan, job.ensemble)
    audio, rows = _render_recording(rng, plan, notes, seconds, sample_rate)
    wavfile.write(base / f"{job.split}_data" / f"{job.rec_id}.wav", sample_rate, audio)
    _write_labels(base / f"{job.split}_labels" / f"{job.rec_id}.csv", rows)
    return {
        "id": job.rec_id,
        "composer": str(rng.choice(_COMPOSERS)),
        "composition": f"{_FORMS[job.ensemble]} No {job.number} in {plan.key.name}",
        "movement": f"{int(rng.integers(1, 4))}. {_tempo_marking(plan.bpm)}",
        "ensemble": job.ensemble,
        "source": "kvae embedded synthesis",
        "transcriber": "kvae (labels of the rendered notes)",
        "catalog_name": f"KS{job.rec_id}",
        "seconds": int(round(len(audio) / sample_rate)),
    }


def embedded_root(seed=0):
    """Return the cached embedded corpus, building it on first use.

    The corpus lives in ``kvae_home()/"embedded"/f"v{EMBEDDED_VERSION}-seed{seed}"``.
    It is built in a temporary sibling folder, marked complete, and renamed into
    place, so an interrupted build never leaves a half corpus; a folder without
    the marker is treated as absent and rebuilt. If another process finishes
    first, its corpus is used.

    Args:
        seed: int. Seed of the corpus (see `generate_corpus`).

    Returns:
        Path: the corpus root (holding ``musicnet/`` and ``musicnet_metadata.csv``).
    """
    final = kvae_home() / "embedded" / f"v{EMBEDDED_VERSION}-seed{seed}"
    if (final / MARKER_FILE).is_file():
        return final
    try:
        return _build(final, seed)
    except OSError as exc:
        raise save_error(exc, final.parent, "building the embedded dataset", then="run the command again "
                         "(or set KVAE_HOME to a folder with room)") from None


def _build(final, seed):
    """Build the corpus in a sibling folder and rename it to `final` (see `embedded_root`)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(building, 0o777 & ~mask)  # mkdtemp makes it 0700: the corpus is as readable as the umask allows
    try:
        generate_corpus(building, seed=seed)
        (building / MARKER_FILE).write_text(
            f"kvae embedded corpus, version {EMBEDDED_VERSION}, seed {seed}\n", encoding="utf-8")
        if final.exists() and not (final / MARKER_FILE).is_file():
            _remove_stale(final)
        try:
            os.replace(building, final)
        except OSError:
            if not (final / MARKER_FILE).is_file():  # nobody else finished it: a real failure
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


def _remove_stale(folder):
    """Move an unmarked (incomplete) corpus folder aside, then delete it."""
    stale = Path(tempfile.mkdtemp(prefix=f".{folder.name}.stale-", dir=folder.parent))
    try:
        os.replace(folder, stale / folder.name)
    except OSError:
        pass  # already gone, or being replaced by another process
    shutil.rmtree(stale, ignore_errors=True)
