"""`kvae fit` with the latent noise switched off: the process the data-parallel equivalence test runs, once
alone and on every rank under torchrun (`python -m torch.distributed.run ... tests/ddp_worker.py ARGS`).

The reparameterisation noise is drawn per rank and cannot equal one process's draw over the whole
batch, so here `z = z_mean` (a test-only patch of `VAE.call`, in both runs); everything else is the
real `kvae fit`.
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


VAE.call = _call_without_noise

if __name__ == "__main__":
    sys.exit(cli.main(["fit", *sys.argv[1:]]))
