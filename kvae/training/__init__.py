"""kvae.training: `kvae.fit`, its callbacks, and fitting a run's latent prior.

- `trainer`: `fit`, config -> data -> model -> `model.fit` -> run folder.
- `callbacks`: `WindowEpochs` (which epoch's windows), `KLSchedule` (KL warm-up), `EpochHistory`
  (history.csv, one row per epoch) and `RunBackup` (the backup a cut-short run resumes from).
- `runs`: loss curves and samples written into a run folder.
- `distributed`: data-parallel `fit` (torchrun's process group, jax's DataParallel, `kvae fit --nproc`).
- `prior_fit`, `prior_data`: `fit_prior`, the latent mixture and autoregressive prior of a run, in `RUN/prior/`.

Using a trained model (`load`, `reconstruct_audio`, `generate`, streaming) is `kvae.inference`; its names
are importable from here too, as in kvae 0.1.
"""

from kvae.training.callbacks import EpochHistory, KLSchedule, RunBackup, WindowEpochs, truncate_history
from kvae.training.trainer import build_model, compile_model, fit, make_datasets, seed_everything
from kvae.inference import generate, load, reconstruct_audio, reconstruct_blocks, reconstruct_file
from kvae.training.runs import finish_run, write_samples
from kvae.training.prior_fit import fit_prior, load_prior_config

__all__ = [
    "EpochHistory",
    "KLSchedule",
    "RunBackup",
    "WindowEpochs",
    "build_model",
    "compile_model",
    "finish_run",
    "fit",
    "fit_prior",
    "generate",
    "load",
    "load_prior_config",
    "make_datasets",
    "reconstruct_audio",
    "reconstruct_blocks",
    "reconstruct_file",
    "seed_everything",
    "truncate_history",
    "write_samples",
]
