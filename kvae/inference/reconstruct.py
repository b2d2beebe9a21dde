"""Reconstructing audio of any length through a trained model, window by window (loading is `kvae.models.loading`)."""

import math
from pathlib import Path

import numpy as np

from kvae.dsp import OverlapAdd
from kvae.errors import KvaeError
from kvae.models.loading import load  # noqa: F401  (kvae.inference.load)


def reconstruct_blocks(model, read, length, chunk_frames=64):
    """Reconstruct a signal window by window with 50% overlap-add, a chunk of windows at a time.

    The signal is read and the output produced `chunk_frames` windows at a
    time, so memory does not grow with the length; the output is the same as
    reconstructing every window at once (windows go through the model in
    batches of `chunk_frames`, and `kvae.dsp.OverlapAdd` sums each output
    sample's windows in the same order).

    Args:
        model: VAE. A trained model.
        read: callable. `read(start, stop)` returns the signal's samples
            `[start, min(stop, length))` at the model's rate as float32.
        length: int. The signal's length in samples.
        chunk_frames: int. Windows per chunk (and per model call). Defaults to 64.

    Yields:
        Consecutive float32 blocks of the output, `length` samples in all.
    """
    length = int(length)
    chunk = max(int(chunk_frames), 1)
    w = model.window
    hop = max(w // 2, 1)
    n_frames = max(1, math.ceil(max(length - w, 0) / hop) + 1)
    ola = OverlapAdd(w, hop, taper=n_frames > 1)  # a single window is not tapered
    emitted = 0
    for f0 in range(0, n_frames, chunk):
        f1 = min(n_frames, f0 + chunk)
        m = f1 - f0
        start, span = f0 * hop, (m - 1) * hop + w
        segment = np.zeros(span, np.float32)
        got = read(start, min(start + span, length))
        segment[:len(got)] = got
        block = ola.push(model.reconstruct(np.stack([segment[j * hop:j * hop + w] for j in range(m)])))
        if f1 == n_frames:
            block = np.concatenate([block, ola.finish()])
        block = block[: max(length - emitted, 0)]
        emitted += len(block)
        if len(block):
            yield block


def reconstruct_audio(model, audio, chunk_frames=64):
    """Reconstruct a clip of any length window by window, with 50% overlap-add.

    Args:
        model: VAE. A trained model.
        audio: array-like. Mono audio at the model's rate, any length.
        chunk_frames: int. Windows reconstructed at a time (see
            `reconstruct_blocks`); the result does not depend on it beyond
            float rounding of the model's batched matrix products. Defaults to 64.

    Returns:
        A float32 array of the same length.
    """
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    out = np.empty(len(x), np.float32)
    at = 0
    for block in reconstruct_blocks(model, lambda a, b: x[a:b], len(x), chunk_frames):
        out[at:at + len(block)] = block
        at += len(block)
    return out


def reconstruct_file(model, source, target, chunk_frames=64, overwrite=False):
    """Reconstruct an audio file into a WAV at the model's rate, streaming.

    The input is read, resampled, reconstructed and written a chunk of
    windows at a time (a WAV input is never held in memory whole; other
    formats are decoded whole first), and the output is written atomically:
    an error leaves no partial file.

    Args:
        model: VAE. A trained model.
        source: str or Path. The input audio file (any rate).
        target: str or Path. The output WAV; never one of the inputs.
        chunk_frames: int. Windows per chunk. Defaults to 64.
        overwrite: bool. Replace an existing `target` (never an input, a
            model or a run's file). Defaults to False.

    Returns:
        The number of samples written.

    Raises:
        KvaeError: the output is a folder or the input file; the input is
            missing or not readable audio; the output cannot be written (a
            full disk: the output is left as it was).
    """
    from kvae.data import WavWriter
    from kvae.paths import remove_stale_temporaries, save_error
    from kvae.runs import check_output_file

    check_output_file(target, [source], overwrite=overwrite)
    signal = audio_reader(source, model.sample_rate)
    remove_stale_temporaries(Path(target).parent)  # what a killed reconstruction left
    try:
        with WavWriter(target, model.sample_rate, inputs=[source], what="writing the reconstruction") as out:
            for block in reconstruct_blocks(model, signal.read, signal.frames, chunk_frames):
                out.write(block)
    except OSError as exc:
        raise save_error(exc, target, "writing the reconstruction", then="run the command again") from None
    out.warn()
    return out.frames


def audio_reader(source, sample_rate):
    """A `ResampledReader` of `source` at `sample_rate` that refuses, as `kvae prepare` does, samples that
    cannot be audio (beyond +-`kvae.data.cache.MAX_PEAK`, NaN, infinite): one line naming the file and its peak.
    (Checked as the blocks are read; the output of a refused input is never written.)"""
    from kvae.data import AudioReader, ResampledReader
    from kvae.data.cache import MAX_PEAK

    reader = AudioReader(source)
    read = reader.read

    def checked(start, stop):
        x = read(start, stop)
        peak = float(np.max(np.abs(x))) if len(x) else 0.0
        if not peak <= MAX_PEAK:  # NaN compares false too
            raise KvaeError(f"{source}: its samples reach {peak:.3g}, beyond +-{MAX_PEAK:g}: not audio "
                            "(kvae prepare skips it too); rescale it to +-1")
        return x

    reader.read = checked
    return ResampledReader(reader, sample_rate)
