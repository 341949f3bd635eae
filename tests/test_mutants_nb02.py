"""Mutation suite for notebook 02 (normalizing): each wrong implementation below must
be named with its catalogue id (see tests/mutation.py)."""

import numpy as np
import pytest
from mutation import Mutants, assert_diagnosed, missing_mutants

MUTANTS = Mutants()


# --- normalize --------------------------------------------------------------

@MUTANTS.make("normalize", "eps-outside-sqrt")
def normalize_eps_on_std(x, mean, var, eps=1e-5):
    return (x - mean[np.newaxis, :]) / (var ** 0.5 + eps)


@MUTANTS.make("normalize", "forgot-eps")
def normalize_no_eps(x, mean, var, eps=1e-5):
    return (x - mean) * var ** -0.5


@MUTANTS.make("normalize", "var-instead-of-std")
def normalize_by_variance(x, mean, var, eps=1e-5):
    return np.divide(np.subtract(x, mean), np.add(var, eps))


@MUTANTS.make("normalize", "forgot-to-centre")
def normalize_scale_only(x, mean, var, eps=1e-5):
    return x * (1.0 / np.sqrt(var + eps))


@MUTANTS.make("normalize", "ignores-given-statistics")
def normalize_with_own_statistics(x, mean, var, eps=1e-5):
    own_mean = x.mean(axis=0, keepdims=True)
    own_var = np.var(x, axis=0, keepdims=True)
    return (x - own_mean) / np.sqrt(own_var + eps)


@MUTANTS.make("normalize", "modifies-input")
def normalize_centring_in_place(x, mean, var, eps=1e-5):
    x -= mean
    return x / np.sqrt(var + eps)


# --- the tests --------------------------------------------------------------

def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "02")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
