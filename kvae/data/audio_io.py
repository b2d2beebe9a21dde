"""Decode audio files to mono float32 and resample them.

WAV (every sample format MusicNet and users have: float32/float64, int16,
int24, int32, uint8, any channel count) is read with `scipy.io.wavfile`, which
needs no TensorFlow, once `kvae.data.wav_header` has found its header sound
(or said, in plain words, what is broken). Writing is `kvae.data.wav_writer`. FLAC, OGG and MP3 are decoded by tensorflow-io, imported
only when such a file is met.

Resampling uses `scipy.signal.resample_poly` (polyphase FIR, Kaiser window),
chosen by measurement against ``tfio.audio.resample``
(``benchmarks/data_benchmark.py``; the figures are in docs/benchmarks.md):
faster, no delay, and far more accurate.
"""

import contextlib
import errno
import math
import os
import re
import stat
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy import signal
from scipy.io import wavfile

from kvae.data.compressed import flac_cut_short
from kvae.data.wav_header import wav_problem
from kvae.errors import KvaeError

WAV_SUFFIXES = (".wav", ".wave")
COMPRESSED_SUFFIXES = (".flac", ".ogg", ".oga", ".mp3")
AUDIO_SUFFIXES = WAV_SUFFIXES + COMPRESSED_SUFFIXES


class AudioFileError(KvaeError):
    """A file that cannot be used as audio; the message names the file and why."""

    def __init__(self, path, reason):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def os_reason(exc):
    """An OSError in words for one line: its strerror and errno name, e.g. "No space left on device (ENOSPC)"."""
    name = errno.errorcode.get(exc.errno) if isinstance(exc, OSError) and exc.errno else None
    text = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(exc).__name__
    return f"{text} ({name})" if name else text


def file_problem(path):
    """Why `path` is no regular file that can be opened, in words ("symlink loop", ...), or None if it is one."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop (the link leads back to itself)"
        if exc.errno == errno.ENOENT:
            if os.path.islink(path):
                return f"broken symlink (its target {os.readlink(path)} does not exist)"
            return "no such file"
        return f"cannot read file ({os_reason(exc)})"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    if not stat.S_ISREG(mode):
        return "not a regular file (a device, pipe or socket)"
    return None


def to_float_mono(samples):
    """Convert decoded samples of any WAV sample format to mono float32 in [-1, 1].

    Args:
        samples: np.ndarray. Shape `(frames,)` or `(frames, channels)`, dtype
            float32/float64, int16, int32 (scipy returns 24-bit audio as int32
            left-justified, so the same scale applies) or uint8.

    Returns:
        A float32 array of shape `(frames,)`: channels are averaged.
    """
    x = np.asarray(samples)
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 128.0
    elif x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    elif x.dtype == np.int32:
        x = (x / 2147483648.0).astype(np.float32)
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=False)
    else:
        raise ValueError(f"unsupported sample type {x.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    return np.ascontiguousarray(x, dtype=np.float32)


def _read_wav(path):
    problem = wav_problem(path)
    if problem:
        raise AudioFileError(path, problem)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rate, samples = wavfile.read(path, mmap=False)
    for w in caught:
        text = str(w.message)
        if "EOF" in text or "premature" in text.lower():
            raise AudioFileError(path, f"truncated WAV ({text.rstrip('.')})")
    return int(rate), samples


_KINDS = {".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".mp3": "MP3"}
_TF_NOISE = (
    re.compile(r"\{\{function_node [^}]*\}\}"),  # {{function_node __wrapped__IO>..._device_/job:localhost/...}}
    re.compile(r"\[Op:[^\]]*\]"),  # [Op:IO>AudioReadableInit]
)


def _stream_problem(path, kind):
    """Say why a FLAC or OGG file is no such stream from its first bytes, or return None."""
    with open(path, "rb") as f:
        head = f.read(4)
        if kind == "FLAC" and head[:3] == b"ID3":  # an ID3v2 tag may precede the stream
            f.seek(6)
            raw = f.read(4)
            skip = sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(raw)) if len(raw) == 4 else 0
            f.seek(10 + skip)
            head = f.read(4)
    if kind == "FLAC" and head != b"fLaC":
        return "cannot decode FLAC: not a FLAC stream (no fLaC marker)"
    if kind == "FLAC" and flac_cut_short(path):  # the decoder would wait forever on a cut-short stream
        return "cannot decode FLAC: cut short (its last frame is not the last its STREAMINFO counts)"
    if kind == "OGG" and head != b"OggS":
        return "cannot decode OGG: not an Ogg stream (no OggS marker)"
    if kind == "OGG":  # the last page of a whole stream is flagged its end: a cut-short file's is not
        with open(path, "rb") as f:
            f.seek(max(Path(path).stat().st_size - 65536, 0))
            tail = f.read()
        last = tail.rfind(b"OggS")
        if last < 0 or last + 5 >= len(tail) or not tail[last + 5] & 0x04:
            return "cannot decode OGG: cut short (its last page is not the end of the stream)"
    return None


@contextlib.contextmanager
def _quiet_stderr():
    """The C decoders' own lines on file descriptor 2 ("ErrorCallback: ...") dropped: the one line says why."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def decoder_reason(exc, path=None):
    """The first meaningful phrase of a decoder's error: TensorFlow's op and device names, and the path, removed."""
    text = str(exc).strip()
    for noise in _TF_NOISE:
        text = noise.sub(" ", text)
    if path is not None:
        text = text.replace(str(path), "").replace(Path(path).name, "")
    lines = [line.strip(" :;,.") for line in text.splitlines()]
    text = " ".join(next((line for line in lines if line), type(exc).__name__).split())
    if text.lower().startswith("unknown file type"):
        return "unknown file type"
    text = re.sub(r"\s*\bname\s*$", "", text)  # what is left of TensorFlow's "name: <path>"
    cut = re.match(r"unable to read at:?\s*(\d+)", text)
    if cut:
        return f"corrupted or cut short (unreadable from byte {cut.group(1)})"
    if re.match(r"read failed:?\s*-?\d+", text):
        return f"corrupted ({text})"
    return text if len(text) <= 120 else text[:117] + "..."


def _read_compressed(path):
    # tensorflow-io decodes FLAC, OGG Vorbis and MP3; TensorFlow is heavy to
    # import, so only files that need it pay for it.
    kind = _KINDS[path.suffix.lower()]
    problem = _stream_problem(path, kind)
    if problem:
        raise AudioFileError(path, problem)
    import tensorflow as tf
    import tensorflow_io as tfio

    try:
        with _quiet_stderr():
            audio = tfio.audio.AudioIOTensor(str(path))
            rate = int(audio.rate.numpy())
            samples = audio.to_tensor().numpy()
    except (tf.errors.OpError, ValueError) as exc:
        raise AudioFileError(path, f"cannot decode {kind}: {decoder_reason(exc, path)}") from None
    return rate, samples


def read_audio(path):
    """Read an audio file as mono float32.

    Args:
        path: str or Path. A WAV, FLAC, OGG or MP3 file.

    Returns:
        `(samples, sample_rate)`: a float32 array of shape `(frames,)` and an int.

    Raises:
        AudioFileError: the file is missing, unreadable (a symlink loop,
            permission denied), empty, not audio, truncated, has a corrupt
            header, has no frames, or holds NaN or Inf samples. The message
            names the file and says what is wrong in words, on one line.
    """
    path = Path(path)
    problem = file_problem(path)
    if problem:
        raise AudioFileError(path, problem)
    if path.stat().st_size == 0:
        raise AudioFileError(path, "empty file (0 bytes)")
    suffix = path.suffix.lower()
    try:
        if suffix in WAV_SUFFIXES:
            rate, samples = _read_wav(path)
        elif suffix in COMPRESSED_SUFFIXES:
            rate, samples = _read_compressed(path)
        else:
            raise AudioFileError(path, f"unsupported audio type '{suffix}'")
    except AudioFileError:
        raise
    except ValueError as exc:
        text = str(exc)
        if "not understood" in text:
            text = "not a WAV file (no RIFF header)"
        raise AudioFileError(path, text.splitlines()[0]) from None
    except OSError as exc:  # permission denied, an I/O error
        raise AudioFileError(path, f"cannot read file ({os_reason(exc)})") from None
    except Exception as exc:  # struct.error, ...: a header wav_problem did not foresee
        raise AudioFileError(path, f"corrupt audio ({type(exc).__name__}: {exc})") from None
    try:
        mono = to_float_mono(samples)
    except ValueError as exc:
        raise AudioFileError(path, str(exc)) from None
    if mono.size == 0:
        raise AudioFileError(path, "no audio frames")
    if rate <= 0:
        raise AudioFileError(path, f"invalid sample rate {rate}")
    finite = np.isfinite(mono)
    if not finite.all():
        bad = finite.size - int(np.count_nonzero(finite))
        first = int(np.argmin(finite))
        raise AudioFileError(path, f"holds {bad} NaN or Inf samples (the first at {first / rate:.3f} s)")
    return mono, rate


def resample(samples, from_rate, to_rate):
    """Resample a 1-D signal with `scipy.signal.resample_poly`.

    Args:
        samples: np.ndarray. The signal, shape `(frames,)`.
        from_rate: int. Its sample rate in Hz.
        to_rate: int. The target rate in Hz.

    Returns:
        A float32 array at `to_rate`, aligned with the input (no delay).
    """
    from_rate, to_rate = int(from_rate), int(to_rate)
    if from_rate == to_rate:
        return np.asarray(samples, dtype=np.float32)
    g = math.gcd(from_rate, to_rate)
    out = signal.resample_poly(samples, to_rate // g, from_rate // g)
    return out.astype(np.float32, copy=False)


class AudioReader:
    """Random access to an audio file as mono float32, reading a WAV piece by piece.

    A WAV file in a sample format numpy can read directly (float32/64,
    int16, int32, uint8, any channel count) is read block by block from the
    disk, so a long file is never held in memory; others (24-bit WAV, FLAC,
    OGG, MP3) are decoded whole by `read_audio`. Errors are those of
    `read_audio`, NaN or Inf samples reported by the block that has them.

    Attributes:
        path: Path. The file.
        rate: int. Its sample rate in Hz.
        frames: int. Its length in samples.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._samples = None
        self._layout = None
        if self.path.is_file() and self.path.stat().st_size and self.path.suffix.lower() in WAV_SUFFIXES:
            problem = wav_problem(self.path)  # what read_audio would refuse, refused here too
            if problem:
                raise AudioFileError(self.path, problem)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    rate, mapped = wavfile.read(self.path, mmap=True)
                truncated = any("EOF" in str(w.message) or "premature" in str(w.message).lower() for w in caught)
                if not truncated and isinstance(mapped, np.memmap) and mapped.size and rate > 0:
                    channels = 1 if mapped.ndim == 1 else mapped.shape[1]
                    self._layout = (int(mapped.offset), mapped.dtype, channels)
                    self.rate, self.frames = int(rate), int(mapped.shape[0])
                del mapped
            except Exception:  # not mappable (24-bit, truncated, corrupt): read_audio says why
                self._layout = None
        if self._layout is None:
            self._samples, self.rate = read_audio(self.path)
            self.frames = len(self._samples)

    def read(self, start, stop):
        """Samples `[start, stop)` (clipped to the file) as float32 mono.

        Raises:
            AudioFileError: the block holds NaN or Inf samples.
        """
        start, stop = max(int(start), 0), min(int(stop), self.frames)
        if stop <= start:
            return np.zeros(0, np.float32)
        if self._samples is not None:
            return self._samples[start:stop]
        offset, dtype, channels = self._layout
        count = (stop - start) * channels
        block = np.fromfile(self.path, dtype=dtype, count=count, offset=offset + start * channels * dtype.itemsize)
        if block.size != count:
            raise AudioFileError(self.path, "truncated WAV (file changed while reading)")
        if not block.dtype.isnative:
            block = block.astype(block.dtype.newbyteorder("="))
        mono = to_float_mono(block.reshape(-1, channels) if channels > 1 else block)
        bad = int(np.count_nonzero(~np.isfinite(mono)))
        if bad:
            raise AudioFileError(self.path, f"NaN or Inf samples (at least {bad})")
        return mono


class ResampledReader:
    """Random access to an `AudioReader` resampled to `rate`, equal to `resample` of the whole file.

    Each read resamples only the input it needs (with `resample`'s filter
    and enough context on both sides that the result matches resampling the
    whole signal at once).

    Args:
        reader: AudioReader (or anything with `rate`, `frames` and `read(start, stop)`).
        rate: int. The rate to read at.
    """

    def __init__(self, reader, rate):
        self.reader = reader
        self.rate = int(rate)
        g = math.gcd(int(reader.rate), self.rate)
        self.up, self.down = self.rate // g, int(reader.rate) // g
        self.frames = -(-reader.frames * self.up // self.down)
        # scipy.signal.resample_poly's default filter spans 10 * max(up, down) upsampled samples either side
        self.margin = 10 * max(self.up, self.down) // self.up + 2

    def read(self, start, stop):
        """Resampled samples `[start, stop)` (clipped to the signal) as float32."""
        start, stop = max(int(start), 0), min(int(stop), self.frames)
        if stop <= start:
            return np.zeros(0, np.float32)
        if self.up == self.down:
            return self.reader.read(start, stop)
        up, down = self.up, self.down
        # Start the input on a multiple of `down`: then output k of the piece is output first + k of the whole.
        first_in = max(0, (start * down // up - self.margin) // down * down)
        last_in = min(self.reader.frames, -(-stop * down // up) + self.margin)
        piece = signal.resample_poly(self.reader.read(first_in, last_in), up, down)
        first_out = first_in * up // down
        return piece[start - first_out:stop - first_out].astype(np.float32, copy=False)
