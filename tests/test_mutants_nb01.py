"""Mutation suite for notebook 01 (batch statistics): each wrong implementation below must
be named with its catalogue id (see tests/mutation.py)."""

import numpy as np
import pytest

# Imported here, not inside the candidates: the checker gives each call of a candidate a
# time limit, and a first `import torch` would spend a good part of it.
import torch
from mutation import Mutants, as_tensor, assert_diagnosed, missing_mutants

from bn_course.checks import check

MUTANTS = Mutants()


# --- batch_mean -------------------------------------------------------------

@MUTANTS.make("batch_mean", "axis-0-vs-1")
def mean_per_example_einsum(x):
    return np.einsum("nd->n", x) / x.shape[1]


@MUTANTS.make("batch_mean", "axis-0-vs-1")
def mean_per_example_loop(x):
    return np.array([sum(row) / len(row) for row in x])


@MUTANTS.make("batch_mean", "no-axis")
def mean_of_everything(x):
    return x.sum() / x.size


@MUTANTS.make("batch_mean", "sum-not-mean")
def column_sums_in_input_dtype(x):
    return np.sum(x, axis=0, dtype=x.dtype, keepdims=True)


@MUTANTS.make("batch_mean", "sum-not-mean")
def column_sums_by_matmul(x):
    return np.ones(x.shape[0], dtype=x.dtype) @ x


# Forum pattern ("my BatchNorm gives different results"): torch.mean over the whole tensor,
# with no dim, on NumPy input converted back.
@MUTANTS.make("batch_mean", "no-axis")
def mean_torch_without_dim(x):
    return torch.mean(as_tensor(x)).item()


# From-scratch libraries that store examples as columns, (D, N), and average over axis=1;
# keepdims leaves a column vector.
@MUTANTS.make("batch_mean", "axis-0-vs-1")
def mean_columns_layout_keepdims(x):
    return np.mean(x, axis=1, keepdims=True)


# A mean over the transposed array, axis=0: the same slip, spelled the other way round.
@MUTANTS.make("batch_mean", "axis-0-vs-1")
def mean_of_transpose(x):
    return x.T.mean(axis=0)


# np.add.reduce: the sum without the division.
@MUTANTS.make("batch_mean", "sum-not-mean")
def column_sums_add_reduce(x):
    return np.add.reduce(x, axis=0)


# "Centre the data" read as one mean for the whole batch, tiled to the right shape.
@MUTANTS.make("batch_mean", "one-mean-for-all-features")
def one_mean_tiled(x):
    return np.tile(np.mean(x), x.shape[1])


# The robust statistic instead of the asked one, by sorting each column (for an even N,
# the mean of the two middle values, as np.median does).
@MUTANTS.make("batch_mean", "median-not-mean")
def median_by_sorting(x):
    ordered = np.sort(x, axis=0)
    n = len(x)
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2


# x.astype(np.float32) "to save memory" before averaging: right to 7 digits, wrong only
# where large values cancel.
@MUTANTS.make("batch_mean", "observation:loses-digits")
def mean_in_float32(x):
    return np.mean(x.astype(np.float32), axis=0, dtype=np.float32)


# The sum divided by the number of columns, len(x[0]), instead of the number of rows.
@MUTANTS.make("batch_mean", "observation:constant-factor")
def mean_over_row_length(x):
    return x.sum(axis=0) / len(x[0])


# --- batch_var --------------------------------------------------------------

@MUTANTS.make("batch_var", "axis-0-vs-1")
def var_per_example(x):
    centred = x - x.mean(axis=1, keepdims=True)
    return (centred ** 2).mean(axis=1)


@MUTANTS.make("batch_var", "unbiased-variance")
def var_over_n_minus_one(x):
    n = x.shape[0]
    centred = x - x.sum(axis=0) / n
    return (centred * centred).sum(axis=0) / (n - 1)


@MUTANTS.make("batch_var", "unbiased-variance")
def var_with_torch_default(x):
    return torch.var(as_tensor(x), dim=0).numpy()


@MUTANTS.make("batch_var", "std-instead-of-var")
def root_mean_square_deviation(x):
    centred = x - x.mean(axis=0, keepdims=True)
    return np.sqrt(np.mean(centred ** 2, axis=0, keepdims=True))


@MUTANTS.make("batch_var", "forgot-to-centre")
def mean_square_einsum(x):
    return np.einsum("nd,nd->d", x, x) / len(x)


@MUTANTS.make("batch_var", "no-axis")
def var_of_everything(x):
    flat = x.ravel()
    return ((flat - flat.mean()) ** 2).mean()


# Textbook one-pass formula E[x^2] - E[x]^2, as in many from-scratch layers.
@MUTANTS.make("batch_var", "one-pass-variance")
def var_one_pass(x):
    return np.mean(x ** 2, axis=0) - np.mean(x, axis=0) ** 2


# The same one-pass formula from running sums, in a loop over features.
@MUTANTS.make("batch_var", "one-pass-variance")
def var_one_pass_sums_loop(x):
    n = len(x)
    out = np.empty(x.shape[1], dtype=x.dtype)
    for j in range(x.shape[1]):
        s, s2 = x[:, j].sum(), (x[:, j] * x[:, j]).sum()
        out[j] = s2 / n - (s / n) ** 2
    return out


# Python's statistics.variance (the sample variance, N - 1), column by column.
@MUTANTS.make("batch_var", "unbiased-variance")
def var_statistics_module(x):
    import statistics
    return np.array([statistics.variance(column) for column in x.T.tolist()])


# Two at once: the standard deviation of pandas/R habits, with ddof=1 (np.std(..., ddof=1)).
@MUTANTS.make("batch_var", "unbiased-variance+std-instead-of-var")
def var_sample_std(x):
    return np.std(x, axis=0, ddof=1)


# Two at once: per-example (axis=1) AND the unbiased estimator (torch.var's default).
@MUTANTS.make("batch_var", "axis-0-vs-1+unbiased-variance")
def var_per_example_torch_default(x):
    return torch.var(as_tensor(x), dim=1).numpy()


# torch.var with no dim, biased: one variance over every value.
@MUTANTS.make("batch_var", "no-axis")
def var_torch_without_dim(x):
    return torch.var(as_tensor(x), unbiased=False).numpy()


# Forgot to centre, spelled with keepdims and a square: the mean square of x.
@MUTANTS.make("batch_var", "forgot-to-centre")
def mean_square_keepdims(x):
    return np.square(x).mean(axis=0, keepdims=True)


# Forgot to centre AND divided by N - 1.
@MUTANTS.make("batch_var", "unbiased-variance+forgot-to-centre")
def sum_of_squares_over_n_minus_one(x):
    return (x * x).sum(axis=0) / (x.shape[0] - 1)


# The standard deviation from torch, biased: torch.std(..., unbiased=False).
@MUTANTS.make("batch_var", "std-instead-of-var")
def var_torch_std(x):
    return torch.std(as_tensor(x), dim=0, unbiased=False).numpy()


# torch.Tensor(x) makes float32 whatever x was: right to about 7 digits, wrong where the
# values are near 1e4 and 1e6.
@MUTANTS.make("batch_var", "observation:loses-digits")
def var_through_float32_tensor(x):
    return torch.Tensor(x).var(dim=0, unbiased=False).numpy()


# Two at once, in float32: torch.Tensor(x) and torch.var's unbiased default.
@MUTANTS.make("batch_var", "observation:constant-factor")
def var_float32_tensor_unbiased(x):
    return torch.Tensor(x).var(dim=0).numpy()


# Centred on np.mean(x), the mean of every value, as a global standardization does.
@MUTANTS.make("batch_var", "global-mean-deviations")
def var_around_grand_mean(x):
    return np.mean(np.square(x - np.mean(x)), axis=0)


# The L1 spread: the mean of |x - mean|, feature by feature in a loop.
@MUTANTS.make("batch_var", "mean-absolute-deviation")
def mean_absolute_deviation_loop(x):
    return np.array([np.abs(column - column.mean()).mean() for column in x.T])


# The count taken from the wrong axis: n = x.shape[1] is D, the number of features.
@MUTANTS.make("batch_var", "divides-by-features")
def var_over_wrong_count(x):
    n = x.shape[1]
    return ((x - x.mean(axis=0)) ** 2).sum(axis=0) / n


# The one-pass formula in float32 (x cast to save memory): at values near 1e6 the two
# terms agree to all of float32's digits and their difference even goes negative.
@MUTANTS.make("batch_var", "observation:negative-variance")
def var_one_pass_float32(x):
    x32 = x.astype(np.float32)
    mean = np.einsum("nd->d", x32) / np.float32(len(x))
    return np.einsum("nd,nd->d", x32, x32) / np.float32(len(x)) - mean * mean


# The one-pass terms in the wrong order, mean(x)**2 - mean(x**2): negative everywhere,
# which is a sign slip, not lost digits (no negative-variance sentence).
@MUTANTS.make("batch_var", "observation:constant-factor")
def var_one_pass_terms_swapped(x):
    return np.mean(x, axis=0) ** 2 - np.mean(x * x, axis=0)


# --- the tests --------------------------------------------------------------

def test_a_factor_of_n_over_d_is_named():
    message = check("batch_mean", mean_over_row_length).message
    assert "(N/D with N = 8, D = 3: as if divided by D instead of N)" in message, message


def test_a_sign_slip_is_not_taken_for_lost_digits():
    message = check("batch_var", var_one_pass_terms_swapped).message
    assert "negative values" not in message, message


def test_a_float64_mean_computed_in_float64_passes_the_cancelling_case():
    """The case with +-1e6 values is there for float32 arithmetic; float64 sums by any
    route stay within its tolerance."""
    for candidate in (lambda x: x.mean(axis=0), lambda x: np.einsum("nd->d", x) / len(x),
                      lambda x: np.array([sum(column) / len(column) for column in x.T])):
        result = check("batch_mean", candidate)
        assert result.passed, result.message


def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "01")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
