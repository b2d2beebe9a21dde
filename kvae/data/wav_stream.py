"""Write a WAV file chunk by chunk (generation streams audio of any length without holding it).

The file is the same format as `write_wav`: mono, 32-bit IEEE float (format
tag 3), values clipped to [-1, 1], NaN written as 0. It is written under a
temporary name beside the destination and renamed into place on `close`, so
an interrupted write never leaves a half file under the real name, and it
refuses to write over any of the paths it is told are inputs.
"""

import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from kvae.errors import KvaeError

_MAX_DATA_BYTES = 0xFFFFFFFF - 36  # a plain RIFF header holds 32-bit sizes


def check_output_path(path, inputs=()):
    """Raise a one-line `KvaeError` if `path` is a folder or is one of `inputs` (same file)."""
    path = Path(path)
    if path.is_dir():
        raise KvaeError(f"{path}: is a folder; give a file name such as piece.wav")
    for other in inputs:
        if other is None:
            continue
        other = Path(other)
        if path.exists() and other.exists() and path.resolve() == other.resolve():
            raise KvaeError(f"{path}: is an input of this command; choose another output")


class WavStreamWriter:
    """A mono float32 WAV written incrementally: `write(chunk)` as often as needed, then `close()`.

    Args:
        path: str or Path. Destination (parent folders are created).
        sample_rate: int. Sample rate in Hz.
        inputs: paths the output must not replace (a one-line error if it would).

    Use as a context manager: on an exception the temporary file is removed
    and nothing appears under `path`.
    """

    def __init__(self, path, sample_rate, inputs=()):
        self.path = Path(path)
        check_output_path(self.path, inputs)
        self.sample_rate = int(sample_rate)
        self.frames = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            raise KvaeError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._file.write(self._header(0))

    def _header(self, data_bytes):
        fmt = struct.pack("<HHIIHH", 3, 1, self.sample_rate, 4 * self.sample_rate, 4, 32)
        return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
                + b"data" + struct.pack("<I", data_bytes))

    def write(self, samples):
        """Append samples (any shape, flattened), clipped to [-1, 1]."""
        x = np.clip(np.nan_to_num(np.asarray(samples, dtype=np.float32).reshape(-1)), -1.0, 1.0)
        if 4 * (self.frames + x.size) > _MAX_DATA_BYTES:
            raise KvaeError(f"{self.path}: more than 4 GiB of audio does not fit in a WAV file")
        self._file.write(x.astype("<f4", copy=False).tobytes())
        self.frames += x.size

    def close(self):
        """Finish the header and move the file into place; returns the path."""
        if self._file is None:
            return self.path
        try:
            self._file.seek(0)
            self._file.write(self._header(4 * self.frames))
            self._file.close()
            self._file = None
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.abort()
            raise KvaeError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        return self.path

    def abort(self):
        """Drop the temporary file; nothing is written under `path`."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.close()
        else:
            self.abort()
        return False
