"""Processes of the data-parallel tests.

Run as a script: `kvae fit` with the latent noise switched off, the process the data-parallel
equivalence test runs, once alone and on every rank under torchrun (`python -m
torch.distributed.run ... tests/ddp_worker.py ARGS`). The reparameterisation noise is drawn per
rank and cannot equal one process's draw over the whole batch, so there `z = z_mean` (a test-only
patch of `VAE.call`, in both runs); everything else is the real `kvae fit`.

Imported (by `backends.run_on_backend`): `jax_data_parallel_fit`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvae._env import configure  # noqa: E402

configure()

from kvae import cli  # noqa: E402
from kvae.models.vae import VAE  # noqa: E402


def _call_without_noise(self, x, training=False):
    z_mean, z_log_var = self.encode(x)
    return self.decode(z_mean), z_mean, z_log_var


def jax_data_parallel_fit(config, folder):
    """Runs on jax with 2 host devices: `kvae.fit` with and without `train.distribution = "data_parallel"`.

    Returns:
        The devices, the devices the trained weights live on, both runs' weights and losses, and the
        error a batch that does not split over the devices gives.
    """
    import keras
    import numpy as np

    import kvae
    from kvae.errors import KvaeError

    out = {"devices": len(keras.distribution.list_devices())}
    for name in ("none", "data_parallel"):
        cfg = dict(config, train=dict(config["train"], distribution=name))
        model, history = kvae.fit(cfg, run=f"{folder}/{name}", verbose=False)
        out[name] = {"weights": [np.asarray(w) for w in model.get_weights()], "loss": history["loss"],
                     "on_devices": len(model.trainable_weights[0].value.sharding.device_set)}
    try:
        odd = dict(config, data=dict(config["data"], batch_size=7),
                   train=dict(config["train"], distribution="data_parallel"))
        kvae.fit(odd, run=f"{folder}/odd", verbose=False)
    except KvaeError as exc:
        out["odd_batch"] = str(exc)
    return out


if __name__ == "__main__":
    VAE.call = _call_without_noise
    sys.exit(cli.main(["fit", *sys.argv[1:]]))
