"""kvae.dsp.OverlapAdd: the one overlap-add, whatever the grouping of frames, and the three paths that use it."""

import numpy as np
import pytest

from kvae.dsp import NORM_FLOOR, OverlapAdd, crossfade_window


def direct(frames, hop, taper=True):
    """The textbook overlap-add: every frame tapered and summed, divided by the summed taper (floored)."""
    k, window = frames.shape[0], frames.shape[-1]
    weights = crossfade_window(window).astype(np.float32) if taper else np.ones(window, np.float32)
    out = np.zeros(frames.shape[1:-1] + ((k - 1) * hop + window,), np.float32)
    norm = np.zeros((k - 1) * hop + window, np.float32)
    for i, frame in enumerate(frames):
        out[..., i * hop:i * hop + window] += frame * weights
        norm[i * hop:i * hop + window] += weights
    return out / np.maximum(norm, NORM_FLOOR)


@pytest.mark.parametrize("window,hop", [(8, 4), (9, 4), (10, 3), (6, 6), (1, 1)])
def test_any_grouping_of_frames_gives_the_same_samples_to_the_bit(window, hop):
    frames = np.random.default_rng(0).normal(size=(7, 2, window)).astype(np.float32)
    expected = direct(frames, hop)
    for groups in ([7], [1] * 7, [3, 0, 4], [2, 5]):
        ola = OverlapAdd(window, hop, batch=(2,))
        parts, at = [], 0
        for size in groups:
            part = ola.push(frames[at:at + size])
            assert part.shape == (2, size * hop)
            parts.append(part)
            at += size
        parts.append(ola.finish())
        np.testing.assert_array_equal(np.concatenate(parts, axis=-1), expected)


def test_one_untapered_frame_comes_back_as_it_was_and_finish_starts_afresh():
    frame = np.linspace(-1, 1, 10, dtype=np.float32)
    ola = OverlapAdd(10, 5, taper=False)
    np.testing.assert_array_equal(np.concatenate([ola.push(frame[None]), ola.finish()]), frame)
    np.testing.assert_array_equal(np.concatenate([ola.push(frame[None]), ola.finish()]), frame)


def test_a_hop_outside_the_window_is_one_line():
    from kvae.errors import KvaeError

    with pytest.raises(KvaeError, match="hop 9 must lie within 1..8"):
        OverlapAdd(8, 9)


def test_the_crossfade_and_its_floor_are_written_once_in_the_package():
    """The offline, streamed and generated paths all overlap-add through kvae.dsp.OverlapAdd."""
    from pathlib import Path

    import kvae

    root = Path(kvae.__file__).parent
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                   if "crossfade_window(" in p.read_text() and p.name != "filters.py")
    assert users == ["dsp/overlap_add.py"]
    for name in ("inference/reconstruct.py", "inference/stream.py", "inference/latents.py"):
        assert "OverlapAdd(" in (root / name).read_text()


def test_old_import_paths_are_the_new_modules_with_a_deprecation_warning():
    import importlib
    import sys

    for old, new in (("kvae.stream", "kvae.inference.stream"), ("kvae.training.inference", "kvae.inference.reconstruct"),
                     ("kvae.training.latents", "kvae.inference.latents"),
                     ("kvae.training.generation", "kvae.inference.generation")):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} is deprecated since kvae 0.2; import {new}"):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)
