"""kvae.losses: spectral reconstruction losses for raw audio, in ``keras.ops`` only (any backend, differentiable).

- `stft`: `STFTLoss` and `MultiResolutionSTFTLoss`, auraloss's definitions term for term.
- `mel`: `MultiScaleMelLoss`, DAC's multi-scale mel loss.
- `signals`: what they share (argument checks, a batch of audio as signals).

Each loss keeps its reference definition beside its code. They are
registered for saving under their class names (`package="kvae"`), as before
they moved into this package.
"""

from kvae.dsp.filters import scaled_fft_sizes
from kvae.losses.mel import MultiScaleMelLoss
from kvae.losses.stft import MultiResolutionSTFTLoss, STFTLoss

__all__ = ["STFTLoss", "MultiResolutionSTFTLoss", "MultiScaleMelLoss", "scaled_fft_sizes"]
