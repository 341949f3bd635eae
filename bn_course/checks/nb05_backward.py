"""Notebook 05, the backward pass: ``batchnorm_backward`` and its closed form
``batchnorm_backward_compact`` (the same cases and mistakes)."""

import numpy as np

from bn_course.checks import _cases, _probes
from bn_course.checks._core import Exercise, knob_mistake
from bn_course.reference import numpy as ref

BIASED_HINT = ("The forward pass normalized with the biased variance (divide by N), so its "
               "gradient divides by N as well.")
DGAMMA_HINT = "out = gamma * x_hat + beta, so dgamma = sum(dout * x_hat, axis=0)."
DX_FORMULA = "dx = gamma / std * (dout - mean(dout) - x_hat * mean(dout * x_hat))."


def backward_cases(group):
    rng = np.random.default_rng(16)
    cases = []
    for i, (desc, x) in enumerate(_cases.shapes(group)):
        # Always a random upstream gradient: with dout = ones, dx is zero and a
        # dx missing whole terms can still look right.
        dout = rng.standard_normal(x.shape).astype(x.dtype)
        gamma = _cases.per_feature(rng, x.shape[1], 0.5, 2.0, x.dtype)
        eps = _cases.eps_for(i)
        cases.append(_cases.function_case(
            f"{desc}, random dout, {_cases.eps_text(eps)}", {"dout": dout, "x": x, "gamma": gamma},
            _cases.with_eps({}, eps), labels=("dx", "dgamma", "dbeta"),
            float32=x.dtype == np.float32))
    return cases


def _backward_with(dx_terms="all", dgamma_of="x_hat", dbeta_axis=0, dgamma_axis=0, ddof=0,
                   use_gamma=True, ddof_in_variance_path=True, eps_in_std=True,
                   param_grads="sum", order="dx, dgamma, dbeta", dx_divides_by="std",
                   dbeta_times_gamma=False):
    """batchnorm_backward with one knob per classic mistake. With ddof=1 it is the
    exact gradient of a forward pass that used the unbiased variance, unless
    ddof_in_variance_path=False keeps dividing by N on the path through the variance.
    dbeta_times_gamma: dbeta sums dout * gamma (the gradient of x_hat, not of beta)."""

    def backward(dout, x, gamma, eps=1e-5):
        n = x.shape[0] - (ddof if ddof_in_variance_path else 0)
        centred = x - x.mean(axis=0)
        inv_std = 1 / np.sqrt(x.var(axis=0, ddof=ddof) + (eps if eps_in_std else 0.0))
        x_hat = centred * inv_std
        per = x.shape[0] if param_grads == "mean" else 1
        dbeta = (dout * (gamma if dbeta_times_gamma else 1.0)).sum(axis=dbeta_axis) / per
        dgamma = {"x_hat": lambda: dout * x_hat, "x": lambda: dout * x,
                  "centred": lambda: dout * centred,
                  "nothing": lambda: dout}[dgamma_of]().sum(axis=dgamma_axis) / per
        scale = (gamma if use_gamma else 1.0) * (inv_std if dx_divides_by == "std"
                                                 else inv_std ** 2)
        if dx_terms == "none":
            dx = dout * scale
        elif dx_terms == "mean_only":
            dx = scale * (dout - dout.mean(axis=0))
        else:
            dx = scale * (dout - dout.mean(axis=0) - x_hat * (dout * x_hat).sum(axis=0) / n)
        if order == "dx, dbeta, dgamma":
            return dx, dbeta, dgamma
        return dx, dgamma, dbeta

    return backward


def _backward_mistakes():
    return [
        knob_mistake("dbeta-sum-wrong-axis", "Your dbeta sums over the features (axis=1) "
                     "instead of over the batch.", "beta has one entry per feature: sum its "
                     "gradient over axis=0.", dbeta_axis=1),
        knob_mistake("dgamma-sum-wrong-axis", "Your dgamma sums over the features (axis=1) "
                     "instead of over the batch.", "gamma has one entry per feature: sum "
                     "dout * x_hat over axis=0.", dgamma_axis=1),
        knob_mistake("dgamma-uses-x-not-xhat", "Your dgamma multiplies dout by x instead of by "
                     "the normalized x_hat.", DGAMMA_HINT, dgamma_of="x"),
        knob_mistake("dgamma-without-xhat", "Your dgamma is the sum of dout alone, the same as "
                     "dbeta: x_hat is missing.", DGAMMA_HINT, dgamma_of="nothing"),
        knob_mistake("dgamma-without-std", "Your dgamma multiplies dout by x - mean, not by "
                     "x_hat = (x - mean) / std: the division by the standard deviation is "
                     "missing.", DGAMMA_HINT, dgamma_of="centred"),
        knob_mistake("dbeta-summed-over-everything", "Your dbeta is a single number, the sum of "
                     "every entry of dout: the sum has no axis.", "beta has one entry per "
                     "feature: dbeta = dout.sum(axis=0).", dbeta_axis=None),
        knob_mistake("dgamma-summed-over-everything", "Your dgamma is a single number, the sum "
                     "of every entry of dout * x_hat: the sum has no axis.", "gamma has one "
                     "entry per feature: dgamma = (dout * x_hat).sum(axis=0).", dgamma_axis=None),
        knob_mistake("param-grads-summed-over-everything", "Your dgamma and dbeta are single "
                     "numbers: np.sum without an axis adds up every entry.", "gamma and beta "
                     "have one entry per feature: sum over axis=0 only.",
                     dgamma_axis=None, dbeta_axis=None, pairs=False),
        knob_mistake("dgamma-dbeta-swapped", "You return (dx, dbeta, dgamma): dgamma and dbeta "
                     "are in each other's place.", "Return them in the order the docstring "
                     "asks for: dx, dgamma, dbeta.", order="dx, dbeta, dgamma"),
        knob_mistake("param-grads-averaged", "Your dgamma and dbeta are divided by N (a mean "
                     "over the batch instead of a sum).", "Each example adds its own "
                     "contribution to the gradient of gamma and beta: sum over axis=0, do "
                     "not average.", param_grads="mean"),
        knob_mistake("dx-missing-mean-terms", "Your dx treats the mean and variance as "
                     "constants (dx = dout * gamma / std).", "The batch mean and variance "
                     "depend on every x: follow both extra paths through the graph, through "
                     "mean(dout) and through mean(dout * x_hat).", dx_terms="none"),
        knob_mistake("dx-only-right-for-ones-dout", "Your dx is missing the term through the "
                     "variance, x_hat * mean(dout * x_hat). It vanishes when dout is all ones, "
                     "which is why a check with dout = ones passes.", DX_FORMULA,
                     dx_terms="mean_only"),
        knob_mistake("dbeta-times-gamma", "Your dbeta sums dout * gamma: gamma belongs to "
                     "the gradient of x_hat, not of beta, which is added as it is.",
                     "out = gamma * x_hat + beta, so dbeta = dout.sum(axis=0).",
                     dbeta_times_gamma=True),
        knob_mistake("dx-forgot-gamma", "Your dx leaves out gamma.", "The output is "
                     "gamma * x_hat + beta: dx_hat = dout * gamma.", use_gamma=False),
        knob_mistake("dx-divides-by-variance", "Your dx divides by var + eps where the "
                     "standard deviation belongs.", DX_FORMULA + " Here std = np.sqrt(var + "
                     "eps).", dx_divides_by="var"),
        knob_mistake("backward-ignores-eps", "Your backward pass divides by sqrt(var) without "
                     "eps, while the forward pass divided by sqrt(var + eps). With eps = 1 the "
                     "difference is large.", "Use the same std = np.sqrt(var + eps) as the "
                     "forward pass, in x_hat and in dx.", eps_in_std=False),
        knob_mistake("unbiased-variance", "Your backward pass uses the unbiased variance "
                     "(N - 1).", BIASED_HINT, ddof=1),
        knob_mistake("unbiased-variance", "Your backward pass uses the unbiased variance "
                     "(N - 1).", BIASED_HINT, ddof=1, ddof_in_variance_path=False),
    ]


BACKWARD_PROBES = (_probes.wrong_defaults, _probes.ignores_eps, _probes.dx_sums_to_zero,
                   _probes.dx_orthogonal_to_x_hat, _probes.constant_factor)
BATCHNORM_BACKWARD = Exercise(
    "batchnorm_backward", ref.batchnorm_backward, "batchnorm_backward(dout, x, gamma, eps=1e-5)",
    backward_cases, build=_backward_with, mistakes=_backward_mistakes(), probes=BACKWARD_PROBES,
    hint=f"dbeta = sum(dout), dgamma = sum(dout * x_hat) over axis 0; {DX_FORMULA}")
BATCHNORM_BACKWARD_COMPACT = Exercise(
    "batchnorm_backward_compact", ref.batchnorm_backward_compact,
    "batchnorm_backward_compact(dout, x, gamma, eps=1e-5)", backward_cases,
    build=_backward_with, mistakes=_backward_mistakes(), probes=BACKWARD_PROBES,
    hint=DX_FORMULA)

EXERCISES = [BATCHNORM_BACKWARD, BATCHNORM_BACKWARD_COMPACT]
