"""kvae.training: `kvae.fit`, the one skeleton every training shares, its callbacks, and a run's latent prior.

- `trainer`: `fit`, config -> data -> model -> `fit_in_folder` -> run folder.
- `loop`: the skeleton of every training in a run folder (`kvae fit`, `kvae prior fit`, search
  trials): `seed_everything`, `compile_model`, `fit_in_folder`; and the samples a finished run writes.
- `callbacks`: `WindowEpochs` (which epoch's windows), `InformationRate` (bits per second and the KL
  weight), `EpochHistory` (history.csv, one row per epoch), `DivergenceGuard` and `RunBackup` (the
  backup a cut-short run resumes from). The KL weight's warm-up is the model's (`kvae.models.elbo.KLWeight`).
- `time_budget`: `TimeBudget` (`train.max_minutes`) and `Snapshots` (models saved on a clock).
- `fast_adam`: the fused clipping and Adam update on torch (`train.fused_adam`).
- `distributed`: data-parallel `fit` (torchrun's process group, jax's DataParallel, `kvae fit --nproc`).
- `prior_fit`, `prior_data`: `fit_prior`, the latent mixture and autoregressive prior of a run, in `RUN/prior/`.

A run folder's files are named by `kvae.runs`. Using a trained model (`load`, `reconstruct_audio`,
`generate`, streaming) is `kvae.inference`; `load`, the reconstructions and `generate` are importable
from here too, and the old module paths `kvae.training.inference`, `.latents`, `.generation` and `.runs`
are deprecated aliases of their new homes.
"""

from kvae.training.callbacks import EpochHistory, InformationRate, RunBackup, WindowEpochs, truncate_history
from kvae.training.loop import compile_model, finish_run, fit_in_folder, seed_everything, write_samples
from kvae.training.trainer import build_model, fit, make_datasets
from kvae.inference import generate, load, reconstruct_audio, reconstruct_blocks, reconstruct_file
from kvae.training.prior_fit import fit_prior, load_prior_config

__all__ = [
    "EpochHistory",
    "InformationRate",
    "RunBackup",
    "WindowEpochs",
    "build_model",
    "compile_model",
    "finish_run",
    "fit",
    "fit_in_folder",
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
