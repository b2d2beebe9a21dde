"""Reference clip sets that give every quality number a scale: what failure sounds like.

- `white_noise_like`: Gaussian noise, each clip at the RMS level of a real clip.
- `drone_like`: a stationary drone, a sustained chord whose partials follow
  the data's long-term average spectrum, at the data's level: right spectrum,
  no movement. A metric that ranks it near real music is blind to time.
- `silence_like`: zeros.

They are made in the same run as the rows they scale, from the same data.
"""

import numpy as np

from kvae.dsp.filters import scaled_fft_size
from kvae.dsp.spectral import power_spectrogram

_CHORDS = ((0, 4, 7, 12), (0, 3, 7, 12), (0, 5, 9, 12), (0, 4, 7, 10))  # semitones: major, minor, 6/4, dom. 7th


def _rms(x):
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1))


def white_noise_like(clips, seed=0):
    """White noise with each clip's RMS level: float32, same shape as `clips`."""
    clips = np.asarray(clips, dtype=np.float32)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(clips.shape)
    return (noise * _rms(clips)[:, None]).astype(np.float32)


def silence_like(clips):
    """Zeros shaped like `clips`."""
    return np.zeros(np.shape(clips), np.float32)


def long_term_spectrum(clips, sample_rate):
    """Mean power spectrum of all frames of all clips: `(freqs, power)`."""
    clips = np.asarray(clips, dtype=np.float64)
    n_fft = min(scaled_fft_size(sample_rate, 4096), 1 << (clips.shape[-1].bit_length() - 1))
    power = power_spectrogram(clips, n_fft, n_fft // 4, "clips").mean(axis=(0, 1))
    return np.arange(len(power)) * sample_rate / n_fft, power


def drone_like(clips, sample_rate, seed=0, partials=12):
    """Stationary drones: one sustained chord per clip, partials weighted by the data's long-term spectrum.

    Each clip is a random chord (major, minor, 6/4 or dominant seventh on a
    root between 65 and 262 Hz), every note with `partials` harmonics below
    Nyquist, each partial's amplitude the square root of the data's long-term
    power spectrum at its frequency, random phases, scaled to the RMS of the
    matching real clip. The frequencies fall on the clip's DFT bins, so the
    drone is exactly stationary.

    Returns:
        float32 array shaped like `clips`.
    """
    clips = np.asarray(clips, dtype=np.float32)
    n, length = clips.shape
    freqs, power = long_term_spectrum(clips, sample_rate)
    rng = np.random.default_rng(seed)
    levels = _rms(clips)
    out = np.zeros((n, length), np.float32)
    bin_hz = sample_rate / length
    t = np.arange(length) / length  # in cycles of the clip
    for i in range(n):
        root = 65.4 * 2 ** rng.uniform(0, 2)
        chord = _CHORDS[rng.integers(len(_CHORDS))]
        tone = np.zeros(length)
        for step in chord:
            f0 = root * 2 ** (step / 12)
            for k in range(1, partials + 1):
                f = k * f0
                index = int(round(f / bin_hz))  # a whole number of cycles per clip
                if not 0 < index < length // 2:
                    break
                amplitude = np.sqrt(np.interp(f, freqs, power))
                tone += amplitude * np.cos(2 * np.pi * (index * t + rng.uniform()))
        scale = levels[i] / max(_rms(tone), 1e-12)
        out[i] = (tone * scale).astype(np.float32)
    return out
