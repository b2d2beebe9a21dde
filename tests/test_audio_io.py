"""Tests for kvae.data.audio_io: decoding every sample format, FLAC/OGG, resampling, writing."""

import math
import struct

import numpy as np
import pytest

from audio import patched_wav, pcm24_wav, sine, wav_file
from kvae.data import write_wav
from kvae.data.audio_io import AudioFileError, read_audio, resample, to_float_mono
from kvae.errors import KvaeError

SR = 44100


# ---------------------------------------------------------------- WAV sample formats


def test_float32_wav(tmp_path):
    x = sine(440, 1.0, SR, 0.7)
    wav_file(tmp_path / "f32.wav", x, SR)
    y, rate = read_audio(tmp_path / "f32.wav")
    assert rate == SR
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)


def test_float64_wav(tmp_path):
    x = sine(300, 1.0, SR, 0.9, dtype=np.float64)
    wav_file(tmp_path / "f64.wav", x.astype(np.float64), SR)
    y, rate = read_audio(tmp_path / "f64.wav")
    assert rate == SR and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1e-7)


def test_int16_wav_scale(tmp_path):
    x = np.array([-32768, -16384, 0, 16384, 32767] * 100, dtype=np.int16)
    wav_file(tmp_path / "i16.wav", x, 22050)
    y, rate = read_audio(tmp_path / "i16.wav")
    assert rate == 22050 and y.dtype == np.float32
    np.testing.assert_allclose(y[:5], [-1.0, -0.5, 0.0, 0.5, 32767 / 32768], atol=1e-7)
    assert y.min() >= -1.0 and y.max() <= 1.0


def test_int24_wav_hand_written(tmp_path):
    rng = np.random.default_rng(0)
    ints = rng.integers(-(2**23), 2**23, size=2000)
    ints[:4] = [-(2**23), 2**22, 0, 2**23 - 1]
    path = pcm24_wav(tmp_path / "i24.wav", ints, 16000)
    y, rate = read_audio(path)
    assert rate == 16000 and y.dtype == np.float32 and y.shape == (2000,)
    np.testing.assert_allclose(y, ints / 2**23, atol=1e-6, rtol=0)
    np.testing.assert_allclose(y[:4], [-1.0, 0.5, 0.0, (2**23 - 1) / 2**23], atol=1e-6)


def test_int24_stereo_hand_written(tmp_path):
    left = np.full(500, 2**22)  # 0.5
    right = np.full(500, -(2**21))  # -0.25
    path = pcm24_wav(tmp_path / "i24s.wav", np.stack([left, right], axis=1), 8000)
    y, _ = read_audio(path)
    np.testing.assert_allclose(y, 0.125, atol=1e-6)


def test_int32_wav_scale(tmp_path):
    x = np.array([-(2**31), -(2**30), 0, 2**30, 2**31 - 1] * 50, dtype=np.int32)
    wav_file(tmp_path / "i32.wav", x, 8000)
    y, _ = read_audio(tmp_path / "i32.wav")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[:5], [-1.0, -0.5, 0.0, 0.5, 1.0], atol=1e-6)


def test_uint8_wav_scale(tmp_path):
    x = np.array([0, 64, 128, 192, 255] * 50, dtype=np.uint8)
    wav_file(tmp_path / "u8.wav", x, 8000)
    y, _ = read_audio(tmp_path / "u8.wav")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[:5], [-1.0, -0.5, 0.0, 0.5, 127 / 128], atol=1e-7)


def test_stereo_is_mixed_to_mono_by_mean(tmp_path):
    left = sine(440, 0.5, SR, 0.8, dtype=np.float64)
    right = sine(660, 0.5, SR, 0.4, dtype=np.float64)
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    wav_file(tmp_path / "st.wav", stereo, SR)
    y, _ = read_audio(tmp_path / "st.wav")
    assert y.shape == (len(left),)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


def test_four_channels_int16_mixed_to_mono(tmp_path):
    chans = np.array([1000, 2000, -3000, 8000], dtype=np.int16)
    x = np.tile(chans, (300, 1))
    wav_file(tmp_path / "quad.wav", x, 8000)
    y, _ = read_audio(tmp_path / "quad.wav")
    assert y.shape == (300,)
    np.testing.assert_allclose(y, chans.mean() / 32768, atol=1e-7)


def test_to_float_mono_single_channel_column():
    y = to_float_mono(np.array([[16384], [-16384]], dtype=np.int16))
    assert y.shape == (2,) and y.dtype == np.float32
    np.testing.assert_allclose(y, [0.5, -0.5])


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(AudioFileError) as err:
        read_audio(tmp_path / "nope.wav")
    assert "nope.wav" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "x.aiff").write_bytes(b"FORM0000AIFF")
    with pytest.raises(KvaeError) as err:
        read_audio(tmp_path / "x.aiff")
    assert "x.aiff" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- FLAC and OGG (tensorflow-io)


@pytest.fixture(scope="module")
def tfio_audio():
    tf = pytest.importorskip("tensorflow")
    tfio = pytest.importorskip("tensorflow_io")
    return tf, tfio


def test_flac_decodes_exactly(tmp_path, tfio_audio):
    tf, tfio = tfio_audio
    rate = 22050
    left = (sine(440, 1.0, rate, 0.5, dtype=np.float64) * 32767).astype(np.int16)
    right = (sine(220, 1.0, rate, 0.25, dtype=np.float64) * 32767).astype(np.int16)
    stereo = np.stack([left, right], axis=1)
    path = tmp_path / "a.flac"
    path.write_bytes(tfio.audio.encode_flac(tf.constant(stereo), rate=rate).numpy())
    y, r = read_audio(path)
    assert r == rate and y.dtype == np.float32
    expected = stereo.astype(np.float32).mean(axis=1) / 32768
    assert y.shape == expected.shape
    np.testing.assert_array_equal(y, expected.astype(np.float32))


def test_ogg_decodes_loosely(tmp_path, tfio_audio):
    tf, tfio = tfio_audio
    rate = 44100
    x = sine(440, 1.0, rate, 0.5)
    path = tmp_path / "a.ogg"
    path.write_bytes(tfio.audio.encode_vorbis(tf.constant(x[:, None]), rate=rate).numpy())
    y, r = read_audio(path)
    assert r == rate and y.dtype == np.float32
    assert abs(len(y) - len(x)) < 2048
    n = min(len(x), len(y))
    corr = np.corrcoef(x[:n], y[:n])[0, 1]
    assert corr > 0.99
    assert np.abs(y).max() <= 1.0


def _reason(path):
    """read_audio's reason for a bad file: one line, in words, without exception names or TensorFlow's op noise."""
    with pytest.raises(AudioFileError) as err:
        read_audio(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and "\n" not in text, text
    for noise in ("Error", "device", "job:", "Op:", "function_node", "{{"):
        assert noise not in err.value.reason, err.value.reason
    return err.value.reason


def test_corrupt_flac_is_an_audio_file_error(tmp_path, tfio_audio):
    path = tmp_path / "bad.flac"
    path.write_bytes(b"fLaC" + b"\x00" * 64)  # the marker, then no valid metadata block
    reason = _reason(path)
    assert reason.startswith("cannot decode FLAC: ") and "metadata" in reason


def test_random_bytes_flac_is_not_a_flac_stream(tmp_path, tfio_audio):
    path = tmp_path / "noise.flac"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    assert _reason(path) == "cannot decode FLAC: not a FLAC stream (no fLaC marker)"


# ---------------------------------------------------------------- broken WAV headers


def test_wav_with_a_huge_fmt_chunk_says_so(tmp_path):
    path = patched_wav(tmp_path / "huge-fmt.wav", fmt_size=0xFFFFFFFF, seconds=0.1)
    reason = _reason(path)
    assert reason.startswith("not a valid WAV file: fmt chunk of 4294967295 bytes"), reason


def test_wav_with_zero_channels_says_so(tmp_path):
    path = patched_wav(tmp_path / "no-channels.wav", channels=0, seconds=0.1)
    assert _reason(path) == "WAV header says 0 channels"


# ---------------------------------------------------------------- resampling


def test_resample_preserves_frequency_and_has_no_delay():
    n = int(1.5 * SR) + 7
    t = np.arange(n) / SR
    x = 0.5 * np.sin(2 * np.pi * 200 * t)
    y = resample(x, SR, 3000)
    assert y.dtype == np.float32
    assert abs(len(y) - math.ceil(n * 3000 / SR)) <= 1
    direct = 0.5 * np.sin(2 * np.pi * 200 * np.arange(len(y)) / 3000)
    # frequency: the spectrum peaks at 200 Hz
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 3000)
    assert abs(freqs[np.argmax(spectrum)] - 200) < 2
    # no delay: the cross-correlation with a directly synthesised sine peaks at lag 0
    lags = np.arange(-7, 8)  # within half a period of 200 Hz at 3 kHz (15 samples)
    core = slice(100, len(y) - 100)  # away from the filter's edge transients
    scores = [np.dot(y[core], np.roll(direct, lag)[core]) for lag in lags]
    assert lags[int(np.argmax(scores))] == 0
    np.testing.assert_allclose(y[core], direct[core], atol=0.01)


def test_resample_pulse_is_not_shifted():
    # a band-limited pulse (Gaussian, sigma 2 ms) at 0.5 s must stay at 0.5 s
    n = SR
    t = np.arange(n) / SR
    x = np.exp(-0.5 * ((t - 0.5) / 0.002) ** 2)
    y = resample(x, SR, 3000)
    assert abs(int(np.argmax(y)) - 1500) <= 1


def test_resample_same_rate_is_identity():
    x = np.linspace(-1, 1, 101)
    y = resample(x, 8000, 8000)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1e-7)


# ---------------------------------------------------------------- writing


def test_write_wav_float32_round_trip(tmp_path):
    x = sine(200, 0.5, 3000, 0.8)
    path = write_wav(tmp_path / "sub" / "out.wav", x, 3000)
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    pos = raw.index(b"fmt ")
    tag, channels, rate = struct.unpack("<HHI", raw[pos + 8:pos + 16])
    bits = struct.unpack("<H", raw[pos + 22:pos + 24])[0]
    assert (tag, channels, rate, bits) == (3, 1, 3000, 32)
    y, r = read_audio(path)
    assert r == 3000
    np.testing.assert_array_equal(y, x)


def test_write_wav_clips_and_zeroes_non_finite(tmp_path):
    path = write_wav(tmp_path / "c.wav", np.array([2.0, -3.0, np.nan, 0.25]), 8000)
    y, _ = read_audio(path)
    np.testing.assert_array_equal(y, np.array([1.0, -1.0, 0.0, 0.25], dtype=np.float32))


# ---------------------------------------------------------------- streaming (issue 14: memory does not grow with length)


@pytest.mark.parametrize("kind", ["int16-stereo", "float32", "uint8", "int24"])
def test_reading_and_resampling_piece_by_piece_equals_the_whole_file(tmp_path, kind):
    from kvae.data import AudioReader, ResampledReader

    rng = np.random.default_rng(0)
    x = rng.uniform(-0.9, 0.9, (30_011, 2))
    if kind == "int24":
        path = pcm24_wav(tmp_path / "a.wav", (x[:, 0] * 2**23).astype(np.int64), 22050)  # decoded whole
    else:
        data = {"int16-stereo": (x * 32767).astype(np.int16), "float32": x[:, 0].astype(np.float32),
                "uint8": (x[:, 0] * 127 + 128).astype(np.uint8)}[kind]
        path = wav_file(tmp_path / "a.wav", data, 22050)
    whole, rate = read_audio(path)
    reader = AudioReader(path)
    assert (reader.rate, reader.frames) == (rate, len(whole))
    assert (reader._samples is None) == (kind != "int24")  # read from the disk block by block
    np.testing.assert_array_equal(np.concatenate([reader.read(a, a + 997) for a in range(0, len(whole), 997)]), whole)
    resampled = ResampledReader(reader, 3000)
    expected = resample(whole, rate, 3000)
    assert resampled.frames == len(expected)
    pieces = [resampled.read(a, a + 61) for a in range(0, len(expected), 61)]
    np.testing.assert_allclose(np.concatenate(pieces), expected, atol=1e-7)


def test_streamed_wav_writer_writes_the_same_bytes_as_scipy(tmp_path):
    from scipy.io import wavfile

    from kvae.data import WavWriter

    x = sine(200, 0.5, 3000, 0.8)
    with WavWriter(tmp_path / "a.wav", 3000) as out:
        for start in range(0, len(x), 333):
            out.write(x[start:start + 333])
    wavfile.write(tmp_path / "b.wav", 3000, x)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    with pytest.raises(ZeroDivisionError):  # an error while writing: no file, no temporary left
        with WavWriter(tmp_path / "c.wav", 3000) as out:
            out.write(x)
            1 / 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]
