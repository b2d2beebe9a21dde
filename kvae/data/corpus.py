"""A prepared dataset: its cached recordings (`Entry`), opened by memory map (`Corpus`). `kvae.data.prepare`
makes one."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvae._deprecated import renamed
from kvae.errors import KvaeError


@dataclass
class Entry:
    """One cached recording.

    Attributes:
        key: str. The recording's id.
        split: str. `"train"` or `"test"`.
        file: Path. The cached `.npy` (mono float32 at the cache's rate).
        frames: int. Its length in samples.
        metadata: dict. Its metadata row, if any.
    """

    key: str
    split: str
    file: Path
    frames: int
    metadata: dict = field(default_factory=dict)


class Corpus:
    """The cached recordings of one dataset at one sample rate, opened by memory map.

    Args:
        entries: list of Entry.
        sample_rate: int. Sample rate of every entry.
        report: PrepareReport or None. What built it.
    """

    def __init__(self, entries, sample_rate, report=None):
        self.entries = list(entries)
        self.sample_rate = int(sample_rate)
        self.report = report
        self._arrays = {}

    @property
    def rate(self):
        """kvae 0.1's name of `sample_rate` (deprecated)."""
        renamed("Corpus.rate", "Corpus.sample_rate")
        return self.sample_rate

    def split(self, name):
        """Return the entries of one split (`"train"` or `"test"`)."""
        return [e for e in self.entries if e.split == name]

    def array(self, entry):
        """Return an entry's samples as a read-only memory-mapped float32 array."""
        arr = self._arrays.get(entry.file)
        if arr is None:
            try:
                arr = np.load(entry.file, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise KvaeError(f"{entry.file}: unreadable cache file ({exc}); run `kvae prepare` again") from None
            self._arrays[entry.file] = arr
        return arr

    @property
    def seconds(self):
        """Total duration in seconds."""
        return sum(e.frames for e in self.entries) / self.sample_rate

    def non_finite(self):
        """Return `(file, count)` for each cached file holding NaN or Inf samples (reads every file)."""
        bad = []
        for entry in self.entries:
            count = count_non_finite(self.array(entry))
            if count:
                bad.append((entry.file, count))
        return bad


def count_non_finite(array, chunk=1 << 22):
    """NaN and Inf samples in an array (a memory map is read a chunk at a time)."""
    return sum(int(np.count_nonzero(~np.isfinite(array[i:i + chunk]))) for i in range(0, len(array), chunk))
