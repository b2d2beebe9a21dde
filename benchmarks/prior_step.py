"""The chunk prior's cost per training step and per generated second, by patch size and width: A/B in one run.

Every row is a `ChunkPrior` as `kvae prior fit` builds it for the magnitude
preset's latents (32 channels at 46.9 frames/s; 3 s of context, 2-s chunks,
`prior.patch_frames = P`, `prior.width = W`), compiled as the fit compiles it
(`compile_model`: fused Adam on torch, clipping), at the fit's batch size (16
crops of 235 frames).

Timing: `--rounds` rounds; each round times `--steps` calls of every row's
Keras train function in turn (after `--warmup` untimed calls per row), so a
change of load falls on every row alike. Per row: parameters, the median
wall and process CPU ms per step (`time.process_time`), steps per CPU-second
and the ratio to the first row. Generation: the median CPU seconds per
generated second of audio of `draw_chunk` (16 Euler steps, 8 pieces at once,
given 3 s of context), without the decoder.

Whether the cheaper step learns as well per CPU-minute is a quality
question: `benchmarks/generate_quality.py --set prior.patch_frames=P`
answers it (docs/results.md#chunk-prior-quality).

    python benchmarks/prior_step.py                               # about 3 minutes alone on one core
    python benchmarks/prior_step.py --rows 1:128 4:128 4:256 --rounds 3

Run on demand, alone on the machine. Figures in docs/benchmarks.md#chunk-prior-step.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
from _common import load_line, machine_lines, table  # noqa: E402

CHANNELS, FRAME_RATE, CONTEXT, CHUNK, BATCH = 32, 3000 / 64, 141, 94, 16


def _row(text):
    try:
        patch, width = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a row is PATCH:WIDTH, e.g. 4:128, not {text!r}") from None
    if patch < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"a row's patch and width must be at least 1, got {text!r}")
    return patch, width


def build(patch, width):
    from kvae.models.chunk_prior import ChunkPrior
    from kvae.training.loop import compile_model
    from kvae.training.prior_fit import load_prior_config

    prior = ChunkPrior(CHANNELS, context_frames=CONTEXT, chunk_frames=CHUNK, width=width, patch_frames=patch,
                       frame_rate=FRAME_RATE)
    compile_model(prior, load_prior_config({"prior": {"kind": "chunk"}}))
    return prior


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", type=_row, default=[(1, 128), (2, 128), (4, 128), (4, 256)],
                   metavar="PATCH:WIDTH", help="chunk priors to compare (default 1:128 2:128 4:128 4:256)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="timed steps per row per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import keras
    import torch

    if keras.backend.backend() != "torch":
        raise SystemExit("prior_step.py: needs the torch backend (KERAS_BACKEND=torch)")
    torch.set_num_threads(args.threads)
    print("\n".join(machine_lines()), flush=True)
    rng = np.random.default_rng(0)
    crops = rng.normal(size=(BATCH, CONTEXT + CHUNK, CHANNELS)).astype("float32")
    models, times, generate = {}, {row: [] for row in args.rows}, {row: [] for row in args.rows}
    for row in args.rows:
        models[row] = build(*row)
        models[row].fit(crops, crops, batch_size=BATCH, epochs=1, verbose=0)  # builds the train function
        for _ in range(args.warmup):
            models[row].train_function([(crops, crops)])
        print(f"  patch {row[0]}, width {row[1]}: {models[row].count_params():,} parameters, built", flush=True)
    context = crops[:8, :CONTEXT]
    for r in range(args.rounds):
        for row in args.rows:
            fn = models[row].train_function
            times[row] += [_timed(lambda: fn([(crops, crops)])) for _ in range(args.steps)]
            rngs = [np.random.default_rng([r, i]) for i in range(len(context))]
            generate[row].append(_timed(lambda: models[row].draw_chunk(context, rngs))[1])
        print(f"  round {r + 1}/{args.rounds}; {load_line()}", flush=True)

    ref = statistics.median(c for _, c in times[args.rows[0]])
    out = []
    for row in args.rows:
        wall = statistics.median(w for w, _ in times[row]) * 1e3
        cpu = statistics.median(c for _, c in times[row]) * 1e3
        per_second = statistics.median(generate[row]) / (len(context) * CHUNK / FRAME_RATE)
        out.append([f"patch {row[0]}, width {row[1]}", f"{models[row].count_params():,}", f"{wall:.0f}",
                    f"{cpu:.0f}", f"{1000 / cpu:.2f}", f"{ref * 1e3 / cpu:.2f}x", f"{per_second:.4f}"])
    print()
    print("\n".join(table(["chunk prior", "parameters", "wall ms/step", "CPU ms/step", "steps/CPU-s",
                           f"vs patch {args.rows[0][0]}, width {args.rows[0][1]}", "draw CPU s / gen. s"], out)))
    print(f"\ncommand: python benchmarks/prior_step.py {' '.join(sys.argv[1:] if argv is None else argv)}; "
          f"{os.cpu_count()} CPUs; batch {BATCH} crops of {CONTEXT + CHUNK} frames; {args.rounds} rounds x "
          f"{args.steps} steps per row; {load_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
