"""ViSQOL (audio mode) of reconstructions against their inputs: the codec engineer's MOS-LQO, offline.

ViSQOL v3 (Chinen et al., QoMEX 2020) compares a degraded signal with its
reference on a gammatone spectrogram (similarity of aligned patches, NSIM)
and maps the similarity to a mean opinion score, MOS-LQO, from 1 (bad) to
about 4.75 (indistinguishable) with a support-vector regression trained on
listening tests. Codec papers (DAC's evaluation script, EnCodec, Vocos)
report it beside mel distance and SI-SDR. kvae runs `visqol-python` 3.8.0,
a pure-Python port of ViSQOL v3.3.3 whose audio-mode model
(`visqol/model/libsvm_nu_svr_model.txt`) ships inside its wheel: nothing is
downloaded. Install (numba makes it about 4x faster; it is optional):

    pip install "kvae[eval]"     # visqol-python==3.8.0 and numba, with libsvm-official and soundfile

How kvae scores a row (`visqol_columns`):

- Audio mode expects 48 kHz: each clip is resampled from the model's rate
  with `scipy.signal.resample_poly` (3000 Hz -> 48 kHz is 16/1).
- Each held-out window is its own (reference, degraded) pair, as ViSQOL is
  meant to be used: one second at 3000 Hz is 48,000 samples at 48 kHz. A
  fixed, evenly spaced subset of the windows is scored (`subset`): a quarter
  of them, at most `MAX_CLIPS` (64 of `kvae evaluate`'s default 256), the
  same windows for every row. Concatenating the windows instead was measured
  slower per second of audio (global alignment over the whole stream:
  0.26 s per second against 0.13-0.19 s per one-second window), and
  per-window ViSQOL on all 256 windows of ten rows would take 6-13 minutes
  with numba and 30 without (0.15-0.3 and 0.7 s per window on one core of
  the busy 2-core machine).
- ViSQOL needs about 0.96 s of audio (45 frames of its spectrogram):
  windows shorter than `MIN_SECONDS` are scored in groups, each the
  concatenation of consecutive windows of the subset (references with
  references, copies with copies, in the same order) of at least 1 s.
- The row's value is the mean MOS-LQO over the scored windows (or groups),
  with a 95 % interval (mean +- 1.96 standard errors).

Caveats, for reading the column:

- A signal at 3 kHz has nothing above 1.5 kHz, and ViSQOL's 32 gammatone
  bands reach 24 kHz: the bands above 1.5 kHz are empty in both signals
  and agree perfectly, so the score is capped and compressed. Compare rows
  of one table (the model beside the codec ladder), never the absolute
  MOS-LQO with published tables at 48 kHz.
- ViSQOL rescales the degraded signal to the reference's level before it
  compares them, so a level error is invisible to it, and silence (which
  cannot be rescaled) has no score: its row is None.
"""

import functools
import logging
import math
import warnings

import numpy as np

from kvae.errors import KvaeError

VISQOL_RATE = 48000
MAX_CLIPS = 64
MIN_SECONDS = 1.0  # ViSQOL's audio mode needs 45 spectrogram frames: 0.96 s at 48 kHz
MODEL_PATH = "visqol/model/libsvm_nu_svr_model.txt"
INSTALL = 'pip install "kvae[eval]"  (visqol-python==3.8.0; numba optional, 4x faster)'


def available():
    """`(True, None)` where visqol-python and its audio-mode model are installed, else `(False, why)`."""
    from importlib import metadata
    from importlib.util import find_spec

    if find_spec("visqol") is None or find_spec("libsvm") is None:
        return False, f"ViSQOL (visqol-python) is not installed: {INSTALL}"
    try:
        path = metadata.distribution("visqol-python").locate_file(MODEL_PATH)
    except metadata.PackageNotFoundError:
        return False, f"ViSQOL (visqol-python) is not installed: {INSTALL}"
    if not path.is_file():
        return False, f"{path}: visqol-python is installed without its audio-mode model; reinstall it: {INSTALL}"
    return True, None


@functools.lru_cache(maxsize=1)
def _api():
    ok, why = available()
    if not ok:
        raise KvaeError(why)
    from visqol import VisqolApi

    logging.getLogger("visqol").setLevel(logging.ERROR)
    api = VisqolApi()
    api.create(mode="audio")
    return api


def subset(n, max_clips=MAX_CLIPS):
    """Indices of the windows ViSQOL scores: a quarter of `n` (at least 1, at most `max_clips`), evenly spaced.

    Args:
        n: int. Number of windows.
        max_clips: int. The most windows scored. Defaults to 64.

    Returns:
        int array of sorted, distinct indices into the `n` windows.
    """
    k = max(1, min(int(max_clips), n // 4)) if n else 0
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int)) if k else np.zeros(0, int)


def scores(reference, degraded, sample_rate):
    """ViSQOL audio-mode MOS-LQO of each degraded clip against its reference clip (NaN where it has none).

    Args:
        reference: float array `(n, samples)`. The originals.
        degraded: float array `(n, samples)`. Their processed copies, row by row.
        sample_rate: int. The clips' rate; resampled to 48 kHz.

    Returns:
        float64 `(n,)`: MOS-LQO per pair (1 to about 4.75); NaN where ViSQOL
        gives none (a silent degraded clip cannot be rescaled to the
        reference's level).

    Raises:
        KvaeError: visqol-python is not installed; the shapes differ.
    """
    from scipy.signal import resample_poly

    reference, degraded = np.asarray(reference, np.float64), np.asarray(degraded, np.float64)
    if reference.shape != degraded.shape or reference.ndim != 2:
        raise KvaeError(f"ViSQOL: reference {reference.shape} and degraded {degraded.shape} must both be (n, samples)")
    api = _api()
    g = math.gcd(int(sample_rate), VISQOL_RATE)
    up, down = VISQOL_RATE // g, int(sample_rate) // g
    ref48 = resample_poly(reference, up, down, axis=-1)
    deg48 = resample_poly(degraded, up, down, axis=-1)
    out = np.full(len(reference), np.nan)
    for i, (r, d) in enumerate(zip(ref48, deg48)):
        if not np.any(d) or not np.any(r):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                out[i] = float(api.measure_from_arrays(r, d, VISQOL_RATE).moslqo)
            except (ValueError, FloatingPointError, ZeroDivisionError):
                continue
    return out


def visqol_columns(reference, degraded, sample_rate, max_clips=MAX_CLIPS):
    """The ViSQOL columns of one reconstruction-table row, on the `subset` of its windows.

    Args:
        reference: float array `(n, samples)`. The held-out windows.
        degraded: float array `(n, samples)`. The row's copies of them.
        sample_rate: int. The clips' rate.
        max_clips: int. The most windows scored (`subset`). Defaults to 64.

    Returns:
        `{"visqol": mean MOS-LQO, "visqol_low", "visqol_high": its 95 %
        interval, "visqol_clips": windows (or groups of windows shorter
        than `MIN_SECONDS`) scored}`; the values are None where nothing
        has a score (silence).
    """
    index = subset(len(reference), max_clips)
    reference, degraded = np.asarray(reference)[index], np.asarray(degraded)[index]
    group = max(1, math.ceil(MIN_SECONDS * sample_rate / max(reference.shape[1], 1) - 1e-9))
    if group > 1:  # short windows: consecutive ones concatenated, the remainder dropped
        count = max(1, len(reference) // group)
        reference, degraded = (x[:count * group].reshape(count, -1) if len(x) >= group else x.reshape(1, -1)
                               for x in (reference, degraded))
    values = scores(reference, degraded, sample_rate)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"visqol": None, "visqol_low": None, "visqol_high": None, "visqol_clips": 0}
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"visqol": mean, "visqol_low": mean - half, "visqol_high": mean + half, "visqol_clips": int(len(values))}


def describe(max_clips=MAX_CLIPS):
    """One line for a report's settings: how the ViSQOL column was made, or why it is off.

    Args:
        max_clips: int. The most windows scored per row (`subset`). Defaults to 64.
    """
    ok, why = available()
    if not ok:
        return f"off: {why}"
    from importlib import metadata

    return (f"visqol-python {metadata.version('visqol-python')} audio mode (MOS-LQO), clips resampled to 48 kHz, "
            f"one score per held-out window on an evenly spaced quarter of them (at most {max_clips}), the mean; "
            "a 3 kHz signal caps the score: compare rows, not published MOS")
