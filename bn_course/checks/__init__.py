"""Checkers that say *what* is wrong.

    result = check("batch_var", batch_var)   # .passed, .message, .mistake
    grade("batch_var", batch_var, group="basic")   # nbgrader test cells
    progress = Progress("01"); progress.check("batch_var", batch_var); progress.summary()

Each notebook's exercises, with their hidden cases, catalogued mistakes and
probes, live in one module (``nb01_batch_statistics`` ... ``nb10_across_devices``); the
engine that plays and compares them is ``_core``. ``check`` never raises because
of the candidate: exceptions, wrong types and shapes, NaN, modified inputs,
endless loops and calls to a ready-made batch norm all become a failed result
with a message.
"""

import html
from dataclasses import dataclass

from bn_course.checks import (
    nb01_batch_statistics,
    nb02_normalizing,
    nb03_scale_and_shift,
    nb04_train_vs_eval,
    nb05_backward,
    nb06_pytorch_module,
    nb07_training_comparisons,
    nb08_beyond,
    nb09_in_practice,
    nb10_across_devices,
)
from bn_course.checks._core import DETECTED, GROUPS, CheckResult, verdict
from bn_course.numerics import relative_error

__all__ = [
    "EXERCISES",
    "GROUPS",
    "NOTEBOOK_EXERCISES",
    "CheckResult",
    "Progress",
    "catalogue",
    "check",
    "grade",
    "relative_error",
]

NOTEBOOK_MODULES = {
    "01": nb01_batch_statistics, "02": nb02_normalizing, "03": nb03_scale_and_shift,
    "04": nb04_train_vs_eval, "05": nb05_backward, "06": nb06_pytorch_module,
    "07": nb07_training_comparisons, "08": nb08_beyond, "09": nb09_in_practice,
    "10": nb10_across_devices,
}
NOTEBOOK_EXERCISES = {notebook: tuple(exercise.name for exercise in module.EXERCISES)
                      for notebook, module in NOTEBOOK_MODULES.items()}
EXERCISES = {exercise.name: exercise
             for module in NOTEBOOK_MODULES.values() for exercise in module.EXERCISES}


def catalogue():
    """Every (exercise name, mistake) pair: the known mistakes, detected ones included."""
    return [(name, mistake) for name, exercise in EXERCISES.items()
            for mistake in exercise.mistakes] + [(None, m) for m in DETECTED.values()]


def check(name, candidate, groups=GROUPS):
    """Check a candidate against every hidden case of an exercise; never raises
    because of the candidate. Returns a CheckResult (shown nicely in Jupyter)."""
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; known: {', '.join(EXERCISES)}")
    if isinstance(groups, str):
        groups = (groups,)
    return verdict(EXERCISES[name], candidate, groups)


def grade(name, candidate, group="basic"):
    """For nbgrader test cells: check one group of cases; AssertionError on failure.

    The message ends with the catalogue ids it named (``[mistake: ID]``, or
    ``[observation: ID]``), one a line, for the class report. Returns None, so a
    test cell that ends with this call has no value (nbgrader then gives full
    credit when nothing raised)."""
    result = check(name, candidate, groups=(group,))
    if not result.passed:
        tags = [f"[mistake: {m}]" for m in (result.mistake or "").split("+") if m]
        tags += [f"[observation: {result.observation}]"] if result.observation else []
        raise AssertionError("\n".join([result.message, *tags]))


class Progress:
    """A notebook's tally of self-checks: ``progress.check(...)`` in each
    self-check cell, ``progress.summary()`` at the end."""

    def __init__(self, notebook):
        if notebook not in NOTEBOOK_EXERCISES:
            raise ValueError(f"unknown notebook {notebook!r}; known: "
                             f"{', '.join(NOTEBOOK_EXERCISES)}")
        self.notebook = notebook
        self.results = {}

    def check(self, name, candidate):
        result = check(name, candidate)
        self.results[name] = result
        return result

    def summary(self):
        return _Summary(self.notebook, [
            self.results.get(name) or CheckResult(name, False, "not checked yet")
            for name in NOTEBOOK_EXERCISES[self.notebook]])


@dataclass(frozen=True)
class _Summary:
    notebook: str
    results: list

    @property
    def passed(self):
        return sum(result.passed for result in self.results)

    def __str__(self):
        lines = [f"Notebook {self.notebook}: {self.passed}/{len(self.results)} exercises pass"]
        lines += [f"  {'PASS' if r.passed else 'FAIL'} {r.name}" for r in self.results]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self):
        rows = "".join(
            f"<li>{'&#10004;' if r.passed else '&#10008;'} <code>{html.escape(r.name)}</code></li>"
            for r in self.results)
        return (f"<b>Notebook {self.notebook}: {self.passed}/{len(self.results)} exercises "
                f"pass</b><ul style='list-style:none'>{rows}</ul>")
