"""kvae.training: `kvae.fit`, its callbacks, run folders, and using a trained model.

- `trainer`: `fit`, config -> data -> model -> `model.fit` -> run folder.
- `callbacks`: `WindowEpochs` (which epoch's windows), `KLSchedule` (KL warm-up).
- `runs`: loss curves and samples written into a run folder.
- `inference`: `load` a model, `reconstruct_audio` of any length.
- `latents`: a model's latents as frames in time, encoded from and streamed back to long audio.
- `prior`: `fit_prior`, the latent mixture and autoregressive prior of a run, in `RUN/prior/`.
- `generation`: `generate`, long pieces streamed to WAV with or without a prior.
"""

from kvae.training.callbacks import KLSchedule, WindowEpochs
from kvae.training.trainer import build_model, compile_model, fit, make_datasets, seed_everything
from kvae.training.inference import load, reconstruct_audio
from kvae.training.runs import finish_run, write_samples
from kvae.training.prior import fit_prior, load_prior_config
from kvae.training.generation import generate

__all__ = [
    "KLSchedule",
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
    "seed_everything",
    "write_samples",
]
