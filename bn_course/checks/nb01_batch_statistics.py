"""Notebook 01, batch statistics: ``batch_mean`` and ``batch_var``.

Each exercise here is one ``Exercise``: the reference answer, the hidden cases,
a ``build(**knobs)`` that writes the answer with chosen mistakes switched on,
the catalogue of mistakes (one knob each, or a ready variant), and the probes.
The checker tries every mistake alone and in pairs (knobs that do not collide).
"""

import numpy as np

from bn_course.checks import _cases, _probes
from bn_course.checks._core import Exercise, Observation, knob_mistake
from bn_course.reference import numpy as ref

AXIS_HINT = ("x has shape (N, D): one row per example. Reduce over the batch axis, axis=0, "
             "to get one value per feature.")
BIASED_HINT = ("The batch variance divides by N, not N - 1 (NumPy's default ddof=0; torch.var's "
               "default divides by N - 1); PyTorch normalizes with the divide-by-N variance.")


def statistic_cases(group):
    return [_cases.function_case(desc, {"x": x}, float32=x.dtype == np.float32)
            for desc, x in _cases.shapes(group)]


def mean_cases(group):
    """The statistic cases, and for float64 one where float32 arithmetic shows: values
    of +-1e6 whose per-feature means are about 1. float32 holds 1e6 only to 0.06, so a
    mean computed in float32 is off by about 1e-2; float64 keeps it to 1e-10."""
    cases = statistic_cases(group)
    if group == "awkward":
        rng = np.random.default_rng(404)
        signs = np.where(np.arange(10) % 2 == 0, 1.0, -1.0)[:, None]
        x = signs * 1e6 + _cases.batch(rng, 10, 3)
        cases.append(_cases.function_case(
            "a (10, 3) batch of values near +1e6 and -1e6 whose means are small", {"x": x}))
    return cases


def _mean_with(axis=0, divide=True, statistic="mean", broadcast=False):
    """batch_mean with knobs; broadcast: one number for the whole batch, repeated for
    every feature."""

    def batch_mean(x):
        if statistic == "median":
            return np.median(x, axis=axis)
        total = x.sum(axis=None if broadcast else axis)
        n = x.size if axis is None or broadcast else x.shape[axis]
        mean = total / n if divide else total
        return np.full(x.shape[1], mean) if broadcast else mean
    return batch_mean


def _var_with(axis=0, ddof=0, root=False, centred=True, one_pass=False, around="feature",
              deviation="squared", divide_by="N"):
    """batch_var with one knob per classic mistake. around="global": deviations from
    the mean of the whole batch; deviation="absolute": |x - mean| averaged;
    divide_by="D": the sum over the batch divided by the number of features."""

    def batch_var(x):
        n = x.size if axis is None else x.shape[axis]
        if divide_by == "D":
            n = x.shape[1]
        if one_pass:
            var = (x * x).sum(axis=axis) / n - (x.sum(axis=axis) / n) ** 2
            var = var * n / (n - ddof)
        else:
            centre = x.mean(axis=None if around == "global" else axis, keepdims=True)
            deviations = x - centre if centred else x
            spread = np.abs(deviations) if deviation == "absolute" else deviations ** 2
            var = spread.sum(axis=axis) / (n - ddof)
        return np.sqrt(var) if root else var

    return batch_var


BATCH_MEAN = Exercise(
    "batch_mean", ref.batch_mean, "batch_mean(x)", mean_cases, build=_mean_with,
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
        knob_mistake("one-mean-for-all-features", "You took one mean over the whole batch "
                     "and repeated it for every feature: the shape is right, the values are "
                     "not.", AXIS_HINT, broadcast=True),
        knob_mistake("median-not-mean", "You returned the per-feature median "
                     "(np.median(x, axis=0)), not the mean.", "Average the examples: the "
                     "sum over axis 0 divided by N.", statistic="median"),
    ])

def _negative_output(played_case):
    """(label, lowest value) of the first wrong output with negative values, or None."""
    for label, _, got, _ in played_case.differences():
        got = np.asarray(got)
        if np.issubdtype(got.dtype, np.floating) and np.any(got < 0):
            return label, float(np.min(got))
    return None


def negative_variance(exercise, candidate, played, large=1e3):
    """A variance below zero, and only on cases with large values: rounding has
    cancelled the digits of a difference there (a sign slip is negative everywhere)."""
    negative = [(p, found) for p in played if (found := _negative_output(p))]
    if not negative or any(np.max(np.abs(p.case.args["x"])) <= large for p, _ in negative):
        return []
    p, (label, lowest) = negative[0]
    return [Observation(
        "negative-variance", f"On {p.case.description}, your {label} has negative values "
        f"(down to {lowest:.4g}). A mean of squares is never negative: a one-pass "
        "E[x^2] - E[x]^2 gives such values when rounding (float32 above all) cancels its "
        "digits.")]


BATCH_VAR = Exercise(
    "batch_var", ref.batch_var, "batch_var(x)", statistic_cases, build=_var_with,
    hint="Per feature: the mean of the squared deviations from that feature's mean.",
    probes=(_probes.loses_digits, _probes.constant_factor, negative_variance),
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
        knob_mistake("global-mean-deviations", "You measured the deviations from the mean of "
                     "the whole batch, x.mean(), instead of from each feature's own mean.",
                     "Subtract x.mean(axis=0): each feature is centred on its own mean.",
                     around="global"),
        knob_mistake("mean-absolute-deviation", "You averaged the absolute deviations "
                     "|x - mean| (the mean absolute deviation), not their squares.",
                     "Square the deviations before averaging them.", deviation="absolute"),
        knob_mistake("divides-by-features", "You divided the sum over the batch by D, the "
                     "number of features (x.shape[1]), instead of N, the number of examples.",
                     "Average over the examples: divide by N = x.shape[0].", divide_by="D"),
    ])

EXERCISES = [BATCH_MEAN, BATCH_VAR]
