"""Long-form generation, measured: pieces made with and without a learned latent prior, judged against real music.

For one run (`--run`, or one trained here with `kvae.fit` for `--steps` steps, with the same settings as
`benchmarks/quality.py`), fits the latent priors with `kvae.fit_prior` into this benchmark's output folder
(the run itself is only read), generates `--pieces` pieces of `--seconds` each with every prior

- `none`: independent N(0, I) draws (per latent frame; per window for vector latents), what kvae did before;
- `gmm`: the ex-post Gaussian mixture over the posterior means, one independent draw per window;
- `ar (<kind>)`: the autoregressive latent prior, one per `--kinds` (conv, transformer; chunk: the
  flow-matching `ChunkPrior`, which draws chunks of frames jointly) and `--heads` (mog: the
  Gaussian mixture per frame; flow: the flow-matching head, named `ar (<kind>, flow)`), each trained for
  `--prior-steps` optimizer steps or, with `--prior-cpu-minutes`, for the same CPU time (this process's CPU
  seconds over all threads, `kvae.training.TimeBudget(clock="cpu")`), so a slower head gets fewer steps,

cuts every piece into windows of the model's length and judges them with kvae's evaluation code
(`kvae.evaluation.evaluate.reference_sets` and `judge`, what `kvae evaluate` runs: C2ST, KID, temporal std
against random training windows, with its reference rows), plus two measures at the scale of a piece, on the
same standardised clip features (RMS over features of a difference of z-scores):

- drift: distance between the mean features of a piece's first and last 10 s (half the piece if shorter);
  real: the same for training recordings, and between the start of one recording and the end of another;
- adjacent: mean distance between consecutive windows of a piece (real: consecutive windows of training
  recordings; random pairs of training windows for scale). Independent draws make every window as far
  from the next as from any other; music moves by small steps.

Beside the pieces, the decoder's share: the model's reconstructions of training windows that are not in the
reference set (`decoder ceiling`: what any prior on this decoder could reach, without the held-out shift)
and of held-out windows, judged the same way; `the prior's gap` is a piece row's C2ST minus the ceiling's.
The prior's share is split once more (sequence latents): `<prior>: one-step draws, true context` decodes
frames each drawn from the prior's prediction after the *true* frames before it (crops of its training
latents), its per-frame error without the compounding of free-running generation. `--by-position K` adds,
per autoregressive prior, the pieces' windows judged apart in K consecutive spans (`<prior>: seconds 0-10`):
whether the pieces are as far from music at their start as later, or drift away from it as they run.

It prints the table and a summary of each autoregressive prior (parameters, context, steps, validation loss:
the mixture's negative log-likelihood in nats per frame, the flow head's squared velocity error, which are not
comparable; fit time and the cost of generation: CPU seconds per generated second of audio, decoding
included), and writes `generate_quality.json` and the
first piece of each prior as WAV into `--out`.

    python benchmarks/generate_quality.py                          # conv1d, 400 VAE steps, priors 600 steps
    python benchmarks/generate_quality.py --run runs/conv1d --kinds conv transformer --out runs/genq
    python benchmarks/generate_quality.py --run runs/conv1d --heads mog flow --prior-cpu-minutes 20 --out runs/genf
    python benchmarks/generate_quality.py --run runs/conv1d --out runs/genq --temperatures 0.5 0.7  # reuses the priors
    python benchmarks/generate_quality.py --config fc --steps 400   # a vector-latent model
    python benchmarks/generate_quality.py --quick                  # smoke run: tiny budget, 3 pieces of 12 s

Run on demand (minutes on a 2-core CPU). Public API only. Measured figures are in docs/results.md, section
"Long-form generation, measured".
"""

import argparse
import functools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kvae  # noqa: E402

kvae.configure()  # before Keras is imported

CEILING = "decoder ceiling: reconstructions of training windows"
PIECE_KEYS = (
    ("c2st", "C2ST acc [95% CI]", None),
    ("kid", "KID", "{:.3f}"),
    ("temporal_std", "temporal std dB", "{:.2f}"),
    ("drift", "drift", "{:.2f}"),
    ("adjacent", "adjacent", "{:.2f}"),
    ("flatness", "flatness", "{:.3f}"),
    ("silence", "silence", "{:.3f}"),
    ("cpu_seconds_per_second", "CPU s / gen. s", "{:.3f}"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained run folder to use (read only); default: train one here")
    parser.add_argument("--config", default=None, help="config to train when no --run (default conv1d)")
    parser.add_argument("--steps", type=int, default=None, help="VAE optimizer steps when training (default 400)")
    parser.add_argument("--prior-steps", type=int, default=None, help="optimizer steps of each prior (default 600)")
    parser.add_argument("--kinds", nargs="+", default=["conv"], choices=["conv", "transformer", "chunk"],
                        help="autoregressive prior kinds to fit and compare (default conv)")
    parser.add_argument("--heads", nargs="+", default=["mog"], choices=["mog", "flow"],
                        help="output heads of each kind: mog (Gaussian mixture), flow (flow matching); default mog")
    parser.add_argument("--prior-cpu-minutes", type=float, default=None, metavar="M",
                        help="train each prior for M minutes of CPU time instead of --prior-steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a prior config value for every prior, e.g. --set prior.flow_steps=32 (repeatable)")
    parser.add_argument("--pieces", type=int, default=None, help="pieces per prior (default 8)")
    parser.add_argument("--seconds", type=float, default=None, help="length of each piece (default 30)")
    parser.add_argument("--n-clips", type=int, default=None, help="reference training windows (default 256)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--temperatures", type=float, nargs="+", default=None, metavar="T",
                        help="also generate the autoregressive priors' pieces at these temperatures "
                             "(a row per prior and temperature, named `ar (conv) T=0.7`); the priors are fitted once")
    parser.add_argument("--noise-correlations", type=float, nargs="+", default=[0.0], metavar="RHO",
                        help="the autoregressive priors' noise correlation between frames (kvae.generate's "
                             "noise_correlation), a row per value above 0 (`... corr 0.9`); default 0")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="also generate the autoregressive priors' pieces so, a row each (`ar (chunk) "
                             "[guidance=2]`): guidance (kvae.generate's), or a loaded prior's attribute such as "
                             "flow_steps or sample_noise; priors it does not apply to are left out (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-one-step", action="store_true",
                        help="skip the rows of one-step draws given the true context (they double the judge's sets)")
    parser.add_argument("--by-position", type=int, default=0, metavar="K",
                        help="also judge each autoregressive prior's pieces in K consecutive spans, a row each")
    parser.add_argument("--data", help="dataset root (default: the run's, or the embedded corpus)")
    parser.add_argument("--pieces-to-run", type=int, default=0, metavar="N",
                        help="also write N pieces of the first prior to RUN/pieces/ (the run's gallery)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: fc, 30 steps, 30 prior steps (or 0.1 CPU minutes given any), 3 x 12 s")
    parser.add_argument("--out", help="output folder (default: a temporary folder)")
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, small in (("config", "conv1d", "fc"), ("steps", 400, 30), ("prior_steps", 600, 30),
                              ("pieces", 8, 3), ("seconds", 30.0, 12.0), ("n_clips", 256, 30)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if quick and args.prior_cpu_minutes is not None:
        args.prior_cpu_minutes = min(args.prior_cpu_minutes, 0.1)
    return args


def train_run(args, out, n_samples=4):
    """A run trained as benchmarks/quality.py trains its configs (same overrides, so the same model), with
    `n_samples` prior samples written at its end (benchmarks/condition_accuracy.py asks for none)."""
    from kvae.config import load_config

    per_epoch = max(1, min(args.steps, 50))
    overrides = {"train": {"epochs": math.ceil(args.steps / per_epoch), "steps_per_epoch": per_epoch,
                           "seed": args.seed, "verbose": 0, "n_samples": n_samples}}
    if args.data:
        overrides["data"] = {"path": args.data}
    run = out / args.config
    if (run / "model.keras").is_file():
        print(f"  reusing {run}")
        return run
    start = time.perf_counter()
    kvae.fit(load_config(args.config, overrides), run=run, verbose=False)
    print(f"  trained {args.config} for {args.steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    return run


def prior_name(kind, head):
    """The row of a prior: `ar (conv)` for the mixture head (as before heads were compared), `ar (conv, flow)`."""
    return f"ar ({kind})" if head == "mog" else f"ar ({kind}, {head})"  # ar (chunk): ChunkPrior


def fit_priors(args, run, out):
    """Fit one prior folder per kind and head; return `{row name: (folder, summary)}`."""
    from kvae.config import merge_config, parse_set

    budget = args.prior_cpu_minutes
    per_epoch = 50 if budget else max(1, min(args.prior_steps, 50))
    epochs = 10 ** 6 if budget else math.ceil(args.prior_steps / per_epoch)  # a budget stops it first
    priors = {}
    for kind in args.kinds:
        for head in (["mog"] if kind == "chunk" else args.heads):  # a chunk prior is its own flow model
            folder = out / (f"prior-{kind}" + ("" if head == "mog" else f"-{head}"))
            settings = merge_config(parse_set(args.set, sections=("prior", "gmm", "train")),
                                    {"prior": {"kind": kind, "head": head},
                                     "train": {"epochs": epochs, "steps_per_epoch": per_epoch, "seed": args.seed,
                                               "verbose": 0}})
            priors[prior_name(kind, head)] = fit_one(args, run, folder, settings, prior_name(kind, head))
    return priors


def fit_one(args, run, folder, settings, name):
    """Fit one prior into `folder` (or reuse it), within `--prior-cpu-minutes` when given; `(folder, summary)`."""
    import numpy as np

    from kvae.runs import read_history
    from kvae.training.time_budget import TimeBudget

    p = settings["prior"]
    kind, head, budget = p["kind"], p["head"], args.prior_cpu_minutes
    start, cpu = time.perf_counter(), time.process_time()
    callbacks = [TimeBudget(budget, clock="cpu")] if budget else []
    fitted = folder.with_name(folder.name + "-fit.json")  # what the fit cost, for a later run that reuses it
    reused = (folder / "prior.keras").is_file()
    if reused:
        print(f"  reusing {folder}")
    else:
        kvae.fit_prior(run, data=args.data, settings=settings, folder=folder, verbose=False, callbacks=callbacks)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    prior = kvae.load(folder / "prior.keras", compile=False)
    history = read_history(folder / "history.csv")
    steps = (callbacks[0].stopped_at if callbacks and callbacks[0].stopped_at is not None
             else len(history["loss"]) * settings["train"]["steps_per_epoch"])
    if reused and fitted.is_file():  # the fit's own figures
        seconds, cpu, steps = (json.loads(fitted.read_text())[k] for k in ("seconds", "cpu", "steps"))
    elif not reused:
        fitted.write_text(json.dumps({"seconds": seconds, "cpu": cpu, "steps": steps}))
    loss = "negative log-likelihood, nats per frame" if head == "mog" and kind != "chunk" else "flow-matching error, not nats"
    summary = {"kind": kind, "head": head, "parameters": int(prior.count_params()),
               "context_frames": prior.context_length, "loss_name": loss,
               "context_seconds": prior.context_length / prior.frame_rate, "frame_rate": prior.frame_rate,
               "train_nll": history["loss"][-1], "fit_seconds": seconds, "fit_cpu_seconds": cpu, "steps": steps}
    val = history.get("val_loss", [])
    keep_best = settings.get("train", {}).get("keep_best", True)  # else the last epoch's weights are saved
    best = (int(np.nanargmin(val)) if keep_best else len(val) - 1) if val else -1  # the epoch fit_prior keeps
    summary.update({"val_nll": val[best] if val else float("nan"), "kept_epoch": best,
                    "train_nll_kept": history["loss"][best] if val else float("nan")})
    print(f"  prior {name}: {summary['parameters']:,} parameters, {prior.context_length} frames of context, "
          f"{summary['steps']} steps, val loss {summary['val_nll']:.3f} ({loss}; epoch {best} kept), fitted in "
          f"{seconds:.0f} s ({cpu:.0f} CPU s)", flush=True)
    return folder, summary


def _rms(a, b):
    import numpy as np

    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def piece_measures(z, per_piece, span):
    """Drift and adjacent distances of standardised window features `z` of consecutive pieces."""
    import numpy as np

    drift, adjacent = [], []
    for p in range(len(z) // per_piece):
        piece = z[p * per_piece:(p + 1) * per_piece]
        m = max(1, min(span, len(piece) // 2))
        drift.append(_rms(piece[:m].mean(axis=0), piece[-m:].mean(axis=0)))
        adjacent += [_rms(piece[j], piece[j + 1]) for j in range(len(piece) - 1)]
    return float(np.mean(drift)), float(np.mean(adjacent))


def training_crops(prior_path, span, count, seed):
    """`count` random crops `(count, span, c)` of the prior's training latents (its folder's `latents.npz`)."""
    import numpy as np

    with np.load(Path(prior_path).parent / "latents.npz") as saved:
        frames, lengths = saved["train"], saved["train_lengths"]
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    rng = np.random.default_rng(seed)
    crops = []
    for i in rng.choice(np.flatnonzero(lengths >= span), count):
        first = starts[i] + rng.integers(0, lengths[i] - span + 1)
        crops.append(frames[first:first + span])
    return np.stack(crops)


def one_step_windows(prior_path, model, layout, windows, temperature, seed, rho=0.0):
    """Windows decoded from a prior's one-step draws given the *true* context (teacher forcing).

    Crops of the prior's own training frames (its folder's `latents.npz`), each frame drawn from the
    distribution the prior predicts after the true frames before it, decoded window by window: the prior's
    per-frame error without the compounding of free-running generation; `rho`: the draws' noise correlation
    along each crop (`kvae.inference.generation.CorrelatedNormal`). `(windows, window)` audio.
    """
    import numpy as np
    from keras import ops

    from kvae.inference.generation import CorrelatedNormal

    prior = kvae.load(prior_path, compile=False)
    per_crop = 6  # windows per crop
    span = layout.frames_per_window * per_crop
    norm = prior.normalize(training_crops(prior_path, span, math.ceil(windows / per_crop), [seed, 11]))
    params = np.asarray(ops.convert_to_numpy(prior(ops.convert_to_tensor(prior.shift_inputs(norm)), training=False)),
                        np.float64)
    dist = prior._mixture(params.reshape(-1, params.shape[-1]))
    rngs = [CorrelatedNormal(np.random.default_rng([seed, 12, k]), rho) for k in range(len(norm))]
    draw, n = prior.sampler(), len(norm)

    def at(t):  # the distributions of frame t of every crop
        if isinstance(dist, tuple):
            return tuple(d.reshape((n, span) + d.shape[1:])[:, t] for d in dist)
        return dist.reshape(n, span, -1)[:, t]

    drawn = np.stack([draw(at(t), rngs, temperature) for t in range(span)], axis=1)
    drawn = prior.denormalize(drawn).reshape(-1, *model.latent_shape)
    return np.concatenate([model.decode_audio(drawn[i:i + 64]) for i in range(0, len(drawn), 64)])[:windows]


def parse_variant(text):
    """`guidance=2,flow_steps=32` -> `{"guidance": 2.0, "flow_steps": 32.0}`."""
    variant = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            variant[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise SystemExit(f"--variant: expected KEY=NUMBER[,KEY=NUMBER], got {text!r}")
    return variant


@functools.lru_cache(maxsize=None)
def _loaded(prior_path):
    """A prior loaded once, only to be looked at (`with_variant` loads its own copy to change)."""
    return kvae.load(prior_path, compile=False)


def variant_applies(prior_path, variant):
    """Whether a prior can be generated with a variant: the attributes it sets exist, guidance is guidance
    towards a context (a chunk prior) when the prior is not conditioned."""
    prior = _loaded(prior_path)
    return all(hasattr(prior, k) for k in variant if k != "guidance") and (
        "guidance" not in variant or getattr(prior, "guides_context", False) or hasattr(prior, "label_ids"))


def with_variant(prior_path, variant):
    """The prior at `prior_path` (the path itself without a variant), with the variant's attributes set."""
    attributes = {k: v for k, v in variant.items() if k != "guidance"}
    if not attributes or prior_path is None:
        return prior_path
    prior = kvae.load(prior_path, compile=False)
    for key, value in attributes.items():
        if not hasattr(prior, key):
            raise SystemExit(f"--variant: a {type(prior).__name__} has no attribute {key!r}")
        setattr(prior, key, int(value) if value.is_integer() and key not in ("sample_noise",) else value)
    return prior


def chunk_windows(prior_path, model, layout, windows, temperature, seed, context=True, variant=None):
    """Windows decoded from a chunk prior's chunks drawn given the *true* context (or, `context=False`, none).

    What `one_step_windows` is to a frame-by-frame prior: crops of the prior's own training frames, each a
    context of `context_frames` true frames and a chunk drawn after it (`ChunkPrior.draw_chunk`), the chunk
    decoded window by window. With true context, the chunk's error without the compounding of a free-running
    piece; without, the first chunk of every piece. `variant`: as `--variant`'s (guidance, the prior's
    attributes). `(windows, window)` audio.
    """
    import numpy as np

    variant = variant or {}
    prior = with_variant(prior_path, variant)
    prior = kvae.load(prior, compile=False) if isinstance(prior, Path) else prior
    fpw = layout.frames_per_window
    per_chunk = max(1, prior.chunk_frames // fpw)  # whole windows of one chunk
    m = prior.context_frames
    crops = training_crops(prior_path, m + per_chunk * fpw, math.ceil(windows / per_chunk), [seed, 13])[:, :m]
    norm = prior.normalize(crops) if context else np.zeros((len(crops), 0, prior.latent_dim), np.float32)
    rngs = [np.random.default_rng([seed, 14, k]) for k in range(len(crops))]
    guidance = variant.get("guidance", 1.0)
    drawn = np.concatenate([prior.draw_chunk(norm[i:i + 32], rngs[i:i + 32], temperature, guidance)
                            for i in range(0, len(crops), 32)])
    drawn = prior.denormalize(drawn[:, :per_chunk * fpw]).reshape(-1, *model.latent_shape)
    return np.concatenate([model.decode_audio(drawn[i:i + 64]) for i in range(0, len(drawn), 64)])[:windows]


def main(argv=None):
    args = parse_args(argv)

    import keras
    import numpy as np

    from kvae.data import prepare, write_wav
    from kvae.evaluation import features as feats
    from kvae.evaluation.evaluate import judge, reference_sets
    from kvae.evaluation.report import format_table, write_json
    from kvae.evaluation.two_sample import Standardizer
    from kvae.inference.latents import LatentLayout

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kvae-genq-"))
    out.mkdir(parents=True, exist_ok=True)
    trained = (f"{args.prior_cpu_minutes:g} CPU minutes" if args.prior_cpu_minutes else f"{args.prior_steps} steps")
    print(f"kvae long-form generation benchmark: {args.pieces} pieces of {args.seconds:g} s per prior, "
          f"priors {trained} each, seed {args.seed}, temperature {args.temperature:g}, "
          f"backend {keras.backend.backend()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    run = Path(args.run) if args.run else train_run(args, out)
    model = kvae.load(run, compile=False)
    layout = LatentLayout(model)
    rate, window = model.sample_rate, model.window
    print(f"  run {run}: {type(model).__name__}, latent {tuple(model.latent_shape)}, {layout.frame_rate:.2f} "
          f"frames/s, {window}-sample windows at {rate} Hz", flush=True)
    priors = fit_priors(args, run, out)
    first = next(iter(priors.values()))[0]

    # -- the pieces
    per_piece = int(args.seconds * rate) // window
    span = max(1, int(round(min(10.0, args.seconds / 2) * rate / window)))
    choices = [("none", "none", None), ("gmm", "gmm", None)]
    choices = [(name, prior, path, args.temperature, 0.0, {}) for name, prior, path in choices]
    temperatures = [args.temperature] + [t for t in args.temperatures or () if t != args.temperature]
    variants = [{}] + [parse_variant(v) for v in args.variant]
    for t in temperatures:
        for rho in args.noise_correlations:
            for variant in variants:
                suffix = (f" T={t:g}" if t != args.temperature else "") + (f" corr {rho:g}" if rho else "") + (
                    " [" + ",".join(f"{k}={v:g}" for k, v in variant.items()) + "]" if variant else "")
                choices += [(name + suffix, "ar", folder / "prior.keras", t, rho, variant)
                            for name, (folder, _) in priors.items() if variant_applies(folder / "prior.keras", variant)]
    pieces, speed, cost = {}, {}, {}
    kvae.generate(first / "model.keras", seconds=min(2.0, args.seconds), prior="none")  # warm-up, not timed
    for name, prior, ar_path, temperature, rho, variant in choices:
        start, cpu = time.perf_counter(), time.process_time()
        ar = with_variant(ar_path, variant)
        audio = kvae.generate(first / "model.keras", seconds=args.seconds, prior=prior, ar_prior=ar,
                              seed=args.seed, temperature=temperature, n=args.pieces, noise_correlation=rho,
                              guidance=variant.get("guidance", 1.0))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        speed[name] = args.pieces * args.seconds / seconds
        cost[name] = cpu / (args.pieces * args.seconds)  # CPU seconds per generated second (prior and decoder)
        pieces[name] = audio[:, :per_piece * window].reshape(-1, window)
        suffix = (f"-{ar_path.parent.name}" if ar_path else "") + (
            f"-T{temperature:g}" if temperature != args.temperature else "") + (f"-corr{rho:g}" if rho else "") + (
            "".join(f"-{k}{v:g}" for k, v in variant.items()))
        write_wav(out / f"piece-{prior}{suffix}.wav", audio[0], rate)
        print(f"  {name:<18} {args.pieces} x {args.seconds:g} s in {seconds:.1f} s "
              f"({speed[name]:.1f} audio-s/s, {cost[name]:.3f} CPU s per generated s)", flush=True)

    # -- real music, the same way: the first `seconds` of each training recording, in windows
    corpus = prepare(args.data, sample_rate=rate) if args.data or not (run / "config.json").is_file() else None
    if corpus is None:
        data = json.loads((run / "config.json").read_text())["data"]
        corpus = prepare(data["path"] or None, sample_rate=rate, cache_dir=data["cache"] or None,
                         select=data["select"] or None)
    reference, reference_rows, test, _ = reference_sets(corpus, window, rate, args.n_clips, args.seed)
    # The decoder's share: its reconstructions of training windows that are not in the reference set (the
    # best any prior on this decoder can do, with no held-out shift in it), and of held-out windows.
    ceiling = {CEILING: reference_rows["ref: real vs real"], "decoder: reconstructions of held-out windows": test}
    ceiling = {name: np.concatenate([model.reconstruct(clips[i:i + 64]) for i in range(0, len(clips), 64)])
               for name, clips in ceiling.items()}
    real = []
    for entry in corpus.split("train") or corpus.entries:
        audio = np.asarray(corpus.array(entry)[: int(args.seconds * rate)], np.float32)
        count = len(audio) // window
        if count >= 2:
            real.append(audio[: count * window].reshape(count, window))

    # The prior's own share, split: one-step draws given the true context (no compounding), per prior and
    # temperature. Needs a sequence latent; a vector-latent model's priors step over windows already.
    one_step = {}
    frame_priors = {folder / "prior.keras" for folder, summary in priors.values() if summary["kind"] != "chunk"}
    if layout.sequence and not args.no_one_step:
        for name, prior, ar_path, temperature, rho, variant in choices:
            if ar_path in frame_priors and not variant:
                one_step[f"{name}: one-step draws, true context"] = one_step_windows(
                    ar_path, model, layout, args.n_clips, temperature, args.seed, rho)
            elif ar_path is not None and not rho:  # a chunk prior draws no frame alone: its chunks, split the same way
                for context, label in ((True, "chunks given true context"), (False, "first chunks, no context")):
                    # guidance and context noise change only chunks with a context; play_frames only pieces
                    if (context or not variant) and set(variant) != {"play_frames"}:
                        one_step[f"{name}: {label}"] = chunk_windows(ar_path, model, layout, args.n_clips,
                                                                     temperature, args.seed, context, variant)

    # The pieces by position: each autoregressive prior's windows in K consecutive spans of every piece.
    spans = {}
    for name, prior, ar_path, *_ in choices:
        if ar_path is not None and args.by_position > 1:
            w = pieces[name].reshape(args.pieces, per_piece, window)
            edges = np.linspace(0, per_piece, args.by_position + 1).round().astype(int)
            for a, b in zip(edges[:-1], edges[1:]):
                spans[f"{name}: seconds {a * window / rate:g}-{b * window / rate:g}"] = w[:, a:b].reshape(-1, window)

    # -- judge
    rows = judge({**pieces, **spans, **one_step, **ceiling, **reference_rows}, reference, rate, seed=args.seed)
    scale = Standardizer(feats.clip_features(reference, rate))
    for name, clips in pieces.items():
        rows[name]["drift"], rows[name]["adjacent"] = piece_measures(scale(feats.clip_features(clips, rate)),
                                                                     per_piece, span)
        rows[name]["audio_seconds_per_second"] = speed[name]
        rows[name]["cpu_seconds_per_second"] = cost[name]
    real_z = [scale(feats.clip_features(r, rate)) for r in real]
    drift = [_rms(z[: min(span, len(z) // 2)].mean(axis=0), z[-min(span, len(z) // 2):].mean(axis=0)) for z in real_z]
    other = [_rms(a[: min(span, len(a) // 2)].mean(axis=0), b[-min(span, len(b) // 2):].mean(axis=0))
             for a, b in zip(real_z, real_z[1:] + real_z[:1])]
    adjacent = [_rms(z[j], z[j + 1]) for z in real_z for j in range(len(z) - 1)]
    ref_z = scale(feats.clip_features(reference, rate))
    shuffled = ref_z[np.random.default_rng(args.seed).permutation(len(ref_z))]
    rows["ref: real recordings"] = {"drift": float(np.mean(drift)), "adjacent": float(np.mean(adjacent))}
    rows["ref: start of one, end of another"] = {"drift": float(np.mean(other))}
    rows["ref: random pairs of windows"] = {"adjacent": float(np.mean([_rms(a, b) for a, b in zip(ref_z, shuffled)]))}

    print()
    print(f"Realism of {window / rate:g}-s windows of the pieces against {len(reference)} random training windows "
          f"(C2ST 0.5 = indistinguishable), drift between the first and last {span * window / rate:g} s and distance "
          f"between adjacent windows (RMS z-score over {scale.mean.size} clip features; real music is the target)")
    print("\n".join(format_table(rows, PIECE_KEYS, "set")))
    for name in pieces:
        print(f"the prior's gap, {name}: pieces {rows[name]['c2st']:.3f} - decoder ceiling {rows[CEILING]['c2st']:.3f} "
              f"= {rows[name]['c2st'] - rows[CEILING]['c2st']:+.3f}")
    print()
    print("Autoregressive priors")
    for name, (_, s) in priors.items():
        print(f"  {name:<18} {s['parameters']:>9,} parameters, context {s['context_frames']} frames "
              f"({s['context_seconds']:.1f} s), {s['steps']} steps, kept epoch {s['kept_epoch']}: loss train "
              f"{s['train_nll_kept']:.3f} / validation {s['val_nll']:.3f}, {s['loss_name']} (last epoch: train "
              f"{s['train_nll']:.3f}), fitted in {s['fit_seconds']:.0f} s ({s['fit_cpu_seconds']:.0f} CPU s), "
              f"generates {speed[name]:.1f} audio-s/s ({args.pieces} pieces at once), "
              f"{cost[name]:.3f} CPU s per generated s ({cost[name] - cost['none']:+.3f} over decoding N(0, I) draws)")
    summary = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "run": str(run), "model": type(model).__name__, "latent_shape": list(model.latent_shape),
               "frame_rate": layout.frame_rate, "priors": {k: s for k, (_, s) in priors.items()}, "rows": rows}
    write_json(out / "generate_quality.json", summary)
    if args.pieces_to_run:
        from kvae.training.prior_fit import write_pieces

        for path in write_pieces(run, args.pieces_to_run, args.seconds, seed=args.seed, folder=first, verbose=False):
            print(f"wrote {path}")
    print(f"\npieces, priors and generate_quality.json in {out}; load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
