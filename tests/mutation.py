"""Shared machinery of the mutation suites (tests/test_mutants_nbNN.py).

Every catalogued mistake is made again in those files, written the way a student
might write it and differently from the catalogue's own variant (np.var vs sums,
keepdims, einsum, loops, torch on NumPy input, in-place updates, float32
arithmetic...), often reproducing a pattern seen in real students' code (the
comment above a mutant names it). The checker must name each one with the
catalogue's id, which shows that a mistake is recognised by what it computes,
not by how it is spelled.
"""

import numpy as np
import torch

from bn_course.checks import EXERCISES, NOTEBOOK_EXERCISES, check


class Mutants(list):
    """(exercise, mistake id, implementation) triples; ``@mutants.make(exercise, id)``
    registers the decorated function or class. An id "a+b" is two mistakes at once;
    "observation:ID" is a wrong answer that no catalogue entry fits, which a probe
    must describe with observation ID."""

    def make(self, exercise, mistake_id):
        def register(implementation):
            self.append((exercise, mistake_id, implementation))
            return implementation
        return register

    def ids(self):
        return [f"{e}-{i}-{impl.__name__}" for e, i, impl in self]


def assert_diagnosed(exercise, mistake_id, implementation):
    result = check(exercise, implementation)
    assert not result.passed
    assert len(result.message.splitlines()) <= 6, result.message
    if mistake_id.startswith("observation:"):
        assert result.mistake is None, result.message
        assert result.observation == mistake_id.split(":", 1)[1], result.message
        return
    assert result.mistake == mistake_id, result.message
    for part in mistake_id.split("+"):  # two mistakes at once: both are named
        known = EXERCISES[exercise].mistake(part)
        assert implementation is not known.variant
        assert known.diagnosis in result.message
        assert known.hint in result.message


def missing_mutants(mutants, notebook):
    """The catalogue entries of a notebook's exercises that no mutant makes."""
    covered = {(exercise, part) for exercise, mistake_id, _ in mutants
               for part in mistake_id.split("+") if not part.startswith("observation:")}
    return sorted({(name, m.id) for name in NOTEBOOK_EXERCISES[notebook]
                   for m in EXERCISES[name].mistakes} - covered)


def student_x_hat(x, eps, ddof=0):
    """x_hat from explicit sums, as a student writes it before knowing np.var."""
    n = x.shape[0]
    mu = x.sum(axis=0) / n
    var = ((x - mu) ** 2).sum(axis=0) / (n - ddof)
    return (x - mu) / np.sqrt(var + eps)


def as_tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a))
