"""Offline data for the notebooks: scikit-learn's bundled 8x8 digits and generated batches.

Nothing here downloads: the digits ship inside scikit-learn, the rest comes from a seeded
``np.random.default_rng``. The digits are read from scikit-learn's data file without
importing scikit-learn, and torch is imported only by ``Digits.to_torch``, so this module
costs only NumPy (notebooks 01-03 use no torch).

* ``load_digits()``: a stratified, standardized train/test split of the 1,797 digits.
* ``gaussian_population()`` / ``Population.sample()``: a population whose per-feature mean
  and variance are known, to compare batch estimates with (notebook 01).
* ``gaussian_blobs()``: one sample from such a population, features on very different
  offsets and scales (notebooks 02-03).
* ``drifting_stream()``: batches whose mean moves a fixed step per batch (notebook 04).
"""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Digits",
    "DriftingStream",
    "Population",
    "drifting_stream",
    "gaussian_blobs",
    "gaussian_population",
    "load_digits",
]


@dataclass(frozen=True)
class Digits:
    """A train/test split: x float32 (N, 64) pixels, y int64 (N,) labels 0-9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_features(self):
        return self.x_train.shape[1]

    @property
    def num_classes(self):
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def to_torch(self, split):
        """(x, y) of the "train" or "test" split as torch tensors (float32, int64)."""
        import torch

        if split not in ("train", "test"):
            raise ValueError(f'split must be "train" or "test", got {split!r}')
        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        return torch.from_numpy(x), torch.from_numpy(y)


def load_digits(test_fraction=0.25, seed=0, standardize=True):
    """scikit-learn's 8x8 digits, split per class so both parts keep the class balance.

    With ``standardize`` each pixel is shifted and scaled by the mean and standard
    deviation of the *training* split only (the test split must not leak into them).
    Pixels that never vary in training (some corners are always 0) are only shifted.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    x, y = _bundled_digits()
    train, test = _stratified_split(y, test_fraction, np.random.default_rng(seed))
    x_train, x_test = x[train], x[test]
    if standardize:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Digits(x_train.astype(np.float32), y[train], x_test.astype(np.float32), y[test])


def _bundled_digits():
    """(x (1797, 64) float64, y (1797,) int64) read from the file that scikit-learn ships.

    The same arrays as sklearn.datasets.load_digits(), without importing scikit-learn
    (which costs a notebook a second or more of start-up)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise ModuleNotFoundError("the digits data ship with scikit-learn: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


def _stratified_split(labels, test_fraction, rng):
    """Shuffled (train, test) index arrays with ``test_fraction`` of each class in test."""
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_test = round(test_fraction * len(members))
        test.append(members[:num_test])
        train.append(members[num_test:])
    # Shuffle again so that the classes are interleaved, not in blocks of 0s, 1s, ...
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


@dataclass(frozen=True)
class Population:
    """Independent Gaussian features with known per-feature ``mean`` and ``std`` (D,)."""

    mean: np.ndarray
    std: np.ndarray

    @property
    def var(self):
        return self.std ** 2

    def sample(self, n, seed=0):
        """n examples (n, D), float64; ``seed`` is an int or a ``np.random.Generator``."""
        rng = np.random.default_rng(seed)
        return self.mean + self.std * rng.standard_normal((n, len(self.mean)))


def gaussian_population(num_features, seed=0, mean_range=(-5.0, 5.0), std_range=(0.5, 5.0)):
    """A Population whose features sit at random offsets and scales in the given ranges.

    The scales are drawn log-uniformly, so small and large ones are equally common.
    ``seed`` is an int or a ``np.random.Generator``.
    """
    rng = np.random.default_rng(seed)
    mean = rng.uniform(*mean_range, size=num_features)
    std = np.exp(rng.uniform(*np.log(std_range), size=num_features))
    return Population(mean, std)


def gaussian_blobs(n, num_features, seed=0, mean_range=(-5.0, 5.0), std_range=(0.5, 5.0)):
    """n examples (n, D) of a Gaussian blob stretched and shifted differently per feature.

    A ``gaussian_population`` and its sample in one call (one generator draws both), for
    when the true statistics do not matter.
    """
    rng = np.random.default_rng(seed)
    population = gaussian_population(num_features, rng, mean_range, std_range)
    return population.sample(n, rng)


@dataclass(frozen=True)
class DriftingStream:
    """``batches`` (T, B, D) drawn around ``means`` (T, D), the true mean of each batch."""

    batches: np.ndarray
    means: np.ndarray


def drifting_stream(num_batches, batch_size, num_features=1, drift_per_batch=0.1, seed=0,
                    noise_std=1.0):
    """Batches whose true mean moves by ``drift_per_batch`` (a number or one per feature)
    from one batch to the next, starting at 0, with Gaussian noise of ``noise_std`` around it.

    A running average with a small momentum lags behind such a stream; a large one is noisy.
    """
    rng = np.random.default_rng(seed)
    steps = np.arange(num_batches).reshape(-1, 1)
    drift = np.broadcast_to(np.asarray(drift_per_batch, dtype=np.float64), (num_features,))
    means = steps * drift
    noise = rng.normal(0.0, noise_std, size=(num_batches, batch_size, num_features))
    return DriftingStream(means[:, None, :] + noise, means)
