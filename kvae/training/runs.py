"""What a finished run leaves in its folder besides the model: loss curves and samples.

A run folder holds::

    config.json        the fully resolved config (a run can be redone from it)
    model.keras        the trained model (weights, config, sample rate)
    history.csv        one row per epoch the model went through (loss,
                       reconstruction, kl, val_*); a resumed run drops the rows
                       of the epochs it trains again
    loss_curves.png    total, reconstruction and KL against epoch
    samples/           sample_<i>.wav and sample_<i>.png (waveform + spectrogram)
    backup/            the training state (`RunBackup`) while training runs and
                       until everything above is written; an interrupted
                       `kvae fit --run DIR` resumes from it

Every file is written under a temporary name and renamed into place, so a
killed or failed write never leaves half a file.
"""

from pathlib import Path

from kvae.data import write_wav
from kvae.errors import KvaeError
from kvae.evaluation.gallery import fit_gallery


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
    from kvae.paths import OwnedFolder, check_free_space, check_output_folder, save_error

    folder = Path(folder)
    check_output_folder(folder)
    n, seed = bounds.check("clips", n, "n"), bounds.check("seed", seed)
    paths = []
    if not n:
        return paths
    check_free_space(folder, n * 4 * int(model.window), "of samples to write", "ask for fewer")
    try:
        owned = OwnedFolder(folder, "sample")  # never over files it did not write
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


def finish_run(model, run_dir, config):
    """Write the loss curves and samples of a trained run."""
    from kvae.evaluation.plots import plot_history, read_history

    history_csv = Path(run_dir) / "history.csv"
    if history_csv.is_file():
        plot_history(read_history(history_csv), Path(run_dir) / "loss_curves.png", title=config["name"])
    write_samples(model, Path(run_dir) / "samples", n=config["train"]["n_samples"], seed=config["train"]["seed"])
    fit_gallery(model, run_dir, config)  # gallery/index.html (kvae.evaluation.gallery); train.gallery = false skips it
