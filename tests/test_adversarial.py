"""RAVE's adversarial stage (torch): the discriminators and losses, one step of each stage, resuming across
the switch, saving and loading (kvae 0.1's flat keys and saved files too), and the one-line refusal on the
backends that cannot train it."""

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

import audio
import kvae
from backends import other_backends, run_on_backend
from kvae.errors import KvaeError
from kvae.models import RaveVAE
from kvae.models.adversarial import (Discriminators, discriminator_hinge, feature_matching, generator_hinge,
                                     loss_weights)
from model_checks import StopAfter, assert_same_model

RATE = 3000
TINY = dict(sample_rate=RATE, window_seconds=0.25, capacity=4, ratios=[2, 2], n_bands=4, latent_dim=4,
            dilations=[1], seed=1, adversarial=dict(after=1, capacity=2, periods=[2, 3], fft_sizes=[64, 128]))
LOSSES = ("adv_gen", "adv_disc", "feature_matching")
OLD_FILE = Path(__file__).parent / "data" / "rave_adversarial_0.1.0.keras"  # saved by kvae 0.1.0 (flat keys)

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the adversarial stage is torch-only")


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _values(weights):
    return [_np(w).copy() for w in weights]


def _changed(before, weights):
    return [not np.array_equal(a, _np(w)) for a, w in zip(before, weights)]


def test_discriminators_shapes_and_losses():
    disc = Discriminators(window=750, sample_rate=RATE, capacity=2, periods=[2, 3, 5, 7, 11])
    assert disc.fft_sizes == [128, 64, 32]  # DAC's 2048, 1024, 512 at 44.1 kHz, scaled to 3000 Hz
    x = audio.tones(2, 750, 0, RATE)
    outputs = disc(x)
    assert len(outputs) == 3 + 5
    for logits, features in outputs:
        assert logits.shape[0] == 2 and logits.shape[-1] == 1 and len(features) == 5
    # hinge: a discriminator scoring real at +1 and fake at -1 pays nothing; the generator pays 2 there
    ones = keras.ops.ones((2, 4, 1))
    real, fake = [(ones, [ones])], [(-ones, [ones * 3.0])]
    assert float(discriminator_hinge(real, fake)) == pytest.approx(0.0)
    assert float(generator_hinge(fake)) == pytest.approx(2.0)
    assert float(feature_matching(real, fake)) == pytest.approx(2.0, rel=1e-6)  # |1 - 3| / |1|
    assert float(feature_matching(real, real)) == 0.0
    assert loss_weights({"feature_matching": 5}) == {"adv_gen": 1.0, "adv_disc": 1.0, "feature_matching": 5.0}
    for bad, word in (({"adv": 1.0}, "unknown loss adv"), ({"adv_gen": -1.0}, "adv_gen")):
        with pytest.raises(KvaeError, match=word):
            loss_weights(bad)
    for table, word in (({"after": -1}, "model.adversarial.after"), ({"after": "x"}, "model.adversarial.after"),
                        ({"afer": 1}, "model.adversarial.afer: unknown setting"),
                        ({"periods": [2, 0]}, "model.adversarial.periods"), (3, "expected a table")):
        with pytest.raises(KvaeError, match=word):
            RaveVAE(**{**TINY, "adversarial": table})


def test_one_step_of_each_stage():
    model = RaveVAE(**TINY)
    assert model.get_config()["adversarial"] == {"after": 1, "weights": {}, "capacity": 2, "periods": [2, 3],
                                                 "fft_sizes": [64, 128], "learning_rate": 1e-4,
                                                 "freeze_encoder": True, "batch": 0}
    assert RaveVAE.from_config(model.get_config()).get_config() == model.get_config()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = audio.tones(4, 750, 0, RATE)
    encoder, decoder = model.encoder.trainable_weights, model.decoder.trainable_weights
    disc = model.discriminator.trainable_weights
    enc0, dec0, disc0 = _values(encoder), _values(decoder), _values(disc)

    # step 0: the VAE alone; the discriminators are untouched
    logs = model.fit(x, batch_size=4, epochs=1, verbose=0, validation_data=(x,)).history
    assert any(_changed(enc0, encoder)) and any(_changed(dec0, decoder)) and not any(_changed(disc0, disc))
    assert [logs[k][-1] for k in LOSSES] == [0.0, 0.0, 0.0]
    assert int(_np(model.disc_optimizer.iterations)) == 0

    # step 1: adversarial; the encoder is frozen, decoder and discriminators learn, every term is logged
    enc1, dec1 = _values(encoder), _values(decoder)
    logs = model.fit(x, batch_size=4, epochs=1, verbose=0, validation_data=(x,)).history
    assert not any(_changed(enc1, encoder))
    assert any(_changed(dec1, decoder)) and any(_changed(disc0, disc))
    for key in LOSSES:
        assert np.isfinite(logs[key][-1]) and logs[key][-1] > 0, key
        assert f"val_{key}" not in logs  # validation is the VAE's loss
    assert logs["loss"][-1] > logs["reconstruction"][-1]  # the adversarial terms are in the generator's loss
    assert int(_np(model.optimizer.iterations)) == 2 and int(_np(model.disc_optimizer.iterations)) == 1


def test_from_step_0_with_the_encoder_learning_and_a_sub_batch_for_the_discriminators(monkeypatch):
    # EnCodec's and DAC's way: discriminators from the first step, the whole VAE learning against them
    model = RaveVAE(**{**TINY, "adversarial": {**TINY["adversarial"], "after": 0, "freeze_encoder": False, "batch": 2}})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    seen = []
    call = type(model.discriminator).call
    monkeypatch.setattr(type(model.discriminator), "call", lambda self, x: seen.append(x.shape[0]) or call(self, x))
    encoder, disc = model.encoder.trainable_weights, model.discriminator.trainable_weights
    enc0, disc0 = _values(encoder), _values(disc)
    logs = model.fit(audio.tones(4, 750, 0, RATE), batch_size=4, epochs=1, verbose=0).history
    assert any(_changed(enc0, encoder)) and any(_changed(disc0, disc))
    assert logs["adv_gen"][-1] > 0 and logs["adv_disc"][-1] > 0
    assert seen and set(seen) == {2}  # the first 2 windows of the batch of 4, real and generated
    assert stage_note_for({"after": 0, "freeze_encoder": False}) is None  # nothing is frozen, no note
    for table, word in (({"freeze_encoder": 1}, "freeze_encoder: must be true or false"),
                        ({"batch": -1}, "model.adversarial.batch"), ({"batch": 2.5}, "model.adversarial.batch")):
        with pytest.raises(KvaeError, match=word):
            RaveVAE(**{**TINY, "adversarial": table})


def stage_note_for(table):
    from kvae.config import load_config
    from kvae.training.trainer import stage_note

    return stage_note(load_config("rave-3k", {"model": {"adversarial": table}}))


def test_resume_across_the_switch_then_save_load_and_sample(embedded, tmp_path):
    model_cfg = {k: v for k, v in TINY.items() if k not in ("sample_rate", "window_seconds", "seed")}
    config = {"name": "adv", "data": {"sample_rate": RATE, "window_seconds": 0.25, "batch_size": 2,
                                      "val_windows_per_recording": 1},
              "model": {"type": "rave", **model_cfg},
              "train": {"epochs": 3, "steps_per_epoch": 1, "n_samples": 1, "verbose": 0}}
    run = tmp_path / "run"
    # epoch 0: the VAE; epoch 1: the first adversarial step, then an interruption
    with pytest.raises(KeyboardInterrupt):
        kvae.fit(config, run=run, callbacks=[StopAfter(1)], verbose=False)
    model, history = kvae.fit(run=run, verbose=False)  # resumes at epoch 2, still adversarial
    assert len(history["loss"]) == 1
    # both optimizers' states came back: one more step each on top of the restored counts
    assert int(_np(model.optimizer.iterations)) == 3
    assert int(_np(model.disc_optimizer.iterations)) == 2
    with open(run / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [float(rows[i]["adv_disc"]) > 0 for i in range(3)] == [False, True, True]
    assert (run / "loss_curves.png").is_file()

    loaded = kvae.load(run)
    x = audio.tones(2, loaded.window, 3, RATE)
    assert_same_model(loaded, model, x)  # every weight (the discriminators' too), samples, reconstructions
    for a, b in zip(model.disc_optimizer.variables, loaded.disc_optimizer.variables):
        np.testing.assert_array_equal(_np(b), _np(a), err_msg=a.path)
    assert int(_np(loaded.optimizer.iterations)) == 3
    clips = loaded.sample(2, seed=0)
    assert clips.shape == (2, loaded.window) and np.isfinite(clips).all()


@pytest.mark.parametrize("backend", other_backends())
def test_other_backends_refuse_to_train_it_in_one_line(backend, tmp_path):
    model = RaveVAE(**TINY)
    model.save(tmp_path / "adv.keras")
    result = run_on_backend(backend, "model_checks:adversarial_fit_refusal", tmp_path / "adv.keras", TINY)
    assert result["sample_shape"] == [2, model.window]  # it loads and samples there
    assert len(result["errors"]) == 4
    for message in result["errors"]:
        assert message is not None and "\n" not in message
        assert "torch" in message and backend in message and "model.adversarial" in message


def test_a_switch_before_the_kl_warmup_ends_gets_a_note():
    from kvae.config import load_config
    from kvae.training.trainer import stage_note

    early = load_config("rave-3k", {"model": {"adversarial": {"after": 500}}})
    assert "freezes the encoder before the KL warm-up ends (step 1000)" in stage_note(early)
    assert stage_note(load_config("rave-3k-adv")) is None  # the preset switches when the warm-up ends
    assert stage_note(load_config("rave-3k")) is None  # no adversarial stage
    constant = load_config("rave-3k", {"model": {"adversarial": {"after": 10}}, "train": {"kl_schedule": "constant"}})
    assert stage_note(constant) is None


def test_the_config_table_is_checked_by_the_stage_and_set_from_the_command_line():
    from kvae.config import load_config, parse_set

    cfg = load_config("rave-3k-adv", parse_set(["model.adversarial.capacity=2"]))
    assert cfg["model"]["adversarial"] == {"after": 1000, "capacity": 2}  # the preset's table, one key changed
    for table, word in (({"after": -1}, "model.adversarial.after"), ({"capacity": "wide"}, "model.adversarial.capacity"),
                        ({"weights": {"adv": 1.0}}, "unknown loss adv"), ({"lr": 1.0}, "model.adversarial.lr")):
        with pytest.raises(KvaeError, match=word):
            load_config("rave-3k", {"model": {"adversarial": table}})


def test_kvae_0_1_flat_config_keys_are_read_into_the_table_with_one_line():
    from kvae.config import load_config

    with pytest.warns(FutureWarning) as caught:
        cfg = load_config("rave-3k", {"model": {"adversarial_after": 500, "disc_capacity": 2,
                                                "adversarial_weights": {"feature_matching": 5.0}}})
    message = str(caught[0].message)
    assert "\n" not in message and "model.adversarial_after" in message and "model.adversarial table" in message
    assert cfg["model"]["adversarial"] == {"after": 500, "capacity": 2, "weights": {"feature_matching": 5.0}}
    assert not {"adversarial_after", "disc_capacity", "adversarial_weights"} & set(cfg["model"])
    with pytest.warns(FutureWarning):  # adversarial_after unset: the stage was off, whatever the rest said
        off = load_config("rave-3k", {"model": {"adversarial_after": None, "disc_capacity": 2}})
    assert off["model"].get("adversarial") is None and "disc_capacity" not in off["model"]


def _old_config(model):
    """`model`'s config as kvae 0.1's `get_config` wrote it: the six flat adversarial keys, no table."""
    config = model.get_config()
    table = config.pop("adversarial") or {}
    config.update({"adversarial_after": table.get("after"), "adversarial_weights": table.get("weights") or None,
                   "disc_capacity": table.get("capacity", 8), "disc_periods": table.get("periods", [2, 3, 5, 7, 11]),
                   "disc_fft_sizes": table.get("fft_sizes"), "disc_learning_rate": table.get("learning_rate", 1e-4)})
    return config


def test_a_config_saved_by_kvae_0_1_deserializes():
    model = RaveVAE(**{**TINY, "adversarial": {**TINY["adversarial"], "weights": {"adv_gen": 2.0}}})
    old = {"module": "kvae.models.rave_vae", "class_name": "RaveVAE", "registered_name": "kvae>RaveVAE",
           "config": json.loads(json.dumps(_old_config(model)))}
    assert old["config"]["adversarial_after"] == 1 and "adversarial" not in old["config"]
    rebuilt = keras.saving.deserialize_keras_object(old)
    assert type(rebuilt) is RaveVAE and rebuilt.get_config() == model.get_config()
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]
    plain = RaveVAE(**{k: v for k, v in TINY.items() if k != "adversarial"})
    rebuilt = keras.saving.deserialize_keras_object({**old, "config": json.loads(json.dumps(_old_config(plain)))})
    assert rebuilt.adversarial is None and not hasattr(rebuilt, "discriminator")
    assert rebuilt.get_config() == plain.get_config()


def test_a_keras_file_saved_by_kvae_0_1_loads_with_its_weights_and_trains_on(tmp_path):
    with __import__("zipfile").ZipFile(OLD_FILE) as archive:
        saved = json.loads(archive.read("config.json"))["config"]
    assert saved["adversarial_after"] == 1 and "adversarial" not in saved  # the old layout, as written then
    expected = np.load(OLD_FILE.with_suffix(".npz"))
    with pytest.warns(FutureWarning, match="reconstruction_weight, stft_weight: renamed loss_weights"):
        model = kvae.load(OLD_FILE)  # 0.1's weight keys, read into the table with one line
    assert model.get_config()["adversarial"] == {"after": 1, "weights": {"feature_matching": 5.0}, "capacity": 1,
                                                 "periods": [2], "fft_sizes": [64], "learning_rate": 2e-4,
                                                 "freeze_encoder": True, "batch": 0}  # today's defaults
    np.testing.assert_allclose(model.decode_audio(expected["z"]), expected["decoded"], rtol=1e-5, atol=1e-6)
    outputs = model.discriminator(keras.ops.convert_to_tensor(expected["x"]))
    for i, (logits, _) in enumerate(outputs):
        np.testing.assert_allclose(_np(logits), expected[f"disc_{i}"], rtol=1e-5, atol=1e-6)
    assert int(_np(model.optimizer.iterations)) == 2 and int(_np(model.disc_optimizer.iterations)) == 1
    logs = model.fit(expected["x"], batch_size=2, epochs=1, verbose=0).history  # still in its adversarial stage
    assert logs["adv_disc"][-1] > 0 and int(_np(model.disc_optimizer.iterations)) == 2
