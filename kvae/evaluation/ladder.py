"""The codec ladder: known degradations of the held-out windows, so a model's paired C2ST has a scale.

A reconstruction that is told from its input 91 % of the time means little
on its own. Codec papers (EnCodec, DAC, SoundStream) put every model beside a
classical codec at its bitrate; `kvae evaluate` does the same with these
rows, made in the same run from the same held-out windows and judged with
the same clip features and the same paired test (`two_sample.paired_c2st`):

| row | what it does | rate |
|---|---|---|
| `noise 30 dB SNR`, `noise 20 dB SNR` | adds white noise 30 or 20 dB below each window's RMS level | - |
| `magnitude smeared over 4 frames` | STFT (the clip features' size: 2048 at 44.1 kHz scaled, hop a quarter), each bin's magnitude averaged over 4 consecutive frames, the phase kept, inverse STFT | - |
| `low-pass <f> Hz` | 8th-order Butterworth, zero phase (forward and backward), at 2/3 of Nyquist: 1 kHz at kvae's 3000 Hz | - |
| `mu-law 4 bit` | mu-law companding with mu = 15 (torchaudio's convention), 16 levels, full scale 1.0 | 4 bits x rate |
| `Opus 6 kbit/s`, `Opus 12 kbit/s` | the Opus reference tools (`opusenc --bitrate`, `opusdec --rate 8000`) at 8 kHz, resampled with `scipy.signal.resample_poly` | the target bitrate; the `.opus` file's own rate is kept as `coded_bps` |

Opus needs `opusenc` and `opusdec` (Debian/Ubuntu: `apt-get install
opus-tools`); without them its rows say so instead of disappearing.
"""

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from kvae.dsp.filters import scaled_fft_size
from kvae.errors import KvaeError

SNRS_DB = (30, 20)
SMEAR_FRAMES = 4
LOWPASS_FRACTION = 2.0 / 3.0  # of Nyquist: 1 kHz at 3000 Hz
LOWPASS_ORDER = 8
MULAW_BITS = 4
OPUS_KBPS = (6, 12)
OPUS_RATE = 8000
OPUS_GAP_SECONDS = 0.05  # silence between windows in the one stream Opus codes, cut out again
OPUS_MISSING = "opusenc/opusdec not found: install opus-tools (Debian/Ubuntu: apt-get install opus-tools)"


def _rms(x):
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True))


def noise_at_snr(clips, snr_db, seed=0):
    """`clips` plus white noise `snr_db` below each clip's RMS level: float32, same shape."""
    clips = np.asarray(clips, np.float64)
    noise = np.random.default_rng(seed).standard_normal(clips.shape)
    return (clips + noise * _rms(clips) * 10.0 ** (-snr_db / 20.0)).astype(np.float32)


def smear_magnitude(clips, sample_rate, frames=SMEAR_FRAMES):
    """Each STFT bin's magnitude averaged over `frames` consecutive frames, phase kept: float32, same shape."""
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import istft, stft

    clips = np.asarray(clips, np.float64)
    n_fft = min(scaled_fft_size(sample_rate, 2048), clips.shape[-1])
    hop = max(n_fft // 4, 1)
    _, _, spec = stft(clips, nperseg=n_fft, noverlap=n_fft - hop, window="hann", axis=-1)
    magnitude = uniform_filter1d(np.abs(spec), size=frames, axis=-1, mode="nearest")
    _, out = istft(magnitude * np.exp(1j * np.angle(spec)), nperseg=n_fft, noverlap=n_fft - hop,
                   window="hann", time_axis=-1, freq_axis=-2)
    return out[..., :clips.shape[-1]].astype(np.float32)


def lowpass_cutoff(sample_rate):
    """The ladder's low-pass cutoff in Hz: 2/3 of Nyquist (1 kHz at 3000 Hz)."""
    return LOWPASS_FRACTION * sample_rate / 2.0


def lowpass(clips, sample_rate, cutoff=None):
    """Zero-phase 8th-order Butterworth low-pass at `cutoff` Hz (default `lowpass_cutoff`): float32."""
    from scipy.signal import butter, sosfiltfilt

    cutoff = lowpass_cutoff(sample_rate) if cutoff is None else float(cutoff)
    if not 0 < cutoff < sample_rate / 2:
        raise KvaeError(f"low-pass cutoff must lie between 0 and Nyquist ({sample_rate / 2:g} Hz), got {cutoff:g}")
    sos = butter(LOWPASS_ORDER // 2, cutoff, fs=sample_rate, output="sos")  # order doubles forward-backward
    return sosfiltfilt(sos, np.asarray(clips, np.float64), axis=-1).astype(np.float32)


def mu_law(clips, bits=MULAW_BITS):
    """Mu-law quantisation to `2**bits` levels (mu = 2**bits - 1) and back: float32, same shape."""
    mu = 2 ** int(bits) - 1
    x = np.clip(np.asarray(clips, np.float64), -1.0, 1.0)
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    index = np.floor((companded + 1.0) / 2.0 * mu + 0.5)
    y = index / mu * 2.0 - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def opus_tools():
    """Paths of `opusenc` and `opusdec`, or None where either is missing."""
    enc, dec = shutil.which("opusenc"), shutil.which("opusdec")
    return (enc, dec) if enc and dec else None


def opus(clips, sample_rate, kbps, tools=None):
    """Clips through Opus at `kbps` kbit/s at 8 kHz (`opusenc`/`opusdec`), back at `sample_rate`.

    All clips are coded as one stream, each followed by 50 ms of silence
    (so no clip's start leans on the previous clip's end), then cut apart.

    Returns:
        `(clips, coded_bps)`: float32 like `clips`, and the bitrate of the
        `.opus` file (container included) over the stream's duration.

    Raises:
        KvaeError: where the tools are missing or fail.
    """
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    tools = tools or opus_tools()
    if tools is None:
        raise KvaeError(OPUS_MISSING)
    clips = np.asarray(clips, np.float64)
    n, length = clips.shape
    g = math.gcd(int(sample_rate), OPUS_RATE)
    up, down = OPUS_RATE // g, int(sample_rate) // g
    at8k = resample_poly(clips, up, down, axis=-1)
    gap = int(OPUS_GAP_SECONDS * OPUS_RATE)
    stride = at8k.shape[1] + gap
    stream = np.zeros(n * stride)
    for i, clip in enumerate(at8k):
        stream[i * stride:i * stride + len(clip)] = clip
    pcm = np.round(np.clip(stream, -1.0, 1.0) * 32767).astype(np.int16)
    with tempfile.TemporaryDirectory(prefix="kvae-opus-") as folder:
        folder = Path(folder)
        wavfile.write(folder / "in.wav", OPUS_RATE, pcm)
        wav_in, coded, wav_out = (str(folder / name) for name in ("in.wav", "c.opus", "out.wav"))
        for command in ([tools[0], "--quiet", "--bitrate", f"{kbps:g}", wav_in, coded],
                        [tools[1], "--quiet", "--rate", str(OPUS_RATE), coded, wav_out]):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                raise KvaeError(f"{Path(command[0]).name} failed (exit {done.returncode}): {last}")
        coded_bps = (folder / "c.opus").stat().st_size * 8 / (len(stream) / OPUS_RATE)
        _, decoded = wavfile.read(folder / "out.wav")
    decoded = decoded.astype(np.float64) / 32768.0
    if decoded.ndim > 1:
        decoded = decoded.mean(axis=1)
    decoded = np.pad(decoded, (0, max(0, len(stream) - len(decoded))))
    back = np.stack([decoded[i * stride:i * stride + at8k.shape[1]] for i in range(n)])
    return resample_poly(back, down, up, axis=-1)[:, :length].astype(np.float32), float(coded_bps)


def ladder_rows(clips, sample_rate, seed=0):
    """The ladder's clip sets: every row made from `clips` (the held-out windows).

    Args:
        clips: float array `(n, window)`. The held-out windows.
        sample_rate: int. Their rate.
        seed: int. Seed of the noise rows.

    Returns:
        dict of row name to `(clips_or_None, info)`, in table order. `info`
        holds `rate_bps` (bits per second of audio, None where a row has no
        bitrate), and for Opus `coded_bps`; a row that could not be made has
        no clips and a `note` saying why and how to fix it.
    """
    clips = np.asarray(clips, np.float32)
    rows = {}
    for i, snr in enumerate(SNRS_DB):
        rows[f"noise {snr} dB SNR"] = (noise_at_snr(clips, snr, seed=seed + i), {"rate_bps": None})
    rows[f"magnitude smeared over {SMEAR_FRAMES} frames"] = (smear_magnitude(clips, sample_rate), {"rate_bps": None})
    rows[f"low-pass {lowpass_cutoff(sample_rate):g} Hz"] = (lowpass(clips, sample_rate), {"rate_bps": None})
    rows[f"mu-law {MULAW_BITS} bit"] = (mu_law(clips), {"rate_bps": float(MULAW_BITS * sample_rate)})
    tools = opus_tools()
    for kbps in OPUS_KBPS:
        info = {"rate_bps": 1000.0 * kbps}
        if tools is None:
            rows[f"Opus {kbps} kbit/s"] = (None, {**info, "note": OPUS_MISSING})
            continue
        coded, info["coded_bps"] = opus(clips, sample_rate, kbps, tools)
        rows[f"Opus {kbps} kbit/s"] = (coded, info)
    return rows
