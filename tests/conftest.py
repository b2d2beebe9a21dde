"""Test set-up: the backend (torch unless KERAS_BACKEND says otherwise), a private KVAE_HOME, shared fixtures."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kvae._env import configure  # noqa: E402

configure()  # before anything imports keras

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_METADATA = SHARED / "data" / "musicnet_metadata.csv"


@pytest.fixture(scope="session", autouse=True)
def kvae_home(tmp_path_factory):
    """Every test session gets its own KVAE_HOME, so caches never leak between runs."""
    home = os.environ.get("KVAE_TEST_HOME") or str(tmp_path_factory.mktemp("kvae-home"))
    os.environ["KVAE_HOME"] = home
    return Path(home)


@pytest.fixture(scope="session")
def embedded(kvae_home):
    """The embedded MusicNet-layout corpus (built once per session)."""
    from kvae.data.embedded import embedded_root

    return embedded_root()


@pytest.fixture(scope="session")
def real_metadata():
    """Path to the real MusicNet metadata CSV, or skip where shared/ is absent."""
    if not REAL_METADATA.is_file():
        pytest.skip(f"{REAL_METADATA} not found")
    return REAL_METADATA


@pytest.fixture(scope="session")
def tiny_conv1d_run(embedded, tmp_path_factory):
    """A tiny Conv1D run (3000 Hz, two steps) on the embedded corpus; tests copy it before changing it."""
    import kvae

    run = tmp_path_factory.mktemp("tiny-conv1d") / "conv1d"
    kvae.fit({"data": {"sample_rate": 3000, "window_seconds": 0.25, "windows_per_recording": 2, "batch_size": 8},
              "model": {"type": "conv1d", "channels": [8, 16], "latent_dim": 4},
              "train": {"epochs": 1, "steps_per_epoch": 2, "n_samples": 0, "verbose": 0}}, run=run, verbose=False)
    return run
