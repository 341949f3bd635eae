"""Figures and sliders for notebook 03 (scale and shift). NumPy and matplotlib only."""

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from bn_course.demos._guard import yours_or_ours
from bn_course.reference import numpy as ref
from bn_course.widgets import grading, slider_panel

SIGMOID_RANGE = (-8.0, 8.0)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def linearity(z):
    """R^2 of the best straight line through the points (z, sigmoid(z)).

    1.0 means that on these inputs the sigmoid is, in effect, a linear map.
    NaN when all the inputs are equal (gamma = 0): there is no line to fit.
    """
    if np.ptp(z) == 0:
        return float("nan")
    return np.corrcoef(z, sigmoid(z))[0, 1] ** 2


def _draw_sigmoid_inputs(ax, z, title):
    """The sigmoid curve, its tangent at 0, and where a batch of inputs z lands on it."""
    grid = np.linspace(*SIGMOID_RANGE, 400)
    ax.plot(grid, sigmoid(grid), color="0.7", lw=1.5, label="sigmoid")
    near_zero = grid[np.abs(grid) <= 2]  # where the tangent stays within [0, 1]
    ax.plot(near_zero, 0.5 + near_zero / 4, "k--", lw=1, label="tangent at 0: 1/2 + z/4")
    ax.scatter(z, sigmoid(z), s=8, color="C0", alpha=0.5, label="this batch")
    # The inputs' histogram, scaled to sit along the bottom of the plot.
    counts, edges = np.histogram(z, bins=40, range=SIGMOID_RANGE)
    ax.bar(edges[:-1], 0.25 * counts / counts.max(), width=np.diff(edges), align="edge",
           bottom=-0.3, color="C1", alpha=0.5, label="inputs (histogram)")
    r2 = linearity(z)
    fit = "no fit: all inputs equal" if np.isnan(r2) else f"straight-line fit $R^2$ = {r2:.3f}"
    ax.set(xlim=SIGMOID_RANGE, ylim=(-0.3, 1.1), xlabel="sigmoid input z", title=f"{title}\n{fit}")
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)


def sigmoid_linear_region(seed=0, n=500):
    """Three views of one unit's pre-activations entering a sigmoid: as the layer
    produced them, normalized, and normalized then scaled and shifted."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(1.5, 3.0, size=n)  # a unit that uses both saturated ends
    normalized = (raw - raw.mean()) / raw.std()
    gamma, beta = 3.0, 1.5
    views = [(raw, "as the layer produced them"),
             (normalized, "normalized: mean 0, variance 1"),
             (gamma * normalized + beta, rf"normalized, then $\gamma$={gamma:g}, $\beta$={beta:g}")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, (z, title) in zip(axes, views):
        _draw_sigmoid_inputs(ax, z, title)
    axes[0].set_ylabel("sigmoid output")
    axes[0].legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def skewed_feature(seed=0, n=1000):
    """One skewed feature, (n, 1), mean about 6: BN moves and stretches it but
    keeps its shape, which a bell-shaped example would hide."""
    rng = np.random.default_rng(seed)
    return (3.0 + rng.gamma(shape=2.0, scale=1.5, size=n)).reshape(n, 1)


def gamma_beta_panel(batchnorm_forward, x=None):
    """Sliders for gamma and beta; redraws ``batchnorm_forward(x, gamma, beta)``
    (the student's function, once it passes its self-check) as a histogram and as
    inputs to a sigmoid."""
    if grading():
        return None
    batchnorm_forward = yours_or_ours("batchnorm_forward", batchnorm_forward,
                                      ref.batchnorm_forward)
    x = skewed_feature() if x is None else x

    def draw(gamma, beta):
        y = np.asarray(batchnorm_forward(x, np.array([gamma]), np.array([beta])))[:, 0]
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
        bins = np.linspace(-12, 16, 85)
        left.hist(x[:, 0], bins=bins, color="0.6", alpha=0.6, label="input x")
        left.hist(y, bins=bins, color="C0", alpha=0.7, label="output y")
        left.axvline(beta, color="C3", lw=1.5, label=r"$\beta$")
        shape = "same shape as x" if gamma else "one value: the feature is gone"
        left.set(xlabel="value", ylabel="count",
                 title=f"output: mean {y.mean():.2f}, std {y.std():.2f} ({shape})")
        left.legend(fontsize=8)
        _draw_sigmoid_inputs(right, y, "the output fed to a sigmoid")
        fig.tight_layout()
        return fig  # the panel shows it, then closes it

    return slider_panel(
        draw,
        gamma=widgets.FloatSlider(value=1.0, min=-3.0, max=3.0, step=0.1,
                                  description="gamma", continuous_update=False),
        beta=widgets.FloatSlider(value=0.0, min=-4.0, max=4.0, step=0.1,
                                 description="beta", continuous_update=False),
    )
