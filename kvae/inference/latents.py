"""A VAE's latents as a sequence in time: long audio to latent frames, latent frames back to long audio.

Every kvae model maps one window of audio to one latent. `LatentLayout`
lines those latents up with time, the same way for every variant:

- windows are analysed and synthesised at a hop of `hop_samples`, half a
  window (rounded to whole latent frames for sequence latents);
- a *frame* is one step of the latent sequence: for a latent sequence
  (Conv1D `latent="sequence"`, Transformer) one step of the encoder output,
  `frame_samples` of audio, `frames_per_window` per window; for a latent
  vector (FC, mel, Conv1D `latent="vector"`) a whole window's latent, one
  frame per hop (so consecutive frames overlap by half a window).

`encode` cuts audio into windows at that hop and returns each window's
posterior mean and the frame sequence stitched from them (every frame taken
from the window in which it sits most centrally, away from the zero padding
and the edges). `StreamDecoder` does the reverse one window at a time:
each window's latent is decoded and overlap-added (`kvae.dsp.OverlapAdd`,
as `reconstruct_audio`), and the samples no later window touches come out at once, so memory does not grow with length.
`FrameWindows` turns a stream of frames into the stream of window latents
that the decoder takes.
"""

import gc
import math

import numpy as np
from keras import ops

from kvae.data.windows import normalize_window
from kvae.dsp import OverlapAdd
from kvae.errors import KvaeError

_COLLECT_EVERY = 8  # windows between collections of the young garbage generations


class LatentLayout:
    """How one model's latents line up with audio time (see the module docstring).

    Attributes:
        window: int. Samples per window.
        latent_shape: tuple. One window's latent.
        sequence: bool. True for a latent sequence, False for a latent vector.
        frames_per_window: int. Frames in one window's latent (1 for a vector).
        hop_frames: int. Frames between consecutive windows.
        frame_samples: int. Audio samples per frame step.
        hop_samples: int. Audio samples between consecutive windows.
        channels: int. Size of one frame.
        frame_rate: float. Frames per second of audio.
    """

    def __init__(self, model):
        self.window = int(model.window)
        self.sample_rate = int(model.sample_rate)
        self.latent_shape = tuple(int(d) for d in model.latent_shape)
        if len(self.latent_shape) == 1:
            self.sequence = False
            self.frames_per_window = 1
            self.hop_frames = 1
            self.hop_samples = max(self.window // 2, 1)
            self.frame_samples = self.hop_samples
        elif len(self.latent_shape) == 2:
            self.sequence = True
            self.frames_per_window = self.latent_shape[0]
            self.hop_frames = max(self.frames_per_window // 2, 1)
            if hasattr(model, "frame_size"):  # TransformerVAE: one token per frame
                self.frame_samples = int(model.frame_size)
            elif hasattr(model, "strides"):  # Conv1DVAE: the encoder's total stride
                self.frame_samples = int(math.prod(model.strides))
            else:
                self.frame_samples = max(1, math.ceil(self.window / self.frames_per_window))
            self.hop_samples = self.hop_frames * self.frame_samples
        else:
            raise KvaeError(f"latent layout: latents of shape {self.latent_shape} are neither a vector nor a sequence")
        if self.hop_samples > self.window:
            raise KvaeError(f"latent layout: hop of {self.hop_samples} samples is longer than the window")
        self.channels = self.latent_shape[-1]
        self.frame_rate = self.sample_rate * self.hop_frames / self.hop_samples

    def windows_for(self, samples):
        """Windows (at `hop_samples`) needed to cover `samples` samples: at least 1."""
        return max(1, math.ceil(max(int(samples) - self.window, 0) / self.hop_samples) + 1)

    def frames_for(self, windows):
        """Frames that make up `windows` consecutive windows."""
        return (int(windows) - 1) * self.hop_frames + self.frames_per_window

    def samples_for(self, windows):
        """Audio samples that `windows` consecutive windows cover."""
        return (int(windows) - 1) * self.hop_samples + self.window

    def stitch(self, window_latents):
        """Frames `(frames_for(n), channels)` from window latents `(n, *latent_shape)`.

        Frame t comes from the window whose centre is nearest to it.
        """
        z = np.asarray(window_latents, np.float32)
        n = len(z)
        if not self.sequence:
            return z.reshape(n, self.channels)
        f, h = self.frames_per_window, self.hop_frames
        t = np.arange(self.frames_for(n))
        owner = np.clip(np.floor((t - (f - 1) / 2) / h + 0.5).astype(np.int64), 0, n - 1)
        return z[owner, t - owner * h]

    def window_latents(self, frames):
        """Window latents `(n, *latent_shape)` read off a frame sequence `(frames, channels)`."""
        frames = np.asarray(frames, np.float32)
        n = (len(frames) - self.frames_per_window) // self.hop_frames + 1
        if n < 1:
            raise KvaeError(f"latent layout: {len(frames)} frames are fewer than one window's {self.frames_per_window}")
        if not self.sequence:
            return frames[:n].reshape((n,) + self.latent_shape)
        index = np.arange(n)[:, None] * self.hop_frames + np.arange(self.frames_per_window)[None, :]
        return frames[index]

    def encode(self, model, audio, batch=64, limit=None, normalize="none"):
        """Posterior means of the windows of `audio` at `hop_samples`, and the stitched frames.

        Args:
            model: the VAE this layout was made for.
            audio: 1-D array (a memory map is fine: windows are read batch by batch).
            batch: int. Windows encoded at once.
            limit: int or None. Encode at most this many windows.
            normalize: str. The run's `data.normalize`, applied to each window
                as in training (`kvae.data.normalize_window`).

        Returns:
            `(window_latents, frames)`: float32 `(n, *latent_shape)` and `(frames_for(n), channels)`.
        """
        audio = np.asarray(audio).reshape(-1)
        n = self.windows_for(len(audio))
        if limit is not None:
            n = max(1, min(n, int(limit)))
        out = []
        for start in range(0, n, batch):
            rows = np.zeros((min(batch, n - start), self.window), np.float32)
            for j in range(len(rows)):
                begin = (start + j) * self.hop_samples
                chunk = audio[begin:begin + self.window]
                rows[j, : len(chunk)] = chunk
            z_mean, _ = model.encode(ops.convert_to_tensor(normalize_window(rows, normalize)))
            out.append(np.asarray(ops.convert_to_numpy(z_mean), np.float32))
        latents = np.concatenate(out).reshape((n,) + self.latent_shape)
        return latents, self.stitch(latents)


class FrameWindows:
    """Turns a stream of frames `(pieces, channels)` into window latents `(pieces, *latent_shape)`.

    `push` returns a window latent each time the frames of the next window
    are complete (every frame for latent vectors; every `hop_frames` frames
    once the first `frames_per_window` have come for sequences), else None.
    It holds one window of frames.
    """

    def __init__(self, layout, pieces):
        self.layout = layout
        self.buffer = np.zeros((pieces, layout.frames_per_window, layout.channels), np.float32)
        self.count = 0

    def push(self, frame):
        layout = self.layout
        self.buffer[:, :-1] = self.buffer[:, 1:]
        self.buffer[:, -1] = frame
        self.count += 1
        done = self.count - layout.frames_per_window
        if done < 0 or done % layout.hop_frames:
            return None
        return self.buffer.reshape((len(self.buffer),) + layout.latent_shape).copy()


class StreamDecoder:
    """Window latents in, finished audio out: decode, overlap-add with a crossfade, emit what is final.

    Args:
        model: the VAE.
        layout: its `LatentLayout`.
        pieces: int. Pieces decoded side by side (the batch).
        total_samples: int. Length of each piece; the output stops there.

    `push(z)` takes the next window's latents `(pieces, *latent_shape)` and
    returns the samples that are now final, `(pieces, k)` (k may be 0);
    the last push returns the rest (`finish()` then returns nothing). It holds one window of audio.
    """

    def __init__(self, model, layout, pieces, total_samples):
        self.model = model
        self.layout = layout
        self.total = int(total_samples)
        self.windows = layout.windows_for(self.total)
        # a piece of a single window is not tapered (as reconstruct_audio)
        self.ola = OverlapAdd(layout.window, layout.hop_samples, taper=self.windows > 1, batch=(int(pieces),))
        self.pushed = 0
        self.emitted = 0

    def decode(self, z):
        """Audio `(pieces, window)` of window latents."""
        return self.model.decode_audio(np.asarray(z, np.float32))

    def _emit(self, samples):
        samples = samples[:, :max(0, self.total - self.emitted)]
        self.emitted += samples.shape[1]
        return samples

    def push(self, z):
        if self.pushed >= self.windows:
            raise KvaeError("stream decoder: more windows pushed than the piece needs")
        out = self.ola.push(self.decode(z)[None])  # no later window reaches these hop samples
        self.pushed += 1
        if self.pushed % _COLLECT_EVERY == 0:
            # A Keras functional call leaves reference cycles behind; left to the full collection they
            # pile up over minutes of audio. Collecting the young generations keeps a long piece's memory
            # flat (tests/test_generate.py checks it).
            gc.collect(1)
        if self.pushed == self.windows:
            out = np.concatenate([out, self.ola.finish()], axis=1)
        return self._emit(out)

    def finish(self):
        """The samples left once every window has been pushed (the last push returns them already)."""
        if self.pushed < self.windows:
            raise KvaeError(f"stream decoder: {self.windows - self.pushed} windows still missing")
        return np.zeros((self.ola.acc.shape[0], 0), np.float32)
