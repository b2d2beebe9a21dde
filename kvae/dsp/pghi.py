"""Phase from a magnitude alone: phase-gradient heap integration (PGHI).

Průša, Balazs and Søndergaard, "A noniterative method for reconstruction of
phase from STFT magnitude" (IEEE/ACM TASLP 2017). For a Gaussian window the
STFT's phase gradient is a function of its log-magnitude gradient; for a
Hann window the same relations hold closely with the window's equivalent
`gamma = 0.25645 * n_fft ** 2`. The phase is then integrated over the
time-frequency plane, largest coefficients first (a max-heap), so errors
gather where the magnitude is small and matter least.

For kvae's centred STFT (`kvae.dsp.spectral.stft`: each frame's FFT taken
from the frame's first sample, the window centred at `n_fft / 2`), one hop
advances the phase of bin `m` by

    (hop * n_fft / gamma) * d log|S| / d bin  +  2 pi hop m / n_fft

and one bin up changes it by `-(gamma / (hop * n_fft)) * d log|S| / d frame + pi`
(the `pi`: the window's centre is `n_fft / 2` samples after the frame's
start). Bins below `tol` times the largest are left at phase 0.

Why kvae has it: `MagnitudeVAE` decodes a magnitude and nothing else. Fast
Griffin-Lim from a random phase finds a signal consistent with *a*
magnitude near the decoded one, and on an imperfect decoded magnitude its
iterations add the artefacts the evaluation hears (docs/results.md#pghi).
PGHI takes the phase the decoded magnitude implies, in one pass.

numpy only (the heap is sequential); about 50 ms of one core per second of
3000 Hz audio at n_fft 256, hop 32. No library provides it for this STFT
convention without a compiler dependency, so it is written here.
"""

import heapq

import numpy as np

HANN_GAMMA = 0.25645  # the Hann window's equivalent Gaussian width, times n_fft ** 2 (Průša et al. 2017)
_TINY = 1e-12


def pghi(magnitude, n_fft, hop, tol=1e-5, gamma=None):
    """The phase of one magnitude `(frames, bins)`, by phase-gradient heap integration.

    Args:
        magnitude: array `(frames, bins)`, `bins = n_fft // 2 + 1`, linear STFT magnitude
            (kvae's centred STFT, Hann window).
        n_fft: int. FFT size (and window length).
        hop: int. Hop between frames in samples.
        tol: float. Bins below `tol` times the largest magnitude are not integrated (phase 0).
        gamma: float or None. The window's Gaussian width; None: a Hann window's.

    Returns:
        float64 array `(frames, bins)`, the phase in radians.
    """
    mag = np.asarray(magnitude, np.float64)
    if mag.ndim != 2 or mag.shape[1] != n_fft // 2 + 1:
        raise ValueError(f"magnitude must be (frames, {n_fft // 2 + 1}), got {mag.shape}")
    frames, bins = mag.shape
    phase = np.zeros_like(mag)
    peak = float(mag.max()) if mag.size else 0.0
    if not np.isfinite(peak) or peak <= _TINY:
        return phase
    gamma = HANN_GAMMA * n_fft ** 2 if gamma is None else float(gamma)
    log_mag = np.log(np.maximum(mag, _TINY))
    d_frame = np.gradient(log_mag, axis=0) if frames > 1 else np.zeros_like(log_mag)
    d_bin = np.gradient(log_mag, axis=1)
    along_time = (hop * n_fft / gamma) * d_bin + 2.0 * np.pi * hop * np.arange(bins) / n_fft
    along_freq = -(gamma / (hop * n_fft)) * d_frame + np.pi
    todo = mag >= tol * peak
    order = np.argsort(-mag, axis=None)  # seeds of new islands, largest first
    next_seed = 0
    steps = ((1, 0), (-1, 0), (0, 1), (0, -1))
    while True:
        while next_seed < order.size and not todo.flat[order[next_seed]]:
            next_seed += 1
        if next_seed == order.size:
            return phase
        t0, f0 = divmod(int(order[next_seed]), bins)
        todo[t0, f0] = False
        heap = [(-mag[t0, f0], t0, f0)]
        while heap:
            _, t, f = heapq.heappop(heap)
            for dt, df in steps:
                u, v = t + dt, f + df
                if 0 <= u < frames and 0 <= v < bins and todo[u, v]:
                    if dt:
                        phase[u, v] = phase[t, f] + dt * 0.5 * (along_time[t, f] + along_time[u, v])
                    else:
                        phase[u, v] = phase[t, f] + df * 0.5 * (along_freq[t, f] + along_freq[u, v])
                    todo[u, v] = False
                    heapq.heappush(heap, (-mag[u, v], u, v))


def pghi_batch(magnitudes, n_fft, hop, tol=1e-5, gamma=None):
    """`pghi` of each magnitude of a batch `(batch, frames, bins)`: phases, float64, same shape."""
    magnitudes = np.asarray(magnitudes)
    return np.stack([pghi(m, n_fft, hop, tol, gamma) for m in magnitudes]) if len(magnitudes) else (
        np.zeros(magnitudes.shape, np.float64))
