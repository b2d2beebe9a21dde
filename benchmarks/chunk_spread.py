"""How far a chunk prior's draws spread, against the true latent frames: the shrinkage the judge hears.

A 2-s chunk of latent frames splits into its mean (one vector per chunk and
channel: the chunk's timbre and level, its slow part) and the frames'
variation around that mean (the fast part). Per prior (a fitted chunk
prior's folder holding `prior.keras` and its `latents.npz`), in the prior's
normalised units, over `--crops` random crops of the *validation* latents:

- `chunk-mean power`: the mean square of the chunks' means (true chunks: how
  much a chunk's slow part varies from chunk to chunk);
- `within var`: the frames' variance around their chunk's mean;
- `jump`: the distance from the context's last frame to the chunk's first,
  against the distance between consecutive frames inside chunks;
- `mean error`: the mean square distance of the chunks' means from the true
  continuations' (given the true context).

Rows: the true continuations, chunks drawn given the true context, chunks
drawn without context (how a piece starts), and the chunks of `--pieces`
free-running pieces, by position (chunk 1, 2, ... of `--chunks`): a prior
whose draws lose their slow part loses more of it with each chunk drawn
after its own.

    python benchmarks/chunk_spread.py runs/genq-recipe-150/prior-chunk runs/genq-off07/prior-chunk

About 20 CPU-seconds per prior at the defaults. Figures in docs/results.md#chunk-spread.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
from _common import machine_lines, table  # noqa: E402


def spread(chunks, context=None):
    """Chunk-mean power, within-chunk variance, mean frame-to-frame step and first-frame jump of `chunks`."""
    means = chunks.mean(axis=1)
    step = np.linalg.norm(np.diff(chunks, axis=1), axis=-1).mean()
    jump = np.nan if context is None else np.linalg.norm(chunks[:, 0] - context[:, -1], axis=-1).mean()
    return float(np.mean(means ** 2)), float(np.mean(chunks.var(axis=1))), float(step), float(jump)


def measure(folder, crops, pieces, count, seed):
    import kvae

    folder = Path(folder)
    prior = kvae.load(folder / "prior.keras", compile=False)
    if getattr(prior, "kind", None) != "chunk":
        raise SystemExit(f"chunk_spread: {folder / 'prior.keras'} is not a chunk prior")
    val = prior.normalize(np.load(folder / "latents.npz")["val"])
    m, k = prior.context_frames, prior.chunk_frames
    if len(val) < m + k:
        raise SystemExit(f"chunk_spread: {folder}: {len(val)} validation frames, fewer than a crop's {m + k}")
    starts = np.random.default_rng(seed).integers(0, len(val) - m - k, crops)
    context = np.stack([val[s:s + m] for s in starts])
    true = np.stack([val[s + m:s + m + k] for s in starts])
    rngs = lambda base: [np.random.default_rng([seed, base, i]) for i in range(crops)]  # noqa: E731
    cpu = time.process_time()
    given = prior.draw_chunk(context, rngs(1))
    alone = prior.draw_chunk(context[:, :0], rngs(2))
    piece_rngs = [np.random.default_rng([seed, 3, i]) for i in range(pieces)]
    stepper = prior.stepper(pieces).push(np.zeros((pieces, prior.latent_dim), np.float32))  # as kvae generate
    frames = []
    for _ in range(count * k):
        frames.append(stepper.next_frame(piece_rngs))
        stepper.push(frames[-1])
    cpu = time.process_time() - cpu
    piece = np.stack(frames, axis=1)
    by_position = [spread(piece[:, i * k:(i + 1) * k], piece[:, max(0, i * k - m):i * k] if i else None)
                   for i in range(count)]
    truth_means = true.mean(axis=1)
    rows = [("true continuations", *spread(true, context), 0.0),
            ("drawn given the true context", *spread(given, context), np.mean((given.mean(1) - truth_means) ** 2)),
            ("drawn without context", *spread(alone), np.nan)]
    rows += [(f"free-running piece, chunk {i + 1}", *row, np.nan) for i, row in enumerate(by_position)]
    return prior, rows, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("priors", nargs="+", help="fitted chunk priors' folders (prior.keras and latents.npz)")
    parser.add_argument("--crops", type=int, default=64, help="validation crops (default 64)")
    parser.add_argument("--pieces", type=int, default=8, help="free-running pieces (default 8)")
    parser.add_argument("--chunks", type=int, default=8, help="chunks per free-running piece (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("KVAE_THREADS", "1")))
    for line in machine_lines():
        print(line)
    fmt = lambda v: "-" if np.isnan(v) else f"{v:.3f}"  # noqa: E731
    for folder in args.priors:
        prior, rows, cpu = measure(folder, args.crops, args.pieces, args.chunks, args.seed)
        print(f"\n{folder}: {prior.chunk_frames}-frame chunks given {prior.context_frames}, offset noise "
              f"{getattr(prior, 'offset_noise', 0.0):g}; draws took {cpu:.1f} CPU s")
        for line in table(["chunks", "chunk-mean power", "within var", "step", "jump", "mean error"],
                          [(name, *(fmt(v) for v in values)) for name, *values in rows]):
            print(line)


if __name__ == "__main__":
    main()
