"""kvae.dsp: the one home of kvae's signal processing, below models, losses and metrics.

Every spectrogram in kvae is the same transform: a centred STFT (the signal
reflect-padded by `n_fft // 2` on both sides), a periodic window of
`win_length` samples zero-padded symmetrically to `n_fft`, no normalisation,
as `torch.stft(..., center=True)` and `keras.ops.stft(..., center=True)` do.

- `kvae.dsp.filters` (numpy): periodic windows, the HTK mel filterbank,
  FFT sizes scaled to a sample rate, frame counts.
- `kvae.dsp.spectral` (numpy): the numpy twin of the STFT, for metrics,
  evaluation features and plots; frame autocorrelation and band power (the
  evaluation's pitch salience and modulation spectrum); block levels in dBFS
  (the evaluation's silence share and the prior data's silence trimming).
- `kvae.dsp.pqmf` (numpy; scipy when a bank is designed): the PQMF
  multiband filterbank of RAVE-style models, with numpy reference analysis
  and synthesis.
- `kvae.dsp.overlap_add` (numpy): `OverlapAdd`, tapered frames back into a
  signal, the one overlap-add of every reconstruction, stream and piece.
- `kvae.dsp.pghi` (numpy): phase from a magnitude alone, by phase-gradient
  heap integration (`MagnitudeVAE`'s phase).
- `kvae.dsp.ops` (`keras.ops`, any backend, differentiable): STFT, its
  least-squares inverse and Griffin-Lim, for models and losses.

`import kvae.dsp` loads only numpy; `kvae.dsp.ops` loads Keras.
"""

from kvae.dsp.filters import (
    fft_size_for_duration,
    centred_frame_count,
    crossfade_window,
    fitting_fft_size,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    periodic_window,
    scaled_fft_sizes,
)
from kvae.dsp.overlap_add import NORM_FLOOR, OverlapAdd
from kvae.dsp.pghi import pghi, pghi_batch
from kvae.dsp.pqmf import pqmf_analysis, pqmf_bank, pqmf_prototype, pqmf_synthesis
from kvae.dsp.spectral import autocorrelation, band_power, centred_frames, power_spectrogram, stft

__all__ = [
    "pghi",
    "pghi_batch",
    "NORM_FLOOR",
    "OverlapAdd",
    "autocorrelation",
    "band_power",
    "centred_frame_count",
    "centred_frames",
    "crossfade_window",
    "fft_size_for_duration",
    "fitting_fft_size",
    "hz_to_mel",
    "mel_filterbank",
    "mel_to_hz",
    "periodic_window",
    "power_spectrogram",
    "pqmf_analysis",
    "pqmf_bank",
    "pqmf_prototype",
    "pqmf_synthesis",
    "scaled_fft_sizes",
    "stft",
]
