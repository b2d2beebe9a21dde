"""The one skeleton of a training in a run folder, shared by `kvae fit`, `kvae prior fit` and search trials.

Each of them goes through the same steps: seed (`seed_everything`), compile
(`compile_model`: Adam, its clipping, the fused torch path and the weight
EMA), train on the resumable callback stack (`fit_in_folder`: each epoch
once in `history.csv`, a backup a killed run resumes from), refuse a loss that
ended NaN or Inf, save the model atomically, draw the loss curves, and only
then drop the backup. What differs (the data, the model, what else a run
writes) is the caller's. The samples a finished VAE run writes are here too
(`write_samples`, `finish_run`).
"""

from pathlib import Path

import keras
import numpy as np

from kvae._keras_private import set_global_seed
from kvae.data import write_wav
from kvae.errors import KvaeError
from kvae.paths import atomic_path, disk_full, save_error
from kvae.runs import RunFolder, read_history
from kvae.training.callbacks import RunBackup, resumable_callbacks


def seed_everything(seed, frontend="pydataset"):
    """Seed Python, NumPy, the backend and Keras's global seed generator.

    `keras.utils.set_random_seed` also seeds TensorFlow, which imports it
    even on the torch backend (what that costs: docs/benchmarks.md#import-time);
    only the tf.data front end needs that.
    """
    if frontend == "tf":
        keras.utils.set_random_seed(seed)
        return
    import random

    if not set_global_seed(seed):  # another Keras version: pay for the TensorFlow import
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def compile_model(model, config):
    """Compile with Adam at the config's learning rate and gradient clipping (and weight EMA).

    `config["train"]` gives `learning_rate` and `clipnorm`, and optionally
    `ema_momentum`, `fused_adam` and `jit_compile` (a prior's config as a
    VAE's: both train this way). With `ema_momentum` > 0 Adam keeps an
    exponential moving average of the weights (Keras's `use_ema`); Keras's
    `fit` ends by writing the average into the model, so the saved model
    holds it, and `Snapshots` save it too.

    On the torch backend with `fused_adam` (the default) the optimizer clips
    and updates with fused kernels (`kvae.training.fast_adam`): the same
    update, class and saved form as `keras.optimizers.Adam`, faster on a CPU.
    Other backends get the stock optimizer. `jit_compile = true` asks Keras
    for `torch.compile` on torch (slower than eager for kvae's models on a
    CPU: see docs/benchmarks.md).
    """
    train = config["train"]
    clipnorm = train["clipnorm"] or None
    momentum = train.get("ema_momentum", 0.0)
    ema = {"use_ema": True, "ema_momentum": momentum} if momentum > 0 else {}
    optimizer = keras.optimizers.Adam(train["learning_rate"], clipnorm=clipnorm, **ema)
    if train.get("fused_adam", True) and keras.backend.backend() == "torch":
        from kvae.training.fast_adam import fuse_adam

        fuse_adam(optimizer)
    # jit_compile false keeps Keras's "auto" (XLA on jax and tensorflow, eager on torch)
    model.compile(optimizer=optimizer, **({"jit_compile": True} if train.get("jit_compile") else {}))
    return model


def save_model_atomic(model, path):
    """`model.save(path)` through `atomic_path` (durable: it costs training to redo); return the path."""
    with atomic_path(path, durable=True) as tmp:
        model.save(tmp)
    return Path(path)


def draw_curves(folder, title=None, titles=None):
    """Draw `loss_curves.png` of a run folder from its `history.csv` (nothing when there is no history)."""
    from kvae.evaluation.plots import plot_history

    folder = RunFolder(folder)
    history = read_history(folder.history)
    if history.get("loss"):  # a history without a loss (another program's file) is not drawn
        plot_history(history, folder.curves, title=title, titles=titles)


def fit_in_folder(model, folder, x, *, source=None, before_history=(), callbacks=(), write=True, nan_message=None,
                  before_save=None, save=None, curves=None, after_save=None, **fit_kwargs):
    """Train a compiled model resumably in a run folder, then check, save, draw and drop the backup.

    In order: the resumable stack (`resumable_callbacks`: `history.csv` and
    `backup/` in `folder`) then `callbacks`, each told the training time a
    resumed run had spent (`carry_over`); `model.fit`; a loss that ended NaN
    or Inf, or a callback that stopped the run as diverged (a `tripped`
    `DivergenceGuard`), drops the backup (it holds the diverged state: a rerun
    starts afresh) and raises; then `before_save(model)`, the model saved to
    `save` (atomically and durably), the curves drawn, `after_save(model)`,
    and last the backup dropped: a run cut short anywhere before resumes.

    Args:
        model: a compiled Keras model (`compile_model`).
        folder: str, Path or `kvae.runs.RunFolder`.
        x: the training data, for `model.fit` and `WindowEpochs`.
        source: the window source of `x` or None, for `WindowEpochs`.
        before_history: callbacks that add to an epoch's logs, before its row is written.
        callbacks: callbacks after the stack, in order.
        write: bool. Write the history, backups and files (rank 0 of a
            data-parallel run; the other ranks only train and return).
        nan_message: callable or None. `nan_message()` is the error for a
            loss that ended NaN or Inf; None leaves that to the caller (a
            search trial: the tuner records the NaN score).
        before_save: callable or None. Run with the model before it is saved
            (a prior takes its best epoch's weights).
        save: Path or None. Where the trained model is saved.
        curves: dict or None. `draw_curves` keywords (`title`, `titles`);
            None draws none.
        after_save: callable or None. Run with the model once it is saved and
            its curves drawn (a run's samples and gallery).
        **fit_kwargs: `model.fit`'s (`validation_data`, `epochs`, `verbose`, ...).

    Returns:
        The Keras `History`.

    Raises:
        KvaeError: training diverged; a write failed (a full disk: "free
            space and rerun the same command to resume").
    """
    folder = RunFolder(folder)
    cbs = resumable_callbacks(x, source, folder, write=write, before_history=before_history) + list(callbacks)
    spent = RunBackup.spent(folder.backup)  # a resumed run's budget and snapshots go on from the backup's clocks
    for cb in cbs:
        if hasattr(cb, "carry_over"):
            cb.carry_over(spent)
    try:
        history = model.fit(x, callbacks=cbs, **fit_kwargs)
    except OSError as exc:
        if not disk_full(exc):
            raise
        raise save_error(exc, folder.path, "training") from None
    guard = next((cb for cb in cbs if getattr(cb, "tripped", None) is not None), None)
    if nan_message is not None and (guard is not None or not np.isfinite(history.history.get("loss", [0.0])[-1:]).all()):
        if write:
            folder.drop_backup()
        raise KvaeError(guard.message() if guard is not None else nan_message())
    if not write:
        return history
    if before_save is not None:
        before_save(model)
    if save is not None:
        try:
            save_model_atomic(model, save)
        except OSError as exc:
            raise save_error(exc, save, "saving the model") from None
    try:
        if curves is not None:
            draw_curves(folder, **curves)
        if after_save is not None:
            after_save(model)
    except OSError as exc:
        raise save_error(exc, folder.path, "writing the loss curves and samples") from None
    folder.drop_backup()
    return history


def write_samples(model, folder, n=4, seed=0, plots=True, batch_size=256):
    """Write `n` prior samples as WAV (and waveform-spectrogram PNG) files; return the WAV paths.

    Clips are generated and written `batch_size` at a time, so memory does
    not grow with `n`; each file is written atomically. The clips are those
    of `model.sample(n, seed=seed)`.

    The folder is new, or one this function wrote before (`kvae.paths.OwnedFolder`):
    files it did not write are never replaced.

    Raises:
        KvaeError: `folder` is an existing file, or a folder with files
            `write_samples` did not write; `n` or `seed` out of bounds; a
            file cannot be written (a full disk: the files written so far are
            whole, the one being written is not left half written).
    """
    from kvae import bounds
    from kvae.evaluation.plots import plot_audio
    from kvae.paths import OwnedFolder, check_free_space, check_output_folder, remove_stale_temporaries

    folder = Path(folder)
    check_output_folder(folder)
    n, seed = bounds.check("clips", n, "n"), bounds.check("seed", seed)
    paths = []
    if not n:
        return paths
    check_free_space(folder, n * 4 * int(model.window), "of samples to write", "ask for fewer")
    try:
        owned = OwnedFolder(folder, "sample")  # never over files it did not write
        remove_stale_temporaries(folder)  # what a killed kvae sample left
        for clips in model.sample_batches(n, seed=seed, batch_size=batch_size):
            for clip in clips:
                name = f"sample_{len(paths)}"
                path = write_wav(owned.file(f"{name}.wav"), clip, model.sample_rate)
                if plots:
                    plot_audio(clip, model.sample_rate, owned.file(f"{name}.png"), title=f"{path.name} (seed {seed})")
                paths.append(path)
    except OSError as exc:
        raise save_error(exc, folder, "writing samples", then="run the command again") from None
    return paths


def write_run_extras(model, run_dir, config):
    """What a trained VAE's folder holds besides its model and curves: samples and the gallery."""
    from kvae.evaluation.gallery import fit_gallery

    write_samples(model, RunFolder(run_dir).samples, n=config["train"]["n_samples"], seed=config["train"]["seed"])
    fit_gallery(model, run_dir, config)  # gallery/index.html (kvae.evaluation.gallery); train.gallery = false skips it


def finish_run(model, run_dir, config):
    """Write the loss curves, samples and gallery of a trained run."""
    draw_curves(run_dir, title=config["name"])
    write_run_extras(model, run_dir, config)
