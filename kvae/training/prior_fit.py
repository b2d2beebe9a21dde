"""`kvae prior fit RUN`: fit the latent priors of a trained run, in their own folder `RUN/prior/`.

Two priors are fitted from the latents of the run's training recordings:

- the ex-post Gaussian mixture (`kvae.models.gmm.LatentGMM`) over the
  posterior means of the training windows, attached to the VAE and saved as
  `RUN/prior/model.keras` (the run's own `model.keras` is never rewritten),
  so `kvae.load("RUN/prior").sample(n, prior="gmm")` draws from it;
- the autoregressive `kvae.models.LatentPrior` (or `ChunkPrior`) over the frame sequences of long
  contiguous stretches of the training recordings (whole recordings up to `train.max_seconds` in all),
  trained with Keras `fit` like the VAE: random crops each epoch (reproducible from the seed and the epoch),
  a validation loss on the test split (or the last tenth of each training sequence when there is none), the
  weights of the epoch with the lowest validation loss kept (`train.keep_best`), `history.csv`,
  `loss_curves.png`, and `BackupAndRestore`, so an interrupted fit resumes where it stopped.

The folder holds::

    config.json       the resolved prior config
    latents.npz       the encoded frames (reused while the model and settings are unchanged)
    model.keras       the VAE with its latent mixture
    prior.keras       the autoregressive prior
    history.csv, loss_curves.png, backup/ (while training)"""

import copy
import json
from pathlib import Path

import keras
import numpy as np

from kvae.config import Schema, merge_config, read_config_file
from kvae.errors import KvaeError
from kvae.paths import save_error, write_text
from kvae.presets import find_preset, preset_names
from kvae.runs import RunFolder, read_history
from kvae.training.loop import compile_model, fit_in_folder, save_model_atomic, seed_everything
from kvae.training.time_budget import TimeBudget, cooldown
from kvae.data.labels import normalize_condition, recording_labels
from kvae.inference.prior_data import LatentCrops, encoded_latents, sequence_labels

PRIOR_SECTIONS = ("prior", "gmm", "train")
PRIOR_DEFAULTS = {
    "prior": {
        "kind": "conv",  # conv (causal dilated convolutions), transformer, or chunk (flow matching over chunks)
        "context_seconds": 3.0,  # RAVE's prior sees about 3 s
        "chunk_seconds": 2.0,  # chunk: the frames drawn jointly
        "context_dropout": 0.1,  # chunk: share of training crops without their context (a piece's first chunk)
        "context_noise": 0.0,  # chunk: noise levels U(0, this) on the training context (0: none)
        "offset_noise": 0.0,  # chunk: std of a per-chunk constant in the starting noise (a chunk mean's own source)
        "dropout": 0.0,  # chunk: dropout on each block's residual branch in training (against overfitting)
        "flow_time": "uniform",  # chunk: the training flow times, uniform or logit-normal (SD3's, mid times more)
        "patch_frames": 1,  # chunk: frames per step of the network's sequence (P: a step costs about 1/P)
        "width": 64,
        "layers": 0,  # 0: conv grows to the context; transformer 2
        "kernel_size": 3, "num_heads": 4,
        "components": 4,  # Gaussian mixture components per frame
        "condition": "",  # "": none; a metadata column (composer, ensemble), file, or a CSV of file,label
        "label_dropout": 0.1,  # conditioned: share of crops trained unconditionally (classifier-free)
        "head": "mog",  # mog (a Gaussian mixture per frame) or flow (flow matching, kvae.models.flow_head)
        "flow_width": 64,  # the flow head's MLP (its cost per frame grows with width^2 x flow_samples)
        "flow_blocks": 3,
        "flow_steps": 16,  # Euler steps per generated frame (the flow head's cost of generation)
        "flow_samples": 4,  # (noise, time) draws per frame in a training step
    },
    "gmm": {"components": 8, "covariance": "auto"},
    "train": {
        "epochs": 20, "steps_per_epoch": 50, "batch_size": 16,
        "sequence_frames": 0,  # 0: twice the prior's context, at most the shortest training sequence
        "learning_rate": 1e-3,
        "cooldown": 0.0,  # share of training over which the learning rate falls linearly to 0 (0: constant)
        "max_minutes": 0.0,  # 0: no time limit; else stop after the batch that passes it (as kvae fit's)
        "clipnorm": 1.0,
        "fused_adam": True,  # torch backend: fused clipping + Adam kernels, as kvae fit (kvae.training.compile_model)
        "ema_momentum": 0.0,  # 0: off; else the saved prior holds the weights' exponential moving average
        "input_noise": 0.0,  # std of noise on the training crops' input frames (normalised units), not the targets
        "rollout": 0.0,  # share of input frames replaced by the prior's own draws (mixture head; LatentPrior)
        "seed": 0,
        "init": "",  # warm start: a fitted prior (its prior.keras, or the folder holding it) of the same network
        "max_seconds": 3600.0,  # audio encoded for the prior, in all
        "trim_silence_db": 0.0,  # below 0: cut each recording's start and end quieter than this (dBFS) first
        "augment_shifts": 1,  # above 1: also encode the training audio from this many starts within a frame
        "keep_best": True,  # keep the weights of the epoch with the lowest validation loss
        "tensorboard": False,  # true: TensorBoard event files in RUN/prior/tensorboard, with generated pieces
        "tensorboard_every": 5,  # epochs between the pieces written to TensorBoard
        "verbose": "auto",
    },
}
CHUNK_KEYS = ("width", "layers", "kernel_size", "flow_steps", "context_dropout", "context_noise", "flow_time",
              "patch_frames", "offset_noise", "dropout")  # the prior section's settings a ChunkPrior takes as they are
PRIOR = Schema("prior config", PRIOR_DEFAULTS,
                {("prior", "kind"): ("conv", "transformer", "chunk"), ("prior", "head"): ("mog", "flow"),
                 ("prior", "flow_time"): ("uniform", "logit-normal"),
                 ("gmm", "covariance"): ("auto", "full", "diag")},
                prefix="prior/")
"""The prior config's schema: its ranges are the `prior/` rows of `kvae.bounds` (`python -m kvae.bounds`)."""


# ----------------------------------------------------------------------------- config


def load_prior_config(config=None, overrides=None):
    """Resolve a prior config: defaults, then a TOML/JSON file, a built-in recipe's name (`kvae/presets/priors`:
    `chunk`) or a dict, then overrides; validated.

    Raises:
        KvaeError: a missing file, an unknown section or key, a wrong type or a value out of range.
    """
    if config is None:
        loaded = {}
    elif isinstance(config, dict):
        loaded = config
    else:
        if not Path(config).is_file() and find_preset(config, "prior") is None:
            raise KvaeError(f"{config}: prior config file not found, nor a built-in prior recipe "
                            f"({', '.join(preset_names('prior'))})")
        loaded = read_config_file(config, kind="prior")  # a bare name is the recipe of that name
    return PRIOR.check(merge_config(loaded, overrides or {}))


# ----------------------------------------------------------------------------- files


def _run_model_path(run):
    run = RunFolder(run)
    if not run.path.is_dir():
        raise KvaeError(f"{run.path}: not a run folder (give the folder `kvae fit` wrote)")
    if not run.model.is_file():
        raise KvaeError(f"{run.path}: no {run.model.name} (the run has not finished: `kvae fit --run {run.path}` "
                        "resumes it)")
    return run.model


def _data_settings(run, model, data=None, cache=None):
    """Where the run's data is: its config.json's data section, with `data` / `cache` overriding."""
    settings = {"path": "", "cache": "", "select": {}, "normalize": "none"}
    saved = RunFolder(run).read_config()
    if saved is not None:
        settings.update({k: v for k, v in saved.get("data", {}).items() if k in settings})
    if data is not None:
        settings["path"], settings["select"] = str(data), {}
    if cache is not None:
        settings["cache"] = str(cache)
    settings["rate"] = int(model.sample_rate)
    return settings


# ----------------------------------------------------------------------------- fitting


def build_prior(cfg, layout, labels=None):
    """The prior a resolved prior config describes for a model's latent layout: a `LatentPrior`
    (`ConditionedPrior` with a vocabulary of `labels`), or a `ChunkPrior` for `prior.kind = "chunk"`
    (`ConditionedChunkPrior` with `labels`)."""
    from kvae.models import ConditionedPrior, LatentPrior
    from kvae.models.chunk_prior import ChunkPrior, ConditionedChunkPrior, check_chunk_settings

    p, labelled = cfg["prior"], ({"labels": labels} if labels else {})
    check_chunk_settings(cfg)
    if p["kind"] == "chunk":
        return (ConditionedChunkPrior if labels else ChunkPrior)(
            layout.channels, context_frames=max(1, round(p["context_seconds"] * layout.frame_rate)),
            chunk_frames=max(1, round(p["chunk_seconds"] * layout.frame_rate)), **{key: p[key] for key in CHUNK_KEYS},
            frame_rate=layout.frame_rate, latent_shape=list(layout.latent_shape), name="latent_prior", **labelled)
    return (ConditionedPrior if labels else LatentPrior)(
        layout.channels, kind=p["kind"], context_frames=max(2, round(p["context_seconds"] * layout.frame_rate)),
        width=p["width"], layers=p["layers"], kernel_size=p["kernel_size"], num_heads=p["num_heads"],
        components=p["components"], frame_rate=layout.frame_rate, latent_shape=list(layout.latent_shape),
        head=p["head"], flow_width=p["flow_width"], flow_blocks=p["flow_blocks"], flow_steps=p["flow_steps"],
        flow_samples=p["flow_samples"], rollout=cfg["train"]["rollout"], name="latent_prior", **labelled)


def warm_start(prior, init, verbose=False):
    """Start `prior` from the weights of a fitted prior of the same network (`train.init`), in its units.

    `init`: a `prior.keras` file, or a folder holding one (`RUN/prior`, or a run folder whose `prior/` does).
    The normalisation statistics come with the weights, so the network goes on in the units it learned in.
    A conditioned prior may start from an unconditioned one of the same network: its label embedding starts
    at zero, so the fit begins as that prior, unconditional for every label.

    Raises:
        KvaeError: no fitted prior there, or one whose network differs from the config's.
    """
    from kvae.models.loading import load

    path = Path(init)
    if path.is_dir():  # the prior's own folder, else a run folder's prior/
        path = next((f for f in (RunFolder(path).prior_model, RunFolder(path).prior.prior_model) if f.is_file()), path)
    if not path.is_file():
        raise KvaeError(f"train.init: {init}: no fitted prior there (give a prior.keras or the folder holding one)")
    source = load(path, compile=False)
    theirs = {w.path: w for w in source.weights}
    fresh = [w.path for w in prior.weights if w.path not in theirs]  # a label embedding, from an unlabelled prior
    new_labels = hasattr(prior, "label_embed") and not hasattr(source, "label_embed")
    labels = [prior.label_embed.embeddings.path] if new_labels else []
    if not isinstance(prior, type(source)) or fresh != labels or len(theirs) + len(fresh) != len(prior.weights) \
            or any(theirs[w.path].shape != w.shape for w in prior.weights if w.path in theirs):
        raise KvaeError(f"train.init: {path} is a {type(source).__name__} of another shape than this config's "
                        f"{type(prior).__name__}; warm-start only from a prior of the same kind and sizes")
    for w in prior.weights:
        w.assign(theirs[w.path] if w.path in theirs else np.zeros(w.shape, w.dtype))
    if verbose:
        print(f"init:       the weights and units of {path}")


def _resolve(folder, config, overrides):
    saved = folder.read_config("prior config") if config is None else None
    return load_prior_config(saved if saved is not None else config, overrides)


def fit_prior(run, config=None, data=None, cache=None, settings=None, verbose=True, callbacks=None, pieces=0,
              piece_seconds=30.0, folder=None, **overrides):
    """Fit the latent mixture and the autoregressive prior of a trained run into `RUN/prior/`.

    Args:
        run: str or Path. A run folder written by `kvae.fit` (holding `model.keras`).
        config: str, Path, dict or None. A prior config (TOML/JSON file, a
            built-in recipe's name such as "chunk", or a dict with sections
            prior, gmm, train); None: the defaults, or the saved
            `RUN/prior/config.json` when resuming.
        data: dataset root; default the run's own.
        cache: cache folder; default the run's own.
        settings: dict or None. Nested overrides (`{"train": {"epochs": 2}}`).
        verbose: bool. Print the summary and Keras's progress bar.
        callbacks: list or None. Extra Keras callbacks.
        pieces: int. Also write this many generated pieces to `RUN/pieces/`.
        piece_seconds: float. Their length.
        folder: str, Path or None. Where the prior goes; defaults to `RUN/prior`
            (another folder leaves the run untouched, to compare priors).
        **overrides: config values by section (`train={"epochs": 2}`) or by
            name (`epochs=2`, `kind="transformer"`, `condition="ensemble"`: a
            `ConditionedPrior`, see `kvae.data.labels`).

    Returns:
        `(prior, history)`: the trained `LatentPrior` and a dict of per-epoch logs.
    """
    from kvae.arguments import check_pieces

    pieces, piece_seconds = check_pieces(pieces, piece_seconds)  # before the prior is trained, not after
    nested = merge_config(settings or {}, _split(overrides))
    run = Path(run)
    model_path = _run_model_path(run)  # before the lock, which would create a folder for a wrong path
    with RunFolder(run).lock("prior fit"):
        try:
            return _fit_prior(run, model_path, config, data, cache, nested, verbose, callbacks, pieces,
                              piece_seconds, folder)
        except OSError as exc:
            where = Path(folder) if folder is not None else RunFolder(run).prior.path
            raise save_error(exc, where, "fitting the prior") from None


def _fit_prior(run, model_path, config, data, cache, nested, verbose, callbacks, pieces, piece_seconds, folder):
    """`fit_prior` once the run folder is held."""
    from kvae.data import prepare
    from kvae.inference.latents import LatentLayout
    from kvae.models.chunk_prior import check_chunk_settings
    from kvae.models.flow_head import head_text, loss_name
    from kvae.models.loading import load

    folder = RunFolder(folder) if folder is not None else RunFolder(run).prior
    if folder.prior_model.is_file() and not folder.backup.exists():
        raise KvaeError(f"{folder.path}: already holds a fitted prior; delete that folder to fit it again")
    cfg = _resolve(folder, config, nested)
    condition = cfg["prior"]["condition"] = normalize_condition(cfg["prior"]["condition"])
    check_chunk_settings(cfg)
    started = (folder.read_config("prior config") or {}).get("prior", {}).get("condition", "")
    if folder.backup.exists() and started != condition:  # its backup holds that vocabulary's embedding
        raise KvaeError(f"--condition: {folder.path} holds a fit interrupted with condition {started or '(none)'!r}; "
                        "resume it with that one, or delete the folder to fit another")
    folder.sweep()  # half-written files of a killed fit
    write_text(folder.config, json.dumps(cfg, indent=2))

    model = load(model_path, compile=False)
    layout = LatentLayout(model)
    data_settings = _data_settings(run, model, data, cache)
    corpus = prepare(data_settings["path"] or None, sample_rate=model.sample_rate, cache_dir=data_settings["cache"] or None,
                     select=data_settings["select"] or None)
    labels, notes = recording_labels(corpus, condition) if condition else (None, [])  # fails before encoding
    latents = encoded_latents(model, model_path, layout, corpus, data_settings, cfg, folder.latents, verbose=verbose,
                              need_keys=bool(condition))
    vocabulary, train_ids, val_ids, summary = sequence_labels(labels, latents, condition) if condition else [None] * 4
    train_cfg = cfg["train"]

    if not folder.model.is_file():
        from kvae.models.gmm import LatentGMM

        gmm = LatentGMM.fit(latents["windows"], cfg["gmm"]["components"], cfg["gmm"]["covariance"],
                            seed=train_cfg["seed"])
        model.set_latent_gmm(gmm)
        save_model_atomic(model, folder.model)
        if verbose:
            print(f"gmm:        {gmm.components} components ({gmm.covariance_type}) over {len(latents['windows'])} "
                  f"window latents of {gmm.dim} dimensions -> {folder.model}")

    seed_everything(train_cfg["seed"])
    prior = build_prior(cfg, layout, vocabulary)
    if train_cfg["init"] and not folder.backup.exists():  # its weights and units (a resumed fit's backup holds its own)
        warm_start(prior, train_cfg["init"], verbose)
    else:
        frames = np.concatenate(latents["train"])
        prior.set_statistics(frames.mean(axis=0), frames.std(axis=0))
    train_seqs = [prior.normalize(s) for s in latents["train"]]
    val_seqs = [prior.normalize(s) for s in latents["val"]]
    length = train_cfg["sequence_frames"] or getattr(prior, "crop_frames", max(8, 2 * prior.context_length))
    if prior.kind == "transformer":  # its learned positions span context_frames
        length = min(length, prior.context_frames)
    length = max(2, min(length, max(len(s) for s in train_seqs)))
    train_ds = LatentCrops(train_seqs, length, train_cfg["batch_size"], train_cfg["steps_per_epoch"],
                           seed=train_cfg["seed"], labels=train_ids, label_dropout=cfg["prior"]["label_dropout"],
                           input_noise=train_cfg["input_noise"])
    val_ds = None
    if any(len(s) >= length for s in val_seqs):
        val_ds = LatentCrops(val_seqs, length, train_cfg["batch_size"], random=False, labels=val_ids)
    compile_model(prior, cfg)

    best = []
    if train_cfg["keep_best"] and val_ds is not None:
        # With weight EMA the validation loss is the average's, and the kept epoch's weights are the average
        # (Keras's SwapEMAWeights swaps it in for validation and for the checkpoint, then back for the backup).
        checkpoint = keras.callbacks.ModelCheckpoint(
            str(folder.best_weights), monitor="val_loss", save_best_only=True, save_weights_only=True,
            initial_value_threshold=_best_so_far(folder.history))
        best = [checkpoint]
        if train_cfg["ema_momentum"]:
            swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
            best = [swap, checkpoint, keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: swap.on_epoch_begin(epoch))]
    extra = list(callbacks or [])
    if train_cfg["max_minutes"]:  # a resumed fit's backup carries the minutes it had spent
        extra.append(TimeBudget(train_cfg["max_minutes"]))
    schedule = []  # before the history, so history.csv logs the rate
    if train_cfg["cooldown"]:  # by the clock of a TimeBudget among the callbacks, else by epochs
        budget = next((c for c in extra if isinstance(c, TimeBudget)), None)
        schedule = [cooldown(train_cfg["learning_rate"], train_cfg["cooldown"], train_cfg["epochs"], budget)]
    if train_cfg["tensorboard"]:
        from kvae.training.tensorboard import prior_logger

        extra.append(prior_logger(model, folder.path, every=train_cfg["tensorboard_every"], seed=train_cfg["seed"]))
    if verbose:
        print(f"prior:      {prior.kind}, {prior.count_params():,} parameters, {prior.context_length} frames of context "
              f"({prior.context_length / layout.frame_rate:.1f} s at {layout.frame_rate:.1f} frames/s), "
              f"{head_text(prior)}, crops of {length} frames, backend {keras.backend.backend()}")
        if condition:
            print("\n".join([summary] + [f"note: {n}" for n in notes]))
    kept = []

    def keep_best(trained):  # the prior overfits small corpora: keep the epoch that generalised best
        if folder.best_weights.is_file():
            trained.load_weights(folder.best_weights)
            lowest = _best_so_far(folder.history)
            kept.append(f" (the weights of the epoch with the lowest val_loss, {lowest:.4g})" if lowest is not None
                        else "")

    # kvae fit's skeleton: each epoch once in history.csv, the backup kept until prior.keras is saved
    history = fit_in_folder(
        prior, folder, train_ds, before_history=schedule + best, callbacks=extra,
        nan_message=lambda: "prior training diverged (loss is NaN or Inf); lower train.learning_rate",
        before_save=keep_best, save=folder.prior_model,
        curves={"title": "latent prior", "titles": {"loss": loss_name(prior)}},
        after_save=lambda trained: folder.best_weights.unlink(missing_ok=True),
        validation_data=val_ds, epochs=train_cfg["epochs"], verbose=train_cfg["verbose"] if verbose else 0)
    if verbose:
        print(f"saved:      {folder.prior_model}{''.join(kept)}")
    if pieces:
        write_pieces(run, int(pieces), piece_seconds, folder=folder.path, verbose=verbose)
    return prior, history.history


def _best_so_far(history_csv):
    """The lowest val_loss of the epochs already run (resuming), or None."""
    values = [v for v in read_history(history_csv).get("val_loss", []) if np.isfinite(v)]
    return min(values) if values else None


def write_pieces(run, n=2, seconds=30.0, seed=0, prior="auto", folder=None, verbose=True):
    """Write `n` generated pieces to `RUN/pieces/piece_<i>.wav` (what a gallery shows); return the paths.

    `folder` is the prior folder (default `RUN/prior`).
    """
    from kvae.inference.generation import generate

    folder = RunFolder(folder) if folder is not None else RunFolder(run).prior
    source = folder.model if folder.model.is_file() else RunFolder(run).model
    ar_prior = folder.prior_model if folder.prior_model.is_file() and prior in ("auto", "ar") else None
    out = RunFolder(run).pieces / ("piece_0.wav" if n == 1 else "piece.wav")
    return generate(source, seconds=seconds, out=out, prior=prior, seed=seed, n=n, ar_prior=ar_prior,
                    verbose=verbose)


def _split(overrides):
    """`fit_prior(**overrides)` keywords into nested overrides (sections, or names found in one section)."""
    out = {}
    for key, value in overrides.items():
        if key in PRIOR_SECTIONS and isinstance(value, dict):
            out[key] = merge_config(out.get(key, {}), value)
            continue
        section = next((s for s in ("train", "prior") if key in PRIOR_DEFAULTS[s]), None)
        if section is None:
            raise KvaeError(f"{key}: unknown prior setting (sections: {', '.join(PRIOR_SECTIONS)})")
        out.setdefault(section, {})[key] = copy.deepcopy(value)
    return out
