"""Tests for kvae.data.windows: the window plan, normalisation, and the two front ends agreeing."""

import numpy as np
import pytest

from kvae.data.cache import Corpus, Entry
from kvae.data.windows import WindowSource, normalize_window
from kvae.errors import KvaeError

RATE = 1000


def make_corpus(tmp_path, lengths=(5000, 3000, 7000, 4000), splits=None, amplitude=None):
    """A Corpus of .npy files written directly: recording i holds a distinctive signal."""
    rng = np.random.default_rng(42)
    entries = []
    for i, n in enumerate(lengths):
        x = (0.5 * rng.uniform(-1, 1, n)).astype(np.float32)
        if amplitude is not None:
            x *= amplitude[i] / np.abs(x).max()
        path = tmp_path / f"rec{i}.npy"
        np.save(path, x)
        split = splits[i] if splits else "train"
        entries.append(Entry(f"rec{i}", split, path, n))
    return Corpus(entries, RATE)


# ---------------------------------------------------------------- the plan


def test_same_seed_and_epoch_same_plan(tmp_path):
    corpus = make_corpus(tmp_path)
    a = WindowSource(corpus, "train", window=500, batch_size=3, seed=7)
    b = WindowSource(corpus, "train", window=500, batch_size=3, seed=7)
    for epoch in (0, 1, 5):
        np.testing.assert_array_equal(a.plan(epoch), b.plan(epoch))
    np.testing.assert_array_equal(a.plan(2), a.plan(2))


def test_epochs_and_seeds_differ(tmp_path):
    corpus = make_corpus(tmp_path)
    src = WindowSource(corpus, "train", window=500, batch_size=3, windows_per_recording=3, seed=7)
    other = WindowSource(corpus, "train", window=500, batch_size=3, windows_per_recording=3, seed=8)

    def starts(s, epoch):
        plan = s.plan(epoch)
        return plan[np.lexsort((plan[:, 1], plan[:, 0]))][:, 1]

    assert not np.array_equal(starts(src, 0), starts(src, 1))
    assert not np.array_equal(starts(src, 0), starts(other, 0))
    assert not np.array_equal(src.plan(0), other.plan(0))


def test_windows_within_bounds_and_k_per_recording(tmp_path):
    lengths = (5000, 3000, 7000, 4000, 600)
    corpus = make_corpus(tmp_path, lengths=lengths)
    window = 800
    src = WindowSource(corpus, "train", window=window, batch_size=4, windows_per_recording=3, seed=1)
    assert src.num_windows == 15 and src.num_batches == 4
    assert src.short == ["rec4"]
    for epoch in range(20):
        plan = src.plan(epoch)
        assert plan.shape == (15, 2) and plan.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(plan[:, 0], minlength=5), [3] * 5)
        room = np.maximum(np.array(lengths)[plan[:, 0]] - window, 0)
        assert np.all(plan[:, 1] >= 0) and np.all(plan[:, 1] <= room)
    # the random starts cover the room, not just one spot
    all_starts = np.concatenate([src.plan(e)[src.plan(e)[:, 0] == 2, 1] for e in range(20)])
    assert all_starts.min() < 1000 and all_starts.max() > 5200


def test_windows_hold_the_right_samples(tmp_path):
    corpus = make_corpus(tmp_path)
    src = WindowSource(corpus, "train", window=256, batch_size=4, seed=3)
    for i in range(src.num_batches):
        x = src.batch(0, i)
        rows = src.plan(0)[i * 4:(i + 1) * 4]
        assert x.shape == (len(rows), 256) and x.dtype == np.float32
        for w, (rec, start) in zip(x, rows):
            np.testing.assert_array_equal(w, corpus.array(corpus.entries[rec])[start:start + 256])


def test_fixed_windows_same_every_epoch_and_evenly_spaced(tmp_path):
    lengths = (5000, 3000, 7000)
    corpus = make_corpus(tmp_path, lengths=lengths)
    window, k = 1000, 4
    src = WindowSource(corpus, "train", window=window, batch_size=5, windows_per_recording=k, random=False)
    np.testing.assert_array_equal(src.plan(0), src.plan(9))
    for i in range(src.num_batches):
        np.testing.assert_array_equal(src.batch(0, i), src.batch(7, i))
    plan = src.plan(0)
    for rec, n in enumerate(lengths):
        starts = np.sort(plan[plan[:, 0] == rec, 1])
        room = n - window
        assert len(starts) == k
        assert starts[0] >= 0 and starts[-1] <= room
        gaps = np.diff(starts)
        assert np.all(np.abs(gaps - room / k) <= 1), (starts, room)
        # centred: as much room before the first window as after the last
        assert abs(starts[0] - (room - starts[-1])) <= room / k / 2 + 1
    one = WindowSource(corpus, "train", window=window, batch_size=5, random=False)
    np.testing.assert_array_equal(one.plan(0)[:, 1], [(n - window) // 2 for n in lengths])


def test_batches_per_epoch_extends_and_cuts(tmp_path):
    corpus = make_corpus(tmp_path)  # 4 recordings
    longer = WindowSource(corpus, "train", window=500, batch_size=4, batches_per_epoch=5, seed=0)
    assert longer.num_batches == 5 and longer.num_windows == 20
    assert len(longer.plan(0)) == 20
    assert all(longer.batch(0, i).shape == (4, 500) for i in range(5))
    with pytest.raises(IndexError):
        longer.batch(0, 5)
    counts = np.bincount(longer.plan(0)[:, 0], minlength=4)
    assert counts.min() >= 5  # more windows per recording were drawn to fill the epoch
    shorter = WindowSource(corpus, "train", window=500, batch_size=3, windows_per_recording=2,
                           batches_per_epoch=1, seed=0)
    assert shorter.num_batches == 1 and shorter.num_windows == 3
    assert len(shorter.plan(0)) == 3 and shorter.batch(0, 0).shape == (3, 500)
    with pytest.raises(IndexError):
        shorter.batch(0, 1)
    uneven = WindowSource(corpus, "train", window=500, batch_size=3, seed=0)  # 4 windows -> 3 + 1
    assert uneven.num_batches == 2 and uneven.batch(0, 1).shape == (1, 500)


def test_split_selection_and_fallback(tmp_path):
    corpus = make_corpus(tmp_path, splits=["train", "test", "train", "train"])
    assert [e.key for e in WindowSource(corpus, "test", 100, 2).entries] == ["rec1"]
    (tmp_path / "b").mkdir()
    only_train = make_corpus(tmp_path / "b", splits=["train"] * 4)
    assert len(WindowSource(only_train, "test", 100, 2).entries) == 4  # falls back to all


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"batch_size": 0}, {"windows_per_recording": 0},
                                    {"normalize": "loudest"}])
def test_bad_arguments(tmp_path, kwargs):
    corpus = make_corpus(tmp_path)
    args = dict(window=100, batch_size=2)
    args.update(kwargs)
    with pytest.raises(KvaeError) as err:
        WindowSource(corpus, "train", **args)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- normalisation


def test_normalize_peak_loud_and_quiet(tmp_path):
    corpus = make_corpus(tmp_path, lengths=(2000, 2000), amplitude=(0.3, 1e-4))
    src = WindowSource(corpus, "train", window=1000, batch_size=2, random=False, normalize="peak")
    x = src.batch(0, 0)
    loud, quiet = x[0], x[1]
    assert np.abs(loud).max() == pytest.approx(1.0, abs=1e-6)
    assert np.abs(quiet).max() <= 0.011
    assert np.abs(quiet).max() > 0  # scaled, not zeroed


def test_normalize_rms(tmp_path):
    corpus = make_corpus(tmp_path, lengths=(2000, 2000), amplitude=(0.8, 1e-6))
    src = WindowSource(corpus, "train", window=1000, batch_size=2, random=False, normalize="rms")
    x = src.batch(0, 0)
    assert np.sqrt(np.mean(x[0] ** 2)) == pytest.approx(0.1, rel=1e-4)
    assert np.sqrt(np.mean(x[1] ** 2)) < 1e-3


def test_normalize_window_function():
    x = np.array([[0.0, 0.25, -0.5], [0.0, 0.0, 0.0]], np.float32)
    out = normalize_window(x.copy(), "peak")
    np.testing.assert_allclose(out, [[0.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(normalize_window(x.copy(), "none"), x)
    with pytest.raises(KvaeError) as err:
        normalize_window(x.copy(), "max")
    assert "max" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the two front ends


def _tf_batches(source, n, start_epoch=0):
    pytest.importorskip("tensorflow")
    return [b.numpy() for b in source.tf_dataset(start_epoch=start_epoch).take(n)]


def _py_batches(source, epochs):
    ds = source.py_dataset()
    out = []
    for _ in range(epochs):
        out.extend(ds[i] for i in range(len(ds)))
        ds.on_epoch_end()
    return out


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype == np.float32
        np.testing.assert_array_equal(x, y)


def test_tf_dataset_and_py_dataset_yield_identical_random_batches(tmp_path):
    corpus = make_corpus(tmp_path, lengths=(5000, 3000, 7000, 4000, 300))
    kwargs = dict(window=400, batch_size=3, windows_per_recording=2, seed=11, normalize="peak")
    tf_source = WindowSource(corpus, "train", **kwargs)
    py_source = WindowSource(corpus, "train", **kwargs)
    n = tf_source.num_batches
    assert n == 4  # 10 windows: 3 + 3 + 3 + 1
    tf_batches = _tf_batches(tf_source, 2 * n)
    py_batches = _py_batches(py_source, 2)
    _assert_same(tf_batches, py_batches)
    assert tf_batches[-1].shape == (1, 400)
    # the epochs differ, so the comparison above covers two distinct plans
    assert not np.array_equal(np.concatenate(py_batches[:n]), np.concatenate(py_batches[n:]))
    # resuming at epoch 1 gives epoch 1's batches
    _assert_same(_tf_batches(WindowSource(corpus, "train", **kwargs), n, start_epoch=1), py_batches[n:])


def test_tf_dataset_and_py_dataset_yield_identical_fixed_batches(tmp_path):
    corpus = make_corpus(tmp_path)
    kwargs = dict(window=500, batch_size=3, windows_per_recording=2, random=False, normalize="rms")
    tf_source = WindowSource(corpus, "train", **kwargs)
    py_source = WindowSource(corpus, "train", **kwargs)
    pytest.importorskip("tensorflow")
    tf_batches = [b.numpy() for b in tf_source.tf_dataset()]  # a fixed source yields one epoch
    assert len(tf_batches) == tf_source.num_batches == 3
    py_batches = _py_batches(py_source, 2)
    _assert_same(tf_batches, py_batches[:3])
    _assert_same(tf_batches, py_batches[3:])


def _fit_epochs(tmp_path, callback_factory=None):
    """Fit a trivial autoencoder for 2 epochs on a PyDataset; return the epochs its batches came from."""
    keras = pytest.importorskip("keras")
    corpus = make_corpus(tmp_path)
    source = WindowSource(corpus, "train", window=64, batch_size=2, seed=0)
    requested = []
    original = source.batch

    def spy(epoch, index):
        requested.append(int(epoch))
        return original(epoch, index)

    source.batch = spy

    class AutoEncoder(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(64)

        def call(self, x):
            return self.dense(x)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return keras.ops.mean(keras.ops.square(y_pred - x))

    model = AutoEncoder()
    model.compile(optimizer="adam")
    dataset = source.py_dataset()
    callbacks = [callback_factory(keras, dataset)] if callback_factory else []
    history = model.fit(dataset, epochs=2, verbose=0, callbacks=callbacks)
    assert len(history.history["loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()
    n = source.num_batches
    assert len(requested) >= 2 * n  # Keras may peek at batch 0 first
    trained = requested[-2 * n:]
    assert trained[:n] == [trained[0]] * n and trained[n:] == [trained[n]] * n
    return [trained[0], trained[n]]


def test_py_dataset_in_keras_fit_with_set_epoch_callback(tmp_path):
    # the way kvae.training drives it: set_epoch(epoch) at the start of every epoch
    def factory(keras, dataset):
        class SetEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                dataset.set_epoch(epoch)

        return SetEpoch()

    assert _fit_epochs(tmp_path, factory) == [0, 1]


def test_py_dataset_in_keras_fit_draws_epochs_0_and_1(tmp_path):
    assert _fit_epochs(tmp_path) == [0, 1]


def test_window_dataset_pickles_and_feeds_keras_with_workers(tmp_path):
    import pickle

    import keras

    from kvae.data.py_dataset import WindowDataset

    corpus = make_corpus(tmp_path)
    ds = WindowSource(corpus, "train", window=500, batch_size=2, seed=3).py_dataset(workers=2)
    copy = pickle.loads(pickle.dumps(ds))  # what use_multiprocessing needs
    assert isinstance(copy, WindowDataset) and len(copy) == len(ds) == 2
    np.testing.assert_array_equal(copy[1], ds[1])
    model = keras.Sequential([keras.Input((500,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    predictions = model.predict(ds, verbose=0)  # through Keras's threaded PyDataset adapter
    assert predictions.shape == (4, 1)
