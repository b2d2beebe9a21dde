"""kvae.models: the VAE base and its variants, a registry by name for configs, and the latent prior."""

from kvae.models.conv1d_vae import Conv1DVAE
from kvae.models.fc_vae import FCVAE
from kvae.models.magnitude_vae import MagnitudeVAE
from kvae.models.mel_vae import MelVAE
from kvae.models.rave_vae import RaveVAE
from kvae.models.latent_prior import LatentPrior
from kvae.models.conditioned_prior import ConditionedPrior
from kvae.models.chunk_prior import ChunkPrior
from kvae.models.transformer_vae import TransformerVAE
from kvae.models.vae import VAE
from kvae.models.vocos_vae import VocosVAE

MODELS = {"fc": FCVAE, "conv1d": Conv1DVAE, "transformer": TransformerVAE, "mel": MelVAE, "rave": RaveVAE,
          "vocos": VocosVAE, "magnitude": MagnitudeVAE}


def model_class(name):
    """Return the model class registered under a config name (e.g. "fc")."""
    from kvae.errors import KvaeError

    try:
        return MODELS[name]
    except (KeyError, TypeError):  # TypeError: a table or a list, not a name
        raise KvaeError(f"model.type: unknown model '{name}' (choose from {', '.join(sorted(MODELS))})") from None


__all__ = ["ChunkPrior", "ConditionedPrior", "Conv1DVAE", "FCVAE", "LatentPrior", "MagnitudeVAE", "MelVAE", "RaveVAE", "TransformerVAE", "MODELS", "VAE", "VocosVAE",
           "model_class"]
