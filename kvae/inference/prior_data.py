"""The data of a latent prior: the run's recordings encoded to latent frames (cached), and training crops.

`encoded_latents` encodes long contiguous stretches of the training
recordings (whole recordings, up to `train.max_seconds` of audio in all,
each recording's share taken at a seeded offset) into frame sequences with
`kvae.inference.latents.LatentLayout`, plus every window's posterior mean
(for the latent mixture), and keeps them in `RUN/prior/latents.npz` while
the model file and the settings are unchanged. With `train.trim_silence_db`
each stretch loses its silent start and end first (a recording's fade into
silence taught a long fit to end its pieces, silence then continuing
itself). `LatentCrops` serves random crops of them for teacher forcing.
"""

import json
import math
import time
from pathlib import Path

import keras
import numpy as np

from kvae.dsp.spectral import block_levels_db
from kvae.errors import KvaeError
from kvae.paths import atomic_path

_LATENTS_VERSION = 1


def _stretches(corpus, split, seconds, seed):
    """`(entry, start, length)` of contiguous stretches of a split, at most `seconds` of audio in all."""
    entries = corpus.split(split)
    if not entries:
        return []
    rng = np.random.default_rng([seed, 7])
    cap = max(int(seconds * corpus.sample_rate / len(entries)), 1)
    out = []
    for entry in entries:
        length = min(entry.frames, cap)
        start = int(rng.integers(0, entry.frames - length + 1)) if entry.frames > length else 0
        out.append((entry, start, length))
    return out


def sounding_span(audio, sample_rate, threshold_db, block_seconds=0.1):
    """`(start, stop)`: the samples from the first to the last block of `block_seconds` whose RMS is at or
    above `threshold_db` dBFS (a shorter last block counts with the one before it); `(0, 0)` when none is."""
    if not len(audio):
        return 0, 0
    levels, lengths = block_levels_db(audio, max(int(round(block_seconds * sample_rate)), 1), merge_tail=True)
    edges = np.concatenate([[0], np.cumsum(lengths)])
    loud = np.flatnonzero(levels >= threshold_db)
    return (int(edges[loud[0]]), int(edges[loud[-1] + 1])) if len(loud) else (0, 0)


def encode_split(model, layout, corpus, split, seconds, seed=0, normalize="none", keys=None, trim_db=0.0,
                 shifts=1, copies=None):
    """Encode stretches of a split: `(sequences, window_latents)`, a frame array per stretch and every window.

    `keys`, a list, is extended by each stretch's recording key. `trim_db` below 0: each stretch is cut to
    its `sounding_span` first, and one with less than a window left is not encoded. `shifts` above 1: each
    stretch is also encoded from `shifts - 1` later starts, spread evenly inside one latent frame's samples:
    other frames of the same music, each a sequence of its own (the window latents are the first's only);
    `copies`, a list, is extended by each sequence's copy number (0: the unshifted one).
    """
    offsets = sorted({int(round(i * layout.frame_samples / shifts)) for i in range(int(shifts))})
    sequences, windows = [], []
    for entry, start, length in _stretches(corpus, split, seconds, seed):
        audio = corpus.array(entry)[start:start + length]
        if trim_db:
            first, stop = sounding_span(audio, corpus.sample_rate, trim_db)
            if stop - first < layout.window:
                continue
            audio = audio[first:stop]
        for offset in offsets:
            if len(audio) - offset < layout.window:
                break
            latents, frames = layout.encode(model, audio[offset:], normalize=normalize)
            sequences.append(frames)
            windows += [] if offset else [latents]
            if keys is not None:
                keys.append(entry.key)
            if copies is not None:
                copies.append(offsets.index(offset))
    return sequences, windows


def _pack(sequences):
    lengths = np.array([len(s) for s in sequences], np.int64)
    flat = np.concatenate(sequences) if sequences else np.zeros((0, 1), np.float32)
    return flat, lengths


def _unpack(flat, lengths):
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def encoded_latents(model, model_path, layout, corpus, data, cfg, path, verbose=True, need_keys=False):
    """The run's training (and validation) frames, from `path` (a prior folder's `latents.npz`) when it
    matches (and, with `need_keys`, names each sequence's recording), else encoded and kept there.

    Returns:
        dict with `train` and `val` (lists of frame arrays), `windows` (training window latents) and
        `train_keys` and `val_keys` (the recording of each sequence; None from a cache written before them).
    """
    stat = Path(model_path).stat()
    trim = float(cfg["train"].get("trim_silence_db", 0.0))
    shifts = int(cfg["train"].get("augment_shifts", 1))
    key = json.dumps({"version": _LATENTS_VERSION, "model": [stat.st_size, stat.st_mtime_ns],
                      "data": data, "max_seconds": cfg["train"]["max_seconds"], "seed": cfg["train"]["seed"],
                      "layout": [layout.frames_per_window, layout.hop_frames, layout.hop_samples],
                      **({"trim_db": trim} if trim else {}), **({"shifts": shifts} if shifts > 1 else {})},
                     sort_keys=True)
    path = Path(path)
    if path.is_file():
        try:
            with np.load(path) as saved:
                if str(saved["key"]) == key and (not need_keys or "train_keys" in saved.files):
                    keys = {k: [str(v) for v in saved[k]] if k in saved.files else None
                            for k in ("train_keys", "val_keys")}
                    return {"train": _unpack(saved["train"], saved["train_lengths"]),
                            "val": _unpack(saved["val"], saved["val_lengths"]), "windows": saved["windows"], **keys}
        except (OSError, ValueError, KeyError):
            pass  # unreadable or from other settings: encode again
    start = time.perf_counter()
    seconds = cfg["train"]["max_seconds"]
    seed = cfg["train"]["seed"]
    mode = data.get("normalize", "none")
    train_keys, val_keys, copies = [], [], []
    train, windows = encode_split(model, layout, corpus, "train", seconds, seed, mode, train_keys, trim, shifts, copies)
    if not train:  # a folder without splits: everything is "train"
        train, windows = encode_split(model, layout, corpus, "test", seconds, seed, mode, train_keys, trim, shifts,
                                      copies)
    if not train and trim:
        raise KvaeError(f"train.trim_silence_db = {trim:g}: every training recording is quieter than that "
                        "throughout; lower it, or 0 to keep the silences")
    val = []
    if corpus.split("train"):
        val, _ = encode_split(model, layout, corpus, "test", seconds / 4, seed, mode, val_keys, trim)
    if not val:  # hold out the last tenth of each training sequence (of its shifted copies too, validating on one)
        cut = [max(1, len(s) - max(len(s) // 10, 1)) for s in train]
        held = [c < len(s) and not n for s, c, n in zip(train, cut, copies)]
        val = [s[c:] for s, c, h in zip(train, cut, held) if h]
        val_keys = [k for k, h in zip(train_keys, held) if h]
        train = [s[:c] for s, c in zip(train, cut)]
    windows = np.concatenate(windows)
    flat_train, train_lengths = _pack(train)
    flat_val, val_lengths = _pack(val)
    with atomic_path(path) as tmp:
        np.savez(tmp, key=np.array(key), train=flat_train, train_lengths=train_lengths, val=flat_val,
                 val_lengths=val_lengths, windows=windows, train_keys=np.array(train_keys, str),
                 val_keys=np.array(val_keys, str))
    if verbose:
        frames = int(train_lengths.sum())
        print(f"latents:    {len(train)} training sequences, {frames} frames ({frames / layout.frame_rate:.0f} s), "
              f"{int(val_lengths.sum())} validation frames, {len(windows)} windows; "
              f"encoded in {time.perf_counter() - start:.1f} s")
    return {"train": train, "val": val, "windows": windows, "train_keys": train_keys, "val_keys": val_keys}


def sequence_labels(labels, latents, condition):
    """`(vocabulary, train_ids, val_ids, summary line)` of the encoded sequences, from `{key: label}`.

    The vocabulary is the sorted labels of the training sequences; label
    `vocabulary[i]` has id `i + 1`, and a sequence without a label (or, in
    validation, with one the training sequences lack) has id 0, unconditional.

    Raises:
        KvaeError: the training sequences carry fewer than two labels.
    """
    from kvae.data.labels import is_csv, label_summary

    vocabulary = sorted({labels[k] for k in latents["train_keys"] if labels.get(k)})
    if len(vocabulary) < 2:
        name = Path(condition).name if is_csv(condition) else condition
        raise KvaeError(f"--condition {name}: the training recordings carry {len(vocabulary)} label(s) "
                        f"({', '.join(vocabulary) or 'none'}); conditioning needs two or more")
    index = {v: i + 1 for i, v in enumerate(vocabulary)}
    train, val = ([index.get(labels.get(k), 0) for k in latents[part]] for part in ("train_keys", "val_keys"))
    return vocabulary, train, val, label_summary(condition, labels, latents["train_keys"])


# ----------------------------------------------------------------------------- training data


class LatentCrops(keras.utils.PyDataset):
    """Batches of `(inputs, targets)` crops of normalised frame sequences for teacher forcing.

    Each sequence gets a zero start frame in front; a crop is `length + 1`
    consecutive frames of it: the first `length` are the inputs, the last
    `length` the targets. Random crops (training) are drawn from
    `(seed, epoch, batch)`, sequences weighted by their number of crops;
    fixed crops (validation) are evenly spaced.

    With `labels` (an int label id per sequence, for `kvae.models.ConditionedPrior`)
    the inputs are `(frames, label_ids)`; a random crop's label is replaced by 0
    (unconditional) with probability `label_dropout`.

    With `input_noise` above 0, random crops' input frames (not their targets) get Gaussian noise of that
    standard deviation: the prior learns to predict the true next frame from a past that is off the data, as
    its own draws will be when it generates (a remedy for exposure bias; docs/results.md#prior-draws).
    """

    def __init__(self, sequences, length, batch_size, batches=None, seed=0, random=True, labels=None,
                 label_dropout=0.0, input_noise=0.0, **kwargs):
        super().__init__(**kwargs)
        self.input_noise = float(input_noise)
        self.length = int(length)
        self.batch_size = int(batch_size)
        self.labels = None if labels is None else np.array([i for i, s in zip(labels, sequences)
                                                            if len(s) >= self.length], np.int32)
        self.label_dropout = float(label_dropout)
        self.sequences = [np.concatenate([np.zeros_like(s[:1]), s]) for s in sequences if len(s) >= self.length]
        if not self.sequences:
            raise KvaeError(f"prior: no latent sequence has the {self.length} frames a training crop needs")
        self.random = bool(random)
        self.seed = int(seed)
        self.epoch = 0
        room = np.array([len(s) - self.length for s in self.sequences])
        if self.random:
            self.weights = room / room.sum() if room.sum() else np.full(len(room), 1.0 / len(room))
            self.batches = int(batches)
        else:
            per = max(1, math.ceil(64 / len(self.sequences)))
            self.rows = [(i, int(r * (k + 0.5) / per)) for i, r in enumerate(room) for k in range(per)]
            self.batches = math.ceil(len(self.rows) / self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return self.batches

    def __getitem__(self, index):
        if self.random:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            which = rng.choice(len(self.sequences), size=self.batch_size, p=self.weights)
            rows = [(i, int(rng.integers(0, len(self.sequences[i]) - self.length))) for i in which]
        else:
            rows = self.rows[index * self.batch_size:(index + 1) * self.batch_size]
        crops = np.stack([self.sequences[i][s:s + self.length + 1] for i, s in rows])
        inputs = crops[:, :-1]
        if self.random and self.input_noise > 0:
            inputs = (inputs + self.input_noise * rng.standard_normal(inputs.shape)).astype(crops.dtype)
        if self.labels is None:
            return inputs, crops[:, 1:]
        ids = self.labels[[i for i, _ in rows]]
        if self.random and self.label_dropout > 0:  # classifier-free dropout: some crops learn unconditionally
            ids = np.where(rng.random(len(ids)) < self.label_dropout, 0, ids).astype(np.int32)
        return (inputs, ids), crops[:, 1:]


