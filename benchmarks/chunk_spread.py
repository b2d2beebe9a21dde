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

About 20 CPU-seconds per prior at the defaults. With `--judge DATA` (the corpus the prior's run was trained
on) the chunks are also decoded (the folder's `model.keras`) and judged by the evaluation's C2ST and KID
against its reference windows, beside chunks whose slow and fast parts are swapped: a drawn chunk with a
true chunk's mean, a true chunk with a drawn chunk's mean, with an unrelated true chunk's, or with none,
so which part the judge hears is a number (crops of the prior's *training* latents, as
`generate_quality.py`'s chunk rows; about 5 CPU-minutes at 256 clips):

    python benchmarks/chunk_spread.py runs/genq-recipe-150/prior-chunk --judge /tmp/ufoai-corpus

Figures in docs/results.md#chunk-spread.
"""

import argparse
import math
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


def judged_swaps(folder, prior, data, clips, seed):
    """Realism rows (name -> judge's metrics, with `power` and `within`) of true, drawn and swapped chunks."""
    import kvae
    from generate_quality import training_crops
    from kvae.data import prepare
    from kvae.evaluation.evaluate import judge, reference_sets
    from kvae.inference.latents import LatentLayout

    folder = Path(folder)
    model = kvae.load(folder / "model.keras", compile=False)
    layout = LatentLayout(model)
    k = max(1, prior.chunk_frames // layout.frames_per_window) * layout.frames_per_window  # whole windows
    m, count = prior.context_frames, math.ceil(clips / (k // layout.frames_per_window))
    crops = prior.normalize(training_crops(folder / "prior.keras", m + k, count, [seed, 13]))
    context, true = crops[:, :m], crops[:, m:]
    other = prior.normalize(training_crops(folder / "prior.keras", k, count, [seed, 99]))  # unrelated chunks

    def draw(ctx, base):
        rngs = [np.random.default_rng([seed, base, i]) for i in range(count)]
        return np.concatenate([prior.draw_chunk(ctx[i:i + 32], rngs[i:i + 32]) for i in range(0, count, 32)])[:, :k]

    given, alone = draw(context, 14), draw(context[:, :0], 15)
    mean = lambda x: x.mean(axis=1, keepdims=True)  # noqa: E731
    chunks = {"true chunks": true, "drawn given the true context": given, "drawn without context": alone,
              "drawn given the context, its true continuation's mean": given - mean(given) + mean(true),
              "drawn without context, an unrelated true chunk's mean": alone - mean(alone) + mean(other),
              "true chunk, a drawn (no context) chunk's mean": true - mean(true) + mean(alone),
              "true chunk, an unrelated true chunk's mean": true - mean(true) + mean(other),
              "true chunk, mean 0 (the training frames' mean)": true - mean(true)}

    def decode(z):
        z = prior.denormalize(z.astype(np.float32)).reshape(-1, *model.latent_shape)
        return np.concatenate([model.decode_audio(z[i:i + 64]) for i in range(0, len(z), 64)])[:clips]

    rate = model.sample_rate
    reference, references, _, _ = reference_sets(prepare(data, sample_rate=rate), model.window, rate, clips, seed)
    sets = {name: decode(z) for name, z in chunks.items()}
    rows = judge({**sets, **{n: references[n] for n in ("ref: held-out recordings", "ref: real vs real")}},
                 reference, rate, seed=seed)
    for name, z in chunks.items():
        rows[name]["power"], rows[name]["within"] = float(np.mean(z.mean(1) ** 2)), float(np.mean(z.var(1)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("priors", nargs="+", help="fitted chunk priors' folders (prior.keras and latents.npz)")
    parser.add_argument("--crops", type=int, default=64, help="validation crops (default 64)")
    parser.add_argument("--pieces", type=int, default=8, help="free-running pieces (default 8)")
    parser.add_argument("--chunks", type=int, default=8, help="chunks per free-running piece (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge", metavar="DATA", help="also judge true, drawn and swapped chunks against DATA")
    parser.add_argument("--clips", type=int, default=256, help="1-s clips per judged row (default 256)")
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
        if args.judge:
            from kvae.evaluation.report import format_table

            judged = judged_swaps(folder, prior, args.judge, args.clips, args.seed)
            print(f"\njudged against {args.judge} ({args.clips} 1-s clips per row, crops of the training latents):")
            for line in format_table(judged, [("c2st", "C2ST acc [95% CI]", None), ("kid", "KID", "{:.3f}"),
                                              ("power", "chunk-mean power", "{:.3f}"),
                                              ("within", "within var", "{:.3f}")], "chunks"):
                print(line)


if __name__ == "__main__":
    main()
