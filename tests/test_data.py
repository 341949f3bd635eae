"""bn_course.data: the digits split, generated populations and the drifting stream."""

import socket
import subprocess
import sys

import numpy as np
import pytest
import sklearn.datasets

from bn_course import data


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


@pytest.fixture(scope="module")
def raw_digits():
    return sklearn.datasets.load_digits()


def sorted_rows(x):
    return x[np.lexsort(x.T[::-1])]


def test_digits_shapes_and_dtypes(digits):
    assert digits.x_train.shape[1] == digits.x_test.shape[1] == digits.num_features == 64
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert len(digits.y_train) == len(digits.x_train) and len(digits.y_test) == len(digits.x_test)
    assert digits.x_train.dtype == digits.x_test.dtype == np.float32
    assert digits.y_train.dtype == digits.y_test.dtype == np.int64
    assert digits.num_classes == 10


@pytest.mark.parametrize("test_fraction", [0.25, 0.1, 0.5])
def test_digits_split_is_stratified(raw_digits, test_fraction):
    split = data.load_digits(test_fraction=test_fraction)
    for label in range(10):
        in_class = (raw_digits.target == label).sum()
        assert (split.y_test == label).sum() == round(test_fraction * in_class)
        assert (split.y_train == label).sum() == in_class - round(test_fraction * in_class)


def test_digits_split_uses_every_example_once(raw_digits):
    split = data.load_digits(standardize=False)
    rows = np.concatenate([np.column_stack([split.x_train, split.y_train]),
                           np.column_stack([split.x_test, split.y_test])])
    expected = np.column_stack([raw_digits.data, raw_digits.target])
    np.testing.assert_array_equal(sorted_rows(rows), sorted_rows(expected))


def test_digits_classes_are_shuffled_not_in_blocks(digits):
    assert (np.diff(digits.y_train) != 0).mean() > 0.5


def test_digits_training_split_is_standardized(digits):
    x = digits.x_train.astype(np.float64)  # float32 sums would add their own rounding
    std = x.std(axis=0)
    varying = std > 0
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(std[varying], 1, rtol=1e-5)
    # Corner pixels that are 0 in every training image stay 0: shifted, never divided by 0.
    assert 0 < (~varying).sum() < 10
    assert np.all(digits.x_train[:, ~varying] == 0)


def test_digits_test_split_is_standardized_with_training_statistics_only(digits):
    raw = data.load_digits(standardize=False)
    mean, std = raw.x_train.mean(axis=0), raw.x_train.std(axis=0)
    std[std == 0] = 1
    np.testing.assert_allclose(digits.x_test * std + mean, raw.x_test, atol=1e-4)
    # ...which leaves the test split close to, but not exactly at, mean 0.
    assert 1e-4 < np.abs(digits.x_test.mean(axis=0)).max() < 0.5


def test_digits_split_depends_on_the_seed_only(digits):
    again = data.load_digits(seed=0)
    other = data.load_digits(seed=1)
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_test, digits.y_test)
    assert not np.array_equal(other.y_train, digits.y_train)


@pytest.mark.parametrize("test_fraction", [0, 1, -0.1, 1.5])
def test_digits_test_fraction_must_be_a_fraction(test_fraction):
    with pytest.raises(ValueError, match="test_fraction must be between 0 and 1"):
        data.load_digits(test_fraction=test_fraction)


def test_digits_to_torch(digits):
    import torch

    x, y = digits.to_torch("test")
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_array_equal(x.numpy(), digits.x_test)
    np.testing.assert_array_equal(y.numpy(), digits.y_test)
    with pytest.raises(ValueError, match='split must be "train" or "test"'):
        digits.to_torch("validation")


def test_load_digits_reads_the_copy_inside_scikit_learn(monkeypatch, tmp_path):
    def refuse(*args):
        raise AssertionError("load_digits tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))
    split = data.load_digits()
    assert len(split.x_train) > 1000
    assert list(tmp_path.iterdir()) == []  # nothing cached in the data home either


def test_importing_bn_course_data_loads_neither_torch_nor_sklearn():
    code = ("import sys, bn_course.data; "
            "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


# --- generated data ---

def test_population_sample_has_the_population_statistics():
    population = data.gaussian_population(5, seed=3)
    x = population.sample(200_000, seed=4)
    assert x.shape == (200_000, 5) and x.dtype == np.float64
    # Standard errors: std / sqrt(n) ~ 0.01 for the largest std (5); allow 5 of them.
    np.testing.assert_allclose(x.mean(axis=0), population.mean, atol=0.05)
    np.testing.assert_allclose(x.var(axis=0), population.var, rtol=0.02)


def test_gaussian_population_spreads_offsets_and_scales_over_the_ranges():
    population = data.gaussian_population(200, seed=0, mean_range=(-5, 5), std_range=(0.5, 5))
    assert population.mean.min() >= -5 and population.mean.max() <= 5
    assert population.std.min() >= 0.5 and population.std.max() <= 5
    # Log-uniform scales: about half below the geometric middle, sqrt(0.5 * 5) ~ 1.58.
    assert 0.35 < (population.std < np.sqrt(2.5)).mean() < 0.65
    assert population.mean.std() > 2 and np.ptp(population.std) > 3


def test_population_sample_is_seeded():
    population = data.gaussian_population(3, seed=0)
    np.testing.assert_array_equal(population.sample(10, seed=1), population.sample(10, seed=1))
    assert not np.array_equal(population.sample(10, seed=1), population.sample(10, seed=2))
    rng = np.random.default_rng(7)
    assert not np.array_equal(population.sample(10, rng), population.sample(10, rng))


def test_gaussian_blobs_features_differ_in_offset_and_scale():
    x = data.gaussian_blobs(5000, 8, seed=1)
    assert x.shape == (5000, 8) and x.dtype == np.float64
    means, stds = x.mean(axis=0), x.std(axis=0)
    assert np.ptp(means) > 2 and stds.max() / stds.min() > 2
    assert np.all(np.abs(means) < 5.5) and np.all((stds > 0.4) & (stds < 5.5))


def test_gaussian_blobs_is_seeded():
    np.testing.assert_array_equal(data.gaussian_blobs(20, 3, seed=5),
                                  data.gaussian_blobs(20, 3, seed=5))
    assert not np.array_equal(data.gaussian_blobs(20, 3, seed=5),
                              data.gaussian_blobs(20, 3, seed=6))


def test_drifting_stream_shapes_and_true_means():
    stream = data.drifting_stream(num_batches=30, batch_size=16, num_features=3,
                                  drift_per_batch=0.25, seed=0)
    assert stream.batches.shape == (30, 16, 3) and stream.means.shape == (30, 3)
    np.testing.assert_allclose(stream.means[0], 0)
    np.testing.assert_allclose(np.diff(stream.means, axis=0), 0.25)


@pytest.mark.parametrize("drift", [0.0, 0.05, -0.3, [0.1, -0.2]])
def test_drifting_stream_batch_means_drift_by_the_requested_amount(drift):
    num_batches = 50
    stream = data.drifting_stream(num_batches, batch_size=400, num_features=2,
                                  drift_per_batch=drift, seed=1)
    batch_means = stream.batches.mean(axis=1)  # (T, D)
    slope = np.polyfit(np.arange(num_batches), batch_means, deg=1)[0]
    # Standard error of the slope: 1 / sqrt(400 * sum((t - mean t)^2)) ~ 5e-4.
    np.testing.assert_allclose(slope, np.broadcast_to(drift, (2,)), atol=3e-3)
    np.testing.assert_allclose(batch_means, stream.means, atol=0.25)


def test_drifting_stream_noise_has_the_requested_spread():
    stream = data.drifting_stream(20, batch_size=500, num_features=1, drift_per_batch=1.0,
                                  seed=2, noise_std=0.3)
    residual = stream.batches - stream.means[:, None, :]
    assert abs(residual.std() - 0.3) < 0.01


def test_drifting_stream_is_seeded():
    first = data.drifting_stream(5, 4, seed=3).batches
    np.testing.assert_array_equal(first, data.drifting_stream(5, 4, seed=3).batches)
    assert not np.array_equal(first, data.drifting_stream(5, 4, seed=4).batches)


def test_the_bundled_digits_are_scikit_learns_without_importing_it():
    script = ("import sys, bn_course.data as d; x, y = d._bundled_digits(); "
              "print('sklearn' in sys.modules, x.shape, y.shape)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    assert out == ["False", "(1797, 64) (1797,)\n"]
    from sklearn.datasets import load_digits as sklearn_digits

    x, y = data._bundled_digits()
    reference = sklearn_digits()
    assert np.array_equal(x, reference.data) and np.array_equal(y, reference.target)
