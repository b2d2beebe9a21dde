"""The latent prior's flow-matching head (`prior.head = "flow"`): the model (loss, numpy sampler, save and load,
causal, cached step), its settings, `kvae prior fit` with it (resume), `kvae generate` streaming a WAV, export."""

import json

import keras
import numpy as np
import pytest

import kvae
from backends import other_backends, rerun_tests
from kvae import cli
from kvae.errors import KvaeError
from model_checks import check_prior_fit_resumes_and_generates

RATE = 3000
FLOW = {"head": "flow", "flow_width": 16, "flow_blocks": 2, "flow_steps": 4, "flow_samples": 2}


def flow_prior(kind, **kwargs):
    from kvae.models import LatentPrior

    return LatentPrior(4, kind=kind, context_frames=12, width=16, **{**FLOW, **kwargs})


@pytest.mark.parametrize("kind", ["conv", "transformer"])
def test_flow_prior_trains_saves_loads_and_samples_the_same_frames(kind, tmp_path):
    from kvae.models import LatentPrior

    prior = flow_prior(kind)
    frames = np.random.default_rng(0).normal(size=(8, 12, 4)).astype("float32")
    x = LatentPrior.shift_inputs(frames)
    assert tuple(prior(x).shape) == (8, 12, 16)  # the trunk's features, which condition the head
    prior.compile(optimizer="adam")
    history = prior.fit(x, frames, batch_size=4, epochs=1, verbose=0, validation_data=(x, frames)).history
    # the velocity starts near 0: the error is E|x_1 - x_0|^2 = 2 per dimension for unit Gaussian frames
    assert 1.0 < history["loss"][-1] < 3.0 and 1.0 < history["val_loss"][-1] < 3.0
    # validation noise is fixed: the same weights give the same validation loss
    assert prior.evaluate(x, frames, verbose=0) == prior.evaluate(x, frames, verbose=0)
    prior.save(tmp_path / "prior.keras")
    loaded = keras.models.load_model(tmp_path / "prior.keras")
    assert loaded.get_config() == prior.get_config() and loaded.get_config()["head"] == "flow"
    rngs = lambda seed: [np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])]  # noqa: E731
    a = prior.sample_next(x[:2], rngs(1))
    assert a.shape == (2, 4) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, loaded.sample_next(x[:2], rngs(1)))
    assert not np.allclose(a, prior.sample_next(x[:2], rngs(2)))
    # causal: the features before t = 6 do not see frames from t = 6 on
    later = x.copy()
    later[:, 6:] += 3.0
    before, after = (keras.ops.convert_to_numpy(prior(v)) for v in (x, later))
    np.testing.assert_allclose(before[:, :6], after[:, :6], atol=1e-6)


@pytest.mark.parametrize("kind", ["conv", "transformer"])
def test_the_numpy_sampler_and_the_cached_step_compute_what_keras_computes(kind):
    from kvae.models.flow_head import FlowSampler

    prior = flow_prior(kind, flow_steps=5)
    rng = np.random.default_rng(0)
    for w in prior.trainable_weights:  # away from the zero-initialised gates and output
        w.assign((0.3 * rng.normal(size=w.shape)).astype("float32"))
    frames = rng.normal(size=(3, 30, 4)).astype("float32")  # longer than the context
    stepper = prior.stepper(3)
    for t in range(30):
        got = stepper.push(frames[:, t])
    cond = prior.next_distribution(frames)
    np.testing.assert_allclose(got, cond, rtol=1e-4, atol=1e-5)
    sampler = FlowSampler(prior.flow, 5)
    x = rng.normal(size=(3, 4)).astype("float32")
    for step in (0, 3):
        s = np.full((3, 1), step / 5, np.float32)
        want = keras.ops.convert_to_numpy(prior.flow.velocity(*(keras.ops.convert_to_tensor(v) for v in (x, s, cond))))
        have = sampler.velocity(x, step, cond @ sampler.condition[0] + sampler.condition[1])
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the ODE, by hand: five Euler steps from the seeded noise
    noise = np.stack([np.random.default_rng([7, i]).standard_normal(4) for i in range(3)]).astype("float32")
    z = 0.5 * noise
    for step in range(5):
        s = np.full((3, 1), step / 5, np.float32)
        z = z + keras.ops.convert_to_numpy(prior.flow.velocity(*(keras.ops.convert_to_tensor(v)
                                                                  for v in (z, s, cond)))) / 5
    drawn = prior.sampler()(cond, [np.random.default_rng([7, i]) for i in range(3)], temperature=0.5)
    np.testing.assert_allclose(drawn, z, rtol=1e-4, atol=1e-4 * np.abs(z).max())


def test_the_flow_head_learns_two_modes_a_gaussian_would_average():
    """Frames that are +2 or -2 at random (nothing in the context tells which): the head draws both modes."""
    from kvae.models import LatentPrior

    keras.utils.set_random_seed(0)
    prior = LatentPrior(1, kind="conv", context_frames=2, width=8, head="flow", flow_width=32, flow_blocks=2,
                        flow_steps=16, flow_samples=8)
    rng = np.random.default_rng(0)
    frames = (np.where(rng.random((60 * 64, 4, 1)) < 0.5, -2.0, 2.0) + 0.1 * rng.normal(size=(60 * 64, 4, 1)))
    frames = frames.astype("float32")
    prior.compile(optimizer=keras.optimizers.Adam(1e-2))
    prior.fit(LatentPrior.shift_inputs(frames), frames, batch_size=64, epochs=1, verbose=0)  # 60 steps
    cond = np.repeat(prior.next_distribution(np.zeros((1, 1, 1), np.float32)), 400, axis=0)
    draws = prior.sampler()(cond, [np.random.default_rng([0, i]) for i in range(400)])[:, 0]
    assert 0.3 < np.mean(draws > 0) < 0.7  # both modes, about half each
    assert np.mean(np.abs(np.abs(draws) - 2.0) < 0.7) > 0.7  # near +-2, not at the average 0


def test_bad_flow_settings_are_one_line_errors():
    from kvae.models import LatentPrior
    from kvae.training import load_prior_config

    for kwargs, word in ((dict(head="diffusion"), "prior.head: must be one of mog, flow"),
                         (dict(head="flow", flow_steps=0), "prior.flow_steps"),
                         (dict(head="flow", flow_width=0), "prior.flow_width")):
        with pytest.raises(KvaeError, match=word) as info:
            LatentPrior(4, **kwargs)
        assert "\n" not in str(info.value)
    for config, word in (({"prior": {"head": "gan"}}, "prior.head: must be one of mog, flow"),
                         ({"prior": {"flow_steps": 0}}, "prior.flow_steps: must be from 1"),
                         ({"prior": {"flow_samples": 2.5}}, "prior.flow_samples: expected an integer"),
                         ({"prior": {"flow_blocks": "3"}}, "prior.flow_blocks")):
        with pytest.raises(KvaeError, match=word) as info:
            load_prior_config(config)
        assert "\n" not in str(info.value)
    assert load_prior_config({})["prior"]["head"] == "mog"  # the default keeps the mixture


# ---------------------------------------------------------------- kvae prior fit, kvae generate, kvae export


def test_an_interrupted_flow_prior_fit_resumes_and_generate_streams_it(tiny_conv1d_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_conv1d_run, run)
    config = {"prior": {"context_seconds": 0.2, "width": 8, **FLOW}, "gmm": {"components": 2},
              "train": {"epochs": 2, "steps_per_epoch": 1, "batch_size": 4, "max_seconds": 24.0, "verbose": 0}}
    folder = check_prior_fit_resumes_and_generates(run, config, capsys, "flow-matching head", "flow head of 4 steps",
                                                   RATE)
    assert kvae.load(folder / "prior.keras", compile=False).head_kind == "flow"

    # kvae export writes the encoder and decoder, and says in one line why the flow prior is not in ONNX
    pytest.importorskip("onnx")
    assert cli.main(["export", str(run), "--out", str(tmp_path / "onnx")]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "flow-head prior" in notes[0]
    assert not (tmp_path / "onnx" / "prior_step.onnx").exists()
    assert json.loads((folder / "config.json").read_text())["prior"]["head"] == "flow"


@pytest.mark.parametrize("backend", other_backends())
def test_flow_prior_tests_pass_on_other_backend(backend):
    tests = [f"tests/test_flow_prior.py::{name}" for name in (
        "test_flow_prior_trains_saves_loads_and_samples_the_same_frames",
        "test_the_numpy_sampler_and_the_cached_step_compute_what_keras_computes")]
    result = rerun_tests(backend, *tests)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout
