"""What a finished run leaves in its folder besides the model: loss curves and samples.

A run folder holds::

    config.json        the fully resolved config (a run can be redone from it)
    model.keras        the trained model (weights, config, sample rate)
    history.csv        one row per epoch (loss, reconstruction, kl, val_*)
    loss_curves.png    total, reconstruction and KL against epoch
    samples/           sample_<i>.wav and sample_<i>.png (waveform + spectrogram)
    backup/            Keras BackupAndRestore state while training runs; an
                       interrupted `kvae fit --run DIR` resumes from it
"""

from pathlib import Path

import numpy as np

from kvae.data import write_wav
from kvae.evaluation.gallery import fit_gallery


def write_samples(model, folder, n=4, seed=0, plots=True):
    """Write `n` prior samples as WAV (and waveform-spectrogram PNG) files; return the WAV paths."""
    from kvae.evaluation.plots import plot_audio

    folder = Path(folder)
    clips = model.sample(n, seed=seed) if n else np.zeros((0, model.window), np.float32)
    paths = []
    for i, clip in enumerate(clips):
        path = write_wav(folder / f"sample_{i}.wav", clip, model.sample_rate)
        if plots:
            plot_audio(clip, model.sample_rate, path.with_suffix(".png"), title=f"{path.name} (seed {seed})")
        paths.append(path)
    return paths


def finish_run(model, run_dir, config):
    """Write the loss curves and samples of a trained run."""
    from kvae.evaluation.plots import plot_history, read_history

    history_csv = Path(run_dir) / "history.csv"
    if history_csv.is_file():
        plot_history(read_history(history_csv), Path(run_dir) / "loss_curves.png", title=config["name"])
    write_samples(model, Path(run_dir) / "samples", n=config["train"]["n_samples"], seed=config["train"]["seed"])
    fit_gallery(model, run_dir, config)  # gallery/index.html (kvae.evaluation.gallery); train.gallery = false skips it
