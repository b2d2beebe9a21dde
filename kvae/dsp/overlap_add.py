"""Overlap-add of tapered frames: the one place kvae puts windowed audio back together (numpy).

Every path that turns a model's windows back into a signal, offline
(`kvae.inference.reconstruct_blocks`), streamed (`kvae.inference.stream.Decoder`)
and generated (`kvae.inference.latents.StreamDecoder`), goes through
`OverlapAdd`: each frame is multiplied by the crossfade taper
(`kvae.dsp.crossfade_window`), added in `hop` samples after the previous one,
and each finished sample is divided by the sum of the tapers over it, floored
at `NORM_FLOOR` (as EnCodec's `_linear_overlap_add` divides by its summed
weights). The sums are taken frame by frame in order, so feeding frames in
any grouping gives the same samples, to the bit.
"""

import numpy as np

from kvae.dsp.filters import crossfade_window
from kvae.errors import KvaeError

NORM_FLOOR = 1e-3
"""The smallest summed taper a sample is divided by (the first and last samples of a signal)."""


class OverlapAdd:
    """Frames `hop` samples apart in, finished samples out: tapered, summed, divided by the summed taper.

    `push(frames)` adds the next frames and returns the samples no later
    frame can change (`hop` per frame); `finish()` returns the last frame's
    remaining `window - hop` samples and starts afresh. It holds one frame.

    Args:
        window: int. Samples per frame.
        hop: int. Samples between the starts of consecutive frames (1 to `window`).
        taper: bool. Taper each frame with `crossfade_window(window)`; False
            weights every sample 1 (a signal of a single frame is not tapered).
            Defaults to True.
        batch: tuple of int. Leading shape of each frame (signals overlap-added
            side by side). Defaults to `()`.

    Example:
    ```python
    ola = OverlapAdd(window=8, hop=4)
    audio = np.concatenate([ola.push(frames), ola.finish()])  # frames: (k, 8)
    ```
    """

    def __init__(self, window, hop, taper=True, batch=()):
        self.window, self.hop, self.batch = int(window), int(hop), tuple(int(b) for b in batch)
        if not 1 <= self.hop <= self.window:
            raise KvaeError(f"overlap-add: hop {hop} must lie within 1..{window} (the window)")
        self.taper = (crossfade_window(self.window) if taper else np.ones(self.window)).astype(np.float32)
        self.acc = np.zeros(self.batch + (self.window,), np.float32)  # the next frame's span
        self.norm = np.zeros(self.window, np.float32)

    def _final(self, count):
        return self.acc[..., :count] / np.maximum(self.norm[:count], NORM_FLOOR)

    def push(self, frames):
        """Add frames `(k, *batch, window)`; return the `k * hop` samples now final, `(*batch, k * hop)`."""
        hop = self.hop
        out = np.empty(self.batch + (len(frames) * hop,), np.float32)
        for i, frame in enumerate(frames):
            self.acc += frame * self.taper
            self.norm += self.taper
            out[..., i * hop:(i + 1) * hop] = self._final(hop)
            self.acc[..., :-hop], self.acc[..., -hop:] = self.acc[..., hop:], 0.0
            self.norm[:-hop], self.norm[-hop:] = self.norm[hop:], 0.0
        return out

    def finish(self):
        """The last frame's samples not yet returned, `(*batch, window - hop)`; the sums start afresh."""
        rest = self._final(self.window - self.hop)
        self.acc[...] = 0.0
        self.norm[:] = 0.0
        return rest
