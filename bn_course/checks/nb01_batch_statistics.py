"""Notebook 01, batch statistics: ``batch_mean`` and ``batch_var``.

Each exercise here is one ``Exercise``: the reference answer, the hidden cases,
a ``build(**knobs)`` that writes the answer with chosen mistakes switched on,
the catalogue of mistakes (one knob each, or a ready variant), and the probes.
The checker tries every mistake alone and in pairs (knobs that do not collide).
"""

import numpy as np

from bn_course.checks import _cases, _probes
from bn_course.checks._core import Exercise, knob_mistake
from bn_course.reference import numpy as ref

AXIS_HINT = ("x has shape (N, D): one row per example. Reduce over the batch axis, axis=0, "
             "to get one value per feature.")
BIASED_HINT = ("The batch variance divides by N, not N - 1 (NumPy's default ddof=0; torch.var's "
               "default divides by N - 1); PyTorch normalizes with the divide-by-N variance.")


def statistic_cases(group):
    return [_cases.function_case(desc, {"x": x}, float32=x.dtype == np.float32)
            for desc, x in _cases.shapes(group)]


def _mean_with(axis=0, divide=True):
    def batch_mean(x):
        total = x.sum(axis=axis)
        return total / (x.size if axis is None else x.shape[axis]) if divide else total
    return batch_mean


def _var_with(axis=0, ddof=0, root=False, centred=True, one_pass=False):
    """batch_var with one knob per classic mistake."""

    def batch_var(x):
        n = x.size if axis is None else x.shape[axis]
        if one_pass:
            var = (x * x).sum(axis=axis) / n - (x.sum(axis=axis) / n) ** 2
            var = var * n / (n - ddof)
        else:
            deviations = x - x.mean(axis=axis, keepdims=True) if centred else x
            var = (deviations ** 2).sum(axis=axis) / (n - ddof)
        return np.sqrt(var) if root else var

    return batch_var


BATCH_MEAN = Exercise(
    "batch_mean", ref.batch_mean, "batch_mean(x)", statistic_cases, build=_mean_with,
    hint="One mean per feature, taken over the examples (the batch axis): shape (D,).",
    probes=(_probes.loses_digits, _probes.constant_factor),
    mistakes=[
        knob_mistake("axis-0-vs-1", "You averaged over the features of each example (axis=1), "
                     "giving one value per example instead of one per feature.", AXIS_HINT,
                     axis=1),
        knob_mistake("no-axis", "You averaged over every value in the batch, giving a single "
                     "number.", AXIS_HINT, axis=None),
        knob_mistake("sum-not-mean", "You returned the sum over the batch, not the mean.",
                     "Divide the sum by the number of examples N = x.shape[0].", divide=False),
    ])

BATCH_VAR = Exercise(
    "batch_var", ref.batch_var, "batch_var(x)", statistic_cases, build=_var_with,
    hint="Per feature: the mean of the squared deviations from that feature's mean.",
    probes=(_probes.loses_digits, _probes.constant_factor),
    mistakes=[
        knob_mistake("axis-0-vs-1", "You took the variance across the features of each example "
                     "(axis=1).", AXIS_HINT, axis=1),
        knob_mistake("no-axis", "You took one variance over every value in the batch.",
                     AXIS_HINT, axis=None),
        knob_mistake("unbiased-variance", "You divided by N - 1 (the unbiased estimator, like "
                     "np.var(x, ddof=1) or torch.var's default).", BIASED_HINT, ddof=1),
        knob_mistake("std-instead-of-var", "You returned the standard deviation, the square "
                     "root of the variance.", "The variance is the mean of the squared "
                     "deviations: do not take the square root.", root=True),
        knob_mistake("forgot-to-centre", "You averaged x**2 without subtracting the mean "
                     "first.", "Subtract the per-feature mean, then average the squared "
                     "deviations.", centred=False),
        knob_mistake("one-pass-variance", "You computed the variance as mean(x**2) - "
                     "mean(x)**2. That is right on paper, but with values near 1e6 the two "
                     "terms are about 1e12 and their difference loses most of its digits.",
                     "Subtract each feature's mean first, then average the squared deviations "
                     "(two passes over the data).", one_pass=True, precision=True),
    ])

EXERCISES = [BATCH_MEAN, BATCH_VAR]
