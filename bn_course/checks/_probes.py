"""Probes: designed experiments that describe a wrong answer that no catalogued
mistake explains. Each returns true sentences only; a probe that is not
conclusive returns nothing.

A probe is ``probe(exercise, candidate, played) -> [Observation, ...]``, where
``played`` lists the cases as the candidate played them (see ``_core.Played``).
"""

import inspect
import itertools

import numpy as np

from bn_course.checks._core import Observation, _matches, aligned
from bn_course.numerics import relative_error

EXACT = 1e-9


def _first_function_case(played, needs=("x",)):
    """The first played case that can be rerun and whose args include ``needs``."""
    for p in played:
        if p.case.rerun is not None and p.outputs is not None and all(
                name in p.case.args for name in needs):
            return p
    return None


def _values(outputs):
    return [np.asarray(value, dtype=np.float64) for _, value in outputs]


def _changes(before, after):
    """Does any output differ between two runs? (NaN or inf where the other run has a
    number counts as a difference; NaN against NaN does not.)"""
    for a, b in zip(_values(before), _values(after)):
        finite = np.isfinite(a)
        if a.shape != b.shape or not np.array_equal(finite, np.isfinite(b)):
            return True
        if relative_error(a[finite], b[finite]) > EXACT:
            return True
    return False


def _all_finite(outputs):
    return all(np.all(np.isfinite(value)) for value in _values(outputs))


def ignores_eps(exercise, candidate, played):
    """The output stays the same when eps changes (and the reference's does not)."""
    p = _first_function_case(played)
    if p is None:
        return []
    small, large = {"eps": 1e-8}, {"eps": 1.0}
    reference_moves = _changes(p.case.rerun(exercise.reference, **small),
                               p.case.rerun(exercise.reference, **large))
    theirs_small, theirs_large = p.case.rerun(candidate, **small), p.case.rerun(candidate, **large)
    # Outputs that are NaN or inf where eps could act hide whether eps is used: say nothing.
    conclusive = _all_finite(theirs_small) and _all_finite(theirs_large)
    if reference_moves and conclusive and not _changes(theirs_small, theirs_large):
        return [Observation("ignores-eps", "Your output does not change when eps changes "
                                           "(tried eps=1e-8 and eps=1): eps is not used.")]
    return []


def _named_factor(factor, n, d=0):
    """The natural number that ``factor`` equals, for a batch of N examples and D
    features (d = 0: unknown), as " (name)"; "" when none does."""
    names = [(-1.0, "the sign is flipped")]
    if n > 1:
        names += [(n / (n - 1), f"N/(N-1) with N = {n}: the unbiased correction"),
                  ((n - 1) / n, f"(N-1)/N with N = {n}"), (1 / n, f"1/N with N = {n}"),
                  (float(n), f"N = {n}"), (2.0, "twice"), (0.5, "half")]
    if d > 1 and d != n:
        names += [(n / d, f"N/D with N = {n}, D = {d}: as if divided by D instead of N"),
                  (d / n, f"D/N with N = {n}, D = {d}: as if divided by N instead of D"),
                  (float(d), f"D = {d}"), (1 / d, f"1/D with D = {d}")]
    for value, name in names:
        if abs(factor - value) <= 1e-6 * abs(value):
            return f" ({name})"
    return ""


def constant_factor(exercise, candidate, played):
    """Each wrong output is the expected one times the same number."""
    observations = []
    for p in played:
        shape = np.shape(p.case.args["x"]) if "x" in p.case.args else (0,)
        n, d = shape[0], shape[1] if len(shape) == 2 else 0
        for label, want, got, problem in p.differences():
            if problem != "differs":
                continue
            want = np.asarray(want, dtype=np.float64)
            got = aligned(want, got).astype(np.float64)
            usable = np.abs(want) > 1e-6 * np.max(np.abs(want))
            if usable.sum() < 2 or np.any(got[~usable] != 0) and np.any(
                    np.abs(got[~usable]) > 1e-6 * np.max(np.abs(got))):
                continue
            ratios = got[usable] / want[usable]
            factor = float(np.median(ratios))
            if np.all(np.abs(ratios - factor) <= 1e-6 * abs(factor)) and factor != 0:
                observations.append(Observation(
                    "constant-factor", f"On {p.case.description}, your {label} is exactly "
                    f"{factor:.6g} times the expected values{_named_factor(factor, n, d)}."))
        if observations:
            return observations[:2]
    return []


def rows_depend_on_batch(exercise, candidate, played):
    """Change one example and see which rows of the output move."""
    p = _first_function_case(played)
    if p is None or np.ndim(p.case.args["x"]) != 2 or np.shape(p.case.args["x"])[0] < 3:
        return []
    x = np.array(p.case.args["x"], dtype=p.case.args["x"].dtype)
    changed = x.copy()
    changed[0] = changed[0] * 3.0 + 5.0

    def others_move(implementation):
        before = np.asarray(p.case.rerun(implementation)[0][1], dtype=np.float64)
        after = np.asarray(p.case.rerun(implementation, x=changed)[0][1], dtype=np.float64)
        return before.shape == x.shape and relative_error(before[1:], after[1:]) > EXACT

    theirs, expected = others_move(candidate), others_move(exercise.reference)
    if expected and not theirs:
        return [Observation("rows-independent",
                            "Changing one example of x leaves the other rows of your output "
                            "unchanged: your statistics are not taken over the batch axis.")]
    if theirs and not expected:
        return [Observation("rows-depend-on-batch",
                            "Changing one example of x changes the other rows of your output: "
                            "here each example must be normalized on its own, with the given "
                            "(running) statistics, not the batch's.")]
    return []


def normalized_statistics(exercise, candidate, played):
    """With gamma = 1 and beta = 0, is the output centred, and is its variance right?
    Only where the reference's output is centred with variance 1 (a training-mode
    forward; not batch norm in eval mode, which uses the running statistics)."""
    p = _first_function_case(played, needs=("x", "gamma", "beta"))
    if p is None or np.ndim(p.case.args["x"]) != 2:
        return []
    x = p.case.args["x"]
    d, n = x.shape[1], x.shape[0]
    plain = {"gamma": np.ones(d, dtype=x.dtype), "beta": np.zeros(d, dtype=x.dtype),
             "eps": 1e-8}
    expected = np.asarray(p.case.rerun(exercise.reference, **plain)[0][1], dtype=np.float64)
    if (np.max(np.abs(expected.mean(axis=0))) > 1e-6
            or np.max(np.abs(expected.var(axis=0) - 1)) > 1e-4):
        return []
    out = np.asarray(p.case.rerun(candidate, **plain)[0][1], dtype=np.float64)
    if out.shape != x.shape:
        return []
    if np.max(np.abs(out.mean(axis=0))) > 1e-6:
        return [Observation("not-centred", "With gamma = 1 and beta = 0, the per-feature mean "
                                           "of your output is not 0: the batch mean is not "
                                           "subtracted feature by feature.")]
    variance = out.var(axis=0)
    ratio = float(np.median(variance))
    if np.all(np.abs(variance - ratio) <= 1e-4 * ratio) and abs(ratio - 1) > 1e-4:
        return [Observation("wrong-scale",
                            f"With gamma = 1 and beta = 0 your output is centred, but each "
                            f"feature's variance is {ratio:.6g} instead of 1"
                            f"{_named_factor(ratio, n)}: the division is off.")]
    return []


def dx_sums_to_zero(exercise, candidate, played):
    """Batch norm's output does not change when every example of a feature moves by
    the same amount, so dx sums to 0 over the batch."""
    for p in played:
        if p.outputs is None or not p.outputs or p.outputs[0][0] != "dx":
            continue
        dx = np.asarray(p.outputs[0][1], dtype=np.float64)
        if dx.ndim == 2 and np.max(np.abs(dx.sum(axis=0))) > 1e-6 * max(1.0, np.abs(dx).sum()):
            return [Observation("dx-does-not-sum-to-zero",
                                "The sum of your dx over the batch is not 0. It must be: "
                                "adding the same number to every example of a feature does "
                                "not change batch norm's output, so no gradient can flow "
                                "along that direction.")]
        return []
    return []


def _defaults(implementation):
    """{parameter: default} of a function, or of a class's constructor."""
    try:
        parameters = inspect.signature(implementation).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def wrong_defaults(exercise, candidate, played):
    """A default eps or momentum that is not PyTorch's (Keras' eps=1e-3 and momentum=0.99,
    CS231n's momentum=0.9...). When a case that leaves it out can be rerun, say whether
    passing PyTorch's value explicitly makes that case right."""
    theirs, ours = _defaults(candidate), _defaults(exercise.reference)
    observations = []
    for name in ("eps", "momentum"):
        if name not in theirs or name not in ours or theirs[name] == ours[name]:
            continue
        sentence = (f"Your default {name} is {theirs[name]!r}, but this exercise's (PyTorch's) "
                    f"is {ours[name]!r}.")
        left_out = [p for p in played if p.differences() and p.case.rerun is not None
                    and name not in p.case.kwargs]
        if left_out and _matches(left_out[0].case.rerun(candidate, **{name: ours[name]}),
                                 left_out[0].expected, left_out[0].case.tolerance):
            sentence += (f" Called with {name}={ours[name]!r} explicitly, your answer is right "
                         f"on {left_out[0].case.description}.")
        observations.append(Observation("wrong-default", sentence))
    return observations


def loses_digits(exercise, candidate, played, large=1e3, close=1e-4):
    """Right to about 4 digits everywhere, and wrong beyond that only on the cases with
    large values (offsets of 1e4, 1e6): the signature of lost precision."""
    wrong = [p for p in played if p.differences()]
    if not wrong or any(p.case.args.get("x") is None for p in wrong):
        return []
    offset = [p for p in wrong if np.max(np.abs(p.case.args["x"])) > large]
    if not offset or any(p.worst_error() > close for p in wrong if p not in offset):
        return []
    worst = max(p.worst_error() for p in offset)
    if not np.isfinite(worst) or worst > 0.1:
        return []
    sizes = sorted({int(round(np.log10(np.max(np.abs(p.case.args["x"]))))) for p in offset})
    near = " and ".join(f"1e{size}" for size in sizes)
    return [Observation("loses-digits",
                        f"Your answer is right to 4 digits or better on the cases without large "
                        f"values, and off (relative error up to {worst:.1e}) only where x holds "
                        f"values near {near}: digits are lost there, as float32 arithmetic or "
                        f"the one-pass variance E[x^2] - E[x]^2 lose them.")]


FORWARD_PROBES = (wrong_defaults, loses_digits, ignores_eps, normalized_statistics,
                  rows_depend_on_batch, constant_factor)


def _normalized_over(x, out):
    """(axes, ddof) such that ``out`` is x normalized over those axes (eps = 1e-8), the
    fewest axes first; None when no set of axes gives ``out``."""
    for size in range(1, x.ndim + 1):
        for axes in itertools.combinations(range(x.ndim), size):
            for ddof in (0, 1):
                if np.prod([x.shape[a] for a in axes]) <= ddof:
                    continue
                x_hat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(
                    x.var(axis=axes, ddof=ddof, keepdims=True) + 1e-8)
                if relative_error(x_hat, out) <= 1e-6:
                    return axes, ddof
    return None


def statistics_axes(exercise, candidate, played):
    """With gamma = 1 and beta = 0, is the output x normalized over some other axes than
    the reference's? Played on the first wrong float64 case; said only when the output is
    exactly that normalization."""
    wrong = [p for p in played if p.differences() and not p.case.float32]
    p = _first_function_case(wrong, needs=("x", "gamma", "beta"))
    if p is None:
        return []
    x = np.asarray(p.case.args["x"], dtype=np.float64)
    plain = {"gamma": np.ones(x.shape[1], dtype=x.dtype),
             "beta": np.zeros(x.shape[1], dtype=x.dtype), "eps": 1e-8}
    theirs = np.asarray(p.case.rerun(candidate, **plain)[0][1], dtype=np.float64)
    ours = np.asarray(p.case.rerun(exercise.reference, **plain)[0][1], dtype=np.float64)
    if theirs.shape != x.shape:
        return []
    found, expected = _normalized_over(x, theirs), _normalized_over(x, ours)
    if found is None or expected is None or found[0] == expected[0]:
        return []
    unbiased = " (with the unbiased variance)" if found[1] else ""
    return [Observation("statistics-axes",
                        f"With gamma = 1 and beta = 0, your output is x normalized over axes "
                        f"{found[0]}{unbiased} (x of shape {x.shape}): your statistics are "
                        f"taken over axes {found[0]}, not {expected[0]}.")]


def _same_values(want, got, tolerance):
    want = np.sort(np.asarray(want, dtype=np.float64), axis=None)
    got = np.sort(aligned(want, got).astype(np.float64), axis=None)
    return want.shape == got.shape and relative_error(want, got) <= tolerance


def values_misplaced(exercise, candidate, played):
    """The right values in the wrong places: a reshape or transpose that is not undone.
    Compared on the first wrong case, with gamma = 1 and beta = 0 where the case has them
    (a per-channel scale applied after the mix-up changes the values themselves)."""
    wrong = [p for p in played if any(d[3] == "differs" and np.ndim(d[1]) >= 2
                                      for d in p.differences())]
    if not wrong:
        return []
    p = wrong[0]
    args = p.case.args
    if p.case.rerun is not None and {"x", "gamma", "beta"} <= set(args):
        plain = {"gamma": np.ones_like(args["gamma"]), "beta": np.zeros_like(args["beta"])}
        pairs = [(want, got) for (_, want), (_, got) in zip(
            p.case.rerun(exercise.reference, **plain), p.case.rerun(candidate, **plain))]
    else:
        pairs = [(want, got) for _, want, got, problem in p.differences()]
    misplaced = any(np.shape(got) == np.shape(want)
                    and relative_error(want, aligned(want, got)) > p.case.tolerance
                    for want, got in pairs)
    if misplaced and all(np.ndim(want) >= 2 and _same_values(want, got, p.case.tolerance)
                         for want, got in pairs):
        return [Observation("values-misplaced",
                            f"On {p.case.description}, your output holds exactly the expected "
                            "values (with gamma = 1 and beta = 0 where it has them), but in "
                            "other places (is an axis moved or reshaped and not put back?).")]
    return []


def dx_orthogonal_to_x_hat(exercise, candidate, played):
    """Without eps, batch norm's output does not change when a feature of x is stretched
    around its mean, so sum(dx * x_hat) over the batch is 0 for every feature (eps = 1e-12
    leaves about 1e-12 of it)."""
    p = next((p for p in played if p.case.rerun is not None and p.outputs is not None
              and p.case.args["x"].dtype == np.float64), None)
    if p is None:
        return []
    x = p.case.args["x"]
    dx = np.asarray(p.case.rerun(candidate, eps=1e-12)[0][1], dtype=np.float64)
    if dx.shape != x.shape:
        return []
    x_hat = (x - x.mean(axis=0)) / x.std(axis=0)
    size = np.abs(dx).sum()
    sums_to_zero = np.max(np.abs(dx.sum(axis=0))) <= 1e-9 * size
    if sums_to_zero and np.max(np.abs((dx * x_hat).sum(axis=0))) > 1e-6 * size:
        return [Observation("dx-not-orthogonal-to-x-hat",
                            "Your dx sums to 0 over the batch, but sum(dx * x_hat, axis=0) is "
                            "not 0 (with eps = 1e-12). It must be: stretching a feature of x "
                            "around its mean does not change batch norm's output, and in dx "
                            "the term through the variance is what makes sure of it.")]
    return []
