"""The chunk prior (`prior.kind = "chunk"`, `kvae.models.ChunkPrior`): flow matching over chunks of latent frames
(the model, its joint draws, save and load, the stepper), its settings, `kvae prior fit` with it (resume),
`kvae generate` streaming a WAV, export's note."""

import shutil

import keras
import numpy as np
import pytest

import kvae
from backends import other_backends, rerun_tests
from kvae import cli
from kvae.errors import KvaeError
from model_checks import check_prior_fit_resumes_and_generates

RATE = 3000


def chunk_prior(**kwargs):
    from kvae.models import ChunkPrior

    return ChunkPrior(2, **{"context_frames": 4, "chunk_frames": 6, "width": 16, "layers": 3, "flow_steps": 8,
                            **kwargs})


@pytest.mark.parametrize("patch", [1, 4])
def test_chunk_prior_saves_loads_and_draws_the_same_chunks(patch, tmp_path):
    prior = chunk_prior(patch_frames=patch)  # 4: neither the context (4 or 2 frames) nor the chunk (6) whole patches
    rng = np.random.default_rng(0)
    for w in prior.trainable_weights:  # away from the zero-initialised output
        w.assign((0.3 * rng.normal(size=w.shape)).astype("float32"))
    crops = rng.normal(size=(8, 10, 2)).astype("float32")
    prior.compile(optimizer="adam")
    assert np.isfinite(prior.fit(crops, crops, batch_size=4, epochs=1, verbose=0).history["loss"]).all()
    prior.set_statistics(np.full(2, 0.5), np.full(2, 2.0))
    prior.save(tmp_path / "prior.keras")
    loaded = keras.models.load_model(tmp_path / "prior.keras")
    assert loaded.get_config() == prior.get_config() and loaded.crop_frames == 10
    rngs = lambda seed: [np.random.default_rng([seed, i]) for i in range(3)]  # noqa: E731
    context = rng.normal(size=(3, 4, 2)).astype("float32")
    a, b = prior.draw_chunk(context, rngs(1)), loaded.draw_chunk(context, rngs(1))
    assert a.shape == (3, 6, 2)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a, prior.draw_chunk(context, rngs(2)))  # another seed, another chunk
    assert not np.allclose(a, prior.draw_chunk(context + 1.0, rngs(1)))  # the context matters
    empty = np.zeros((3, 0, 2), np.float32)
    assert prior.draw_chunk(empty, rngs(1)).shape == (3, 6, 2)  # a piece's first chunk: no context

    # the stepper: frames in order, a new chunk every chunk_frames, drawn after the frames played so far
    stepper, draw = prior.stepper(3), prior.sampler()
    stepper.push(np.zeros((3, 2), np.float32))  # generate's start frame, not kept
    frames = []
    for _ in range(14):
        frames.append(draw(stepper, rngs(5), 1.0))
        stepper.push(frames[-1])
    frames = np.stack(frames, axis=1)
    first = prior.draw_chunk(empty, rngs(5))
    np.testing.assert_allclose(frames[:, :6], first, atol=1e-6)
    np.testing.assert_allclose(frames[:, 6:12], prior.draw_chunk(frames[:, 2:6], rngs(5)), atol=1e-5)

    prior.play_frames = 4  # each chunk's first 4 frames played, then the next drawn given them
    stepper = prior.stepper(3).push(np.zeros((3, 2), np.float32))
    frames = []
    for _ in range(8):
        frames.append(draw(stepper, rngs(5), 1.0))
        stepper.push(frames[-1])
    frames = np.stack(frames, axis=1)
    np.testing.assert_allclose(frames[:, :4], first[:, :4], atol=1e-6)
    np.testing.assert_allclose(frames[:, 4:8], prior.draw_chunk(frames[:, :4], rngs(5))[:, :4], atol=1e-5)
    assert loaded.patch_frames == patch
    with pytest.raises(KvaeError, match="prior.play_frames: must be in \\[1, prior.chunk_frames = 6\\]"):
        chunk_prior(play_frames=7)


@pytest.mark.parametrize("patch", [1, 2])
def test_a_chunk_is_drawn_jointly_and_continues_its_context(patch):
    """Crops that hold one level throughout (a random level per crop): given a context at a level, the chunk
    keeps it; without one, each chunk is still flat, at a level of its own (frame-wise noise would jitter).
    In patches of 2 frames, the context (3) and the chunk (5) are padded to whole patches."""
    from kvae.models import ChunkPrior

    keras.utils.set_random_seed(0)
    prior = ChunkPrior(1, context_frames=3, chunk_frames=5, width=32, layers=3, flow_steps=16, context_dropout=0.3,
                       patch_frames=patch)
    rng = np.random.default_rng(0)
    levels = rng.uniform(-2, 2, size=(40 * 64, 1, 1))
    crops = (levels + 0.02 * rng.normal(size=(40 * 64, 8, 1))).astype("float32")
    prior.compile(optimizer=keras.optimizers.Adam(3e-3))
    prior.fit(crops, crops, batch_size=64, epochs=5, verbose=0)  # 200 steps
    rngs = [np.random.default_rng([0, i]) for i in range(200)]
    context = np.full((200, 3, 1), 1.5, np.float32)
    given = prior.draw_chunk(context, rngs)[..., 0]
    assert abs(given.mean() - 1.5) < 0.3 and given.std(axis=1).mean() < 0.25
    free = prior.draw_chunk(np.zeros((200, 0, 1), np.float32), rngs)[..., 0]
    assert free.mean(axis=1).std() > 0.6  # chunks at many levels (the data's: 1.15)
    assert free.std(axis=1).mean() < 0.3 * free.mean(axis=1).std()  # each one flat


def test_patches_fold_frames_and_mark_the_padding():
    """`patch_frames = 3`: 4 context frames and 5 chunk frames padded to 6 + 6, two patches each; the chunk's
    velocity is read back from its own frames, whatever the padding holds."""
    prior = random_weights(chunk_prior(patch_frames=3, context_frames=4, chunk_frames=5))
    context, x = np.full((1, 4, 2), 7.0, np.float32), np.full((1, 5, 2), -3.0, np.float32)
    steps, start = prior._patches(keras.ops.convert_to_tensor(context), keras.ops.convert_to_tensor(x),
                                  keras.ops.ones((1, 1)))
    frames = keras.ops.convert_to_numpy(steps).reshape(1, 12, 4)  # latent, context marker, padding marker
    assert steps.shape == (1, 4, 12) and start == 6
    np.testing.assert_array_equal(frames[0, :, 3], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(frames[0, :, 2], [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(frames[0, :, 0], [0, 0, 7, 7, 7, 7, -3, -3, -3, -3, -3, 0])
    assert keras.ops.convert_to_numpy(prior.project_out.kernel).shape == (16, 6)  # a patch's 3 frames out


@pytest.mark.parametrize("patch, frame, reached", [(1, 4, [4]), (3, 1, [0, 1, 2]), (3, 4, [3, 4])])
def test_a_chunk_frame_reaches_the_velocity_of_its_own_patch(patch, frame, reached):
    """With the convolutions zeroed the network is pointwise in patches: a change to one chunk frame changes
    the velocity of exactly the frames of its patch (context 4 and chunk 5 in patches of 3: [.. c c][c c x]
    [x x x][x x .]), so the velocity is read back where its frames are."""
    prior = random_weights(chunk_prior(patch_frames=patch, context_frames=4, chunk_frames=5))
    for conv in prior.convs:
        conv.kernel.assign(np.zeros(conv.kernel.shape, np.float32))
    rng = np.random.default_rng(0)
    context, x = rng.normal(size=(1, 4, 2)).astype("float32"), rng.normal(size=(1, 5, 2)).astype("float32")
    moved = x.copy()
    moved[:, frame] += 1.0
    s, has = np.full((1, 1), 0.3, np.float32), np.ones((1, 1), np.float32)
    v, w = (keras.ops.convert_to_numpy(prior.velocity(a, s, context, has)) for a in (x, moved))
    assert v.shape == (1, 5, 2)
    np.testing.assert_array_equal(np.flatnonzero(np.abs(w - v).max(axis=(0, 2)) > 1e-6), reached)


def random_weights(prior, seed=0):
    rng = np.random.default_rng(seed)
    for w in prior.trainable_weights:  # away from the zero-initialised output and gates
        w.assign((0.3 * rng.normal(size=w.shape)).astype("float32"))
    return prior


def test_guidance_leans_each_chunk_towards_its_context():
    """With one Euler step the chunk is `x0 + v`: guidance g gives `x0 + v_none + g (v_context - v_none)`."""
    prior = random_weights(chunk_prior(flow_steps=1))
    rngs = lambda: [np.random.default_rng([3, i]) for i in range(2)]  # noqa: E731
    context = np.random.default_rng(1).normal(size=(2, 4, 2)).astype("float32")
    x0 = np.stack([rng.standard_normal((6, 2)) for rng in rngs()]).astype("float32")
    zero = np.zeros((2, 1), np.float32)
    v_context = keras.ops.convert_to_numpy(prior.velocity(x0, zero, context, np.ones((2, 1), np.float32)))
    v_none = keras.ops.convert_to_numpy(prior.velocity(x0, zero, np.zeros_like(context), zero))
    np.testing.assert_allclose(prior.draw_chunk(context, rngs()), x0 + v_context, atol=1e-5)
    np.testing.assert_allclose(prior.draw_chunk(context, rngs(), guidance=2.5),
                               x0 + v_none + 2.5 * (v_context - v_none), atol=1e-5)
    empty = np.zeros((2, 0, 2), np.float32)  # no context, nothing to guide towards
    np.testing.assert_allclose(prior.draw_chunk(empty, rngs(), guidance=2.5), prior.draw_chunk(empty, rngs()))
    from kvae.models.conditioned_prior import condition_ids

    assert condition_ids(prior, 2, None, 2.5) is None  # accepted before any work
    with pytest.raises(KvaeError, match="context_dropout = 0, so it never learned"):
        condition_ids(chunk_prior(context_dropout=0.0), 2, None, 2.5)
    stepper = prior.stepper(2, guidance=2.5)  # what kvae generate's guidance reaches
    stepper.history = context
    np.testing.assert_allclose(stepper.next_frame(rngs()), x0[:, 0] + v_none[:, 0] + 2.5 * (v_context - v_none)[:, 0],
                               atol=1e-5)


def test_context_noise_trains_on_noisy_context_and_generates_with_its_level(tmp_path):
    """`context_noise`: the training context carries noise of a level the network is told; generation puts
    `sample_noise` (default a quarter of it) on the context, drawn from the piece's own generator."""
    prior = random_weights(chunk_prior(context_noise=0.8, flow_steps=1))
    assert prior.generation_noise == pytest.approx(0.2)
    x, s = np.zeros((1, 6, 2), np.float32), np.full((1, 1), 0.5, np.float32)
    context, has = np.ones((1, 4, 2), np.float32), np.ones((1, 1), np.float32)
    low, high = (keras.ops.convert_to_numpy(prior.velocity(x, s, context, has, np.full((1, 1), v, np.float32)))
                 for v in (0.0, 0.8))
    assert not np.allclose(low, high)  # the level is an input
    crops = np.random.default_rng(0).normal(size=(8, 10, 2)).astype("float32")
    prior.compile(optimizer="adam")
    assert np.isfinite(prior.fit(crops, crops, batch_size=4, epochs=1, verbose=0).history["loss"]).all()
    def loss(noise):  # the validation loss (fixed seeds): levels U(0, noise), told to the network as level / noise
        prior.context_noise = noise
        return float(keras.ops.convert_to_numpy(prior.compute_loss(y=crops, training=False)))

    assert loss(1e-6) == pytest.approx(loss(1e-7), rel=1e-4)  # the same levels told, next to no noise
    assert loss(0.8) != pytest.approx(loss(1e-6), rel=1e-3)  # the noise reaches the context
    prior.context_noise = 0.8

    rngs = lambda: [np.random.default_rng([4, i]) for i in range(2)]  # noqa: E731
    context = np.random.default_rng(2).normal(size=(2, 4, 2)).astype("float32")
    first = prior.draw_chunk(context, rngs())
    np.testing.assert_array_equal(first, prior.draw_chunk(context, rngs()))  # the seed decides the noise too
    x0, noise = zip(*[(rng.standard_normal((6, 2)), rng.standard_normal((4, 2))) for rng in rngs()])
    x0, noise = np.float32(x0), np.float32(noise)  # one Euler step: the chunk is x0 + v at the noisy context
    v = prior.velocity(x0, np.zeros((2, 1), np.float32), context + 0.2 * noise, np.ones((2, 1), np.float32),
                       np.full((2, 1), 0.2, np.float32))
    np.testing.assert_allclose(first, x0 + keras.ops.convert_to_numpy(v), atol=1e-5)
    prior.sample_noise = 0.0
    assert not np.allclose(first, prior.draw_chunk(context, rngs()))
    prior.sample_noise = None
    prior.save(tmp_path / "prior.keras")
    loaded = keras.models.load_model(tmp_path / "prior.keras")
    assert loaded.context_noise == 0.8 and loaded.sample_noise is None
    np.testing.assert_allclose(loaded.draw_chunk(context, rngs()), first, atol=1e-5)


def test_offset_noise_gives_each_chunk_a_constant_in_its_starting_noise(tmp_path):
    """`offset_noise`: training's `x_0` and generation's starting noise get one N(0, offset^2) draw per chunk and
    channel beside the per-frame N(0, 1), so the chunk means of `x_0` spread by about `offset` (not 1/sqrt(6))."""
    seen = []

    def chunk_means(prior):
        velocity = prior.velocity
        prior.velocity = lambda x, s, *rest, **kw: seen.append(keras.ops.convert_to_numpy(x) / (
            1.0 - keras.ops.convert_to_numpy(s)[:, :, None])) or velocity(x, s, *rest, **kw)  # zero crops: (1-s) x0
        prior.compute_loss(y=np.zeros((4096, 10, 2), np.float32), training=True)
        del prior.velocity
        return seen[-1].mean(axis=1)

    assert 0.36 < chunk_means(chunk_prior()).std() < 0.46  # 1/sqrt(6) = 0.41
    prior = random_weights(chunk_prior(offset_noise=1.5, flow_steps=1))
    assert 1.45 < chunk_means(prior).std() < 1.65  # sqrt(1.5^2 + 1/6) = 1.55
    rngs = lambda: [np.random.default_rng([5, i]) for i in range(2)]  # noqa: E731
    context = np.random.default_rng(3).normal(size=(2, 4, 2)).astype("float32")
    x0 = np.float32([rng.standard_normal((6, 2)) + 1.5 * rng.standard_normal((1, 2)) for rng in rngs()])
    v = prior.velocity(x0, np.zeros((2, 1), np.float32), context, np.ones((2, 1), np.float32))
    first = prior.draw_chunk(context, rngs())  # one Euler step: the chunk is x0 + v
    np.testing.assert_allclose(first, x0 + keras.ops.convert_to_numpy(v), atol=1e-5)
    prior.save(tmp_path / "prior.keras")
    loaded = keras.models.load_model(tmp_path / "prior.keras")
    assert loaded.offset_noise == 1.5
    np.testing.assert_allclose(loaded.draw_chunk(context, rngs()), first, atol=1e-5)


def test_dropout_drops_the_block_branches_in_training_only(tmp_path):
    """`dropout`: each block's residual branch is dropped out in training; validation's loss and the draws are
    those of the same weights without it, and a fitted prior keeps its rate."""
    plain, dropped = chunk_prior(), chunk_prior(dropout=0.5)
    random_weights(plain)
    for mine, theirs in zip(dropped.trainable_weights, plain.trainable_weights):
        mine.assign(theirs)
    crops = np.random.default_rng(3).normal(size=(8, 10, 2)).astype("float32")
    loss = lambda prior, training: float(keras.ops.convert_to_numpy(  # noqa: E731
        prior.compute_loss(y=crops, training=training)))
    # first, while both seed generators are where they started: the same noise and times, branches dropped
    assert loss(dropped, True) != pytest.approx(loss(plain, True), abs=1e-4)
    assert loss(dropped, False) == pytest.approx(loss(plain, False), abs=1e-6)  # validation: no dropout
    x = np.random.default_rng(1).normal(size=(3, 6, 2)).astype("float32")
    context = np.random.default_rng(2).normal(size=(3, 4, 2)).astype("float32")
    s, has = np.full((3, 1), 0.3, np.float32), np.ones((3, 1), np.float32)
    velocity = lambda prior, training: keras.ops.convert_to_numpy(  # noqa: E731
        prior.velocity(x, s, context, has, training=training))
    np.testing.assert_allclose(velocity(dropped, False), velocity(plain, False), atol=1e-6)
    np.testing.assert_allclose(velocity(plain, True), velocity(plain, False), atol=1e-6)
    assert np.abs(velocity(dropped, True) - velocity(dropped, False)).max() > 1e-2
    rngs = lambda: [np.random.default_rng([7, i]) for i in range(3)]  # noqa: E731
    np.testing.assert_allclose(dropped.draw_chunk(context, rngs()), plain.draw_chunk(context, rngs()), atol=1e-5)
    dropped.save(tmp_path / "prior.keras")
    assert keras.models.load_model(tmp_path / "prior.keras").dropout == 0.5


@pytest.mark.parametrize("flow_time, low, high", [("uniform", 0.27, 0.31), ("logit-normal", 0.19, 0.23)])
def test_flow_times_are_drawn_as_configured(flow_time, low, high, tmp_path):
    """Uniform times have a spread of 0.289; logit-normal ones (sigmoid of N(0, 1)) 0.208, more in the middle."""
    prior = chunk_prior(flow_time=flow_time)
    seen = []
    velocity = prior.velocity
    prior.velocity = lambda x, s, *rest, **kw: seen.append(keras.ops.convert_to_numpy(s)) or velocity(
        x, s, *rest, **kw)
    crops = np.zeros((2048, 10, 2), np.float32)
    prior.compute_loss(y=crops, training=True)
    assert low < seen[0].std() < high and 0.0 <= seen[0].min() and seen[0].max() <= 1.0
    del prior.velocity
    prior.save(tmp_path / "prior.keras")
    assert keras.models.load_model(tmp_path / "prior.keras").flow_time == flow_time


def test_bad_chunk_settings_are_one_line_errors():
    from kvae.training import load_prior_config
    from kvae.training.prior_fit import build_prior

    for kwargs, word in ((dict(chunk_frames=0), "prior.chunk_frames"), (dict(context_dropout=2.0), "context_dropout"),
                         (dict(context_noise=-1.0), "context_noise"), (dict(flow_time="cosine"), "prior.flow_time"),
                         (dict(patch_frames=0), "prior.patch_frames: must be at least 1"),
                         (dict(offset_noise=-0.5), "prior.offset_noise: must be in \\[0, 10\\]"),
                         (dict(dropout=0.95), "prior.dropout: must be in \\[0, 0.9\\]"),
                         (dict(context_noise=0.5, sample_noise=0.6), "sample_noise: must be in \\[0, prior.context_noise")):
        with pytest.raises(KvaeError, match=word) as info:
            chunk_prior(**kwargs)
        assert "\n" not in str(info.value)
    for config, word in (({"prior": {"kind": "chunks"}}, "prior.kind: must be one of conv, transformer, chunk"),
                         ({"prior": {"chunk_seconds": 0}}, "prior.chunk_seconds: must be above 0")):
        with pytest.raises(KvaeError, match=word):
            load_prior_config(config)

    class Layout:
        channels, frame_rate, latent_shape = 2, 10.0, (10, 2)

    for settings, word in (({"prior": {"kind": "chunk", "head": "flow"}}, "prior.head"),
                           ({"prior": {"kind": "chunk"}, "train": {"rollout": 0.5}}, "rollout"),
                           ({"prior": {"context_noise": 0.5}}, "prior.context_noise: only for a chunk prior"),
                           ({"prior": {"patch_frames": 2}}, "prior.patch_frames: only for a chunk prior"),
                           ({"prior": {"offset_noise": 0.5}}, "prior.offset_noise: only for a chunk prior"),
                           ({"prior": {"dropout": 0.1}}, "prior.dropout: only for a chunk prior")):
        with pytest.raises(KvaeError, match=word):
            build_prior(load_prior_config(settings), Layout())
    labelled = build_prior(load_prior_config({"prior": {"kind": "chunk"}}), Layout(), labels=["a", "b"])
    assert type(labelled).__name__ == "ConditionedChunkPrior" and labelled.labels == ["a", "b"]
    prior = build_prior(load_prior_config({"prior": {"kind": "chunk", "context_seconds": 0.5, "chunk_seconds": 1.0}}),
                        Layout())
    assert (prior.context_frames, prior.chunk_frames, prior.kind) == (5, 10, "chunk")


def test_an_interrupted_chunk_prior_fit_resumes_and_generate_streams_it(tiny_conv1d_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_conv1d_run, run)
    config = {"prior": {"kind": "chunk", "context_seconds": 0.1, "chunk_seconds": 0.2, "width": 8, "layers": 2,
                        "flow_steps": 4},
              "gmm": {"components": 2},
              "train": {"epochs": 2, "steps_per_epoch": 1, "batch_size": 4, "max_seconds": 24.0, "verbose": 0}}
    folder = check_prior_fit_resumes_and_generates(run, config, capsys, "flow matching over chunks",
                                                   "prior ar (chunk", RATE)
    assert kvae.load(folder / "prior.keras", compile=False).kind == "chunk"
    np.testing.assert_array_equal(kvae.generate(run, seconds=1.0, seed=1),  # its default temperature is 1
                                  kvae.generate(run, seconds=1.0, seed=1, temperature=1.0))
    guided = kvae.generate(run, seconds=1.0, seed=1, guidance=3.0)  # towards each chunk's context
    assert guided.shape == (1, RATE) and not np.array_equal(guided, kvae.generate(run, seconds=1.0, seed=1))

    pytest.importorskip("onnx")
    assert cli.main(["export", str(run), "--out", str(tmp_path / "onnx")]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "prior not exported" in notes[0]


@pytest.mark.parametrize("backend", other_backends())
def test_chunk_prior_tests_pass_on_other_backend(backend):
    result = rerun_tests(backend, "tests/test_chunk_prior.py::test_chunk_prior_saves_loads_and_draws_the_same_chunks")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout  # patches of 1 and 4 frames
