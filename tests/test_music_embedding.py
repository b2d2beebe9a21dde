"""The music network (musicnn's MTT_musicnn rebuilt in keras.ops from its wheel's checkpoint): shapes, its own
tags for a piano-like tone and for noise, its distances rank real music near itself and far from the failure
rows; a missing package is one line. Skipped where musicnn is not installed (`pip install --no-deps musicnn`)."""

import numpy as np
import pytest

from kvae.errors import KvaeError
from kvae.evaluation import music_embedding as me

RATE = 3000
INSTALLED, WHY = me.available()
needs_network = pytest.mark.skipif(not INSTALLED, reason=f"musicnn not installed ({WHY})")


def _piano(seconds=1.0, f0=220.0):
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(0.3 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 6) if k * f0 < RATE / 2)
    return tone * np.exp(-2.0 * (t % 0.5))


def test_slaney_filterbank_and_log_mel_shapes():
    bank = me.slaney_mel_filterbank()
    assert bank.shape == (96, 257) and np.all(bank >= 0)
    centres = np.argmax(bank, axis=1)
    assert np.all(np.diff(centres) >= 0) and centres[-1] > 240  # rising, up to 8 kHz
    # (checked against librosa.filters.mel(sr=16000, n_fft=512, n_mels=96): equal to 1e-9; log_mel against
    # librosa's melspectrogram with reflect padding, as musicnn's librosa padded: equal)
    sine = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(RATE) / RATE)
    mel = me.log_mel(np.stack([sine, np.zeros(RATE)]), RATE)
    assert mel.shape == (2, 63, 96) and mel.dtype == np.float32  # 1 s at 16 kHz, hop 256, centred
    assert np.all(mel[1] == 0) and mel[0].max() > 3.0
    assert mel[0, 5:-5, 50:].max() < 0.1 * mel[0].max()  # bands above 1.5 kHz: next to nothing at 3000 Hz
    loud = me.log_mel((3000.0 * sine)[None], RATE)  # a diverged generator's clip: saturates, stays finite
    assert np.isfinite(loud).all() and loud.max() == np.float32(np.log10(10000.0 * 65504.0 + 1.0))


@needs_network
def test_the_network_tags_a_piano_like_tone_and_noise_differently():
    weights = me.checkpoint_weights()
    assert weights["conv2d/kernel"].shape == (7, 38, 1, 204) and weights["dense_1/kernel"].shape == (200, 50)
    clips = np.stack([_piano(3.0), 0.1 * np.random.default_rng(0).standard_normal(3 * RATE)])
    tags = me.tags(clips, RATE)
    assert tags.shape == (2, 50) and np.all((tags >= 0) & (tags <= 1))
    piano, noise = (dict(zip(me.TAGS, row)) for row in tags)
    # checked against the checkpoint's own TF1 graph (docs/guides/evaluation.md): slow, ambient, piano for
    # the tone; ambient, weird for noise
    assert piano["slow"] > 0.2 and piano["piano"] > noise["piano"] and piano["classical"] > noise["classical"]
    assert noise["weird"] > piano["weird"]
    emb = me.embeddings(clips[:, :RATE], RATE)
    assert emb.shape == (2, me.EMBEDDING_SIZE) and np.all(np.isfinite(emb))
    long = me.embeddings(np.tile(clips, 3), RATE)  # 9 s: three 3-s patches, averaged
    assert long.shape == (2, me.EMBEDDING_SIZE)


@needs_network
def test_real_music_scores_near_itself_and_far_from_noise_and_silence(embedded):
    from kvae.data import prepare
    from kvae.evaluation.evaluate import reference_sets
    from kvae.evaluation.two_sample import Standardizer, frechet_features

    reference, rows, _, _ = reference_sets(prepare(None, sample_rate=RATE), RATE, RATE, 32)
    ref = me.embeddings(reference, RATE)
    scale = Standardizer(ref)
    distance = {name: frechet_features(ref, me.embeddings(clips, RATE), scale) for name, clips in rows.items()}
    real = distance["ref: real vs real"]
    assert distance["ref: white noise"] > 3 * real and distance["ref: silence"] > 3 * real, distance


def test_a_missing_package_is_one_line_saying_how_to_install(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(KvaeError, match=r"pip install --no-deps musicnn==0.1.0"):
        me.checkpoint_prefix()
    assert me.available()[0] is False
