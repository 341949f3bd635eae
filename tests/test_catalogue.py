"""The catalogue of mistakes as a whole: each variant is named by its own id, and
within an exercise no two variants (nor a variant and the reference) compute nearly
the same thing, or one diagnosis would shadow the other. (Mutants written the way
students write are in tests/test_mutants_nbNN.py.)"""

import math

import numpy as np
import pytest

from bn_course.checks import EXERCISES, GROUPS, catalogue, check, relative_error
from bn_course.checks._core import DETECTED, CandidateProblem

# (exercise, mistake) for every exercise's own entry; the generic detected ones aside.
CATALOGUE = [(name, mistake) for name, mistake in catalogue() if name is not None]


def playable(name, mistake):
    """The implementation that makes the mistake, or None for one found by inspection
    alone (two attributes that share one array)."""
    if mistake.variant is None and not mistake.knobs:
        return None
    return EXERCISES[name].implementation_of(mistake)


PLAYABLE = [(name, m) for name, m in CATALOGUE if playable(name, m) is not None]


@pytest.mark.parametrize("name, mistake", PLAYABLE, ids=[f"{n}-{m.id}" for n, m in PLAYABLE])
def test_catalogue_variant_is_diagnosed_as_itself(name, mistake):
    result = check(name, playable(name, mistake))
    assert not result.passed
    assert result.mistake == mistake.id, result.message


# --- the catalogue's variants are far apart ---------------------------------

# Two implementations count as different when some output on some hidden case differs by
# at least this relative error: far above both tolerances (1e-6 float64, 1e-4 float32),
# so that a student's rounding cannot make one variant pass for another.
DISTINCT = 1e-2
# Precision mistakes are matched by where they fail, not by their (rounding) values.
MATCHED = [(name, m) for name, m in PLAYABLE if m.id not in DETECTED and not m.precision]


def outputs_on_every_case(exercise, implementation):
    with np.errstate(all="ignore"):
        return [outputs_or_none(case, implementation)
                for group in GROUPS for case in exercise.cases(group)]


def outputs_or_none(case, implementation):
    """None where the implementation raises: a variant fails where the students' code it
    stands for fails (a scale that does not broadcast on most shapes)."""
    try:
        return case.play(implementation)
    except CandidateProblem:
        raise
    except Exception:  # noqa: BLE001 -- whatever the variant's arithmetic raises
        return None


def output_distance(a, b):
    """Relative error between two outputs; inf when they differ in kind, shape or NaN/inf."""
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return 0.0 if type(a) is type(b) and a == b else math.inf
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == b.size and a.shape != b.shape and 1 in a.shape + b.shape:
        a = a.reshape(b.shape)  # (1, D) and (D,) stand for the same statistic
    if a.shape != b.shape:
        return math.inf
    finite = np.isfinite(a)
    if not np.array_equal(finite, np.isfinite(b)) or not np.array_equal(
            a[~finite], b[~finite], equal_nan=True):
        return math.inf
    return relative_error(a[finite], b[finite])


def distance(played_a, played_b):
    """The largest distance over the cases both played (0 when they share none: two
    implementations that are never compared cannot be told apart)."""
    return max((output_distance(value_a, value_b)
                for outputs_a, outputs_b in zip(played_a, played_b)
                if outputs_a is not None and outputs_b is not None
                for (_, value_a), (_, value_b) in zip(outputs_a, outputs_b)), default=0.0)


@pytest.mark.parametrize("exercise_name", sorted({name for name, _ in MATCHED}))
def test_variants_are_pairwise_distinct_and_differ_from_the_reference(exercise_name):
    exercise = EXERCISES[exercise_name]
    played = {"reference": outputs_on_every_case(exercise, exercise.reference)}
    for name, mistake in MATCHED:
        if name != exercise_name:
            continue
        try:
            played[mistake.id] = outputs_on_every_case(exercise, playable(name, mistake))
        except CandidateProblem as problem:
            # Named by the case before any output is compared (a module whose buffers
            # are plain attributes): no output to confuse with another variant's.
            if problem.mistake != mistake.id:
                raise
    names = list(played)
    distances = {(a, b): distance(played[a], played[b])
                 for i, a in enumerate(names) for b in names[i + 1:]}
    too_close = {pair: d for pair, d in distances.items() if d < DISTINCT}
    assert not too_close, too_close
