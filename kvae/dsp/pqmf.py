"""PQMF: a near-perfect-reconstruction cosine-modulated filterbank (numpy + scipy), as RAVE uses.

A pseudo quadrature mirror filterbank splits a signal into `n_bands` equal
sub-bands, each decimated by `n_bands`, so the band signals together have as
many samples as the input; synthesis upsamples, filters and sums them back.
RAVE runs its encoder and decoder on 16 such bands, which cuts the time axis
16-fold before the first convolution.

Design (Nguyen 1994 / Lin & Vaidyanathan 1998, the method of RAVE's
`rave/pqmf.py`): a Kaiser-window lowpass prototype `h` (`scipy.signal.firwin`,
its length and beta from `scipy.signal.kaiserord` for the stop-band
attenuation) whose cutoff is chosen so that `h * reverse(h)` is close to a
Nyquist(2M) filter (its samples at non-zero multiples of `2 * n_bands` are
minimised, a grid search refined by `scipy.optimize.minimize_scalar`); then
the cosine modulation

    h_k[n] = 2 h[n] cos((2k + 1) pi / (2M) (n - (N - 1) / 2) + (-1)^k pi / 4),

with synthesis filters the time-reversed analysis filters, which cancels the
aliasing between neighbouring bands. The reconstruction is exact up to the
prototype's design error: about 60 dB SNR at 100 dB attenuation.

Layout (kept by the Keras layer `kvae.models.blocks.PQMF`, which is tested
against the reference functions here): a signal of `T = L * n_bands` samples
gives bands of shape `(L, n_bands)` (time first, channels last), and
synthesis returns `T` samples aligned with the input (zero delay): the
analysis pads `(K - M) // 2` zeros in front and synthesis crops them. The
first and last `K` samples see the zero padding and are less exact.

`import kvae.dsp` stays numpy-only: scipy is imported when a bank is designed.
"""

import functools

import numpy as np

from kvae.dsp.filters import check_int
from kvae.errors import KvaeError


def _kaiser_lowpass(cutoff, attenuation, taps=None):
    """Kaiser-window lowpass at `cutoff` (angular, radians/sample); odd length from kaiserord unless `taps`."""
    from scipy import signal

    n, beta = signal.kaiserord(attenuation, cutoff / np.pi)
    n = int(taps) if taps else 2 * (n // 2) + 1
    return signal.firwin(n, cutoff / np.pi, window=("kaiser", beta), scale=False)


def _nyquist_error(cutoff, n_bands, attenuation, taps=None):
    """max |(h * reverse(h))[2M j]| over j != 0: zero for an ideal PQMF prototype."""
    h = _kaiser_lowpass(cutoff, attenuation, taps)
    g = np.convolve(h, h[::-1])
    centre = len(g) // 2
    return float(np.max(np.abs(g[centre + 2 * n_bands::2 * n_bands]))) if len(g) > centre + 2 * n_bands else 0.0


def pqmf_prototype(n_bands, attenuation=100.0, taps=None):
    """The lowpass prototype of an `n_bands` PQMF: a float64 array of odd length.

    Args:
        n_bands: int. Number of bands, at least 2.
        attenuation: float. Stop-band attenuation in dB (RAVE uses 100).
        taps: int or None. Filter length; None takes kaiserord's for the
            attenuation and a transition width of `pi / (2 n_bands)`.
    """
    n_bands = check_int(n_bands, "n_bands", minimum=2)
    if not float(attenuation) > 20.0:
        raise KvaeError(f"pqmf attenuation must be above 20 dB, got {attenuation!r}")
    return _design(n_bands, float(attenuation), None if taps is None else check_int(taps, "taps", 2 * n_bands))[0]


@functools.lru_cache(maxsize=32)
def _design(n_bands, attenuation, taps):
    from scipy import optimize

    ideal = np.pi / (2 * n_bands)
    grid = ideal * np.linspace(0.5, 1.5, 101)
    errors = [_nyquist_error(w, n_bands, attenuation, taps) for w in grid]
    i = int(np.argmin(errors))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    best = optimize.minimize_scalar(_nyquist_error, bounds=(lo, hi), method="bounded",
                                    args=(n_bands, attenuation, taps), options={"xatol": 1e-10})
    cutoff = float(best.x) if best.fun <= errors[i] else float(grid[i])
    h = _kaiser_lowpass(cutoff, attenuation, taps)
    h.setflags(write=False)
    return h, cutoff


def pqmf_bank(n_bands, attenuation=100.0, taps=None):
    """Analysis filters of a cosine-modulated PQMF, shape `(n_bands, taps)` (float64).

    The synthesis filters are these reversed in time (see the module docstring).
    """
    h = pqmf_prototype(n_bands, attenuation, taps)
    n = len(h)
    t = np.arange(n) - (n - 1) / 2.0
    k = np.arange(n_bands)[:, None]
    phase = np.where(k % 2 == 0, 1.0, -1.0) * np.pi / 4
    return 2.0 * h[None, :] * np.cos((2 * k + 1) * np.pi / (2 * n_bands) * t[None, :] + phase)


def pqmf_padding(n_bands, taps):
    """`(front, back)` zeros the analysis pads so that `T` samples give exactly `T / n_bands` frames."""
    total = taps - n_bands
    return total // 2, total - total // 2


def pqmf_analysis(x, bank):
    """Reference analysis: `(..., T)` signals, `T` a multiple of `n_bands`, to bands `(..., T / n_bands, n_bands)`."""
    x = np.asarray(x, dtype=np.float64)
    m, taps = bank.shape
    if x.shape[-1] % m:
        raise KvaeError(f"pqmf analysis: length {x.shape[-1]} is not a multiple of {m} bands")
    front, back = pqmf_padding(m, taps)
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(front, back)])
    frames = x.shape[-1] // m
    # band k at frame j: sum_n bank[k, n] * xp[j*m + taps - 1 - n] (convolution, then keep every m-th)
    idx = np.arange(frames)[:, None] * m + taps - 1 - np.arange(taps)[None, :]
    return np.einsum("...jn,kn->...jk", xp[..., idx], bank)


def pqmf_synthesis(bands, bank):
    """Reference synthesis: bands `(..., L, n_bands)` back to `(..., L * n_bands)` signals, aligned with the input."""
    bands = np.asarray(bands, dtype=np.float64)
    m, taps = bank.shape
    frames = bands.shape[-2]
    up = np.zeros(bands.shape[:-2] + (frames * m, m))
    up[..., ::m, :] = bands
    front, _ = pqmf_padding(m, taps)
    out = np.zeros(bands.shape[:-2] + (frames * m,))
    synth = bank[:, ::-1]  # time-reversed analysis filters
    for k in range(m):
        full = np.apply_along_axis(lambda s, f=synth[k]: np.convolve(s, f), -1, up[..., k])
        out += m * full[..., front:front + frames * m]
    return out
