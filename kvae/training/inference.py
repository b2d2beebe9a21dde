"""Using a trained model: loading it and reconstructing audio of any length."""

import math
from pathlib import Path

import keras
import numpy as np

from kvae.dsp import crossfade_window
from kvae.errors import KvaeError


def load(path, compile=True):
    """Load a kvae model from a `.keras` file or a run folder.

    Args:
        path: str or Path. A `.keras` file, or a run folder holding `model.keras`.
        compile: bool. Also restore the optimizer. Use False to load a model
            saved on another backend (its optimizer state is backend-specific),
            then `compile` it again.

    Returns:
        The model (a `kvae.models.VAE` subclass).
    """
    import kvae.models  # noqa: F401  (registers the classes for deserialisation)

    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise KvaeError(f"{path}: no such model file")
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as exc:  # keras raises many types for a bad archive
        raise KvaeError(f"{path}: cannot load model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def reconstruct_audio(model, audio):
    """Reconstruct a clip of any length window by window, with 50% overlap-add.

    Args:
        model: VAE. A trained model.
        audio: array-like. Mono audio at the model's rate, any length.

    Returns:
        A float32 array of the same length.
    """
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    w = model.window
    hop = max(w // 2, 1)
    n_frames = max(1, math.ceil(max(len(x) - w, 0) / hop) + 1)
    padded = np.zeros((n_frames - 1) * hop + w, np.float32)
    padded[: len(x)] = x
    frames = np.stack([padded[i * hop:i * hop + w] for i in range(n_frames)])
    out_frames = np.concatenate([model.reconstruct(frames[i:i + 64]) for i in range(0, n_frames, 64)])
    taper = crossfade_window(w).astype(np.float32) if n_frames > 1 else np.ones(w, np.float32)
    out = np.zeros_like(padded)
    norm = np.zeros_like(padded)
    for i, frame in enumerate(out_frames):
        out[i * hop:i * hop + w] += frame * taper
        norm[i * hop:i * hop + w] += taper
    return (out / np.maximum(norm, 1e-3))[: len(x)]
