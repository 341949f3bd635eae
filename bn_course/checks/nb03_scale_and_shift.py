"""Notebook 03, scale and shift: ``batchnorm_forward(x, gamma, beta, eps)``."""

import numpy as np

from bn_course.checks import _cases, _probes, _steps
from bn_course.checks._core import CandidateProblem, Exercise, Mistake, knob_mistake
from bn_course.checks.nb01_batch_statistics import AXIS_HINT, BIASED_HINT
from bn_course.checks.nb02_normalizing import EPS_AS_FLOOR, EPS_HINT, EPS_MISTAKES
from bn_course.reference import numpy as ref

AFFINE_HINT = "Return gamma * x_hat + beta: gamma scales, beta shifts."


def forward_cases(group):
    cases = _cases.gamma_beta_cases(_cases.shapes(group), np.random.default_rng(12))
    return [refusing_out_and_cache(case) for case in cases]


def refusing_out_and_cache(case):
    """The case, made to name CS231n's habit of returning (out, cache): a tuple whose
    first value has the output's shape."""
    play = case.play

    def checked(candidate):
        outputs = play(candidate)
        out = outputs[0][1]
        if isinstance(out, (tuple, list)) and out and np.shape(out[0]) == np.shape(case.args["x"]):
            raise CandidateProblem(f"On {case.description}, your function returned a "
                                   f"{type(out).__name__} of {len(out)} values.",
                                   "returns-out-and-cache")
        return outputs

    case.play = checked
    return case


RETURNS_OUT_AND_CACHE = Mistake(
    "returns-out-and-cache", "You returned (out, cache), as CS231n's layers do; this exercise "
    "returns the output array alone.", "Return only the (N, D) output array.")


def forward_with(axis=0, ddof=0, stat="var", one_pass=False, affine="right", one_var=False,
                 uncentred_var=False, **step_knobs):
    """batchnorm_forward (any layout: ``axis`` names the reduced axes) with knobs;
    one_var: the per-feature mean, but one variance for the whole batch; uncentred_var:
    the variance taken as the mean of x**2 (x itself is still centred)."""

    def batchnorm_forward(x, gamma, beta, eps=1e-5):
        mean, var = _steps.statistics(x, axis, ddof, stat, one_pass)
        if one_var:
            var = np.full_like(var, ((x - mean) ** 2).mean())
        if uncentred_var:
            var = (x * x).sum(axis=axis, keepdims=True) / (x.size // mean.size - ddof)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x_hat = _steps.normalized(x, mean, var, eps, **step_knobs)
        return _steps.scaled(x_hat, gamma.reshape(shape), beta.reshape(shape), affine)

    return batchnorm_forward


def _calls_course_answer(x, gamma, beta, eps=1e-5):
    return ref.batchnorm_forward(x, gamma, beta, eps)


def _calls_torch(x, gamma, beta, eps=1e-5):
    import torch
    import torch.nn.functional as F
    out = F.batch_norm(torch.from_numpy(x), None, None, torch.from_numpy(gamma),
                       torch.from_numpy(beta), training=True, eps=eps)
    return out.numpy()


SHIFT_THEN_SCALE = knob_mistake(
    "shift-then-scale", "You added beta before multiplying by gamma, (x_hat + beta) * gamma, "
    "so gamma scales beta too.", AFFINE_HINT, affine="shift-then-scale")
EPS_TIMES_VAR = knob_mistake(
    "eps-multiplies-variance", "You multiplied the variance by (1 + eps) instead of adding "
    "eps to it: a feature with zero variance still divides by 0.",
    EPS_HINT, eps_place="times")


def affine_mistakes(noun="x_hat"):
    """The scale-and-shift slips, for any exercise that ends with gamma * x_hat + beta."""
    return [
        knob_mistake("gamma-beta-swapped", "You swapped gamma and beta: gamma scales and beta "
                     "shifts.", AFFINE_HINT, affine="swapped"),
        knob_mistake("forgot-shift", "You scaled by gamma but never added beta.", AFFINE_HINT,
                     affine="no-shift"),
        knob_mistake("forgot-scale", "You added beta but never multiplied by gamma.",
                     AFFINE_HINT, affine="no-scale"),
        knob_mistake("returns-normalized-not-scaled", f"You returned the normalized {noun} "
                     "without the scale and shift.", "Finish with gamma * x_hat + beta: the "
                     "layer learns gamma and beta.", affine="none"),
    ]


def variance_mistakes(biased_hint, one_pass_example="mean(x**2) - mean(x)**2"):
    """The ways to get the variance inside a normalization wrong."""
    return [
        knob_mistake("unbiased-variance", "You normalized with the unbiased variance (divide "
                     "by N - 1).", biased_hint, ddof=1),
        knob_mistake("var-instead-of-std", "You divided by the variance instead of the "
                     "standard deviation.", "Divide by np.sqrt(var + eps).", divide_by="var"),
        knob_mistake("std-where-var-belongs", "You put the standard deviation where the "
                     "variance belongs (np.sqrt(std + eps)).", "Use the variance inside the "
                     "square root: np.sqrt(var + eps).", stat="std"),
        knob_mistake("mean-subtracted-twice", "You subtracted the mean twice.",
                     "Subtract it once: x - mean.", centre="twice"),
        knob_mistake("one-pass-variance", f"You computed the variance as {one_pass_example}. "
                     "That is right on paper, but with values near 1e6 the two terms are about "
                     "1e12 and their difference loses most of its digits.",
                     "Subtract the mean first, then average the squared deviations.",
                     one_pass=True, precision=True),
    ]


BATCHNORM_FORWARD = Exercise(
    "batchnorm_forward", ref.batchnorm_forward, "batchnorm_forward(x, gamma, beta, eps=1e-5)",
    forward_cases, build=forward_with, probes=_probes.FORWARD_PROBES,
    hint="Normalize each feature with the batch's own mean and biased variance (eps inside "
         "the square root), then scale by gamma and shift by beta.",
    mistakes=affine_mistakes() + variance_mistakes(BIASED_HINT) + EPS_MISTAKES + [
        EPS_AS_FLOOR, RETURNS_OUT_AND_CACHE, SHIFT_THEN_SCALE, EPS_TIMES_VAR,
        knob_mistake("one-variance-for-all-features", "You subtracted each feature's mean but "
                     "divided by one variance taken over the whole batch.", "Take the "
                     "variance per feature too: np.var(x, axis=0).", one_var=True),
        knob_mistake("variance-not-centred", "You subtracted the mean from x but took the "
                     "variance as the mean of x**2, without subtracting the mean there: that "
                     "is only the variance when the mean is 0.", "The variance averages the "
                     "squared deviations: np.mean((x - mean)**2, axis=0).",
                     uncentred_var=True),
        knob_mistake("axis-0-vs-1", "You normalized each example across its features (axis=1): "
                     "that is LayerNorm, not BatchNorm.", AXIS_HINT, axis=1),
        knob_mistake("no-axis", "You took one mean and one variance over the whole batch, not "
                     "one per feature.", AXIS_HINT, axis=None),
        Mistake("calls-course-reference", "Your function calls the course's own answer in "
                "bn_course.reference.", "Write it yourself with NumPy: the exercise is the "
                "implementation.", variant=_calls_course_answer),
        Mistake("uses-builtin-batchnorm", "Your function calls PyTorch's batch norm "
                "(F.batch_norm, torch.batch_norm or nn.BatchNorm*).",
                "Write it yourself from the formula: that is the whole exercise.",
                variant=_calls_torch),
    ])

EXERCISES = [BATCHNORM_FORWARD]
