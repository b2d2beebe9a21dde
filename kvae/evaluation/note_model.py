"""A pretrained music model's view of clips: Spotify's basic-pitch note model, run offline with onnxruntime.

basic-pitch (Bittner et al., ICASSP 2022; Apache-2.0) is a small polyphonic
note transcriber trained on real recordings of many instruments. Its wheel
ships the model as ONNX (`basic_pitch/saved_models/icassp_2022/nmp.onnx`,
22,050 Hz mono input in 43,844-sample windows, 86 frames per second out):
three posteriors per frame, `note` and `onset` over the 88 piano keys and a
pitch `contour` at a third of a semitone. kvae reads the file from the
installed package (never from its own tree) and runs it with onnxruntime;
nothing of basic-pitch is imported, so neither its TensorFlow nor its other
dependencies are needed. Install:

    pip install "kvae[eval]"                      # onnxruntime
    pip install --no-deps basic-pitch==0.4.0      # the model file

(`--no-deps`: on Linux with Python >= 3.11 the wheel's metadata asks for
TensorFlow < 2.15.1, which needs Keras 2 and cannot be installed beside
kvae's Keras 3; the ONNX file needs none of it.)

Clips are resampled to 22,050 Hz (`scipy.signal.resample_poly`), framed as
basic-pitch's own inference frames a file (a 15-frame half overlap padded in
front, 30 frames of overlap between windows, their halves dropped), and
pooled per clip into `NOTE_FEATURES`:

| name | what it is |
|---|---|
| `polyphony` | mean over frames of the number of keys whose note posterior is above 0.5 |
| `note_activity` | fraction of frames with at least one such key |
| `note_confidence` | mean over frames of the largest note posterior |
| `onset_rate` | onsets per second: per key, local maxima in time of the onset posterior above 0.5 |
| `contour_peak` | mean over frames of the largest contour posterior (pitch salience as the model hears it) |
| `note_change` | mean over frame pairs of the number of keys that switch on or off (how the notes move) |
| `pitch_mean`, `pitch_std` | mean and std of the MIDI pitch, weighted by the note posteriors above 0.5 (register and range; 69 and 0 where there are none) |
| `pc_peak`, `pc_entropy` | the pitch-class profile (the note posteriors above 0.5 summed per pitch class, normalised to 1; uniform where there are none): its largest share, and its entropy in bits (0 = one pitch class, 3.58 = all twelve alike) |
| `key_clarity` | the profile's largest correlation with the 24 Krumhansl-Kessler major and minor key profiles (how tonal the pitches are) |

The pitch-class profile enters only through transposition-invariant
summaries: a model that plays in another key than the reference clips is no
less musical. Posteriors below 0.5 are left out of the pitch statistics: the
model puts a floor of about 0.1 on every key, silence included, which would
otherwise drown them.
"""

import functools
import math

import numpy as np

from kvae.errors import KvaeError

MODEL_RATE = 22050
MODEL_SAMPLES = 43844  # AUDIO_N_SAMPLES: 2 s minus one hop
HOP = 256
FRAMES_PER_SECOND = MODEL_RATE // HOP  # 86, as basic-pitch counts them
OVERLAP_FRAMES = 30
LOWEST_MIDI = 21  # key 0 is A0
MODEL_PATH = "basic_pitch/saved_models/icassp_2022/nmp.onnx"
INPUT_NAME = "serving_default_input_2:0"
OUTPUT_NAMES = {"note": "StatefulPartitionedCall:1", "onset": "StatefulPartitionedCall:2",
                "contour": "StatefulPartitionedCall:0"}
INSTALL = 'pip install "kvae[eval]" && pip install --no-deps basic-pitch==0.4.0'
NOTE_FEATURES = ("polyphony", "note_activity", "note_confidence", "onset_rate", "contour_peak", "note_change",
                 "pitch_mean", "pitch_std", "pc_peak", "pc_entropy", "key_clarity")
# Krumhansl & Kessler (1982) probe-tone profiles, C major and C minor.
MAJOR_PROFILE = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
MINOR_PROFILE = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
THRESHOLD = 0.5


def model_file():
    """Path of basic-pitch's ONNX file in the installed package, or a one-line `KvaeError` saying how to install it."""
    from importlib import metadata

    try:
        path = metadata.distribution("basic-pitch").locate_file(MODEL_PATH)
    except metadata.PackageNotFoundError:
        raise KvaeError(f"the note model (basic-pitch) is not installed: {INSTALL}") from None
    if not path.is_file():
        raise KvaeError(f"{path}: basic-pitch is installed without its ONNX model; reinstall it: {INSTALL}")
    return path


def available():
    """`(True, None)` where onnxruntime and the model file are installed, else `(False, why)`."""
    from importlib.util import find_spec

    if find_spec("onnxruntime") is None:
        return False, f"onnxruntime is not installed: {INSTALL}"
    try:
        model_file()
    except KvaeError as exc:
        return False, str(exc)
    return True, None


@functools.lru_cache(maxsize=1)
def _session():
    ok, why = available()
    if not ok:
        raise KvaeError(why)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(model_file()), options, providers=["CPUExecutionProvider"])


def _windows(audio):
    """basic-pitch's framing of one clip at 22,050 Hz: `(windows, MODEL_SAMPLES)` and the clip's frame count."""
    half = OVERLAP_FRAMES // 2 * HOP
    hop = MODEL_SAMPLES - OVERLAP_FRAMES * HOP
    padded = np.concatenate([np.zeros(half, np.float32), audio])
    starts = range(0, len(padded), hop)
    out = np.zeros((len(starts), MODEL_SAMPLES), np.float32)
    for i, start in enumerate(starts):
        part = padded[start:start + MODEL_SAMPLES]
        out[i, :len(part)] = part
    return out, int(math.floor(len(audio) * FRAMES_PER_SECOND / MODEL_RATE))


def posteriors(clips, sample_rate, batch=16):
    """basic-pitch's frame posteriors of each clip: dicts of `note`, `onset` `(frames, 88)` and `contour` `(frames, 264)`.

    Args:
        clips: float array `(n, samples)`, full scale 1.0.
        sample_rate: int. Their rate; resampled to 22,050 Hz.
        batch: int. Model windows per inference call.

    Raises:
        KvaeError: where onnxruntime or the model is not installed, or the
            clips are shorter than one model frame.
    """
    from scipy.signal import resample_poly

    clips = np.asarray(clips, np.float64)
    if clips.ndim != 2:
        raise KvaeError(f"clips must have shape (n, samples), got {clips.shape}")
    session = _session()
    g = math.gcd(int(sample_rate), MODEL_RATE)
    audio = resample_poly(clips, MODEL_RATE // g, int(sample_rate) // g, axis=-1).astype(np.float32)
    framed = [_windows(a) for a in audio]
    if framed[0][1] < 1:
        raise KvaeError(f"clips of {clips.shape[1]} samples are too short for the note model")
    stacked = np.concatenate([w for w, _ in framed])
    outputs = {key: [] for key in OUTPUT_NAMES}
    for start in range(0, len(stacked), batch):
        values = session.run(list(OUTPUT_NAMES.values()), {INPUT_NAME: stacked[start:start + batch, :, None]})
        for key, value in zip(OUTPUT_NAMES, values):
            outputs[key].append(value)
    outputs = {key: np.concatenate(value) for key, value in outputs.items()}
    half = OVERLAP_FRAMES // 2
    result, at = [], 0
    for windows, frames in framed:
        clip = {}
        for key, value in outputs.items():
            kept = value[at:at + len(windows), half:-half]
            clip[key] = kept.reshape(-1, kept.shape[-1])[:frames]
        result.append(clip)
        at += len(windows)
    return result


def pooled(post):
    """The `NOTE_FEATURES` of one clip's posteriors (see the module docstring)."""
    note, onset, contour = post["note"], post["onset"], post["contour"]
    frames = len(note)
    active = note > THRESHOLD
    peaks = np.zeros_like(onset, bool)
    if frames >= 3:
        peaks[1:-1] = (onset[1:-1] > THRESHOLD) & (onset[1:-1] >= onset[:-2]) & (onset[1:-1] > onset[2:])
    pitches = LOWEST_MIDI + np.arange(note.shape[1])
    weight = np.where(active, note, 0.0).sum(axis=0)
    total = weight.sum()
    if total > 1e-9:
        mean = float(weight @ pitches / total)
        std = float(np.sqrt(weight @ (pitches - mean) ** 2 / total))
    else:
        mean, std = 69.0, 0.0
    profile = np.bincount(pitches % 12, weights=weight, minlength=12)
    profile = profile / profile.sum() if profile.sum() > 1e-9 else np.full(12, 1 / 12)
    change = np.abs(np.diff(active.astype(np.int8), axis=0)).sum(axis=1).mean() if frames >= 2 else 0.0
    return np.array([active.sum(axis=1).mean(), active.any(axis=1).mean(), note.max(axis=1).mean(),
                     peaks.sum() / (frames / FRAMES_PER_SECOND), contour.max(axis=1).mean(), change,
                     mean, std, profile.max(), -np.sum(profile * np.log2(np.maximum(profile, 1e-12))),
                     key_clarity(profile)])


def key_clarity(profile):
    """Largest Pearson correlation of a pitch-class profile with the 24 major and minor key profiles (0 if flat)."""
    profile = np.asarray(profile, np.float64)
    if np.ptp(profile) < 1e-9:
        return 0.0
    keys = [np.roll(p, k) for p in (MAJOR_PROFILE, MINOR_PROFILE) for k in range(12)]
    return float(max(np.corrcoef(profile, key)[0, 1] for key in keys))


def note_features(clips, sample_rate, batch=16):
    """The note model's features of each clip: float64 `(n, len(NOTE_FEATURES))`."""
    return np.stack([pooled(p) for p in posteriors(clips, sample_rate, batch)])
