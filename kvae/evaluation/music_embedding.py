"""A pretrained music network's view of clips: musicnn (MTT_musicnn) rebuilt in Keras 3 ops, weights read offline.

musicnn (Pons & Serra, ISMIR 2019 LBD; ISC licence) is a music auto-tagger
trained on MagnaTagATune's 50 tags (guitar, classical, piano, drums, techno,
vocal, ...). Its `musicnn` 0.1.0 wheel ships the trained network as a
TensorFlow 1 checkpoint (`musicnn/MTT_musicnn/.index`, `.data-00000-of-00001`,
`.meta`); its code needs TensorFlow 1 and librosa. kvae imports none of it:
it reads the checkpoint's variables with TensorFlow's checkpoint reader
(TensorFlow is already a kvae dependency) and runs the network in
`keras.ops`, so it runs on the torch (or jax, or tensorflow) backend. Install
the weights without their package's dependencies (it pins TensorFlow 1):

    pip install --no-deps musicnn==0.1.0

The network, as `musicnn.models.build_musicnn` defines it (input: log-mel
patches `(frames, 96)`):

- front end: batch norm, then five convolutions over the spectrogram, each
  ReLU, batch norm and a max over frequency: two timbral ones (7 frames x
  38 and x 67 mel bands, 204 filters each) and three temporal ones (128, 64
  and 32 frames x 1 band, 51 filters each, "same" padded): 561 channels per
  frame;
- mid end: three convolutions over time (7 frames, 64 filters, ReLU, batch
  norm), the second and third residual; the front end and the three are
  concatenated: 753 channels per frame;
- back end: max and mean over time (interleaved per channel: 1506 values),
  batch norm, a 200-unit dense layer (ReLU, batch norm): the
  **penultimate** layer, kvae's embedding; then 50 tag logits (`tags`
  gives their sigmoids).

Its input, as `musicnn.extractor.batch_data` makes it: audio at 16 kHz, a
centred STFT of 512 points with hop 256 (periodic Hann, reflect padding),
power through librosa's 96-band Slaney mel filter bank (0-8 kHz, area
normalised), cast to float16 and mapped by `log10(10000 x + 1)`. kvae
resamples clips to 16 kHz with `scipy.signal.resample_poly`; a clip of at
most 3 s (187 frames, what the network was trained on) is one patch (the
network pools over time, so any length works; 1 s at 3000 Hz is 63
frames); a longer clip is cut into 187-frame patches without overlap (as
`musicnn` does; the frames after the last whole patch are dropped) and
its embedding is the mean over them.

Caveat: kvae's clips at 3000 Hz have nothing above 1.5 kHz, so the upper
two thirds of the mel bands are empty for every row, real music included;
the network was trained on full-band MP3s. Compare rows of one table.

The network judges; it never trains anything: no loss in kvae reads it.
"""

import functools
import math
import os

import numpy as np

from kvae.errors import KvaeError

MODEL_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # 3 s: musicnn's training input
BN_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization's default
CHECKPOINT = "musicnn/MTT_musicnn/"  # the checkpoint's prefix in the wheel: files ".index", ".data-00000-of-00001"
INSTALL = "pip install --no-deps musicnn==0.1.0"
EMBEDDING_SIZE = 200
TAGS = ("guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
        "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
        "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
        "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
        "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral")
TEMPORAL = ((2, 128), (3, 64), (4, 32))  # (conv2d index, frames) of the temporal front-end convolutions


def checkpoint_prefix():
    """The MTT_musicnn checkpoint's path prefix (str) in the installed `musicnn` package, or a one-line `KvaeError`."""
    from importlib import metadata

    try:
        folder = metadata.distribution("musicnn").locate_file(CHECKPOINT)
    except metadata.PackageNotFoundError:
        raise KvaeError(f"the music network (musicnn) is not installed: {INSTALL}") from None
    if not (folder / ".index").is_file() or not (folder / ".data-00000-of-00001").is_file():
        raise KvaeError(f"{folder}: musicnn is installed without its MTT_musicnn checkpoint; reinstall it: {INSTALL}")
    return os.path.join(str(folder), "")  # the files are named ".index" etc.: the prefix is the folder and a slash


def available():
    """`(True, None)` where the musicnn checkpoint (and TensorFlow, to read it) are installed, else `(False, why)`."""
    from importlib.util import find_spec

    if find_spec("tensorflow") is None:
        return False, "TensorFlow (kvae's dependency, to read the musicnn checkpoint) is not installed"
    try:
        checkpoint_prefix()
    except KvaeError as exc:
        return False, str(exc)
    return True, None


@functools.lru_cache(maxsize=1)
def checkpoint_weights():
    """The checkpoint's trained variables by name (`conv2d/kernel`, ...), as float32 numpy arrays (optimizer slots left out)."""
    ok, why = available()
    if not ok:
        raise KvaeError(why)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tensorflow.python.training import py_checkpoint_reader

    # tf.train.load_checkpoint(prefix) would look for a `checkpoint` file first, and the wheel's names the
    # author's machine; the reader it wraps takes the prefix itself.
    reader = py_checkpoint_reader.NewCheckpointReader(checkpoint_prefix())
    return {name: np.asarray(reader.get_tensor(name), np.float32)
            for name in reader.get_variable_to_shape_map() if "Adam" not in name and "power" not in name}


def _batch_norm(weights, name):
    """`(scale, shift)` of an inference batch norm: `x * scale + shift`."""
    gamma, beta = weights[f"{name}/gamma"], weights[f"{name}/beta"]
    mean, var = weights[f"{name}/moving_mean"], weights[f"{name}/moving_variance"]
    scale = gamma / np.sqrt(var + BN_EPSILON)
    return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _tensors():
    from keras import ops

    w = checkpoint_weights()
    t = {name: ops.convert_to_tensor(value) for name, value in w.items()}
    for i in range(11):
        name = "batch_normalization" + ("" if i == 0 else f"_{i}")
        scale, shift = _batch_norm(w, name)
        t[f"bn{i}"] = (ops.convert_to_tensor(scale), ops.convert_to_tensor(shift))
    for i in (5, 6, 7):  # a (7, width, 1, 64) 2-D kernel over the whole width is a 1-D one with width channels
        kernel = w[f"conv2d_{i}/kernel"]
        t[f"conv2d_{i}/kernel1d"] = ops.convert_to_tensor(kernel.reshape(kernel.shape[0], kernel.shape[1], -1))
    return t


def forward(patches):
    """The network on log-mel patches: `(penultimate, logits)`.

    Args:
        patches: float array or tensor `(batch, frames, 96)` (`log_mel`).

    Returns:
        `(penultimate, logits)`: backend tensors `(batch, 200)` and `(batch, 50)`.
    """
    from keras import ops

    t = _tensors()

    def bn(x, i):
        scale, shift = t[f"bn{i}"]
        return x * scale + shift

    def pad_time(x, before, after):
        return ops.pad(x, [[0, 0], [before, after]] + [[0, 0]] * (len(x.shape) - 2))

    def conv(x, i, suffix=""):
        name = "conv2d" + ("" if i == 0 else f"_{i}")
        return ops.relu(ops.conv(x, t[f"{name}/kernel{suffix}"], padding="valid") + t[f"{name}/bias"])

    x = bn(ops.expand_dims(ops.convert_to_tensor(patches, "float32"), -1), 0)  # (b, frames, 96, 1)
    front = []
    padded = pad_time(x, 3, 3)
    for i, norm in ((0, 1), (1, 2)):  # timbral: 7 x 38 and 7 x 67, max over frequency
        front.append(ops.max(bn(conv(padded, i), norm), axis=2))
    for (i, frames), norm in zip(TEMPORAL, (3, 4, 5)):  # temporal: TF "same" pads (k - 1) // 2 before
        front.append(ops.max(bn(conv(pad_time(x, (frames - 1) // 2, frames // 2), i), norm), axis=2))
    front = ops.concatenate(front, axis=-1)  # (b, frames, 561)
    h1 = bn(conv(pad_time(front, 3, 3), 5, "1d"), 6)
    h2 = bn(conv(pad_time(h1, 3, 3), 6, "1d"), 7) + h1
    h3 = bn(conv(pad_time(h2, 3, 3), 7, "1d"), 8) + h2
    mid = ops.concatenate([front, h1, h2, h3], axis=-1)  # (b, frames, 753)
    pooled = ops.stack([ops.max(mid, axis=1), ops.mean(mid, axis=1)], axis=-1)  # TF flattens (753, 2) row-major
    flat = bn(ops.reshape(pooled, (-1, 2 * mid.shape[-1])), 9)
    penultimate = bn(ops.relu(ops.matmul(flat, t["dense/kernel"]) + t["dense/bias"]), 10)
    logits = ops.matmul(penultimate, t["dense_1/kernel"]) + t["dense_1/bias"]
    return penultimate, logits


def slaney_mel_filterbank(sample_rate=MODEL_RATE, n_fft=N_FFT, n_mels=N_MELS):
    """librosa's default mel filter bank (Slaney's mel scale, area normalised), 0 Hz to Nyquist: `(n_mels, n_fft // 2 + 1)`.

    Args:
        sample_rate: int. The audio's rate. Defaults to 16000.
        n_fft: int. FFT size. Defaults to 512.
        n_mels: int. Bands. Defaults to 96.
    """
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def to_mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = to_hz(np.linspace(to_mel(0.0), to_mel(sample_rate / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]


def log_mel(clips, sample_rate):
    """musicnn's input of each clip: float32 `(n, frames, 96)` (see the module docstring).

    Args:
        clips: float array `(n, samples)`, full scale 1.0.
        sample_rate: int. Their rate; resampled to 16 kHz.

    Raises:
        KvaeError: the clips are too short for one STFT frame at 16 kHz.
    """
    from scipy.signal import resample_poly

    from kvae.dsp.spectral import power_spectrogram

    clips = np.asarray(clips, np.float64)
    if clips.ndim != 2:
        raise KvaeError(f"clips must have shape (n, samples), got {clips.shape}")
    g = math.gcd(int(sample_rate), MODEL_RATE)
    audio = resample_poly(clips, MODEL_RATE // g, int(sample_rate) // g, axis=-1)
    power = power_spectrogram(audio, N_FFT, HOP, name="clip at 16 kHz")
    # musicnn stores its spectrograms as float16; a loud clip (a diverged generator's) saturates at float16's
    # largest value instead of overflowing to inf and failing the whole evaluation
    mel = np.minimum(power @ _mel_t(), np.finfo(np.float16).max).astype(np.float16)
    return np.log10(10000.0 * mel.astype(np.float32) + 1.0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _mel_t():
    return slaney_mel_filterbank().T


def _patches(mel):
    """`(patches, per_clip)`: each clip's spectrogram cut into `PATCH_FRAMES` patches (one, if not longer)."""
    n, frames, bands = mel.shape
    if frames <= PATCH_FRAMES:
        return mel, 1
    per_clip = frames // PATCH_FRAMES
    return mel[:, :per_clip * PATCH_FRAMES].reshape(n * per_clip, PATCH_FRAMES, bands), per_clip


def _run(clips, sample_rate, batch, which):
    from keras import ops

    patches, per_clip = _patches(log_mel(clips, sample_rate))
    out = []
    for start in range(0, len(patches), batch):
        result = forward(patches[start:start + batch])[which]
        out.append(np.asarray(ops.convert_to_numpy(result), np.float64))
    out = np.concatenate(out)
    return out.reshape(len(clips), per_clip, -1).mean(axis=1)


def embeddings(clips, sample_rate, batch=32):
    """The penultimate-layer embedding of each clip (mean over its 3-s patches): float64 `(n, 200)`.

    Args:
        clips: float array `(n, samples)`.
        sample_rate: int. Their rate.
        batch: int. Patches per forward pass.
    """
    return _run(clips, sample_rate, batch, 0)


def tags(clips, sample_rate, batch=32):
    """The tagger's 50 tag probabilities (`TAGS`) of each clip, mean over its patches: float64 `(n, 50)`.

    Args:
        clips: float array `(n, samples)`.
        sample_rate: int. Their rate.
        batch: int. Patches per forward pass.
    """
    from keras import ops

    patches, per_clip = _patches(log_mel(clips, sample_rate))
    out = [np.asarray(ops.convert_to_numpy(ops.sigmoid(forward(patches[s:s + batch])[1])), np.float64)
           for s in range(0, len(patches), batch)]
    return np.concatenate(out).reshape(len(clips), per_clip, -1).mean(axis=1)


def describe():
    """One line for a report's settings: the network and its embedding, or why it is off."""
    ok, why = available()
    if not ok:
        return f"off: {why}"
    return ("musicnn MTT_musicnn (Pons & Serra 2019, MagnaTagATune tagger) rebuilt in keras.ops from the musicnn "
            f"0.1.0 checkpoint: Fréchet distance and KID of its {EMBEDDING_SIZE}-d penultimate layer per clip "
            "(clips resampled to 16 kHz)")
