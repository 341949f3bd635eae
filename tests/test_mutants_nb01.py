"""Mutation suite for notebook 01 (batch statistics): each wrong implementation below must
be named with its catalogue id (see tests/mutation.py)."""

import numpy as np
import pytest

# Imported here, not inside the candidates: the checker gives each call of a candidate a
# time limit, and a first `import torch` would spend a good part of it.
import torch
from mutation import Mutants, as_tensor, assert_diagnosed, missing_mutants

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


# --- the tests --------------------------------------------------------------

def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "01")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
