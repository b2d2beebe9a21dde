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

    Raises:
        KvaeError: `folder` is an existing file; `n` or `seed` is negative; a
            file cannot be written (a full disk: the files written so far are
            whole, the one being written is not left half written).
    """
    from kvae.evaluation.plots import plot_audio
    from kvae.paths import check_output_folder, save_error

    folder = Path(folder)
    check_output_folder(folder)
    if int(n) < 0:
        raise KvaeError(f"n: must be a non-negative number of samples, got {n}")
    paths = []
    if not n:
        return paths
    try:
        for clips in model.sample_batches(n, seed=seed, batch_size=batch_size):
            for clip in clips:
                path = write_wav(folder / f"sample_{len(paths)}.wav", clip, model.sample_rate)
                if plots:
                    plot_audio(clip, model.sample_rate, path.with_suffix(".png"), title=f"{path.name} (seed {seed})")
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
