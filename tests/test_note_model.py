"""The pretrained note model (basic-pitch, ONNX): it hears synthesised notes, and its features rank real
music near itself and far from noise and drone. Skipped where `kvae[eval]` and the model are not installed."""

import numpy as np
import pytest

from kvae.errors import KvaeError
from kvae.evaluation import note_model

RATE = 3000
INSTALLED, WHY = note_model.available()
needs_model = pytest.mark.skipif(not INSTALLED, reason=f"note model not installed ({WHY})")


def _note(f0, start, seconds, total=1.0, rate=RATE):
    """A decaying harmonic tone (partials 1-4 below Nyquist) from `start` for `seconds`, in a `total`-s clip."""
    t = np.arange(int(total * rate)) / rate
    on = (t >= start) & (t < start + seconds)
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5) if k * f0 < rate / 2)
    return 0.3 * tone * np.exp(-2.0 * (t - start)) * on


@needs_model
def test_it_hears_synthesised_notes_where_they_are():
    a4, c5 = 440.0, 523.25  # MIDI 69 and 72
    clip = _note(a4, 0.0, 0.45) + _note(c5, 0.5, 0.45)
    post = note_model.posteriors(np.stack([clip, np.zeros_like(clip)]), RATE)
    note, onset = post[0]["note"], post[0]["onset"]
    assert note.shape == (86, 88) and post[0]["contour"].shape == (86, 264)
    fps = note_model.FRAMES_PER_SECOND
    key = {69: 69 - note_model.LOWEST_MIDI, 72: 72 - note_model.LOWEST_MIDI}
    first, second = slice(int(0.1 * fps), int(0.35 * fps)), slice(int(0.6 * fps), int(0.85 * fps))
    assert note[first, key[69]].mean() > 0.5 and note[second, key[72]].mean() > 0.5
    assert note[first, key[72]].mean() < 0.3 and note[second, key[69]].mean() < 0.3
    assert onset[:int(0.1 * fps), key[69]].max() > 0.5 and onset[int(0.45 * fps):int(0.6 * fps), key[72]].max() > 0.5
    assert (post[1]["note"] < 0.5).all()  # silence: no notes
    features = dict(zip(note_model.NOTE_FEATURES, note_model.pooled(post[0])))
    assert 0.8 <= features["polyphony"] <= 1.3 and features["onset_rate"] == pytest.approx(2.0, abs=1.01)
    assert 69 <= features["pitch_mean"] <= 72


@needs_model
def test_real_music_scores_near_itself_and_far_from_noise_and_drone(embedded):
    from kvae.data import prepare
    from kvae.evaluation.evaluate import reference_sets
    from kvae.evaluation.two_sample import Standardizer, frechet_features

    reference, rows, _, _ = reference_sets(prepare(None, sample_rate=RATE), RATE, RATE, 64)
    ref = note_model.note_features(reference, RATE)
    scale = Standardizer(ref)
    distance = {name: frechet_features(ref, note_model.note_features(clips, RATE), scale)
                for name, clips in rows.items()}
    real = max(distance["ref: real vs real"], distance["ref: held-out recordings"])
    assert distance["ref: drone"] > 3 * real, distance
    assert distance["ref: white noise"] > 10 * real and distance["ref: silence"] > 10 * real, distance


def test_a_missing_model_is_one_line_saying_how_to_install(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(KvaeError, match=r'pip install "kvae\[eval\]" && pip install --no-deps basic-pitch'):
        note_model.model_file()
    assert note_model.available()[0] is False
