"""Fixed-length windows from the cache: the paper's scheme, two front ends.

Training: each epoch draws a fresh random window (or K of them) from every
recording, in shuffled order; epoch `e` of seed `s` always gives the same
windows. Validation and test: K fixed, evenly spaced windows per recording,
the same every epoch. Recordings shorter than the window are zero-padded.

`WindowSource` holds that logic; `WindowDataset` (a `keras.utils.PyDataset`)
and `WindowSource.tf_dataset()` (a `tf.data.Dataset`) are thin front ends over
it, so for the same seed both yield exactly the same batches.
"""

import math

import numpy as np

from kvae.errors import KvaeError

NORMALIZE = ("none", "peak", "rms")
_PEAK_FLOOR = 1e-2  # a near-silent window is not blown up to full scale
_RMS_TARGET = 0.1


def normalize_window(x, mode):
    """Normalise windows in place along the last axis.

    Args:
        x: np.ndarray. Float32 windows, shape `(..., samples)`.
        mode: str. `"none"`; `"peak"` scales each window's peak to 1; `"rms"`
            scales each window's RMS to 0.1. The divisor is floored (peak
            0.01, RMS 0.001) so near-silence stays near-silent.

    Returns:
        `x`.
    """
    if mode == "peak":
        x /= np.maximum(np.abs(x).max(axis=-1, keepdims=True), _PEAK_FLOOR)
    elif mode == "rms":
        rms = np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True))
        x *= _RMS_TARGET / np.maximum(rms, _PEAK_FLOOR * _RMS_TARGET)
    elif mode != "none":
        raise KvaeError(f"normalize: must be one of {', '.join(NORMALIZE)}, got '{mode}'")
    return x


class WindowSource:
    """Windows of one split of a `Corpus`, batch by batch.

    Args:
        corpus: kvae.data.Corpus. The cached recordings.
        split: str. `"train"` or `"test"`; an empty split falls back to the
            other one (a single-folder dataset has no test split).
        window: int. Window length in samples.
        batch_size: int. Windows per batch.
        windows_per_recording: int. Windows drawn from each recording per
            epoch. Defaults to 1, as in the paper.
        random: bool. Fresh random windows each epoch (training) or fixed,
            evenly spaced ones (validation, test).
        seed: int. Seed of the random windows.
        normalize: str. `"none"`, `"peak"` or `"rms"`, see `normalize_window`.
        batches_per_epoch: int or None. Fix the epoch's length: more windows
            per recording are drawn if needed, and the epoch is cut to it.
        shards: int. Data-parallel ranks sharing the epoch. Defaults to 1.
            With `shards` > 1 the epoch's plan is cut into global batches of
            `batch_size * shards` windows (an incomplete last one is dropped,
            so every rank takes as many steps), and this source yields the
            `shard`-th `batch_size` slice of each: the ranks see disjoint
            windows, and together exactly the batches one process with
            `batch_size * shards` sees.
        shard: int. This rank's shard, `0 <= shard < shards`. Defaults to 0.
        multiple_of: int. Cut the epoch to a multiple of this many windows
            (a jax data-parallel batch must split evenly over the devices).
            Defaults to 1.
    """

    def __init__(self, corpus, split, window, batch_size, windows_per_recording=1,
                 random=True, seed=0, normalize="none", batches_per_epoch=None, shards=1, shard=0,
                 multiple_of=1):
        if int(window) <= 0:
            raise KvaeError(f"window: must be at least one sample, got {window}")
        if int(batch_size) <= 0:
            raise KvaeError(f"batch_size: must be positive, got {batch_size}")
        if int(windows_per_recording) <= 0:
            raise KvaeError(f"windows_per_recording: must be positive, got {windows_per_recording}")
        if int(shards) <= 0 or not 0 <= int(shard) < int(shards):
            raise KvaeError(f"shard: must be from 0 to shards - 1 = {int(shards) - 1}, got {shard}")
        normalize_window(np.zeros((1, 1), np.float32), normalize)  # validates the mode
        entries = corpus.split(split) or corpus.entries
        if not entries:
            raise KvaeError(f"split '{split}': no recordings")
        self.corpus = corpus
        self.entries = entries
        self.window = int(window)
        self.batch_size = int(batch_size)
        self.windows_per_recording = int(windows_per_recording)
        self.shards, self.shard = int(shards), int(shard)
        self.multiple_of = max(int(multiple_of), 1)
        self._limit = None
        if batches_per_epoch:
            self._limit = int(batches_per_epoch) * self.batch_size * self.shards
            self.windows_per_recording = max(self.windows_per_recording, math.ceil(self._limit / len(entries)))
        self.epoch_offset = 0  # added to the tf.data front end's epoch counter (resuming)
        self.random = bool(random)
        self.seed = int(seed)
        self.normalize = normalize
        self.frames = np.array([e.frames for e in entries], dtype=np.int64)
        self._plans = {}

    @property
    def num_windows(self):
        """Windows per epoch (of this shard)."""
        total = len(self.entries) * self.windows_per_recording
        total = min(total, self._limit) if self._limit else total
        if self.shards == 1:
            if total < self.multiple_of:
                raise KvaeError(f"split: {total} windows, fewer than the {self.multiple_of} devices of one batch")
            return total - total % self.multiple_of
        global_batch = self.batch_size * self.shards
        if total < global_batch:
            raise KvaeError(f"data.batch_size: {self.batch_size} per rank x {self.shards} ranks = {global_batch} "
                            f"windows per step, more than the {total} of an epoch; lower it or draw more windows")
        return total // global_batch * self.batch_size

    @property
    def num_batches(self):
        """Batches per epoch (the last one may be smaller)."""
        return math.ceil(self.num_windows / self.batch_size)

    @property
    def short(self):
        """Keys of the recordings shorter than the window (they are zero-padded)."""
        return [e.key for e, n in zip(self.entries, self.frames) if n < self.window]

    def plan(self, epoch=0):
        """Return the epoch's windows (this shard's, in batch order) as an int64 array of `(recording, start)` rows."""
        epoch = int(epoch) if self.random else 0
        cached = self._plans.get(epoch)
        if cached is not None:
            return cached
        plan = self._full_plan(epoch)
        if self.shards > 1:  # global batch k is rows [kG, (k+1)G); this shard takes its B-slice of each
            steps = self.num_windows // self.batch_size
            plan = plan[: steps * self.batch_size * self.shards].reshape(steps, self.shards, self.batch_size, 2)
            plan = np.ascontiguousarray(plan[:, self.shard].reshape(-1, 2))
        self._plans = {epoch: plan}  # keep one epoch: the cache must not grow
        return plan

    def _full_plan(self, epoch):
        """The windows of an epoch over all shards."""
        k = self.windows_per_recording
        recs = np.repeat(np.arange(len(self.entries), dtype=np.int64), k)
        room = np.maximum(self.frames - self.window, 0)[recs]
        if self.random:
            rng = np.random.default_rng([self.seed, epoch])
            starts = rng.integers(0, room + 1)
            order = rng.permutation(len(recs))
            recs, starts = recs[order], starts[order]
        else:
            slot = np.tile(np.arange(k), len(self.entries))
            starts = (room * (slot + 0.5) / k).astype(np.int64) if k > 1 else room // 2
        total = len(recs) if self._limit is None else min(len(recs), self._limit)
        return np.stack([recs, starts], axis=1)[:total - total % self.multiple_of]

    def read(self, rows):
        """Read windows for `(recording, start)` rows into a float32 `(n, window)` array."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        out = np.zeros((len(rows), self.window), dtype=np.float32)
        for i, (rec, start) in enumerate(rows):
            chunk = self.corpus.array(self.entries[rec])[start:start + self.window]
            out[i, : len(chunk)] = chunk
        return normalize_window(out, self.normalize)

    def batch(self, epoch, index):
        """Return batch `index` of an epoch as a float32 `(batch, window)` array."""
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} out of range (0..{self.num_batches - 1})")
        rows = self.plan(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        return self.read(rows)

    def tf_dataset(self, start_epoch=0):
        """A `tf.data.Dataset` of the same batches as `WindowDataset`.

        Random sources are infinite (epoch after epoch from `start_epoch`):
        pass `steps_per_epoch=source.num_batches` to `fit`. Fixed sources
        yield one epoch.

        Args:
            start_epoch: int. The first epoch to yield (for resuming). It sets
                `epoch_offset`, which `kvae.training.WindowEpochs` also sets
                when `fit` resumes; epochs are read when they are reached.

        Returns:
            A `tf.data.Dataset` of float32 `(batch, window)` tensors.
        """
        import tensorflow as tf

        window = self.window
        self.epoch_offset = int(start_epoch)

        def epoch_batches(epoch):
            # stateful: the plan depends on epoch_offset, which may change after the dataset is built
            plan = tf.numpy_function(lambda e: self.plan(int(e) + self.epoch_offset), [epoch], tf.int64, stateful=True)
            plan = tf.reshape(plan, (-1, 2))
            rows = tf.data.Dataset.from_tensor_slices(plan).batch(self.batch_size)
            return rows.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

        def read(rows):
            x = tf.numpy_function(self.read, [rows], tf.float32, stateful=False)
            return tf.ensure_shape(x, (None, window))

        if self.random:
            epochs = tf.data.Dataset.counter(dtype=tf.int64)
            return epochs.flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE)
        one_epoch = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).flat_map(epoch_batches)
        # flat_map hides the length; Keras needs it to end an epoch without an "ran out of data" warning.
        one_epoch = one_epoch.apply(tf.data.experimental.assert_cardinality(self.num_batches))
        return one_epoch.prefetch(tf.data.AUTOTUNE)

    def py_dataset(self, **kwargs):
        """A `keras.utils.PyDataset` front end; kwargs go to PyDataset (workers, ...)."""
        return make_py_dataset(self, **kwargs)


def make_py_dataset(source, **kwargs):
    """Wrap a `WindowSource` in a `kvae.data.py_dataset.WindowDataset` (imported lazily: Keras is heavy)."""
    from kvae.data.py_dataset import WindowDataset

    return WindowDataset(source, **kwargs)
