"""kvae.dsp: windows, the mel filterbank, FFT sizes, and the STFT in numpy and keras.ops agreeing."""

import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kvae import dsp
from kvae.dsp import ops as dsp_ops
from kvae.errors import KvaeError

torch = pytest.importorskip("torch")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _signals(n=2, samples=1000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 3000.0
    return (0.4 * np.sin(2 * np.pi * 220 * t) + 0.1 * rng.standard_normal((n, samples))).astype("float32")


def test_scaled_fft_sizes():
    assert dsp.scaled_fft_sizes(44100) == [2048, 1024, 512, 256, 128, 64]
    assert dsp.scaled_fft_sizes(16000) == [1024, 512, 256, 128, 64, 32]
    assert dsp.scaled_fft_sizes(8000, min_size=32) == [512, 256, 128, 64, 32]
    assert dsp.scaled_fft_sizes(4000, min_size=64) == [256, 128, 64]
    assert dsp.scaled_fft_sizes(100, min_size=16) == [16]
    assert dsp.scaled_fft_sizes(44100, reference_sizes=(2048, 2000, 64)) == [2048, 64]
    assert dsp.scaled_fft_sizes(88200) == [4096, 2048, 1024, 512, 256, 128]
    with pytest.raises(KvaeError, match="sample_rate"):
        dsp.scaled_fft_sizes(0)


def test_fft_size_helpers():
    assert dsp.fft_size_for_duration(3000, 0.085) == 256
    assert dsp.fft_size_for_duration(22050, 0.085) == 2048
    assert dsp.fft_size_for_duration(22050, 0.085, max_samples=700) == 512
    assert dsp.fitting_fft_size(5000) == 2048 and dsp.fitting_fft_size(750) == 512
    assert dsp.centred_frame_count(750, 256, 64) == 12 == dsp.stft(np.zeros(750), 256, 64).shape[1]


@pytest.mark.parametrize("length", [64, 63])
def test_periodic_windows_match_torch_for_odd_and_even_lengths(length):
    np.testing.assert_allclose(dsp.periodic_window("hann", length), torch.hann_window(length, dtype=torch.float64))
    np.testing.assert_allclose(dsp.periodic_window("hamming", length),
                               torch.hamming_window(length, dtype=torch.float64))
    with pytest.raises(KvaeError, match="window"):
        dsp.periodic_window("kaiser", length)


def test_mel_filterbank_shape_peaks_and_order():
    bank = dsp.mel_filterbank(16000, 1024, 40)
    assert bank.shape == (40, 513) and bank.max() <= 1.0 and bank.min() == 0.0
    peaks = bank.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > peaks[0]
    np.testing.assert_allclose(dsp.mel_to_hz(dsp.hz_to_mel([0.0, 440.0, 8000.0])), [0.0, 440.0, 8000.0])
    with pytest.raises(KvaeError, match="fmax"):
        dsp.mel_filterbank(16000, 1024, 40, fmax=9000)


@pytest.mark.parametrize("n_fft,hop,win_length,window", [(256, 64, None, "hann"), (128, 50, 100, "hamming")])
def test_numpy_twin_equals_keras_ops_and_torch_stft(n_fft, hop, win_length, window):
    x = _signals()
    real, imag = dsp_ops.stft(keras.ops.convert_to_tensor(x), n_fft, hop, win_length, window)
    ours = dsp.stft(x, n_fft, hop, win_length, window)
    np.testing.assert_allclose(_np(real), ours.real, atol=2e-4)
    np.testing.assert_allclose(_np(imag), ours.imag, atol=2e-4)
    win = torch.tensor(dsp.periodic_window(window, win_length or n_fft))
    ref = torch.stft(torch.tensor(x, dtype=torch.float64), n_fft, hop, win_length or n_fft, window=win,
                     center=True, pad_mode="reflect", return_complex=True).transpose(1, 2).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    np.testing.assert_allclose(dsp.power_spectrogram(x, n_fft, hop), np.abs(dsp.stft(x, n_fft, hop)) ** 2)


def test_too_short_input_is_a_one_line_error():
    with pytest.raises(KvaeError, match="too short for n_fft 256"):
        dsp.stft(np.zeros((1, 100)), 256)


@pytest.mark.parametrize("n_fft,hop", [(256, 64), (128, 48)])
def test_istft_inverts_stft(n_fft, hop):
    length = dsp.centred_frame_count(1000, n_fft, hop) * hop - hop  # a length the frames cover whole
    x = keras.ops.convert_to_tensor(_signals(samples=length))
    real, imag = dsp_ops.stft(x, n_fft, hop)
    back = _np(dsp_ops.istft(real, imag, n_fft, hop, length))
    np.testing.assert_allclose(back, _np(x), atol=1e-5)


def test_griffin_lim_recovers_a_magnitude_and_is_deterministic():
    n_fft, hop, length = 256, 64, 1024
    t = np.arange(length) / 3000.0
    x = (0.5 * np.sin(2 * np.pi * 300 * t) + 0.2 * np.sin(2 * np.pi * 710 * t))[None].astype("float32")
    target = dsp_ops.magnitude(*dsp_ops.stft(keras.ops.convert_to_tensor(x), n_fft, hop))
    audio = _np(dsp_ops.griffin_lim(target, n_fft, hop, length, iterations=48))
    again = _np(dsp_ops.griffin_lim(target, n_fft, hop, length, iterations=48))
    np.testing.assert_array_equal(audio, again)
    got = np.abs(dsp.stft(audio, n_fft, hop))
    error = np.linalg.norm(got - _np(target)) / np.linalg.norm(_np(target))
    assert error < 0.15, error  # spectral convergence of the recovered audio
    with pytest.raises(ValueError, match="frames"):
        dsp_ops.griffin_lim(target, n_fft, hop, length + 500)


def test_importing_kvae_dsp_loads_numpy_only():
    code = "import sys, kvae.dsp; print('keras' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


def test_one_stft_in_the_package():
    """No second STFT, window or mel filterbank outside kvae/dsp (the issue's grep, as a test)."""
    root = Path(dsp.__file__).resolve().parents[1]
    pattern = re.compile(r"(?<!dsp_)ops\.i?stft\(|np\.fft\.i?rfft\(|np\.hanning\(|get_window\(|signal\.(spectrogram|stft)\("
                         r"|hann_window\(|def mel_filterbank\(|def _?periodic")
    offenders = [f"{path.relative_to(root)}: {match.group(0)}" for path in root.rglob("*.py")
                 if "dsp" not in path.parts for match in pattern.finditer(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_block_levels_db_cuts_blocks_and_keeps_or_merges_a_short_tail():
    from kvae.dsp.spectral import block_levels_db

    x = np.concatenate([np.full(10, 0.1), np.zeros(10), np.full(5, 1.0)])[None]  # -20 dBFS, silence, 0 dBFS tail
    levels, lengths = block_levels_db(x, 10)
    assert lengths.tolist() == [10, 10, 5]
    np.testing.assert_allclose(levels[0], [-20.0, -300.0, 0.0], atol=1e-9)  # the silent block at the floor
    levels, lengths = block_levels_db(x, 10, merge_tail=True)  # the tail joins the block before it
    assert lengths.tolist() == [10, 15]
    np.testing.assert_allclose(levels[0], [-20.0, 10 * np.log10(5 / 15)], atol=1e-9)
    levels, lengths = block_levels_db(x[0, :4], 10, merge_tail=True)  # shorter than a block: one block
    assert lengths.tolist() == [4] and levels.shape == (1,)
