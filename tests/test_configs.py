"""Every config in configs/ trains for one tiny step, saves, reloads and samples: no config can rot."""

from pathlib import Path

import numpy as np
import pytest

import kvae
from kvae.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.toml"))
TINY_STEP = {"train": {"epochs": 1, "steps_per_epoch": 1, "n_samples": 1, "verbose": 0},
             "data": {"batch_size": 2, "val_windows_per_recording": 1}}


def test_every_variant_has_a_paper_and_an_improved_config():
    names = {p.stem for p in CONFIGS}
    for variant in ("fc", "conv1d", "transformer", "mel"):
        assert {variant, f"paper-{variant}"} <= names
    assert "quickstart" in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_trains_saves_reloads_and_samples(path, embedded, tmp_path):
    config = load_config(path, TINY_STEP)
    model, history = kvae.fit(config, run=tmp_path / "run", verbose=False)
    assert np.isfinite(history["loss"][-1])
    loaded = kvae.load(tmp_path / "run" / "model.keras")
    assert type(loaded) is type(model)
    assert loaded.sample_rate == config["data"]["sample_rate"]
    clips = loaded.sample(1, seed=0)
    assert clips.shape == (1, model.window) and np.isfinite(clips).all()
    np.testing.assert_allclose(clips, model.sample(1, seed=0), atol=1e-5)


def test_the_top_level_configs_are_the_built_in_presets():
    # configs/ (what the user's brief names) and kvae/presets/configs/ (what the wheel ships) must not drift
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    top = {p.name: p.read_text() for p in (root / "configs").glob("*.toml")}
    shipped = {p.name: p.read_text() for p in (root / "kvae" / "presets" / "configs").glob("*.toml")}
    assert top and top == shipped
