"""The `kvae` command: prepare, fit, sample, reconstruct, export, evaluate, gallery, tune, prior fit, generate.

Each subcommand imports what it needs only when it runs. Bad input ends with
one line, `kvae: error: ...`, and exit status 2 (a traceback only with
`--debug`).
"""

import argparse
import functools
import os
import sys
import time
import warnings
from pathlib import Path

from kvae.cli_condition import add_condition_args, condition_options, condition_settings


def _add_data_args(p, rate=True):
    p.add_argument("--data", metavar="ROOT", help="dataset root (MusicNet or any audio folder); default: the embedded dataset")
    if rate:
        p.add_argument("--sample-rate", type=int, metavar="HZ",
                       help="target sample rate (default 3000, kvae.bounds.DEFAULT_RATE)")
        p.add_argument("--rate", type=int, dest="old_rate", help=argparse.SUPPRESS)  # kvae 0.1's name
    p.add_argument("--cache", metavar="DIR", help="cache folder (default: under $KVAE_HOME/cache)")


def _sample_rate(args):
    """`--sample-rate`, or kvae 0.1's `--rate` (read as it, with one warning line); None when neither is given."""
    if getattr(args, "old_rate", None) is not None:
        from kvae._deprecated import renamed

        renamed("--rate", "--sample-rate")
        if args.sample_rate is None:
            args.sample_rate = args.old_rate
        args.old_rate = None
    return getattr(args, "sample_rate", None)


def _progress(done, total, key):
    if sys.stderr.isatty() and total:
        end = "\n" if done == total else ""
        print(f"\rpreparing {done}/{total} {key or ''}".ljust(60), end=end, file=sys.stderr, flush=True)


def cmd_prepare(args):
    from kvae.bounds import DEFAULT_RATE
    from kvae.data import prepare

    select = {"ensemble": args.ensemble} if args.ensemble else None
    try:
        rate = _sample_rate(args)
        corpus = prepare(args.data, sample_rate=DEFAULT_RATE if rate is None else rate, cache_dir=args.cache,
                         select=select, window_seconds=args.window, progress=_progress)
    except Exception as exc:
        report = getattr(exc, "report", None)
        if report is not None:
            print("\n".join(report.summary()))
        raise
    print("\n".join(corpus.report.summary()))
    return 0


def _set_items(args):
    from kvae.config import parse_set

    overrides = parse_set(args.set)
    for key, section, value in (
        ("epochs", "train", args.epochs), ("steps_per_epoch", "train", args.steps_per_epoch),
        ("sample_rate", "data", _sample_rate(args)), ("cache", "data", getattr(args, "cache", None)),
        ("tensorboard", "train", getattr(args, "tensorboard", None) or None),
    ):
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return overrides


def cmd_fit(args):
    if args.nproc is not None:  # data-parallel: the same command on N ranks, through torchrun
        from kvae.training.distributed import launch, strip_nproc

        return launch(args.nproc, strip_nproc(args.argv))
    from kvae.runs import RunFolder
    from kvae.training import fit

    config = args.config
    resuming = args.run is not None and RunFolder(args.run).config.is_file()
    if config is None and not resuming:
        config = "quickstart"
    start = time.perf_counter()
    model, history = fit(config=config, data=args.data, run=args.run, settings=_set_items(args))
    if os.environ.get("RANK", "0") != "0":  # a data-parallel rank other than 0: rank 0 reports
        return 0
    last = {k: v[-1] for k, v in history.items()}
    shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(last.items())) or "no epoch left to train, model saved"
    print(f"done in {time.perf_counter() - start:.0f} s: {shown}")
    return 0


def cmd_sample(args):
    from kvae.paths import check_output_folder
    from kvae.models.loading import load
    from kvae.training import write_samples

    check_output_folder(args.out)
    model = load(args.model, compile=False)
    paths = write_samples(model, args.out, n=args.n, seed=args.seed, plots=not args.no_plots)
    for p in paths:
        print(p)
    return 0


def cmd_reconstruct(args):
    from kvae.runs import check_output_file
    from kvae.inference import load, reconstruct_file

    block_ms = 10.0 if args.block_ms is None else args.block_ms
    if args.stream:
        from kvae.inference.stream import block_samples, reconstruct_file_streamed

        block_samples(block_ms, 1000)  # its bound, before anything is loaded
    elif args.block_ms is not None:
        from kvae.errors import KvaeError

        raise KvaeError("--block-ms: only with --stream")
    check_output_file(args.output, [args.input, args.model], overwrite=args.overwrite)
    model = load(args.model, compile=False)
    if not args.stream:
        frames = reconstruct_file(model, args.input, args.output, overwrite=args.overwrite)
        print(f"{args.output}: {frames / model.sample_rate:.2f} s at {model.sample_rate} Hz")
        return 0
    start = time.process_time()
    frames, stream = reconstruct_file_streamed(model, args.input, args.output, block_ms=block_ms,
                                               overwrite=args.overwrite)
    seconds, n = frames / model.sample_rate, block_samples(block_ms, model.sample_rate)
    shortest = f" ({n * 1000 / model.sample_rate:.3g} ms: a block is one sample at least)" if n == 1 else ""
    print(f"{args.output}: {seconds:.2f} s at {model.sample_rate} Hz, streamed in blocks of {block_ms:g} ms = "
          f"{n} sample{'s' if n > 1 else ''}{shortest}; "
          f"latency {stream.latency_samples} samples = {stream.latency_ms:.1f} ms; "
          f"{seconds / max(time.process_time() - start, 1e-9):.1f}x real time (CPU time)")
    return 0


def cmd_export(args):
    from kvae.export import export_onnx

    if args.format is not None:
        warnings.warn("--format: kvae export writes ONNX, its only format; the flag is ignored since kvae 0.2 "
                      "(drop it)", FutureWarning, stacklevel=2)

    export_onnx(args.run, args.out, prior=not args.no_prior, verbose=True)
    return 0


def cmd_prior_fit(args):
    from kvae.config import parse_set
    from kvae.training import fit_prior

    settings = parse_set(args.set, sections=("prior", "gmm", "train"))
    for key, value in (("epochs", args.epochs), ("steps_per_epoch", args.steps_per_epoch),
                       ("tensorboard", args.tensorboard or None)):
        if value is not None:
            settings.setdefault("train", {})[key] = value
    start = time.perf_counter()
    _, history = fit_prior(args.run, config=args.config, data=args.data, cache=args.cache,
                           settings=condition_settings(args, settings),
                           pieces=args.pieces, piece_seconds=args.piece_seconds)
    last = {k: v[-1] for k, v in history.items()}
    shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(last.items())) or "no epoch left to train, prior saved"
    print(f"done in {time.perf_counter() - start:.0f} s: {shown}")
    return 0


def cmd_generate(args):
    from kvae.inference import generate

    generate(args.run, seconds=args.seconds, out=args.out, prior=args.prior, temperature=args.temperature,
             seed=args.seed, prime=args.prime, n=args.n, overwrite=args.overwrite, verbose=True,
             noise_correlation=args.noise_correlation, **condition_options(args))
    return 0


def cmd_evaluate(args):
    from kvae.errors import KvaeError
    from kvae.evaluation import evaluate as evaluation
    from kvae.evaluation.report import write_json
    from kvae.models.loading import load
    from kvae.runs import check_output_file
    from kvae.runs.folder import EVALUATION

    if args.plot is not None and not str(args.plot).lower().endswith(".png"):
        raise KvaeError(f"--plot: give a .png file name, got {args.plot}")
    for out, example in ((args.out, EVALUATION), (args.plot, "rate.png")):  # before the work, not after it
        if out:
            check_output_file(out, [args.model], example=example, overwrite=args.overwrite)
    model = load(args.model, compile=False)
    result = evaluation.evaluate(model, data=args.data, cache=args.cache, n_clips=args.n_clips, seed=args.seed,
                                 progress=_stderr_progress())
    print(evaluation.format_report(result))
    if args.out:
        print(f"wrote {write_json(args.out, result, refuse=[args.model])}")
    if args.plot is not None:
        from kvae.evaluation.plots import plot_rate_realism

        print(f"wrote {plot_rate_realism([result], args.plot, labels=[Path(args.model).name])}")
    return 0


def _stderr_progress():
    """Progress lines on stderr when it is a terminal, else None."""
    return (lambda m: print(f"  {m}", file=sys.stderr, flush=True)) if sys.stderr.isatty() else None


def cmd_gallery(args):
    from kvae.evaluation.gallery import write_gallery

    page = write_gallery(args.runs, out=args.out, n=args.n, evaluate=args.evaluate, n_clips=args.n_clips,
                         seed=args.seed, data=args.data, cache=args.cache, progress=_stderr_progress())
    print(f"wrote {page}")
    print(f"open it in a browser: xdg-open {page}  (or {page.resolve().as_uri()})")
    return 0


def cmd_tune(args):
    from kvae.tuning import search

    result = search(config=args.config, data=args.data, directory=args.dir, tuner=args.tuner,
                    max_trials=args.max_trials, epochs=args.epochs, cache=getattr(args, "cache", None),
                    verbose=True)
    if result.role == "worker":
        print(f"worker {os.environ.get('KERASTUNER_TUNER_ID')}: no trial left")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="kvae", description="Variational autoencoders for music on raw audio.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    sub.add_parser = functools.partial(sub.add_parser, parents=[common])

    p = sub.add_parser("prepare", help="decode and resample a dataset into the cache")
    _add_data_args(p)
    p.add_argument("--window", type=float, default=1.0, metavar="SECONDS",
                   help="training window; shorter recordings are counted (default 1.0)")
    p.add_argument("--ensemble", help='MusicNet ensemble to keep, e.g. "Solo Piano"')
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("fit", help="train a VAE (default: configs/quickstart.toml on the embedded dataset)")
    p.add_argument("--config", metavar="FILE", help="config file or name in configs/ (default: quickstart)")
    _add_data_args(p)
    p.add_argument("--run", "--run-dir", dest="run", metavar="DIR",
                   help="run folder; an interrupted run resumes from it (under torchrun write --run-dir: "
                        "torchrun reads --run as its own --run-path)")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--steps-per-epoch", type=int, metavar="N")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.hidden_layers=4 (repeatable)")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train data-parallel on N local processes (torch backend; runs torchrun "
                        "--nproc-per-node N -m kvae fit ...): one per GPU, or gloo on CPUs")
    p.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard events (scalars, audio, spectrograms) to RUN/tensorboard "
                        "(train.tensorboard; audio every train.tensorboard_every epochs)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("sample", help="write samples of a trained model as WAV")
    p.add_argument("model", help="model.keras file or run folder")
    p.add_argument("-n", type=int, default=4, help="number of clips (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples", metavar="DIR", help="folder to write to (default samples)")
    p.add_argument("--no-plots", action="store_true", help="skip the waveform/spectrogram PNGs")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("reconstruct", help="pass a WAV through a model, window by window (streamed)")
    p.add_argument("model")
    p.add_argument("input", metavar="IN.wav")
    p.add_argument("output", metavar="OUT.wav", help="WAV to write; never the input, nor a folder")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.wav if it exists")
    p.add_argument("--stream", action="store_true",
                   help="process the input block by block with a fixed latency (kvae.inference.stream; prints it)")
    p.add_argument("--block-ms", type=float, metavar="MS", help="block length with --stream (default 10)")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("export", help="the encoder, decoder (and prior step) as ONNX graphs for onnxruntime")
    p.add_argument("run", metavar="RUN", help="run folder (its fitted prior is exported too) or model.keras")
    p.add_argument("--format", choices=("onnx",), help=argparse.SUPPRESS)  # kvae 0.1's; ONNX is the only format
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder to write (new, empty, or written by kvae export before)")
    p.add_argument("--no-prior", action="store_true", help="skip the prior's one-step graph")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="does a model sound like its data? two-sample tests against reference rows")
    p.add_argument("model")
    _add_data_args(p, rate=False)
    p.add_argument("--n-clips", "--n-samples", dest="n_clips", type=int, default=256, metavar="N",
                   help="clips per set: samples, reconstructions and every reference row (default 256)")
    p.add_argument("--out", metavar="FILE.json", help="also write the report as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace --out / --plot if they exist")
    p.add_argument("--plot", metavar="FILE.png", help="also plot paired reconstruction C2ST against bitrate")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("gallery", help="an HTML page to listen to runs and compare them side by side")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (from kvae fit)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN/gallery for one run; needed for several)")
    p.add_argument("-n", type=int, default=4, metavar="N",
                   help="held-out windows with their reconstructions, and prior samples, per run (default 4)")
    p.add_argument("--evaluate", action="store_true",
                   help="evaluate runs that have no eval.json (default: show eval.json where there is one)")
    p.add_argument("--n-clips", type=int, default=64, metavar="N",
                   help="clips per set of that evaluation (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", metavar="ROOT", help="dataset root of the test windows (default: each run's config)")
    p.add_argument("--cache", metavar="DIR", help="cache folder (default: each run's config, else under $KVAE_HOME)")
    p.set_defaults(func=cmd_gallery)
    p = sub.add_parser("prior", help="latent priors of a trained run (prior fit)")
    prior_sub = p.add_subparsers(dest="prior_command", required=True, metavar="ACTION")
    p = prior_sub.add_parser("fit", parents=[common],
                             help="fit the latent mixture and the autoregressive prior into RUN/prior/ (resumes)")
    p.add_argument("run", metavar="RUN", help="run folder written by kvae fit")
    p.add_argument("--config", metavar="FILE", help="prior config file ([prior], [gmm], [train]) or a recipe: chunk")
    p.add_argument("--data", metavar="ROOT", help="dataset root (default: the one the run was trained on)")
    p.add_argument("--cache", metavar="DIR", help="cache folder (default: the run's)")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--steps-per-epoch", type=int, metavar="N")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a prior config value, e.g. --set prior.kind=transformer (repeatable)")
    p.add_argument("--pieces", type=int, default=0, metavar="N",
                   help="also write N generated pieces to RUN/pieces/ (default 0)")
    p.add_argument("--piece-seconds", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard events (losses, generated pieces) to RUN/prior/tensorboard")
    add_condition_args(p)
    p.set_defaults(func=cmd_prior_fit)

    p = sub.add_parser("generate", help="generate long pieces from a run, streamed to WAV")
    p.add_argument("run", metavar="RUN", help="run folder (its prior/ is used when fitted) or model.keras")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each piece (default 30)")
    p.add_argument("--out", default="piece.wav", metavar="FILE.wav", help="output WAV (default %(default)s)")
    p.add_argument("--prior", default="auto", choices=("auto", "ar", "gmm", "none"),
                   help="ar: the fitted autoregressive prior; gmm: the latent mixture, window by window; "
                        "none: independent N(0, I) draws; auto: the best one fitted (default)")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="spread of the draws (default 0.7 with a conv or transformer prior, else 1)")
    p.add_argument("--noise-correlation", type=float, metavar="RHO", help="ar prior: frame-to-frame noise correlation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prime", metavar="FILE", help="a recording to continue (the piece starts with it)")
    p.add_argument("-n", type=int, default=1, help="number of pieces (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never a model or run file)")
    add_condition_args(p, generate=True)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("tune", help="keras-tuner search over depth and learning rate (FC VAE)")
    p.add_argument("--config", metavar="FILE",
                   help="search config file or built-in name (default: fc_depth_lr)")
    _add_data_args(p, rate=False)
    p.add_argument("--dir", default="tuning-runs/fc", metavar="DIR", help="search folder (resumes if it exists)")
    p.add_argument("--tuner", default=None, help="random, bayesian or hyperband")
    p.add_argument("--max-trials", type=int, metavar="N")
    p.add_argument("--epochs", type=int, metavar="N")
    p.set_defaults(func=cmd_tune)
    return parser


def main(argv=None):
    from kvae._env import configure

    configure()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    from kvae.errors import KvaeError

    try:
        from kvae._env import terminate_as_interrupt

        with warnings.catch_warnings(), terminate_as_interrupt():
            from kvae._deprecated import one_line_warnings

            one_line_warnings()
            from kvae.arguments import check

            check(args)  # every number, with its flag's name, before the work
            return args.func(args)
    except KvaeError as exc:
        if args.debug:
            raise
        print(f"kvae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        from kvae._env import interrupted

        text, code = interrupted(args.command, exc)
        print(text, file=sys.stderr)
        return code

if __name__ == "__main__":
    sys.exit(main())
