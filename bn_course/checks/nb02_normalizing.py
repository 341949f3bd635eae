"""Notebook 02, normalizing: ``normalize(x, mean, var, eps)``."""

import numpy as np

from bn_course.checks import _cases, _probes, _steps
from bn_course.checks._core import Exercise, Mistake, knob_mistake
from bn_course.reference import numpy as ref

EPS_HINT = "eps is added to the variance, inside the square root: divide by sqrt(var + eps)."


def normalize_cases(group):
    rng = np.random.default_rng(11)
    cases = []
    for i, (desc, x) in enumerate(_cases.shapes(group)):
        # Statistics that are close to, but not, the batch's own: a candidate that
        # recomputes them from x instead of using its arguments fails.
        mean = (ref.batch_mean(x) + 0.1 * rng.standard_normal(x.shape[1])).astype(x.dtype)
        var = (ref.batch_var(x) * rng.uniform(0.8, 1.2, x.shape[1])).astype(x.dtype)
        eps = _cases.eps_for(i)
        cases.append(_cases.function_case(
            f"{desc}, {_cases.eps_text(eps)}", {"x": x, "mean": mean, "var": var},
            _cases.with_eps({}, eps), float32=x.dtype == np.float32))
    return cases


def _normalize_with(own_statistics=False, order="centre-then-divide", **step_knobs):
    """order: "multiply" (x - mean) * std, or "divide-then-centre" x / std - mean."""

    def normalize(x, mean, var, eps=1e-5):
        if own_statistics:
            mean, var = _steps.statistics(x)
        std = np.sqrt(var + eps)
        if order == "multiply":
            return (x - mean) * std
        if order == "divide-then-centre":
            return x / std - mean
        return _steps.normalized(x, mean, var, eps, **step_knobs)
    return normalize


def _in_place_normalize(x, mean, var, eps=1e-5):
    x -= mean
    x /= np.sqrt(var + eps)
    return x


EPS_MISTAKES = [
    knob_mistake("eps-outside-sqrt", "You added eps to the standard deviation, outside the "
                 "square root.", EPS_HINT, eps_place="outside"),
    knob_mistake("forgot-eps", "You left out eps, so a feature with zero variance divides 0 "
                 "by 0.", EPS_HINT, eps_place="missing"),
    knob_mistake("eps-after-division", "You added eps to the normalized value, after dividing, "
                 "instead of to the variance.", EPS_HINT, eps_place="after"),
]
# Seen in synchronized batch-norm code: eps as a lower bound of the variance. It agrees
# with PyTorch wherever var >> eps, and parts from it where a feature is nearly constant.
EPS_AS_FLOOR = knob_mistake(
    "eps-as-floor", "You used eps as a lower bound of the variance, sqrt(max(var, eps)), "
    "instead of adding it: PyTorch always adds it.", EPS_HINT, eps_place="floor")

NORMALIZE = Exercise(
    "normalize", ref.normalize, "normalize(x, mean, var, eps=1e-5)", normalize_cases,
    build=_normalize_with, hint="Centre x with the given mean, then divide by the standard "
    "deviation that the given var and eps make.",
    probes=(_probes.wrong_defaults, _probes.loses_digits, _probes.ignores_eps,
            _probes.rows_depend_on_batch, _probes.constant_factor),
    mistakes=EPS_MISTAKES + [
        EPS_AS_FLOOR,
        knob_mistake("var-instead-of-std", "You divided by the variance instead of the standard "
                     "deviation.", "Divide by np.sqrt(var + eps): the standard deviation has "
                     "the units of x.", divide_by="var"),
        knob_mistake("forgot-to-centre", "You scaled x but did not subtract the mean.",
                     "Compute (x - mean) first.", centre="never"),
        knob_mistake("mean-subtracted-twice", "You subtracted the mean twice.",
                     "Subtract the mean once, before dividing.", centre="twice"),
        knob_mistake("ignores-given-statistics", "You recomputed the mean and variance from x "
                     "instead of using the mean and var you were given.",
                     "Use the arguments: later the same function normalizes with running "
                     "statistics.", own_statistics=True),
        knob_mistake("multiplies-by-std", "You multiplied by the standard deviation instead "
                     "of dividing by it.", "Divide: (x - mean) / np.sqrt(var + eps) has "
                     "variance about 1.", order="multiply"),
        knob_mistake("divides-before-centring", "You divided x by the standard deviation "
                     "first and subtracted the mean afterwards (x / std - mean).",
                     "Centre first, then divide: (x - mean) / np.sqrt(var + eps).",
                     order="divide-then-centre"),
        Mistake("modifies-input", "Your function changed an input array in place (e.g. "
                "`x -= mean`), so the caller's data is gone.",
                "Build a new array instead: `centred = x - mean` leaves x untouched.",
                variant=_in_place_normalize),
    ])

EXERCISES = [NORMALIZE]
