"""TensorBoard: `kvae fit --tensorboard` and `kvae prior fit --tensorboard` write event files that TensorBoard's own
reader finds scalars, audio and images in; `kvae fit` ends by naming the gallery page and the next commands."""

import json

import numpy as np
import pytest

from kvae import cli
from kvae.training.tensorboard import spectrogram_image

CONFIG = {"data": {"sample_rate": 3000, "window_seconds": 0.25, "windows_per_recording": 2, "batch_size": 8},
          "model": {"type": "conv1d", "channels": [8, 16], "latent_dim": 4},
          "train": {"epochs": 2, "steps_per_epoch": 2, "n_samples": 0, "verbose": 0, "tensorboard_every": 1}}
PRIOR = {"prior": {"context_seconds": 0.2, "width": 8, "components": 2}, "gmm": {"components": 2},
         "train": {"epochs": 2, "steps_per_epoch": 1, "batch_size": 4, "max_seconds": 24.0, "verbose": 0,
                   "tensorboard_every": 2}}


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"audio": 0, "images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_spectrogram_image_is_rgb_low_frequencies_at_the_bottom():
    t = np.arange(3000) / 3000.0
    image = spectrogram_image(0.5 * np.sin(2 * np.pi * 100.0 * t), 3000, scale=1)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    rows = image.astype(float).sum(axis=(1, 2))
    assert np.argmax(rows) > 0.9 * len(rows)  # a 100 Hz tone: the brightest row is near the bottom


def test_fit_and_prior_fit_write_scalars_audio_and_images(embedded, tmp_path, capsys):
    config, prior = tmp_path / "tiny.json", tmp_path / "prior.json"
    config.write_text(json.dumps(CONFIG))
    prior.write_text(json.dumps(PRIOR))
    run = tmp_path / "run"
    assert cli.main(["fit", "--config", str(config), "--run", str(run), "--tensorboard"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("listen:") and str(run / "gallery" / "index.html") in line for line in printed[-4:])
    assert any(line.startswith("next:") and "kvae evaluate" in line and "kvae prior fit" in line
               and "kvae generate" in line for line in printed[-4:])
    assert any(f"tensorboard --logdir {run / 'tensorboard'}" in line for line in printed[-4:])
    assert json.loads((run / "config.json").read_text())["train"]["tensorboard"] is True

    train, validation = _events(run / "tensorboard" / "train"), _events(run / "tensorboard" / "validation")
    scalars = train.Tags()["scalars"]
    assert {"epoch_loss", "epoch_reconstruction", "epoch_kl", "epoch_rate_bps"} <= set(scalars), scalars
    assert [e.step for e in train.Scalars("epoch_loss")] == [1, 2]
    assert "epoch_loss" in validation.Tags()["scalars"]
    audio, images = set(train.Tags()["audio"]), set(train.Tags()["images"])
    for name in ("input", "reconstruction", "sample"):
        assert {f"{name}/{i}" for i in range(3)} <= audio, audio
        assert {f"{name}_spectrogram/{i}" for i in range(3)} <= images, images
    assert [e.step for e in train.Audio("reconstruction/0")] == [1, 2]  # every epoch (tensorboard_every = 1)
    clip = train.Audio("sample/0")[-1]
    assert clip.content_type == "audio/wav" and clip.sample_rate == 3000 and clip.encoded_audio_string[:4] == b"RIFF"

    assert cli.main(["prior", "fit", str(run), "--config", str(prior), "--tensorboard"]) == 0
    prior_events = _events(run / "prior" / "tensorboard" / "train")
    assert "epoch_loss" in prior_events.Tags()["scalars"]
    assert {"piece/0", "piece/1"} <= set(prior_events.Tags()["audio"])
    assert "piece_spectrogram/0" in prior_events.Tags()["images"]
    assert [e.step for e in prior_events.Audio("piece/0")] == [2]


def test_tensorboard_every_is_bounded():
    from kvae.config import load_config
    from kvae.errors import KvaeError

    assert load_config(None)["train"]["tensorboard"] is False and load_config(None)["train"]["tensorboard_every"] == 5
    with pytest.raises(KvaeError, match="train.tensorboard_every"):
        load_config(None, {"train": {"tensorboard_every": 0}})
