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


# Forum question "my BatchNorm differs from PyTorch": eps added to the normalized value.
@MUTANTS.make("normalize", "eps-after-division")
def normalize_eps_added_last(x, mean, var, eps=1e-5):
    return (x - mean) / np.sqrt(var) + eps


# Synchronized-BatchNorm style: eps as a floor of the variance, sqrt(max(var, eps)).
@MUTANTS.make("normalize", "eps-as-floor")
def normalize_variance_clamped(x, mean, var, eps=1e-5):
    return (x - mean) / np.sqrt(np.maximum(var, eps))


# The same clamp, written with np.clip on the standard deviation's square.
@MUTANTS.make("normalize", "eps-as-floor")
def normalize_variance_clipped(x, mean, var, eps=1e-5):
    return (x - mean) * np.clip(var, eps, None) ** -0.5


# A centred array that is centred once more before dividing.
@MUTANTS.make("normalize", "mean-subtracted-twice")
def normalize_centres_the_centred(x, mean, var, eps=1e-5):
    centred = x - mean
    return (centred - mean) / np.sqrt(var + eps)


# eps outside the square root, through torch on NumPy input (first-time import inside).
@MUTANTS.make("normalize", "eps-outside-sqrt")
def normalize_torch_std_plus_eps(x, mean, var, eps=1e-5):
    import torch
    t = torch.from_numpy(x)
    return ((t - torch.from_numpy(mean)) / (torch.from_numpy(var).sqrt() + eps)).numpy()


# A loop over features that forgets eps.
@MUTANTS.make("normalize", "forgot-eps")
def normalize_loop_without_eps(x, mean, var, eps=1e-5):
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        out[:, j] = (x[:, j] - mean[j]) / var[j] ** 0.5
    return out


# Two at once: statistics recomputed from x (ignoring the arguments) AND eps on the std.
@MUTANTS.make("normalize", "eps-outside-sqrt+ignores-given-statistics")
def normalize_own_statistics_eps_on_std(x, mean, var, eps=1e-5):
    return (x - x.mean(axis=0)) / (x.std(axis=0) + eps)


# Two at once: the variance as divisor (no square root) AND no centring.
@MUTANTS.make("normalize", "var-instead-of-std+forgot-to-centre")
def normalize_scale_by_variance(x, mean, var, eps=1e-5):
    return x / (var + eps)


# Two at once: eps after dividing, and centred twice.
@MUTANTS.make("normalize", "eps-after-division+mean-subtracted-twice")
def normalize_twice_centred_eps_last(x, mean, var, eps=1e-5):
    return (x - 2 * mean) / np.sqrt(var) + eps


# Keras' default epsilon (1e-3) in the signature; otherwise right.
@MUTANTS.make("normalize", "observation:wrong-default")
def normalize_keras_default_eps(x, mean, var, eps=1e-3):
    return (x - mean) / np.sqrt(var + eps)


# Modifies x in place through a view that looks like a copy (x[:] is the same memory).
@MUTANTS.make("normalize", "modifies-input")
def normalize_through_a_view(x, mean, var, eps=1e-5):
    out = x[:]
    out -= mean
    out /= np.sqrt(var + eps)
    return out


# "Scale by the standard deviation" read the wrong way: un-normalizing instead.
@MUTANTS.make("normalize", "multiplies-by-std")
def normalize_times_std(x, mean, var, eps=1e-5):
    return np.multiply(x - mean, np.power(var + eps, 0.5))


# Dividing first, then subtracting the mean that belonged before the division.
@MUTANTS.make("normalize", "divides-before-centring")
def normalize_divide_first(x, mean, var, eps=1e-5):
    inverse_std = 1.0 / np.sqrt(var + eps)
    return x * inverse_std - mean


# --- the tests --------------------------------------------------------------

def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "02")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
