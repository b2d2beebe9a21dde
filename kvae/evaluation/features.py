"""Clip-level features: one vector per clip that describes how it sounds *and how it moves*.

Frame-level statistics (the Fréchet log-mel distance) see only average
spectra: a sustained drone with music's long-term spectrum scores like music.
These features are computed per clip, so a set of clips can be told from
another by how their spectra change over time, not only by what they are.

Every clip goes through one log-mel spectrogram (`kvae.dsp`: centred STFT,
periodic Hann window of `n_fft` = 2048 samples at 44.1 kHz scaled to the
rate, hop `n_fft // 4`, `N_BANDS` HTK mel bands from 0 Hz to Nyquist), in dB
of mel-band power floored at -100 dB. The features, in the order of
`feature_names`:

| name | count | unit | what it is |
|---|---|---|---|
| `mel_mean_<b>` | bands | dB | mean over time of band b's level |
| `mel_std_<b>` | bands | dB | std over time of band b's level (how much it moves) |
| `mel_delta_<b>` | bands | dB/frame | mean absolute frame-to-frame change of band b |
| `flux_mean`, `flux_std` | 2 | dB/frame | onset strength: mean over bands of the rising part of the frame-to-frame change, its mean and std over time |
| `flux_peak` | 1 | ratio | max over mean onset strength (peaky = clear onsets) |
| `onset_rate` | 1 | 1/s | onset-strength peaks above mean + 1 std, per second |
| `mod_<lo>_<hi>_<g>` | 3 x 4 | dB | modulation energy: power of band-level envelopes (band group g of 4, low to high) in the 0.5-2, 2-6 and 6-20 Hz ranges of their spectrum over time, in dB |
| `flatness_mean`, `flatness_std` | 2 | ratio | spectral flatness per frame (geometric / arithmetic mean of the power spectrum): 0.56 for white noise, near 0 for tones |
| `salience_mean`, `salience_std` | 2 | ratio | pitch salience per frame: the highest normalised autocorrelation at lags of 50-1000 Hz (1 = perfectly periodic) |
| `level_db` | 1 | dBFS | RMS level of the clip |
| `level_std` | 1 | dB | std over frames of the frame RMS level (dynamics) |

`temporal_std` (the mean of the `mel_std_<b>` features) is reported on its
own: a drone's is far below music's.
"""

import numpy as np

from kvae.dsp.filters import check_rate, mel_filterbank, scaled_fft_size
from kvae.dsp.spectral import autocorrelation, band_power, centred_frames, power_spectrogram
from kvae.errors import KvaeError

N_BANDS = 16
MOD_RANGES = ((0.5, 2.0), (2.0, 6.0), (6.0, 20.0))  # Hz
N_GROUPS = 4  # band groups for the modulation features
PITCH_RANGE = (50.0, 1000.0)  # Hz, pitch salience lags
_POWER_FLOOR = 1e-10  # -100 dB
_EPS = 1e-12


def feature_names(n_bands=N_BANDS):
    """The names of the features `clip_features` returns, in order."""
    names = [f"mel_{stat}_{b}" for stat in ("mean", "std", "delta") for b in range(n_bands)]
    names += ["flux_mean", "flux_std", "flux_peak", "onset_rate"]
    names += [f"mod_{lo:g}_{hi:g}_{g}" for g in range(N_GROUPS) for lo, hi in MOD_RANGES]
    names += ["flatness_mean", "flatness_std", "salience_mean", "salience_std", "level_db", "level_std"]
    return names


def _as_clips(clips):
    try:
        x = np.asarray(clips, dtype=np.float64)
    except (TypeError, ValueError):
        raise KvaeError("clips must be a numeric array of shape (n, samples)") from None
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.size == 0:
        raise KvaeError(f"clips must have shape (n, samples), got {np.shape(clips)}")
    if not np.all(np.isfinite(x)):
        raise KvaeError("clips contain NaN or Inf values")
    return x


def _spectra(x, sample_rate, n_bands):
    """Power spectrogram `(n, frames, bins)`, dB log-mel `(n, frames, bands)`, n_fft and hop."""
    n_fft = scaled_fft_size(sample_rate, 2048)
    if x.shape[-1] < 2 * n_fft:
        raise KvaeError(f"clips of {x.shape[-1]} samples are too short for clip features "
                        f"(at least {2 * n_fft} at {sample_rate:g} Hz)")
    hop = max(n_fft // 4, 1)
    power = power_spectrogram(x, n_fft, hop, "clips")
    bank = mel_filterbank(sample_rate, n_fft, n_bands)
    mel_db = 10.0 * np.log10(np.maximum(power @ bank.T, _POWER_FLOOR))
    return power, mel_db, n_fft, hop


def _flux_features(mel_db, frame_rate):
    rise = np.maximum(np.diff(mel_db, axis=1), 0.0).mean(axis=2)  # (n, frames - 1) onset strength
    mean, std = rise.mean(axis=1), rise.std(axis=1)
    peak = rise.max(axis=1) / (mean + 1e-3)
    above = rise > (mean + std)[:, None]
    local_max = np.zeros_like(above)
    local_max[:, 1:-1] = (rise[:, 1:-1] >= rise[:, :-2]) & (rise[:, 1:-1] > rise[:, 2:])
    seconds = max(rise.shape[1] / frame_rate, _EPS)
    rate = (above & local_max & (std[:, None] > 1e-6)).sum(axis=1) / seconds
    return np.stack([mean, std, peak, rate], axis=1)


def _modulation_features(mel_db, frame_rate):
    groups = np.array_split(np.arange(mel_db.shape[2]), N_GROUPS)
    envelopes = np.stack([mel_db[:, :, g].mean(axis=2) for g in groups], axis=1)  # (n, groups, frames)
    envelopes = envelopes - envelopes.mean(axis=2, keepdims=True)
    power = band_power(envelopes, frame_rate, MOD_RANGES)  # (n, groups, ranges)
    return 10.0 * np.log10(power + 1e-6).reshape(len(mel_db), -1)  # (n, groups * ranges)


def _flatness_features(power):
    p = np.maximum(power, _POWER_FLOOR)
    flatness = np.exp(np.mean(np.log(p), axis=2)) / np.mean(p, axis=2)
    return np.stack([flatness.mean(axis=1), flatness.std(axis=1)], axis=1)


def _salience_features(x, sample_rate, n_fft, hop):
    frames = centred_frames(x, n_fft, hop, "clips")
    frames = frames - frames.mean(axis=2, keepdims=True)
    acf = autocorrelation(frames, n_fft)
    lo = max(int(sample_rate / PITCH_RANGE[1]), 1)
    hi = min(int(np.ceil(sample_rate / PITCH_RANGE[0])), n_fft // 2)
    if hi <= lo:
        salience = np.zeros(frames.shape[:2])
    else:
        unbiased = acf[:, :, lo:hi] * (n_fft / (n_fft - np.arange(lo, hi)))  # undo the lag taper
        salience = np.clip(unbiased.max(axis=2) / (acf[:, :, 0] + _EPS), 0.0, 1.0)
        salience = np.where(acf[:, :, 0] > _EPS * n_fft, salience, 0.0)
    return np.stack([salience.mean(axis=1), salience.std(axis=1)], axis=1)


def _level_features(x, n_fft, hop):
    level = 10.0 * np.log10(np.maximum(np.mean(x ** 2, axis=1), _POWER_FLOOR))
    frames = centred_frames(x, n_fft, hop, "clips")
    frame_level = 10.0 * np.log10(np.maximum(np.mean(frames ** 2, axis=2), _POWER_FLOOR))
    return np.stack([level, frame_level.std(axis=1)], axis=1)


def clip_features(clips, sample_rate, n_bands=N_BANDS, batch=64):
    """Feature vectors of clips, one row per clip (see the module docstring for each column).

    Args:
        clips: array `(n, samples)` (or one clip `(samples,)`), float audio, full scale 1.0.
        sample_rate: Sample rate in Hz.
        n_bands: Mel bands. Defaults to 16.
        batch: Clips processed at once (bounds memory). Defaults to 64.

    Returns:
        A float64 array `(n, len(feature_names(n_bands)))`.

    Raises:
        KvaeError: on non-finite or badly shaped clips, or clips shorter
            than two FFT frames (93 ms).
    """
    x = _as_clips(clips)
    sample_rate = check_rate(sample_rate, "sample_rate")
    out = []
    for start in range(0, len(x), batch):
        part = x[start:start + batch]
        power, mel_db, n_fft, hop = _spectra(part, sample_rate, n_bands)
        frame_rate = sample_rate / hop
        out.append(np.concatenate([
            mel_db.mean(axis=1), mel_db.std(axis=1), np.abs(np.diff(mel_db, axis=1)).mean(axis=1),
            _flux_features(mel_db, frame_rate), _modulation_features(mel_db, frame_rate),
            _flatness_features(power), _salience_features(part, sample_rate, n_fft, hop),
            _level_features(part, n_fft, hop),
        ], axis=1))
    return np.concatenate(out, axis=0)


def temporal_std(features, n_bands=N_BANDS):
    """Mean over bands of the std over time of the band levels (dB), per clip: `(n,)`."""
    features = np.asarray(features)
    return features[:, n_bands:2 * n_bands].mean(axis=1)
