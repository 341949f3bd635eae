"""Figures, gradient checks, a step-size slider and timings for notebook 05 (backward pass).

NumPy and matplotlib only, except ``timing_table``, which also times PyTorch.
"""

import functools
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from bn_course.demos._guard import Failed, call_yours, say, yours_or_none, yours_or_ours
from bn_course.numerics import relative_error
from bn_course.reference import numpy as ref
from bn_course.widgets import grading, slider_panel

# --- the forward pass and its numerical gradient ------------------------------


def forward(x, gamma, beta, eps=1e-5):
    """Training-mode batch norm, x: (N, D) -> (N, D), in the dtype of x.

    No input checks on purpose: one of the notebook's traps feeds it a batch of one
    example, which a real layer refuses."""
    centred = x - x.mean(axis=0)
    return gamma * centred / np.sqrt((centred ** 2).mean(axis=0) + eps) + beta


def numerical_gradient(f, x, dout, h=1e-5):
    """Centered differences of the scalar L = sum(f(x) * dout), one entry of x at a time.

    Choosing L this way makes dL/df = dout, so the result is what a backward pass
    must return for the upstream gradient dout. x is perturbed in its own dtype
    (a float32 x gives float32 rounding); the result is float64, shaped like x.
    """
    x = np.array(x, copy=True)  # perturb a copy, never the caller's array
    grad = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + h
        plus = f(x)
        x[index] = saved - h
        minus = f(x)
        x[index] = saved
        # (f(x + h) - f(x - h)) / 2h: the error is O(h^2), against O(h) one-sided
        grad[index] = np.sum((plus - minus) * dout) / (2 * h)
    return grad


def numerical_gradients(x, gamma, dout, eps=1e-5, h=1e-5):
    """Numerical (dx, dgamma, dbeta) of ``forward`` for the upstream gradient dout."""
    beta = np.zeros_like(gamma)  # the gradients do not depend on beta
    return (numerical_gradient(lambda x_: forward(x_, gamma, beta, eps), x, dout, h),
            numerical_gradient(lambda g: forward(x, g, beta, eps), gamma, dout, h),
            numerical_gradient(lambda b: forward(x, gamma, b, eps), beta, dout, h))


# --- a gradient check ---------------------------------------------------------

RELATIVE_TOLERANCE = 1e-6
# A gradient that is zero has no scale to be relative to: there the check falls back
# on an absolute tolerance, as np.allclose and torch.testing.assert_close do.
ABSOLUTE_TOLERANCE = 1e-8


@dataclass(frozen=True)
class GradientCheck:
    """Analytic against numerical gradients: one row per gradient."""

    rows: list  # [(name, relative error, max |difference|), ...]
    h: float
    dtype: str

    @staticmethod
    def agrees(relative, absolute):
        return relative <= RELATIVE_TOLERANCE or absolute <= ABSOLUTE_TOLERANCE

    @property
    def passed(self):
        return all(self.agrees(relative, absolute) for _, relative, absolute in self.rows)

    def __str__(self):
        lines = [f"gradient check, h = {self.h:g}, {self.dtype}:",
                 f"{'':8}{'relative error':>15}{'max |difference|':>18}"]
        lines += [f"{name:8}{relative:>15.1e}{absolute:>18.1e}   "
                  f"{'ok' if self.agrees(relative, absolute) else 'MISMATCH'}"
                  for name, relative, absolute in self.rows]
        return "\n".join(lines)

    __repr__ = __str__


def gradient_check(backward, x, gamma, dout, eps=1e-5, h=1e-5):
    """Compare ``backward(dout, x, gamma, eps)`` with centered differences.

    A gradient agrees when its relative error is at most 1e-6, or when every entry
    differs by at most 1e-8 (for gradients that are zero). ``backward`` may be wrong (that
    is what the check is for); if it raises or does not return three gradients of the
    right shapes, one line says so and the result is None."""
    try:
        analytic = call_yours(backward, dout, x, gamma, eps, what="gradient check")
    except Failed:
        return None
    problem = _gradient_shape_problem(analytic, x, gamma)
    if problem:
        say(f"This gradient check needs `{getattr(backward, '__name__', 'backward')}` to "
            f"return (dx, dgamma, dbeta): {problem}")
        return None
    numeric = numerical_gradients(x, gamma, dout, eps, h)
    rows = [(name, relative_error(a, n), _max_difference(a, n))
            for name, a, n in zip(("dx", "dgamma", "dbeta"), analytic, numeric)]
    return GradientCheck(rows, h, np.asarray(x).dtype.name)


def _gradient_shape_problem(gradients, x, gamma):
    """What is wrong with ``gradients`` as (dx, dgamma, dbeta) for x and gamma, or ''."""
    if not isinstance(gradients, (tuple, list)) or len(gradients) != 3:
        return f"it returned {type(gradients).__name__}, not a tuple of three arrays."
    shapes = {"dx": np.shape(x), "dgamma": np.shape(gamma), "dbeta": np.shape(gamma)}
    for (name, shape), gradient in zip(shapes.items(), gradients):
        if gradient is None or np.size(gradient) != np.prod(shape):
            return f"{name} has shape {np.shape(gradient)}, expected {shape}."
    return ""


def _max_difference(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)))


# --- the computational graph --------------------------------------------------

# name: (position, forward text, backward text, where the backward text goes)
_GRAPH_NODES = {
    "x": ((0.0, 0.0), r"$x$", r"$dx = dx_c + \frac{1}{N}d\mu$", "below"),
    "mu": ((2.0, 1.6), r"$\mu = \frac{1}{N}\sum_i x_i$", r"$d\mu = -\sum_i dx_{c}$", "above"),
    "xc": ((4.0, 0.0), r"$x_c = x - \mu$",
           r"$dx_c = s\,d\hat{x} + \frac{2}{N}x_c\,d\sigma^2$", "below"),
    "var": ((6.0, 1.6), r"$\sigma^2 = \frac{1}{N}\sum_i x_{c}^2$",
            r"$d\sigma^2 = -\frac{1}{2}(\sigma^2+\epsilon)^{-3/2}ds$", "above"),
    "s": ((8.6, 1.6), r"$s = (\sigma^2+\epsilon)^{-1/2}$", r"$ds = \sum_i d\hat{x}\,x_c$",
          "above"),
    "xhat": ((10.0, 0.0), r"$\hat{x} = x_c\, s$", r"$d\hat{x} = \gamma\, dy$", "below"),
    "y": ((12.0, 0.0), r"$y = \gamma\hat{x} + \beta$", r"$dy$ (given)", "right"),
    "gamma": ((12.0, 1.6), r"$\gamma$", r"$d\gamma = \sum_i dy\,\hat{x}$", "right"),
    "beta": ((12.0, -1.6), r"$\beta$", r"$d\beta = \sum_i dy$", "right"),
}
_GRAPH_EDGES = [("x", "mu"), ("x", "xc"), ("mu", "xc"), ("xc", "var"), ("var", "s"),
                ("xc", "xhat"), ("s", "xhat"), ("xhat", "y"), ("gamma", "y"), ("beta", "y")]


def graph_figure():
    """Batch norm's forward pass as a graph (black), each node with the rule that
    gives its gradient in the backward pass (red). Sums are over the batch, i = 1..N."""
    fig, ax = plt.subplots(figsize=(13, 4.2))
    boxes = {}
    for name, ((x, y), forward_text, backward_text, side) in _GRAPH_NODES.items():
        is_parameter = name in ("gamma", "beta")
        boxes[name] = ax.text(
            x, y, forward_text, ha="center", va="center", fontsize=11, zorder=3,
            bbox={"boxstyle": "round,pad=0.3", "linewidth": 1.2,
                  "facecolor": "#fff4d6" if is_parameter else "#e8f0fe",
                  "edgecolor": "#b08800" if is_parameter else "#3367d6"})
        if side in ("below", "above"):
            ax.text(x, y - 0.5 if side == "below" else y + 0.5, backward_text, ha="center",
                    va="top" if side == "below" else "bottom", fontsize=9.5, color="#c5221f")
        else:
            ax.text(x + 0.9, y, backward_text, ha="left", va="center", fontsize=9.5,
                    color="#c5221f")
    for start, end in _GRAPH_EDGES:
        # patchA/patchB: each arrow stops at the edges of the two boxes it joins
        ax.annotate("", xy=boxes[end].get_position(), xytext=boxes[start].get_position(),
                    arrowprops={"arrowstyle": "-|>", "color": "0.25", "lw": 1.3,
                                "shrinkA": 2, "shrinkB": 2,
                                "patchA": boxes[start].get_bbox_patch(),
                                "patchB": boxes[end].get_bbox_patch()})
    ax.set(xlim=(-1.0, 14.4), ylim=(-2.3, 2.7))
    ax.axis("off")
    ax.set_title("Forward pass left to right (black); backward pass right to left, one rule "
                 "per node (red)", fontsize=11)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


# --- choosing the step h ------------------------------------------------------

STEPS = 10.0 ** np.arange(-12, -0.75, 0.5)


def example_batch(n=8, d=4, seed=0):
    """(x, gamma, dout): features with different offsets and scales, a random dout."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=rng.uniform(-3, 3, d), scale=rng.uniform(0.5, 3, d), size=(n, d))
    return x, rng.uniform(0.5, 2.0, d), rng.standard_normal((n, d))


def numerical_dx(x, gamma, dout, h, dtype=np.float64):
    """The numerical dx of ``forward`` with step h, every number in ``dtype``."""
    x, gamma, dout = (np.asarray(a, dtype=dtype) for a in (x, gamma, dout))
    return numerical_gradient(lambda x_: forward(x_, gamma, 0.0), x, dout, h)


def step_errors(backward, x, gamma, dout, steps=STEPS, dtype=np.float64):
    """Relative error of the numerical dx, computed in ``dtype`` with each step h,
    against ``backward``'s dx in float64 (the truth, when backward is right)."""
    exact = backward(dout, x, gamma)[0]
    return np.array([relative_error(exact, numerical_dx(x, gamma, dout, h, dtype))
                     for h in steps])


def step_size_panel(backward, batch=None):
    """A slider for the finite-difference step h: the error of the numerical dx against
    ``backward``'s (the student's function, once it passes its self-check) as h varies,
    in float64 and float32."""
    if grading():
        return None
    backward = yours_or_ours("batchnorm_backward", backward, ref.batchnorm_backward)
    x, gamma, dout = example_batch() if batch is None else batch
    curves = {dtype: step_errors(backward, x, gamma, dout, dtype=dtype)
              for dtype in (np.float64, np.float32)}
    exact = np.asarray(backward(dout, x, gamma)[0], dtype=np.float64)

    def draw(h):
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
        for (dtype, errors), colour in zip(curves.items(), ("C0", "C3")):
            numeric = numerical_dx(x, gamma, dout, h, dtype)
            error = relative_error(exact, numeric)
            name = np.dtype(dtype).name
            left.loglog(STEPS, errors, "o-", color=colour, ms=3, label=name)
            left.loglog([h], [error], "o", color=colour, ms=10, mfc="none", mew=2)
            right.semilogy(np.abs(numeric - exact).ravel(), "o", color=colour, ms=4,
                           label=f"{name}: relative error {error:.1e}")
        left.axvline(h, color="0.5", lw=1, ls="--")
        left.set(xlabel="step h", ylabel="relative error of the numerical dx",
                 title="too small: rounding; too large: the curve bends (truncation)")
        left.legend(fontsize=8)
        right.set(xlabel="entry of dx", ylabel="|numerical - analytic|",
                  title=f"error of each entry of dx at h = {h:.0e}")
        right.legend(fontsize=8)
        fig.tight_layout()
        return fig  # the panel shows it, then closes it

    return slider_panel(draw, h=widgets.FloatLogSlider(
        value=1e-5, base=10, min=-12, max=-1, step=0.5, description="h",
        readout_format=".0e", continuous_update=False))


# --- timings ------------------------------------------------------------------


def timing_table(backward, backward_compact, shape=(256, 256), repeats=5, seed=0):
    """Median times of the two NumPy backward passes and of PyTorch's forward+backward
    (the course's from-scratch batch norm, and torch's own), on one CPU thread.
    None under nbgrader: timing is not part of the grade."""
    if grading():
        return None
    timed = {label: yours_or_none(name, function, what="timing")
             for label, name, function in [
                 ("NumPy, step by step (yours)", "batchnorm_backward", backward),
                 ("NumPy, compact (yours)", "batchnorm_backward_compact", backward_compact)]}
    import torch
    import torch.nn.functional as F

    from bn_course.reference import torch as from_scratch
    from bn_course.timing import compare
    from bn_course.train import one_thread

    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    gamma = rng.uniform(0.5, 2.0, shape[1])
    x_t = torch.from_numpy(x).requires_grad_()
    gamma_t = torch.from_numpy(gamma).requires_grad_()
    beta_t = torch.zeros(shape[1], dtype=torch.float64, requires_grad=True)
    dout_t = torch.from_numpy(dout)

    def torch_forward_backward(batch_norm):
        def run():
            out = batch_norm(x_t, None, None, gamma_t, beta_t, training=True)
            torch.autograd.grad(out, (x_t, gamma_t, beta_t), dout_t)
        return run

    yours = {label: functools.partial(function, dout, x, gamma)
             for label, function in timed.items() if function is not None}
    with one_thread():
        return compare({
            **yours,
            "PyTorch, from scratch (bn_course.reference.torch)":
                torch_forward_backward(from_scratch.batch_norm),
            "PyTorch, native (F.batch_norm)": torch_forward_backward(F.batch_norm),
        }, repeats=repeats)
