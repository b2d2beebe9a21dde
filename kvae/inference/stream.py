"""Streaming a model: audio in blocks of any size, with cached state and a stated latency.

kvae's models map a window of audio to a latent and back. Offline,
`kvae.inference.reconstruct_audio` cuts a signal into windows at a hop of
half a window, reconstructs each, and overlap-adds them (`kvae.dsp.OverlapAdd`:
the crossfade taper, divided by the summed taper). The classes here do the
same computation as the audio arrives:

- `Encoder`: audio blocks in, the posterior means of each window out as soon
  as its last sample has arrived (`latency_samples = window`: counted from
  the window's first sample, as the samples a window spans).
- `Decoder`: window latents in, audio out: each latent's window is decoded,
  tapered and added in; the samples no later window touches (one hop per
  latent) come out at once (`latency_samples = 0`).
- `Reconstructor`: both, returning exactly as many samples as it is given:
  the offline reconstruction delayed by `latency_samples = window`
  samples (zeros before), whatever the block size, also below the hop or
  not dividing it. `finish()` returns the last `latency_samples`, so the
  output minus its first `latency_samples` samples is the offline output,
  for any length (equal up to float rounding of differently batched model
  calls; the tests ask for 1e-5 of the peak). One window is the least any
  windowed model can do: the last window covering a sample ends up to one
  window after it.

The latency is the algorithmic one; a sound card delivering blocks of B
samples adds B - 1 more. Each class takes a kvae VAE or an
`kvae.inference.OnnxVAE` (the exported graphs in onnxruntime).

Example:
```python
stream = kvae.inference.Reconstructor(model)
print(stream.latency_samples, stream.latency_ms)    # 3000 samples, 1000.0 ms for a 1-s window at 3000 Hz
out = [stream.push(block) for block in blocks]      # each as long as its block
out.append(stream.finish())
```
"""

from pathlib import Path

import numpy as np

from kvae import bounds
from kvae.dsp import OverlapAdd
from kvae.errors import KvaeError


def _encode_mean(model, windows):
    if hasattr(model, "to_audio"):  # a Keras VAE
        from keras import ops

        return np.asarray(ops.convert_to_numpy(model.encode(ops.convert_to_tensor(windows))[0]), np.float32)
    return np.asarray(model.encode(windows)[0], np.float32)


def _decode(model, latents):
    if hasattr(model, "to_audio"):
        from keras import ops

        audio = model.to_audio(model.decode(ops.convert_to_tensor(latents)))
        return np.asarray(ops.convert_to_numpy(audio), np.float32)
    return np.asarray(model.decode(latents), np.float32)


def _block(block):
    block = np.asarray(block, np.float32)
    if block.ndim != 1:
        raise KvaeError(f"stream: expected a 1-D block of mono samples, got shape {block.shape}")
    return block


class _Timed:
    """Latency attributes shared by the stream classes."""

    latency_samples = 0
    sample_rate = 1

    @property
    def latency_ms(self):
        """The latency in milliseconds at the model's sample rate."""
        return 1000.0 * self.latency_samples / self.sample_rate


class Encoder(_Timed):
    """Audio blocks in, window latents (posterior means) out, as the windows complete.

    Windows start every `hop` samples (half a window), as in
    `reconstruct_audio`. `push` returns the latents of the windows the block
    completed, `(k, *latent_shape)` (k may be 0); `finish` those of the last
    windows, zero-padded past the end as offline. It holds one window of audio.

    Args:
        model: a kvae VAE or an `OnnxVAE`.

    Attributes:
        latency_samples: int. `window`: a window's latent comes out once
            the window's samples have all arrived.
    """

    def __init__(self, model):
        self.model = model
        self.window = int(model.window)
        self.hop = max(self.window // 2, 1)
        self.sample_rate = int(model.sample_rate)
        self.latency_samples = self.window
        self.buffer = np.zeros(0, np.float32)  # input from sample `offset` on
        self.offset = 0
        self.received = 0
        self.windows = 0  # windows encoded so far
        self.first = np.zeros(0, np.float32)  # the first window's samples (a signal of one window is decoded untapered)

    def _take(self, count):
        rows = np.zeros((count, self.window), np.float32)
        for i in range(count):
            start = (self.windows + i) * self.hop - self.offset
            got = self.buffer[start:start + self.window]
            rows[i, :len(got)] = got
        self.windows += count
        drop = min(self.windows * self.hop - self.offset, len(self.buffer))
        self.buffer, self.offset = self.buffer[drop:], self.offset + drop
        return _encode_mean(self.model, rows) if count else np.zeros((0,) + tuple(self.model.latent_shape), np.float32)

    def push(self, block):
        """Add a block of samples; return the latents of the windows it completed."""
        block = _block(block)
        if len(self.first) < self.window:
            self.first = np.concatenate([self.first, block[:self.window - len(self.first)]])
        self.buffer = np.concatenate([self.buffer, block])
        self.received += len(block)
        ready = (self.received - self.window) // self.hop + 1 - self.windows if self.received >= self.window else 0
        return self._take(max(ready, 0))

    def finish(self):
        """The latents of the windows still to come, covering the whole signal (as `reconstruct_audio`)."""
        total = 0 if self.received == 0 else max(1, -(-max(self.received - self.window, 0) // self.hop) + 1)
        return self._take(max(total - self.windows, 0))


class Decoder(_Timed):
    """Window latents in, audio out: decoded, tapered with the crossfade and overlap-added.

    `push(latents)` takes the next windows' latents `(k, *latent_shape)`
    (windows `hop` samples apart) and returns the samples now final, one hop
    per latent; `finish(length)` returns the rest, up to `length` samples in
    all when given. It holds one window of audio.

    Args:
        model: a kvae VAE or an `OnnxVAE`.

    Attributes:
        latency_samples: int. 0: a latent's first hop of audio comes out at once.
    """

    def __init__(self, model):
        self.model = model
        self.window = int(model.window)
        self.hop = max(self.window // 2, 1)
        self.sample_rate = int(model.sample_rate)
        self.latency_samples = 0
        self.ola = OverlapAdd(self.window, self.hop)
        self.emitted = 0

    def push(self, latents):
        """Decode the next windows' latents; return the samples no later window changes."""
        latents = np.asarray(latents, np.float32)
        if latents.shape[1:] != tuple(self.model.latent_shape):
            shape = ", ".join(str(d) for d in self.model.latent_shape)
            raise KvaeError(f"stream decoder: expected latents of shape (k, {shape}), got {latents.shape}")
        if not len(latents):
            return np.zeros(0, np.float32)
        out = self.ola.push(_decode(self.model, latents))
        self.emitted += len(out)
        return out

    def finish(self, length=None):
        """The samples of the last window not yet returned (all of them, or up to `length` in all)."""
        rest = self.ola.finish()
        if length is not None:
            rest = rest[:max(int(length) - self.emitted, 0)]
        self.emitted += len(rest)
        return rest


class Reconstructor(_Timed):
    """Audio in, reconstructed audio out, block by block with a fixed latency (see the module docstring).

    `push(block)` returns as many samples as the block holds: the offline
    reconstruction delayed by `latency_samples`; `finish()` returns the last
    `latency_samples` samples.

    Args:
        model: a kvae VAE or an `OnnxVAE`.

    Attributes:
        latency_samples: int. `window`: the output sample that comes out
            with input sample n is offline output sample n - window.
        latency_ms: float. The same in milliseconds.
    """

    def __init__(self, model):
        self.encoder = Encoder(model)
        self.decoder = Decoder(model)
        self.sample_rate = self.encoder.sample_rate
        self.latency_samples = self.encoder.latency_samples + self.decoder.latency_samples
        self.ready = np.zeros(0, np.float32)  # offline output not returned yet
        self.pre_roll = self.latency_samples  # zeros still to return
        self.returned = 0  # offline samples returned so far

    def _take(self, count):
        zeros = min(self.pre_roll, count)
        self.pre_roll -= zeros
        rest = count - zeros
        if rest > len(self.ready):  # pragma: no cover - the latency guarantees it
            raise KvaeError("stream: internal error, output asked for before it is final")
        out = np.concatenate([np.zeros(zeros, np.float32), self.ready[:rest]])
        self.ready = self.ready[rest:]
        self.returned += rest
        return out

    def push(self, block):
        """Add a block; return as many reconstructed samples, `latency_samples` late."""
        block = _block(block)
        audio = self.decoder.push(self.encoder.push(block))
        if len(audio):
            self.ready = np.concatenate([self.ready, audio])
        return self._take(len(block))

    def finish(self):
        """The output still owed after the input's end: `latency_samples` samples (input + latency in all)."""
        length = self.encoder.received
        tail = self.decoder.push(self.encoder.finish())
        self.ready = np.concatenate([self.ready, tail, self.decoder.finish()])[:max(length - self.returned, 0)]
        if 0 < length <= self.encoder.window:  # one window: offline skips the taper; nothing of it returned yet
            window = np.zeros((1, self.encoder.window), np.float32)
            window[0, :length] = self.encoder.first[:length]
            self.ready = _decode(self.encoder.model, _encode_mean(self.encoder.model, window))[0, :length]
        return self._take(self.pre_roll + len(self.ready))


def block_samples(block_ms, sample_rate):
    """Samples in a block of `block_ms` milliseconds (at least 1), the value checked by `kvae.bounds`."""
    block_ms = bounds.check("block_ms", block_ms, "--block-ms")
    return max(1, int(round(float(block_ms) * int(sample_rate) / 1000.0)))


def reconstruct_file_streamed(model, source, target, block_ms=10.0, overwrite=False):
    """Reconstruct an audio file through a `Reconstructor`, `block_ms` of input at a time, into a WAV.

    The output is aligned with the input (the first `latency_samples` of the
    stream, its pre-roll, are dropped), so it equals `reconstruct_file`'s up to
    float rounding. Written atomically, never over an input.

    Args:
        model: a kvae VAE or an `OnnxVAE`.
        source: str or Path. The input audio file (any rate).
        target: str or Path. The output WAV.
        block_ms: float. Block length in milliseconds. Defaults to 10.
        overwrite: bool. Replace an existing `target` (never an input, a model or a run's file).

    Returns:
        `(frames written, the Reconstructor)`.
    """
    from kvae.data import WavWriter
    from kvae.inference.reconstruct import audio_reader
    from kvae.paths import remove_stale_temporaries, save_error
    from kvae.runs import check_output_file

    size = block_samples(block_ms, model.sample_rate)
    check_output_file(target, [source], overwrite=overwrite)
    signal = audio_reader(source, model.sample_rate)  # refuses what cannot be audio, as kvae prepare does
    remove_stale_temporaries(Path(target).parent)
    stream = Reconstructor(model)
    skip = stream.latency_samples
    try:
        with WavWriter(target, model.sample_rate, inputs=[source], what="writing the reconstruction") as out:
            for start in range(0, signal.frames, size):
                block = stream.push(signal.read(start, min(start + size, signal.frames)))
                cut = min(skip, len(block))
                skip -= cut
                out.write(block[cut:])
            out.write(stream.finish()[skip:])
    except OSError as exc:
        raise save_error(exc, target, "writing the reconstruction", then="run the command again") from None
    out.warn()
    return out.frames, stream
