"""Mutation suite for notebook 07 (training comparisons): each wrong implementation below must
be named with its catalogue id (see tests/mutation.py)."""

import numpy as np
import pytest
from mutation import Mutants, assert_diagnosed, missing_mutants

MUTANTS = Mutants()


# --- notebook 07: reading training histories ---------------------------------

@MUTANTS.make("steps_to_reach", "returns-index")
def steps_position(steps, accuracy, target):
    for t, value in enumerate(accuracy):
        if value >= target:
            return t
    raise ValueError("not reached")


@MUTANTS.make("steps_to_reach", "index-times-interval")
def steps_from_spacing(steps, accuracy, target):
    hits = [t for t, value in enumerate(accuracy) if value >= target]
    if not hits:
        raise ValueError("not reached")
    spacing = steps[1] - steps[0] if len(steps) > 1 else 0
    return hits[0] * spacing


@MUTANTS.make("steps_to_reach", "strict-inequality")
def steps_strictly_above(steps, accuracy, target):
    for step, value in zip(steps, accuracy):
        if value > target:
            return step
    raise ValueError("not reached")


@MUTANTS.make("steps_to_reach", "stays-above")
def steps_for_good(steps, accuracy, target):
    answer = None
    for step, value in zip(steps, accuracy):
        if value < target:
            answer = None
        elif answer is None:
            answer = step
    if answer is None:
        raise ValueError("not reached")
    return answer


@MUTANTS.make("steps_to_reach", "no-error-when-never-reached")
def steps_index_error(steps, accuracy, target):
    return np.asarray(steps)[np.asarray(accuracy) >= target][0]


@MUTANTS.make("percentile_trace", "axis-0-vs-1")
def percentiles_over_time(values, q):
    return np.stack([np.percentile(values[:, :], p, axis=0) for p in q], axis=1)


@MUTANTS.make("percentile_trace", "transposed-output")
def percentiles_one_row_per_q(values, q):
    return np.array([[np.percentile(row, p) for row in values] for p in q])


@MUTANTS.make("percentile_trace", "no-axis")
def percentiles_of_everything(values, q):
    return np.percentile(values.ravel(), q)


@MUTANTS.make("percentile_trace", "fraction-not-percent")
def percentiles_as_fractions(values, q):
    return np.quantile(values, np.asarray(q) / 10000, axis=1).T


@MUTANTS.make("percentile_trace", "rank-rounded-down")
def percentiles_rank_floor(values, q):
    ordered = np.sort(values, axis=1)
    ranks = np.floor(np.asarray(q) / 100 * (values.shape[1] - 1)).astype(int)
    return ordered[:, ranks]


@MUTANTS.make("percentile_trace", "rank-from-n")
def percentiles_rank_of_n(values, q):
    ordered = np.sort(values, axis=1)
    n = values.shape[1]
    return np.stack([ordered[:, min(int(p * n / 100), n - 1)] for p in q], axis=1)


@MUTANTS.make("percentile_trace", "modifies-input")
def percentiles_sorting_in_place(values, q):
    values.sort(axis=1)
    n = values.shape[1]
    positions = np.asarray(q) / 100 * (n - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, n - 1)
    weight = positions - low
    return values[:, low] * (1 - weight) + values[:, high] * weight


# --- the tests --------------------------------------------------------------

def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "07")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
