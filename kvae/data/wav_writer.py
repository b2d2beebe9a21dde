"""kvae's one WAV writer: mono audio written block by block, atomically.

Every WAV kvae writes (samples, reconstructions, generated pieces, the
gallery's clips) goes through `WavWriter`, so each has the same guarantees:
it is written under a temporary name beside the destination
(`kvae.paths.atomic_path`) and renamed into place only when complete; an
error, a kill or a full disk leaves no half file and no temporary file
behind; it never replaces one of the command's inputs, a model or a run's
own file (`kvae.runs.check_output_file`); memory does not grow with the
length of the audio.
"""

import contextlib
import struct
import sys
import warnings
from pathlib import Path

import numpy as np

from kvae.errors import KvaeError, KvaeNote
from kvae.paths import atomic_path, save_error
from kvae.runs import check_output_file

_FORMATS = {32: 3, 16: 1}  # bits -> WAVE format tag: IEEE float, PCM


class WavWriter:
    """Write mono audio as a WAV file block by block, atomically.

    Use it as a context manager, or call `close()` (keep) or `abort()`
    (drop) yourself. Float samples are clipped to [-1, 1], NaN written as 0.
    32-bit files are IEEE float, byte for byte what `scipy.io.wavfile.write`
    writes for float32 audio; 16-bit files are PCM (half the size, played by
    every browser).

    Args:
        path: str or Path. Destination; parent folders are created.
        sample_rate: int. Sample rate in Hz.
        inputs: iterable of paths the file must not replace (one-line error).
        bits: int. 32 (float) or 16 (PCM). Defaults to 32.
        what: str. What is being written, for the one-line error ("writing
            the reconstruction"). Defaults to "writing audio".

    Raises:
        KvaeError: `path` is a folder, an input, a model or a run's own file;
            it cannot be written (a full disk: one line, nothing left behind);
            the audio would pass a WAV file's 4 GiB limit.

    Example:
    ```python
    with WavWriter("out.wav", 3000) as out:
        for block in blocks:
            out.write(block)
    ```
    """

    def __init__(self, path, sample_rate, inputs=(), bits=32, what="writing audio"):
        if bits not in _FORMATS:
            raise KvaeError(f"bits: must be 32 or 16, got {bits}")
        self.path = Path(path)
        check_output_file(self.path, inputs, example="out.wav", overwrite=True)
        self.sample_rate = int(sample_rate)
        self.bits = int(bits)
        self.what = what
        self.frames, self.clipped, self.peak = 0, 0, 0.0
        self._context = atomic_path(self.path)
        try:
            self._tmp = self._context.__enter__()
            self._file = open(self._tmp, "wb")
            self._file.write(self._header(0))
        except OSError as exc:
            self._file = None
            self._context.__exit__(*sys.exc_info())
            raise save_error(exc, self.path, what, then="run the command again") from None

    @property
    def _header_bytes(self):
        return 58 if self.bits == 32 else 44

    def _header(self, frames):
        width = self.bits // 8
        rate, nbytes = self.sample_rate, width * frames
        if self.bits == 32:  # fmt with cbSize, then a fact chunk: as scipy writes float audio
            fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * width, width, self.bits) + b"\x00\x00"
            extra = b"fact" + struct.pack("<II", 4, frames)
        else:
            fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * width, width, self.bits)
            extra = b""
        return (b"RIFF" + struct.pack("<I", self._header_bytes - 8 + nbytes) + b"WAVE"
                + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
                + b"data" + struct.pack("<I", nbytes))

    def write(self, samples):
        """Append samples (any shape, flattened)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size:
            magnitude = np.abs(x)
            self.clipped += int(np.count_nonzero(~(magnitude <= 1.0)))  # NaN too
            self.peak = max(self.peak, float(np.nanmax(magnitude)) if not np.isnan(magnitude).all() else 0.0)
        x = np.clip(np.nan_to_num(x), -1.0, 1.0)
        if self._header_bytes + (self.bits // 8) * (self.frames + x.size) > 0xFFFFFFFF:
            self.abort()
            raise KvaeError(f"{self.path}: too long for a WAV file (over 4 GiB)")
        data = x.astype("<f4", copy=False) if self.bits == 32 else np.round(x * 32767).astype("<i2")
        try:
            self._file.write(data.tobytes())
        except OSError as exc:
            self.abort()
            raise save_error(exc, self.path, self.what, then="run the command again") from None
        self.frames += x.size

    def close(self):
        """Finish the header and move the file into place; return the path."""
        if self._file is None:
            return self.path
        try:
            self._file.seek(0)
            self._file.write(self._header(self.frames))
            self._file.close()
            self._file = None
            self._context.__exit__(None, None, None)
        except OSError as exc:
            self.abort()
            raise save_error(exc, self.path, self.what, then="run the command again") from None
        return self.path

    def note(self):
        """What is wrong with the audio written, in words (all zeros; samples clipped to +-1), or None."""
        if self.frames and self.peak == 0 and not self.clipped:
            return f"{self.path}: the output is silent (all {self.frames:,} samples are zero)"
        if self.clipped:
            return (f"{self.path}: {self.clipped:,} of {self.frames:,} samples were beyond +-1 (or not numbers) and "
                    f"were clipped (peak {self.peak:.3g})")
        return None

    def warn(self):
        """Warn (`kvae.errors.KvaeNote`, one line on the command line) when `note` has something to say."""
        text = self.note()
        if text:
            warnings.warn(text, KvaeNote, stacklevel=3)
        return text

    def abort(self):
        """Drop the temporary file; nothing is written under `path`."""
        if self._file is not None:
            with contextlib.suppress(OSError):  # a full disk fails the flush again: the file goes anyway
                self._file.close()
            self._file = None
            with contextlib.suppress(BaseException):
                self._context.__exit__(KvaeError, KvaeError("aborted"), None)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.close()
        else:
            self.abort()
        return False


WavStreamWriter = WavWriter  # the name kvae 0.1's generation used


def write_wav(path, samples, sample_rate, bits=32, inputs=()):
    """Write mono float audio as a WAV file (32-bit float by default), atomically; return the path.

    Args:
        path: str or Path. Destination; parent folders are created.
        samples: array-like. Shape `(frames,)`; values are clipped to [-1, 1].
        sample_rate: int. Sample rate in Hz.
        bits: int. 32 (float) or 16 (PCM). Defaults to 32.
        inputs: paths the file must not replace.
    """
    with WavWriter(path, sample_rate, inputs=inputs, bits=bits) as out:
        out.write(samples)
    return Path(path)
