"""Two-sample tests on clip features: can set B be told from set A? (numpy, scikit-learn)

- `c2st`: the classifier two-sample test (Lopez-Paz & Oquab 2017). The
  cross-validated accuracy of a regularised logistic regression telling A's
  feature vectors from B's: 0.5 means indistinguishable, 1.0 always told
  apart. The interval is Wilson's 95 % interval over the pooled held-out
  predictions.
- `paired_c2st`: the same test for paired sets (a window and its
  reconstruction or coded copy): the folds split *pairs*, so a window and
  its copy are always on the same side, and the classifier cannot score by
  recognising the piece it saw in training. A set against itself scores
  exactly 0.5.
- `kid`: the Kernel Inception Distance estimator (Bińkowski et al. 2018) on
  our clip features instead of Inception embeddings: the unbiased squared
  MMD with the cubic polynomial kernel `k(x, y) = (x.y / d + 1)^3`. 0 for
  sets from one distribution (it can dip below 0 by chance). The interval is
  the 2.5-97.5 percentiles over random half-size subsets (wider than the
  full-set estimate's own uncertainty: conservative).
- `frechet_features`: the Fréchet distance between Gaussians fitted to the
  two sets of clip vectors (clip-level, unlike the frame-level Fréchet
  log-mel distance).

All three read features standardised by a `Standardizer` fitted on the
reference set, so rows compared against the same reference share one scale.
"""

import math

import numpy as np

from kvae.errors import KvaeError
from kvae.evaluation.frechet import gaussian_frechet

_STD_FLOOR = 1e-3
_Z_LIMIT = 50.0  # standardised values are clipped here: a degenerate set (silence) stays finite


class Standardizer:
    """Scales features by a reference set's mean and std (std floored at 1e-3; values clipped to +-50)."""

    def __init__(self, reference):
        reference = _as_features(reference, "reference")
        self.mean = reference.mean(axis=0)
        self.std = np.maximum(reference.std(axis=0), _STD_FLOOR)

    def __call__(self, features):
        return np.clip((np.asarray(features, dtype=np.float64) - self.mean) / self.std, -_Z_LIMIT, _Z_LIMIT)


def _as_features(x, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise KvaeError(f"{name}: expected at least two feature vectors (n, features), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise KvaeError(f"{name}: features contain NaN or Inf")
    return x


def wilson_interval(successes, n, z=1.96):
    """Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def c2st(a, b, folds=5, seed=0, regularization=1.0):
    """Classifier two-sample test accuracy of telling `b` from `a`.

    The larger set is subsampled to the smaller one's size (balanced
    classes), features are standardised inside each fold, and a logistic
    regression with L2 penalty (`C = regularization`) is scored by stratified
    `folds`-fold cross-validation.

    Returns:
        `{"accuracy": float, "low": float, "high": float, "n": clips per set}`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = _as_features(a, "a"), _as_features(b, "b")
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    if n < folds:
        raise KvaeError(f"c2st needs at least {folds} clips per set, got {n}")
    a = a[rng.choice(len(a), n, replace=False)] if len(a) > n else a
    b = b[rng.choice(len(b), n, replace=False)] if len(b) > n else b
    x = np.concatenate([a, b])
    y = np.concatenate([np.zeros(n), np.ones(n)])
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=regularization, max_iter=2000))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(classifier, x, y, cv=split)
    correct = int(np.sum(predicted == y))
    low, high = wilson_interval(correct, 2 * n)
    return {"accuracy": correct / (2 * n), "low": low, "high": high, "n": n}


def paired_c2st(a, b, folds=5, seed=0, regularization=1.0):
    """Classifier two-sample test of paired sets: `b[i]` is a processed copy of `a[i]`.

    Like `c2st`, but the cross-validation folds are drawn over pairs: both
    members of a pair are trained on together or tested on together, so a
    classifier cannot learn a piece from one member and recognise it in the
    other. Identical sets score exactly 0.5 (every test pair gets one right
    and one wrong answer); 1.0 means every copy is told from its original.

    Args:
        a: Features of the originals `(n, d)`.
        b: Features of their copies `(n, d)`, row `i` the copy of `a[i]`.
        folds: Cross-validation folds over the pairs. Defaults to 5.
        seed: Seed of the fold assignment.
        regularization: Inverse L2 strength `C` of the logistic regression.

    Returns:
        `{"accuracy": float, "low": float, "high": float, "n": pairs}`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = _as_features(a, "a"), _as_features(b, "b")
    if a.shape != b.shape:
        raise KvaeError(f"paired_c2st: the sets must pair up row by row, got shapes {a.shape} and {b.shape}")
    n = len(a)
    if n < folds:
        raise KvaeError(f"paired_c2st needs at least {folds} pairs, got {n}")
    fold = np.empty(n, int)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    correct = 0
    for k in range(folds):
        train, test = fold != k, fold == k
        x = np.concatenate([a[train], b[train]])
        y = np.concatenate([np.zeros(train.sum()), np.ones(train.sum())])
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=regularization, max_iter=2000))
        classifier.fit(x, y)
        correct += int(np.sum(classifier.predict(a[test]) == 0) + np.sum(classifier.predict(b[test]) == 1))
    low, high = wilson_interval(correct, 2 * n)
    return {"accuracy": correct / (2 * n), "low": low, "high": high, "n": n}


def _mmd2_unbiased(x, y):
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m, n = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2.0 * kxy.mean())


def kid(a, b, standardizer=None, subsets=100, seed=0):
    """Kernel Inception Distance estimator (unbiased MMD^2, cubic polynomial kernel) between feature sets.

    Args:
        a: Reference features `(n, d)`.
        b: Other features `(m, d)`.
        standardizer: `Standardizer` or None (fitted on `a`).
        subsets: Random half-size subsets for the interval.
        seed: Seed of the subsets.

    Returns:
        `{"value": float, "low": float, "high": float}`.
    """
    a, b = _as_features(a, "a"), _as_features(b, "b")
    scale = standardizer or Standardizer(a)
    x, y = scale(a), scale(b)
    value = float(_mmd2_unbiased(x, y))
    rng = np.random.default_rng(seed)
    m, n = max(2, len(x) // 2), max(2, len(y) // 2)
    draws = [_mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), n, replace=False)])
             for _ in range(int(subsets))]
    low, high = np.percentile(draws, [2.5, 97.5]) if draws else (value, value)
    return {"value": value, "low": float(low), "high": float(high)}


def frechet_features(a, b, standardizer=None):
    """Fréchet distance between Gaussians fitted to standardised clip features of `a` and `b`."""
    a, b = _as_features(a, "a"), _as_features(b, "b")
    scale = standardizer or Standardizer(a)
    x, y = scale(a), scale(b)
    return gaussian_frechet(x.mean(axis=0), np.cov(x, rowvar=False), y.mean(axis=0), np.cov(y, rowvar=False),
                            what="clip feature")
