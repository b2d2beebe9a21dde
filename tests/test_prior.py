"""Latent priors: the ex-post Gaussian mixture stored with a VAE, the autoregressive `LatentPrior`
(one training step, save and load), and `kvae prior fit` (run folder, resume, CLI)."""

import keras
import numpy as np
import pytest

from backends import other_backends, rerun_tests
from kvae.errors import KvaeError
from kvae.models import FCVAE, Conv1DVAE
from kvae.models.gmm import LatentGMM

RATE = 3000


def two_clusters(n=200, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4)) * [1.0, 0.3, 0.5, 1.0]
    z[: n // 2, 1] += 3.0
    return z


def test_gmm_fits_samples_and_matches_sklearn_density():
    from sklearn.mixture import GaussianMixture

    z = two_clusters()
    gmm = LatentGMM.fit(z, components=2, seed=0)
    assert gmm.components == 2 and gmm.covariance_type == "full"
    draws = gmm.sample(4000, np.random.default_rng(1))
    assert draws.dtype == np.float32 and draws.shape == (4000, 4)
    # bimodal in dimension 1, as the data: both modes are drawn, about half each
    assert 0.4 < np.mean(draws[:, 1] > 1.5) < 0.6
    np.testing.assert_array_equal(gmm.sample(5, 7), gmm.sample(5, 7))
    reference = GaussianMixture(2, covariance_type="full", reg_covar=1e-4, random_state=0).fit(z)
    np.testing.assert_allclose(gmm.log_density(z[:10]), reference.score_samples(z[:10]), rtol=1e-5)
    cold = gmm.sample(4000, np.random.default_rng(1), temperature=0.0)
    assert len(np.unique(cold[:, 1].round(5))) == 2  # temperature 0: the component means
    diag = LatentGMM.fit(np.random.default_rng(0).normal(size=(100, 80)), components=3)
    assert diag.covariance_type == "diag" and diag.covariances.shape == (3, 80)


def test_gmm_is_stored_with_the_model_and_survives_saving(tmp_path):
    model = FCVAE(sample_rate=RATE, window_seconds=0.25, hidden_layers=1, hidden_units=16, latent_dim=4)
    with pytest.raises(KvaeError, match="no latent mixture"):
        model.sample(2, seed=0, prior="gmm")
    with pytest.raises(KvaeError, match="prior"):
        model.sample(2, seed=0, prior="flow")
    with pytest.raises(KvaeError, match="dimensions"):
        model.set_latent_gmm(LatentGMM.fit(np.random.default_rng(0).normal(size=(40, 3)), 2))
    model.set_latent_gmm(LatentGMM.fit(two_clusters(), 2))
    a = model.sample(3, seed=5, prior="gmm")
    assert a.shape == (3, model.window) and a.dtype == np.float32
    np.testing.assert_array_equal(a, model.sample(3, seed=5, prior="gmm"))
    assert not np.allclose(a, model.sample(3, seed=6, prior="gmm"))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.sample(3, seed=5, prior="gmm"), a)


def test_gmm_on_a_latent_sequence_is_diagonal_and_shaped_like_the_latent():
    model = Conv1DVAE(sample_rate=RATE, window_seconds=0.25, channels=[8, 16], latent_dim=4)
    z = np.random.default_rng(0).normal(size=(30,) + tuple(model.latent_shape))
    model.set_latent_gmm(LatentGMM.fit(z, 2))
    assert model.latent_gmm.covariance_type == "diag"
    assert model.sample_latents_gmm(2, np.random.default_rng(0)).shape == (2,) + tuple(model.latent_shape)
    assert model.sample(2, seed=0, prior="gmm").shape == (2, model.window)


# ---------------------------------------------------------------- the autoregressive prior model


@pytest.mark.parametrize("kind", ["conv", "transformer"])
def test_latent_prior_trains_saves_loads_and_is_causal(kind, tmp_path):
    from kvae.models import LatentPrior

    prior = LatentPrior(4, kind=kind, context_frames=12, width=16, components=3)
    frames = np.random.default_rng(0).normal(size=(8, 12, 4)).astype("float32")
    x = LatentPrior.shift_inputs(frames)
    assert np.all(x[:, 0] == 0) and np.array_equal(x[:, 1:], frames[:, :-1])
    prior.compile(optimizer="adam")
    loss = prior.fit(x, frames, batch_size=4, epochs=1, verbose=0).history["loss"][-1]
    assert np.isfinite(loss) and 4 < loss < 8  # about 1.42 nats per dimension for unit Gaussians
    prior.set_statistics(np.full(4, 0.5), np.full(4, 2.0))
    np.testing.assert_allclose(prior.denormalize(prior.normalize(frames)), frames, atol=1e-5)
    prior.save(tmp_path / "prior.keras")
    loaded = keras.models.load_model(tmp_path / "prior.keras")
    assert loaded.get_config() == prior.get_config()
    for a, b in zip(prior.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    rngs = lambda: [np.random.default_rng(1), np.random.default_rng(2)]  # noqa: E731
    np.testing.assert_array_equal(prior.sample_next(x[:2], rngs()), loaded.sample_next(x[:2], rngs()))
    # causal: changing frames from t = 6 on leaves every output before t = 6 unchanged
    later = x.copy()
    later[:, 6:] += 3.0
    before, after = (keras.ops.convert_to_numpy(prior(v)) for v in (x, later))
    np.testing.assert_array_equal(before[:, :6], after[:, :6])
    assert not np.allclose(before[:, 6:], after[:, 6:])


@pytest.mark.parametrize("kind", ["conv", "transformer"])
def test_stepper_matches_the_full_forward_pass(kind):
    from kvae.models import LatentPrior

    prior = LatentPrior(3, kind=kind, context_frames=10, width=8, components=2)
    rng = np.random.default_rng(0)
    for w in prior.trainable_weights:  # away from the zero-initialised head
        w.assign((0.3 * rng.normal(size=w.shape)).astype("float32"))
    frames = rng.normal(size=(2, 30, 3)).astype("float32")  # longer than the context
    stepper = prior.stepper(2)
    for t in range(30):
        got = stepper.push(frames[:, t])
    want = prior.next_distribution(frames)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_latent_prior_bad_arguments_are_one_line_errors():
    from kvae.models import LatentPrior

    for kwargs, word in ((dict(kind="rnn"), "prior.kind"), (dict(components=0), "prior.components"),
                         (dict(kind="transformer", width=10, num_heads=4), "prior.width")):
        with pytest.raises(KvaeError, match=word) as info:
            LatentPrior(4, **kwargs)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("backend", other_backends())
def test_latent_prior_tests_pass_on_other_backend(backend):
    tests = [f"tests/test_prior.py::{name}" for name in ("test_latent_prior_trains_saves_loads_and_is_causal",
                                                         "test_stepper_matches_the_full_forward_pass",
                                                         "test_rollout_swaps_inputs_for_the_priors_own_causal_draws")]
    result = rerun_tests(backend, *tests)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "5 passed" in result.stdout


def test_input_noise_perturbs_only_the_training_inputs():
    from kvae.inference.prior_data import LatentCrops
    from kvae.training.prior_fit import load_prior_config

    rng = np.random.default_rng(0)
    sequences = [rng.standard_normal((300, 3)).astype("float32") for _ in range(3)]
    clean = LatentCrops(sequences, 20, 64, 4, seed=1)
    noisy = LatentCrops(sequences, 20, 64, 4, seed=1, input_noise=0.5)
    (x, y), (xn, yn) = clean[2], noisy[2]
    np.testing.assert_array_equal(y, yn)  # the same crops; the targets are the true frames
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # teacher forcing: inputs are the targets shifted
    assert xn.dtype == np.float32 and abs(np.std(xn - x) - 0.5) < 0.02
    np.testing.assert_array_equal(noisy[2][0], xn)  # seeded per (epoch, batch)
    fixed = LatentCrops(sequences, 20, 8, random=False, input_noise=0.5)  # validation: never noisy
    np.testing.assert_array_equal(fixed[0][0][:, 1:], fixed[0][1][:, :-1])
    assert load_prior_config(None, {"train": {"input_noise": 0.3}})["train"]["input_noise"] == 0.3
    with pytest.raises(KvaeError, match="input_noise"):
        load_prior_config(None, {"train": {"input_noise": -1.0}})


def _random_prior(rollout, kind="conv", latent_dim=3, seed=0, **kwargs):
    from kvae.models import LatentPrior

    kwargs = {"context_frames": 10, "width": 8, "components": 2, **kwargs}
    prior = LatentPrior(latent_dim, kind=kind, rollout=rollout, **kwargs)
    rng = np.random.default_rng(seed)
    for w in prior.trainable_weights:  # away from the zero-initialised head
        w.assign((0.3 * rng.normal(size=w.shape)).astype("float32"))
    return prior


def test_rollout_swaps_inputs_for_the_priors_own_causal_draws():
    prior = _random_prior(1.0)
    x = np.random.default_rng(1).normal(size=(4, 20, 3)).astype("float32")
    start = keras.ops.convert_to_numpy(prior.rollout_seeds.state)

    def rolled(inputs):
        prior.rollout_seeds.state.assign(start)  # the same draws for both calls
        return keras.ops.convert_to_numpy(prior.rolled_out(keras.ops.convert_to_tensor(inputs)))

    out = rolled(x)
    np.testing.assert_array_equal(out[:, 0], x[:, 0])  # the start frame is never swapped
    assert not np.any(np.isclose(out[:, 1:], x[:, 1:]))  # rollout 1: every other frame is a draw
    # Input frame j is a draw of target frame j - 1: it depends on the true inputs before j only.
    later = x.copy()
    later[:, 7:] += 3.0
    moved = rolled(later)
    np.testing.assert_array_equal(moved[:, :8], out[:, :8])
    assert not np.allclose(moved[:, 8:], out[:, 8:])
    # The draws follow the prediction: a near-deterministic head gives its means.
    sure = _random_prior(1.0, components=1)
    means = np.array([0.5, -1.0, 2.0], "float32")
    sure.head.kernel.assign(np.zeros(sure.head.kernel.shape, "float32"))
    sure.head.bias.assign(np.concatenate([[0.0], means, np.full(3, -7.0)]).astype("float32"))
    got = keras.ops.convert_to_numpy(sure.rolled_out(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(got[:, 1:], np.broadcast_to(means, got[:, 1:].shape), atol=0.01)


def test_rollout_share_training_only_and_saved(tmp_path):
    half = _random_prior(0.5)
    x = np.random.default_rng(2).normal(size=(16, 40, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(half.rolled_out(keras.ops.convert_to_tensor(x)))
    assert 0.4 < np.mean(~np.isclose(out[:, 1:, 0], x[:, 1:, 0])) < 0.6
    tensor = keras.ops.convert_to_tensor(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(half(tensor)),  # inference: teacher inputs as given
                                  keras.ops.convert_to_numpy(half.predict_params(tensor)))
    assert not np.allclose(keras.ops.convert_to_numpy(half(tensor, training=True)),
                           keras.ops.convert_to_numpy(half.predict_params(tensor)))
    half.compile(optimizer="adam")
    loss = half.fit(x, x, batch_size=8, epochs=1, verbose=0).history["loss"][-1]
    assert np.isfinite(loss)
    half.save(tmp_path / "prior.keras")
    loaded = keras.models.load_model(tmp_path / "prior.keras")
    assert loaded.rollout == 0.5 and loaded.get_config() == half.get_config()
    assert _random_prior(0.0).rollout_seeds is None  # a plain prior holds no seed state, as before


def test_rollout_bad_values_are_one_line_errors():
    from kvae.models import LatentPrior
    from kvae.training.prior_fit import load_prior_config

    for kwargs, word in ((dict(rollout=1.5), "rollout"), (dict(rollout=0.5, head="flow"), "prior.head = mog")):
        with pytest.raises(KvaeError, match=word) as info:
            LatentPrior(3, **kwargs)
        assert "\n" not in str(info.value)
    assert load_prior_config(None, {"train": {"rollout": 0.25}})["train"]["rollout"] == 0.25
    with pytest.raises(KvaeError, match="rollout"):
        load_prior_config(None, {"train": {"rollout": 2.0}})


def test_a_prior_fitted_with_weight_ema_keeps_the_average(tiny_conv1d_run, tmp_path):
    """`train.ema_momentum` with `keep_best`: the validation loss and the kept weights are the average's. The
    raw trajectory is the same with or without EMA (same seed), so a prior that kept raw weights would equal
    the one fitted without; the average of 0.99 stays near the initial weights instead. An interrupted fit's
    backup holds the raw weights, so it resumes as it would have gone on."""
    import shutil

    import kvae
    from kvae.runs import read_history

    run = tmp_path / "run"
    shutil.copytree(tiny_conv1d_run, run)
    weights, losses = {}, {}
    for ema in (0.0, 0.99):
        folder = tmp_path / f"prior-{ema}"
        kvae.fit_prior(run, folder=folder, verbose=False, settings={
            "prior": {"width": 8, "layers": 2, "context_seconds": 0.2},
            "train": {"epochs": 3, "steps_per_epoch": 2, "batch_size": 4, "ema_momentum": ema, "verbose": 0}})
        prior = kvae.load(folder / "prior.keras", compile=False)
        weights[ema] = [keras.ops.convert_to_numpy(w) for w in prior.trainable_weights]
        losses[ema] = read_history(folder / "history.csv")["val_loss"]
    assert not all(np.array_equal(a, b) for a, b in zip(weights[0.0], weights[0.99]))
    assert losses[0.0] != losses[0.99]  # validated on the average

    from model_checks import StopAfter

    folder = tmp_path / "prior-cut"
    with pytest.raises(KeyboardInterrupt):
        kvae.fit_prior(run, folder=folder, verbose=False, callbacks=[StopAfter(0)], settings={
            "prior": {"width": 8, "layers": 2, "context_seconds": 0.2},
            "train": {"epochs": 3, "steps_per_epoch": 2, "batch_size": 4, "ema_momentum": 0.99, "verbose": 0}})
    kvae.fit_prior(run, folder=folder, verbose=False)
    resumed = kvae.load(folder / "prior.keras", compile=False)
    for a, b in zip(weights[0.99], resumed.trainable_weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), a, rtol=1e-5, atol=1e-6)
    assert read_history(folder / "history.csv")["val_loss"] == pytest.approx(losses[0.99], rel=1e-5)


def test_cooldown_brings_the_learning_rate_down_to_zero_over_the_last_share(tiny_conv1d_run, tmp_path):
    """`train.cooldown = F`: the learning rate is constant, then falls linearly to 0 over the last share F of
    training, by the epochs (the middle of each) or by the clock of a `TimeBudget` that ends the fit
    (`train.max_minutes` gives one)."""
    import shutil

    import kvae
    from kvae.errors import KvaeError
    from kvae.runs import read_history
    from kvae.training.time_budget import TimeBudget, cooldown

    schedule = cooldown(1e-3, 0.5, 4).schedule
    assert [schedule(e, 0.0) for e in range(4)] == pytest.approx([1e-3, 1e-3, 0.75e-3, 0.25e-3])
    budget = TimeBudget(1.0, clock="cpu")
    budget.elapsed = lambda: 54.0  # 90 % of the minute spent: a fifth of the cooldown's share left
    assert cooldown(1e-3, 0.5, 4, budget).schedule(0, 0.0) == pytest.approx(2e-4)
    with pytest.raises(KvaeError, match="cooldown: the share of training must be in"):
        cooldown(1e-3, 0.0, 4)

    run = tmp_path / "run"
    shutil.copytree(tiny_conv1d_run, run)
    train = {"epochs": 4, "steps_per_epoch": 2, "batch_size": 4, "verbose": 0, "cooldown": 0.5}
    kvae.fit_prior(run, folder=tmp_path / "prior", verbose=False, settings={
        "prior": {"width": 8, "layers": 2, "context_seconds": 0.2}, "train": train})
    logged = read_history(tmp_path / "prior" / "history.csv")["learning_rate"]
    assert logged == pytest.approx([1e-3, 1e-3, 0.75e-3, 0.25e-3])
    kvae.fit_prior(run, folder=tmp_path / "timed", verbose=False, settings={  # a budget the first batch spends
        "prior": {"width": 8, "layers": 2, "context_seconds": 0.2}, "train": {**train, "max_minutes": 1e-6}})
    assert len(read_history(tmp_path / "timed" / "history.csv")["loss"]) == 1  # not 4 epochs
    assert (tmp_path / "timed" / "prior.keras").is_file()
    with pytest.raises(KvaeError, match="prior/train.cooldown|train.cooldown"):
        kvae.fit_prior(run, folder=tmp_path / "bad", verbose=False, settings={"train": {"cooldown": 1.5}})


def test_trim_silence_cuts_each_recordings_silent_start_and_end(tiny_conv1d_run, tmp_path):
    """`train.trim_silence_db`: the prior learns from each recording between its first and last sounding
    block (a recording's trailing silence taught a long fit to fade its pieces out); an all-silent one is
    left out; without it the silences stay."""
    import shutil

    import kvae
    from audio import sine, wav_file
    from kvae.inference.prior_data import sounding_span

    quiet, loud = np.zeros(300, np.float32), np.full(300, 0.1, np.float32)  # -inf and -20 dBFS, 0.1-s blocks
    audio = np.concatenate([quiet, quiet, loud, quiet, loud, quiet])
    assert sounding_span(audio, 3000, -50.0) == (600, 1500)  # the pause between sounds is kept
    assert sounding_span(audio[:-150], 3000, -50.0) == (600, 1650)  # a short tail goes with the block before
    assert sounding_span(audio, 3000, -10.0) == (0, 0) and sounding_span(audio[:0], 3000, -50.0) == (0, 0)
    assert sounding_span(np.concatenate([loud, loud[:100]]), 3000, -50.0) == (0, 400)  # the short tail too

    data = tmp_path / "songs"
    rate, silence = 3000, np.zeros(3 * 3000, np.float32)
    for i, freq in enumerate((220.0, 330.0)):  # 3 s of silence, 4 s of tone, 3 s of silence
        wav_file(data / f"song{i}.wav", np.concatenate([silence, sine(freq, 4.0, rate, 0.3), silence]), rate)
    wav_file(data / "empty.wav", np.zeros(10 * rate, np.float32), rate)
    run = tmp_path / "run"
    shutil.copytree(tiny_conv1d_run, run)
    frames = {}
    for trim in (0.0, -50.0):
        folder = tmp_path / f"prior{trim}"
        kvae.fit_prior(run, data=data, folder=folder, verbose=False, settings={
            "prior": {"width": 8, "layers": 2, "context_seconds": 0.2},
            "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 4, "verbose": 0, "trim_silence_db": trim}})
        with np.load(folder / "latents.npz") as saved:
            frames[trim] = (len(saved["train_lengths"]),  # (a folder without splits validates on their ends)
                            int(saved["train_lengths"].sum() + saved["val_lengths"].sum()))
    with pytest.raises(KvaeError, match="train.trim_silence_db = -5: every training recording is quieter"):
        kvae.fit_prior(run, data=data, folder=tmp_path / "none", verbose=False,
                       settings={"train": {"epochs": 1, "trim_silence_db": -5.0}})  # the tones are at -13.5 dBFS
    assert frames[0.0][0] == 3 and frames[-50.0][0] == 2  # the silent recording is left out
    assert 0.3 < frames[-50.0][1] / (frames[0.0][1] * 2 / 3) < 0.5  # 4 of each recording's 10 s


def test_the_chunk_recipe_is_found_by_name_and_an_unknown_name_lists_the_recipes(tmp_path):
    from kvae.models.chunk_prior import check_chunk_settings
    from kvae.training.prior_fit import load_prior_config

    cfg = load_prior_config("chunk", {"train": {"max_minutes": 80.0}})
    assert (cfg["prior"]["kind"], cfg["prior"]["patch_frames"], cfg["prior"]["width"]) == ("chunk", 4, 256)
    assert (cfg["train"]["cooldown"], cfg["train"]["trim_silence_db"], cfg["train"]["max_minutes"]) == (0.3, -50.0, 80.0)
    check_chunk_settings(cfg)  # the recipe is one a chunk prior accepts
    (tmp_path / "chunk").write_text('[prior]\nkind = "conv"\n')  # a file of that name wins over the recipe
    assert load_prior_config(tmp_path / "chunk")["prior"]["kind"] == "conv"
    with pytest.raises(KvaeError, match=r"^chunkk: prior config file not found, nor a built-in prior recipe \(chunk\)$"):
        load_prior_config("chunkk")
    # A recipe's base is another recipe, never a model config of the same name (kvae.presets.FALLBACK).
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "longer.toml").write_text('base = "chunk"\n[train]\nmax_minutes = 80.0\n')
    assert load_prior_config(tmp_path / "mine" / "longer.toml")["prior"]["patch_frames"] == 4
    (tmp_path / "mine" / "wrong.toml").write_text('base = "quickstart"\n')  # a model config's name
    with pytest.raises(KvaeError, match=r"wrong.toml: its base 'quickstart' is neither a file beside it nor a built-in"):
        load_prior_config(tmp_path / "mine" / "wrong.toml")


def test_init_warm_starts_from_a_fitted_prior_of_the_same_network(tiny_conv1d_run, tmp_path):
    """`train.init`: the fit starts from another prior's weights and units (a fine-tune, say on trimmed
    latents); a missing prior or one of another shape is a one-line error before any training."""
    import shutil

    import kvae

    run = tmp_path / "run"
    shutil.copytree(tiny_conv1d_run, run)
    prior = {"kind": "chunk", "width": 8, "context_seconds": 0.2, "chunk_seconds": 0.2}
    train = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "verbose": 0, "keep_best": False}
    kvae.fit_prior(run, folder=tmp_path / "first", verbose=False, settings={"prior": prior, "train": train})
    first = kvae.load(tmp_path / "first" / "prior.keras")
    kvae.fit_prior(run, folder=tmp_path / "still", verbose=False, settings={  # a step of size 0: still the init
        "prior": prior, "train": {**train, "init": str(tmp_path / "first"), "learning_rate": 1e-12}})
    still = kvae.load(tmp_path / "still" / "prior.keras")
    for ours, theirs in zip(still.get_weights(), first.get_weights()):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    kvae.fit_prior(run, folder=tmp_path / "fresh", verbose=False, settings={
        "prior": prior, "train": {**train, "learning_rate": 1e-12}})  # without init: another start
    fresh = kvae.load(tmp_path / "fresh" / "prior.keras")
    assert not all(np.allclose(a, b) for a, b in zip(fresh.get_weights(), first.get_weights()))
    # a conditioned prior from an unconditioned one: the shared weights the init's, the label embedding zero
    labelled, _ = kvae.fit_prior(run, folder=tmp_path / "labelled", verbose=False, settings={
        "prior": {**prior, "condition": "file"}, "train": {**train, "init": str(tmp_path / "first"),
                                                            "learning_rate": 1e-12}})
    theirs = {w.path: w for w in first.weights}
    assert type(labelled).__name__ == "ConditionedChunkPrior" and len(labelled.weights) == len(theirs) + 1
    for w in labelled.weights:
        np.testing.assert_allclose(w, theirs[w.path] if w.path in theirs else np.zeros(w.shape), atol=1e-6)
    with pytest.raises(KvaeError, match=r"is a ConditionedChunkPrior of another shape than this config's ChunkPrior"):
        kvae.fit_prior(run, folder=tmp_path / "c", verbose=False,  # not the other way round
                       settings={"prior": prior, "train": {**train, "init": str(tmp_path / "labelled")}})
    with pytest.raises(KvaeError, match=r"^train.init: .*nowhere: no fitted prior there"):
        kvae.fit_prior(run, folder=tmp_path / "a", verbose=False,
                       settings={"prior": prior, "train": {**train, "init": str(tmp_path / "nowhere")}})
    with pytest.raises(KvaeError, match=r"^train.init: .*prior.keras is a ChunkPrior of another shape than this "
                                        r"config's ChunkPrior; warm-start only"):
        kvae.fit_prior(run, folder=tmp_path / "b", verbose=False, settings={
            "prior": {**prior, "width": 16}, "train": {**train, "init": str(tmp_path / "first" / "prior.keras")}})


def test_augment_shifts_adds_shifted_encodings_of_the_training_audio_only(tiny_conv1d_run, tmp_path):
    """`train.augment_shifts = S`: each training stretch is encoded again from S - 1 later starts inside one
    latent frame (other frames of the same music); the validation frames and the window latents are the
    unshifted encoding's alone, so a fit with shifts validates on what one without it does."""
    import shutil

    import kvae
    from audio import sine, wav_file
    from kvae.data import prepare
    from kvae.inference.latents import LatentLayout

    data, rate = tmp_path / "songs", 3000
    for i, freq in enumerate((220.0, 330.0)):
        wav_file(data / f"song{i}.wav", sine(freq, 3.0, rate, 0.3) * np.linspace(0.2, 1.0, 3 * rate), rate)
    run = tmp_path / "run"
    shutil.copytree(tiny_conv1d_run, run)
    saved = {}
    for shifts in (1, 2):
        folder = tmp_path / f"prior{shifts}"
        kvae.fit_prior(run, data=data, folder=folder, verbose=False, settings={
            "prior": {"width": 8, "layers": 2, "context_seconds": 0.2},
            "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 4, "verbose": 0, "augment_shifts": shifts}})
        with np.load(folder / "latents.npz") as npz:
            saved[shifts] = {k: npz[k] for k in ("train", "train_lengths", "val", "val_lengths", "windows",
                                                 "train_keys")}
    one, two = saved[1], saved[2]
    assert len(two["train_lengths"]) == 2 * len(one["train_lengths"]) == 4  # a folder without splits
    assert list(two["train_keys"]) == [k for k in one["train_keys"] for _ in range(2)]
    for key in ("val", "val_lengths", "windows"):  # validated on the unshifted frames' tails, as without shifts
        np.testing.assert_array_equal(two[key], one[key])
    first, second = np.split(two["train"], np.cumsum(two["train_lengths"])[:-1])[:2]
    np.testing.assert_array_equal(first, np.split(one["train"], np.cumsum(one["train_lengths"])[:-1])[0])

    model = kvae.load(run, compile=False)
    layout = LatentLayout(model)
    corpus = prepare(data, sample_rate=rate)
    _, shifted = layout.encode(model, corpus.array(corpus.entries[0])[layout.frame_samples // 2:])  # half a frame on
    assert not np.allclose(second, first[:len(second)], atol=1e-3)
    np.testing.assert_allclose(second, shifted[:len(second)], rtol=1e-5, atol=1e-6)  # its last tenth validates
    with pytest.raises(KvaeError, match="augment_shifts"):
        kvae.fit_prior(run, data=data, folder=tmp_path / "bad", verbose=False,
                       settings={"train": {"augment_shifts": 0}})
