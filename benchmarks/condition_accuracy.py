"""Conditioning, judged: does a prior fitted with `--condition` make pieces a classifier labels as asked?

For one run (`--run`, or one trained here with `kvae.fit` for `--steps` steps, as
`benchmarks/generate_quality.py` trains it), fits a conditioned latent prior with `kvae.fit_prior`
(`prior.condition = --condition`) into this benchmark's output folder (the run itself is only read), or
reuses a fitted one (`--prior FOLDER`, e.g. `RUN/prior` after `kvae prior fit RUN --condition ...`), and
generates `--pieces` pieces of `--seconds` for every label of its vocabulary. Then, on kvae's clip
features (`kvae.evaluation.features`):

- a classifier (scikit-learn logistic regression on standardised clip features) is trained to tell the
  labels apart on real training windows: windows of the first 80 % of each training recording, labelled
  with their recording's label (`kvae.data.labels`, what `kvae prior fit` uses), normalised as the run's
  training windows were (`data.normalize`);
- its accuracy, with a Wilson 95 % interval, on held-out real windows of the same labels (the last 20 %
  of the same recordings, disjoint in time from the classifier's), on those held-out windows as the
  model reconstructs them (what its decoder can show of the label), and on the windows of the pieces
  generated for each label; chance is one over the number of labels (every set is balanced by label);
- per label, the realism of its pieces: the C2ST accuracy of telling its generated windows from real
  training windows of the same label (0.5 = indistinguishable), as `benchmarks/generate_quality.py` judges.

The target (issue 35): accuracy on generated pieces at least half the held-out real accuracy, with its
interval's low end above chance. It writes `condition_accuracy.json` and one piece per label as
`piece-<label>.wav` (listening examples) into `--out`.

    python benchmarks/condition_accuracy.py --quick                    # smoke run on the embedded corpus
    python benchmarks/condition_accuracy.py --run runs/conv1d --condition ensemble --out runs/cond
    python benchmarks/condition_accuracy.py --run runs/real --data /music --condition file --out runs/cond-real
    python benchmarks/condition_accuracy.py --run runs/real --prior runs/real/prior --out runs/cond-real
    python benchmarks/condition_accuracy.py --run runs/real --kind chunk --set prior.width=256 \
        --set prior.patch_frames=4 --prior-cpu-minutes 20 --condition file --out runs/cond-chunk

Run on demand (minutes on a 2-core CPU for --quick).
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kvae  # noqa: E402

kvae.configure()  # before Keras is imported

HELD_OUT = 0.2  # the last fifth of each training recording is held out from the classifier


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained run folder (read only); default: train one here")
    parser.add_argument("--prior", help="a fitted conditioned prior folder to reuse (default: fit one here)")
    parser.add_argument("--condition", help="label source: a metadata column, file, or a CSV of file,label "
                                            "(default: ensemble where the data has metadata, else file)")
    parser.add_argument("--config", default=None, help="config to train when no --run (default conv1d)")
    parser.add_argument("--steps", type=int, default=None, help="VAE optimizer steps when training (default 400)")
    parser.add_argument("--prior-steps", type=int, default=None, help="optimizer steps of the prior (default 600)")
    parser.add_argument("--kind", default="conv", choices=["conv", "transformer", "chunk"],
                        help="prior kind (default conv)")
    parser.add_argument("--prior-cpu-minutes", type=float, default=None, metavar="M",
                        help="train the prior for M minutes of CPU time instead of --prior-steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a prior config value, e.g. --set prior.width=256 (repeatable)")
    parser.add_argument("--pieces", type=int, default=None, help="pieces per label (default 4)")
    parser.add_argument("--seconds", type=float, default=None, help="length of each piece (default 20)")
    parser.add_argument("--windows", type=int, default=None,
                        help="real windows per label for the classifier (default 200; held out: a quarter)")
    parser.add_argument("--guidance", type=float, default=1.0, help="guidance scale of the pieces (default 1)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="dataset root (default: the run's, or the embedded corpus)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: fc, 30 steps, prior 30 steps, 2 x 6 s per label")
    parser.add_argument("--out", help="output folder (default: a temporary folder)")
    args = parser.parse_args(argv)
    for name, full, small in (("config", "conv1d", "fc"), ("steps", 400, 30), ("prior_steps", 600, 30),
                              ("pieces", 4, 2), ("seconds", 20.0, 6.0), ("windows", 200, 24)):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    return args


def train_run(args, out):
    """A run trained as benchmarks/generate_quality.py trains one, without prior samples."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from generate_quality import train_run as train_like_generate_quality

    return train_like_generate_quality(args, out, n_samples=0)


def run_corpus(args, run, rate):
    from kvae.data import prepare

    if args.data or not (run / "config.json").is_file():
        return prepare(args.data, sample_rate=rate)
    data = json.loads((run / "config.json").read_text())["data"]
    return prepare(data["path"] or None, sample_rate=rate, cache_dir=data["cache"] or None,
                   select=data["select"] or None)


def fit_conditioned(args, run, out, condition):
    """The conditioned prior: `--prior`, or one fitted here into `out/prior-<condition>`."""
    if args.prior:
        return Path(args.prior)
    from kvae.config import merge_config, parse_set
    from kvae.training.time_budget import TimeBudget

    budget = args.prior_cpu_minutes
    per_epoch = 50 if budget else max(1, min(args.prior_steps, 50))
    folder = out / f"prior-{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(condition).stem)}"
    settings = merge_config(parse_set(args.set, sections=("prior", "gmm", "train")), {
        "prior": {"kind": args.kind, "condition": condition},
        "train": {"epochs": 10 ** 6 if budget else math.ceil(args.prior_steps / per_epoch),  # a budget stops it
                  "steps_per_epoch": per_epoch, "seed": args.seed, "verbose": 0}})
    if (folder / "prior.keras").is_file():
        print(f"  reusing {folder}")
        return folder
    start, cpu = time.perf_counter(), time.process_time()
    callbacks = [TimeBudget(budget, clock="cpu")] if budget else []
    kvae.fit_prior(run, data=args.data, settings=settings, folder=folder, verbose=False, callbacks=callbacks)
    steps = f", {callbacks[0].stopped_at} steps" if callbacks and callbacks[0].stopped_at is not None else ""
    print(f"  conditioned prior ({args.kind}, condition {condition}) fitted in {time.perf_counter() - start:.0f} s "
          f"({time.process_time() - cpu:.0f} CPU s{steps})", flush=True)
    return folder


def real_windows(corpus, labels, vocabulary, window, per_label, seed):
    """`{label: (classifier windows, held-out windows)}`: random windows of the first 80 % and the last 20 %
    of each training recording of the label, at most `per_label` and `per_label // 4` per label."""
    import numpy as np

    rng = np.random.default_rng([seed, 35])
    entries = corpus.split("train") or corpus.entries
    out = {}
    for label in vocabulary:
        parts = ([], [])
        for entry in (e for e in entries if labels.get(e.key) == label):
            audio = corpus.array(entry)
            cut = int(len(audio) * (1 - HELD_OUT))
            for part, (lo, hi) in zip(parts, ((0, cut), (cut, len(audio)))):
                if hi - lo >= window:
                    part.append(audio[lo:hi])
        count = (per_label, max(per_label // 4, 5))
        drawn = []
        for spans, n in zip(parts, count):
            if not spans:
                drawn.append(np.zeros((0, window), np.float32))
                continue
            weights = np.array([len(s) - window + 1 for s in spans], float)
            which = rng.choice(len(spans), size=n, p=weights / weights.sum())
            drawn.append(np.stack([np.asarray(spans[i][s:s + window], np.float32) for i in which
                                   for s in [int(rng.integers(0, len(spans[i]) - window + 1))]]))
        out[label] = tuple(drawn)
    return out


def accuracy(classifier, features, labels):
    """`{"accuracy", "low", "high", "n"}` of a classifier on features with their true labels."""
    import numpy as np

    from kvae.evaluation.two_sample import wilson_interval

    correct = int(np.sum(classifier.predict(features) == np.asarray(labels)))
    low, high = wilson_interval(correct, len(labels))
    return {"accuracy": correct / max(len(labels), 1), "low": low, "high": high, "n": int(len(labels))}


def _cell(result):
    return f"{result['accuracy']:.3f} [{result['low']:.3f}, {result['high']:.3f}]  n={result['n']}"


def main(argv=None):
    args = parse_args(argv)

    import keras
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from kvae.data import write_wav
    from kvae.data.labels import is_csv, normalize_condition, recording_labels
    from kvae.data.windows import normalize_window
    from kvae.inference.generation import run_normalize
    from kvae.evaluation.features import clip_features
    from kvae.evaluation.report import write_json
    from kvae.evaluation.two_sample import c2st

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kvae-cond-"))
    out.mkdir(parents=True, exist_ok=True)
    trained = (f"from {args.prior}" if args.prior else f"{args.prior_cpu_minutes:g} CPU minutes"
               if args.prior_cpu_minutes else f"{args.prior_steps} steps")
    print(f"kvae conditioning benchmark: {args.pieces} pieces of {args.seconds:g} s per label, prior {trained}, "
          f"guidance {args.guidance:g}, seed {args.seed}, backend {keras.backend.backend()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    run = Path(args.run) if args.run else train_run(args, out)
    model = kvae.load(run, compile=False)
    rate, window = model.sample_rate, model.window
    corpus = run_corpus(args, run, rate)
    if args.prior:
        saved = json.loads((Path(args.prior) / "config.json").read_text())
        condition = saved["prior"].get("condition", "")
        if not condition:
            print(f"kvae: error: {args.prior}: a prior fitted without a condition", file=sys.stderr)
            return 2
    else:
        condition = args.condition or ("ensemble" if any(e.metadata for e in corpus.entries) else "file")
        condition = normalize_condition(condition)
    folder = fit_conditioned(args, run, out, condition)
    prior = kvae.load(folder / "prior.keras", compile=False)
    vocabulary = list(prior.labels)
    labels, _ = recording_labels(corpus, condition)
    name = Path(condition).name if is_csv(condition) else condition
    print(f"  condition {name}: {len(vocabulary)} labels", flush=True)

    # -- real windows by label (normalised as the run's training windows were), and the classifier
    real = real_windows(corpus, labels, vocabulary, window, args.windows, args.seed)
    mode = run_normalize(run)
    for parts in real.values():
        for clips in parts:
            normalize_window(clips, mode)
    usable = [v for v in vocabulary if len(real[v][0]) and len(real[v][1])]
    skipped = [v for v in vocabulary if v not in usable]
    if len(usable) < 2:
        print(f"kvae: error: fewer than two labels have recordings long enough for windows of {window} samples "
              f"in both parts", file=sys.stderr)
        return 2
    train_x = np.concatenate([clip_features(real[v][0], rate) for v in usable])
    train_y = np.concatenate([[v] * len(real[v][0]) for v in usable])
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
    classifier.fit(train_x, train_y)

    # -- the pieces: every label's side by side, one stream
    per_piece = int(args.seconds * rate) // window
    start = time.perf_counter()
    condition_list = [v for v in usable for _ in range(args.pieces)]
    audio = kvae.generate(folder / "model.keras", seconds=args.seconds, prior="ar", ar_prior=folder / "prior.keras",
                          seed=args.seed, temperature=args.temperature, n=len(condition_list),
                          condition=condition_list, guidance=args.guidance)
    generation_seconds = time.perf_counter() - start
    print(f"  generated {len(condition_list)} pieces of {args.seconds:g} s in {generation_seconds:.1f} s", flush=True)
    generated = {}
    for i, label in enumerate(condition_list):
        clips = audio[i, :per_piece * window].reshape(-1, window)
        generated[label] = np.concatenate([generated[label], clips]) if label in generated else clips
        if i % args.pieces == 0:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60]
            write_wav(out / f"piece-{safe}.wav", audio[i], rate)

    # -- judge
    held = {v: real[v][1] for v in usable}
    n_held = min(len(c) for c in held.values())
    n_gen = min(len(c) for c in generated.values())
    sets = {
        "held-out real windows": {v: held[v][:n_held] for v in usable},
        "held-out windows, reconstructed": {v: model.reconstruct(held[v][:n_held]) for v in usable},
        "generated pieces": {v: generated[v][:n_gen] for v in usable},
    }
    rows, per_label = {}, {v: {} for v in usable}
    features = {s: {v: clip_features(c, rate) for v, c in by.items()} for s, by in sets.items()}
    for set_name, by in features.items():
        rows[set_name] = accuracy(classifier, np.concatenate(list(by.values())),
                                  np.concatenate([[v] * len(f) for v, f in by.items()]))
        for v, f in by.items():
            per_label[v][set_name] = accuracy(classifier, f, [v] * len(f))
    chance = 1.0 / len(usable)
    for v in usable:
        per_label[v]["realism c2st"] = c2st(train_x[train_y == v], features["generated pieces"][v], seed=args.seed)
    gen, heldout = rows["generated pieces"], rows["held-out real windows"]
    met = gen["accuracy"] >= 0.5 * heldout["accuracy"] and gen["low"] > chance

    print()
    print(f"Conditioning accuracy: a logistic regression on clip features of {len(train_y)} real training windows "
          f"({window / rate:g} s, the first {1 - HELD_OUT:.0%} of each recording) labels windows; balanced sets, "
          f"chance {chance:.3f} ({len(usable)} labels){'; no windows for ' + ', '.join(skipped) if skipped else ''}")
    width = max(len(s) for s in rows) + 2
    print(f"{'set':<{width}}accuracy [95% CI]")
    for set_name, result in rows.items():
        print(f"{set_name:<{width}}{_cell(result)}")
    print(f"{'chance':<{width}}{chance:.3f}")
    print(f"target: generated {gen['accuracy']:.3f} >= half of held-out real {0.5 * heldout['accuracy']:.3f} and "
          f"its low end {gen['low']:.3f} > chance {chance:.3f}: {'met' if met else 'not met'}")
    print()
    label_width = max(len(v) for v in usable) + 2
    print(f"{'label':<{label_width}}{'held-out real acc':>20}{'generated acc':>16}{'realism C2ST [95% CI]':>26}")
    for v in usable:
        r = per_label[v]
        c = r["realism c2st"]
        real_acc, gen_acc = r["held-out real windows"]["accuracy"], r["generated pieces"]["accuracy"]
        print(f"{v:<{label_width}}{real_acc:>20.3f}{gen_acc:>16.3f}"
              f"{c['accuracy']:>10.3f} [{c['low']:.3f}, {c['high']:.3f}]")
    summary = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "run": str(run), "prior": str(folder), "condition": name, "labels": usable, "skipped": skipped,
               "chance": chance, "rows": rows, "per_label": per_label, "target_met": bool(met),
               "generation_seconds": generation_seconds}
    write_json(out / "condition_accuracy.json", summary)
    print(f"\nlistening examples piece-<label>.wav and condition_accuracy.json in {out}; load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
