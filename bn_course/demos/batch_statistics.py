"""Figures and the slider of notebook 01 (batch statistics). NumPy and matplotlib only.

* ``hidden_activation_drift()``: a hidden layer's pre-activations moving while a
  tiny network trains (the "internal covariate shift" picture).
* ``reduction_axes()``: which axis of an (N, D) batch a per-feature statistic reduces.
* ``batch_noise_panel(batch_mean, batch_var)``: how far batch means and variances
  stray from the population values, with a batch-size slider.

Every figure comes back already closed in pyplot: the notebook shows it once, as the
cell's value, instead of once more when the cell ends.
"""

import functools

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from bn_course.demos._guard import yours_or_ours
from bn_course.reference import numpy as ref
from bn_course.widgets import grading, slider_panel

# --- internal covariate shift: a tiny two-layer network in NumPy ----------------

DRIFT_SNAPSHOTS = (0, 10, 20, 40, 60)


def _blobs(rng, n=512, classes=4):
    """Four Gaussian blobs in 2-D, centred away from the origin on purpose:
    un-centred inputs make the first layer's updates move its outputs a lot."""
    centres = rng.normal(scale=2.0, size=(classes, 2)) + np.array([3.0, -2.0])
    labels = rng.integers(classes, size=n)
    x = centres[labels] + rng.standard_normal((n, 2))
    return x, np.eye(classes)[labels]


def train_and_record(steps=60, lr=0.1, hidden=64, batch_size=32, seed=0):
    """Train x -> Linear -> ReLU -> Linear -> softmax with plain SGD.

    Returns ``(pre_activations, losses)``: pre_activations is (steps + 1, n, hidden),
    the hidden layer's pre-activations on the whole data set before each step
    (what a BatchNorm after the first Linear would see), and losses the
    cross-entropy of each step's mini-batch.
    """
    rng = np.random.default_rng(seed)
    x, y = _blobs(rng)
    w1 = rng.standard_normal((2, hidden))
    b1 = np.zeros(hidden)
    w2 = rng.standard_normal((hidden, y.shape[1])) / np.sqrt(hidden)
    b2 = np.zeros(y.shape[1])
    snapshots, losses = [], []
    for _ in range(steps + 1):
        snapshots.append(x @ w1 + b1)
        batch = rng.choice(len(x), batch_size, replace=False)
        xb, yb = x[batch], y[batch]
        z = xb @ w1 + b1
        h = np.maximum(z, 0)
        logits = h @ w2 + b2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        losses.append(-np.log((p * yb).sum(axis=1)).mean())
        dlogits = (p - yb) / batch_size  # gradient of the mean cross-entropy
        dz = (dlogits @ w2.T) * (z > 0)
        w2 -= lr * h.T @ dlogits
        b2 -= lr * dlogits.sum(axis=0)
        w1 -= lr * xb.T @ dz
        b1 -= lr * dz.sum(axis=0)
    return np.array(snapshots), np.array(losses)


def hidden_activation_drift(units=4):
    """Histograms of one hidden unit at several steps, and the mean and spread of
    the ``units`` units that move most, step by step."""
    pre, _ = train_and_record(steps=DRIFT_SNAPSHOTS[-1])
    means, stds = pre.mean(axis=1), pre.std(axis=1)
    movement = np.abs(means[-1] - means[0]) + np.abs(stds[-1] - stds[0])
    movers = np.argsort(movement)[::-1][:units]

    fig, (ax_hist, ax_mean, ax_std) = plt.subplots(1, 3, figsize=(13, 3.6))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(DRIFT_SNAPSHOTS)))
    values = pre[list(DRIFT_SNAPSHOTS), :, movers[0]]
    bins = np.linspace(values.min(), values.max(), 50)
    for step, colour, v in zip(DRIFT_SNAPSHOTS, colours, values):
        ax_hist.hist(v, bins=bins, histtype="stepfilled", alpha=0.35, color=colour,
                     label=f"step {step}")
    ax_hist.set(title=f"hidden unit {movers[0]}, before its ReLU",
                xlabel="pre-activation", ylabel="examples")
    ax_hist.legend(fontsize=8)
    for unit in movers:
        ax_mean.plot(means[:, unit], label=f"unit {unit}")
        ax_std.plot(stds[:, unit])
    ax_mean.set(title=f"mean of the {units} units that move most", xlabel="SGD step")
    ax_std.set(title="their standard deviations", xlabel="SGD step")
    ax_mean.legend(fontsize=8)
    fig.suptitle("The same inputs, a moving hidden layer: each weight update changes "
                 "the distribution the next layer receives", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


# --- which axis a per-feature statistic reduces --------------------------------

CELL_WIDTH = 1.8  # wide enough for "weight kg" above a column


def _draw_cells(ax, values, left, top, shades):
    """A grid of numbered cells whose top-left corner is (left, top); one row per row."""
    for (r, c), value in np.ndenumerate(values):
        x, y = left + c * CELL_WIDTH, top - r - 1
        ax.add_patch(plt.Rectangle((x, y), CELL_WIDTH, 1, facecolor=shades[r, c],
                                   edgecolor="white"))
        ax.text(x + CELL_WIDTH / 2, y + 0.5, f"{value:.1f}", ha="center", va="center",
                fontsize=8)


def _column_shades(x):
    """Each column shaded on its own scale, as a per-feature view sees it."""
    low, high = x.min(axis=0), x.max(axis=0)
    return plt.cm.Blues(0.15 + 0.55 * (x - low) / (high - low))


def reduction_axes(n=6):
    """An (N, D) batch of four features on different scales; left, the mean over
    axis 0 (one number per feature); right, the wrong axis 1 (one per example)."""
    rng = np.random.default_rng(1)
    names = ["height cm", "weight kg", "age", "income k$"]
    centre, spread = np.array([170.0, 70.0, 40.0, 55.0]), np.array([10.0, 12.0, 12.0, 20.0])
    x = centre + spread * rng.standard_normal((n, len(names)))
    d = len(names)
    highlight = plt.cm.Oranges(0.35)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, axis in zip(axes, (0, 1)):
        _draw_cells(ax, x, 0, 0, _column_shades(x))
        for c, name in enumerate(names):
            ax.text((c + 0.5) * CELL_WIDTH, 0.2, name, ha="center", fontsize=8)
        for r in range(n):
            ax.text(-0.15, -r - 0.5, f"example {r}", ha="right", va="center", fontsize=8)
        stat = x.mean(axis=axis, keepdims=True)
        shades = np.broadcast_to(highlight, stat.shape + (4,))
        if axis == 0:
            _draw_cells(ax, stat, 0, -n - 0.4, shades)
            ax.text(-0.15, -n - 0.9, "mean", ha="right", va="center", fontsize=8)
            ax.annotate("", xy=(d * CELL_WIDTH + 0.4, -n), xytext=(d * CELL_WIDTH + 0.4, 0),
                        arrowprops={"arrowstyle": "->"})
            ax.text(d * CELL_WIDTH + 0.6, -n / 2, "average down\nthe N examples",
                    va="center", fontsize=8)
            ax.set_title("x.mean(axis=0): one mean per feature, shape (D,)", fontsize=10)
        else:
            _draw_cells(ax, stat, d * CELL_WIDTH + 0.4, 0, shades)
            ax.text(d * CELL_WIDTH + 0.4 + CELL_WIDTH / 2, 0.2, "mean", ha="center", fontsize=8)
            ax.set_title("x.mean(axis=1): one number per example, shape (N,):\n"
                         "it averages centimetres with dollars", fontsize=10)
        ax.set_xlim(-2.2, (d + 1) * CELL_WIDTH + 1.6)
        ax.set_ylim(-n - 1.6, 0.8)
        ax.set_aspect("equal")
        ax.axis("off")
    plt.close(fig)
    return fig


# --- how noisy batch statistics are --------------------------------------------

POPULATION_MEAN = 1.0
POPULATION_STD = 2.0
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)


def batch_estimates(batch_mean, batch_var, batch_size, n_batches=2000, seed=0):
    """Means and variances of ``n_batches`` batches of one feature drawn from a normal
    population (mean 1, variance 4), computed with the given functions.

    The batches are laid out as the columns of one (batch_size, n_batches) array, so
    a per-feature statistic computes all of them in one call. Returns two
    (n_batches,) arrays.
    """
    rng = np.random.default_rng(seed)
    batches = POPULATION_MEAN + POPULATION_STD * rng.standard_normal((batch_size, n_batches))
    return np.ravel(batch_mean(batches)), np.ravel(batch_var(batches))


def share_off_by_a_sigma(batch_mean, batch_var, batch_size=2):
    """The fraction of the ``batch_estimates`` batch means that lie more than one
    population standard deviation from the population mean, computed with the given
    functions once they pass their self-checks (the course's until then)."""
    batch_mean = yours_or_ours("batch_mean", batch_mean, ref.batch_mean, what="count")
    batch_var = yours_or_ours("batch_var", batch_var, ref.batch_var, what="count")
    means, _ = batch_estimates(batch_mean, batch_var, batch_size)
    return float(np.mean(np.abs(means - POPULATION_MEAN) > POPULATION_STD))


def _spreads(batch_mean, batch_var):
    """Standard deviation of the batch mean and variance, for every slider value."""
    estimates = [batch_estimates(batch_mean, batch_var, size) for size in BATCH_SIZES]
    return (np.array([m.std() for m, _ in estimates]),
            np.array([v.std() for _, v in estimates]))


def _histogram(ax, values, low, high, colour):
    """A filled histogram on a fixed range, with bins a fraction of the values'
    spread, so that wide and narrow distributions both keep their shape."""
    width = values.std() / 6
    ax.hist(np.clip(values, low, high), bins=np.arange(low, high + width, width),
            histtype="stepfilled", color=colour, alpha=0.7)
    ax.set_xlim(low, high)
    ax.set_yticks([])


def draw_batch_noise(batch_mean, batch_var, batch_size):
    """Three panels: the batch means, the batch variances, and both spreads
    against batch size (log-log) with the current size marked."""
    means, variances = batch_estimates(batch_mean, batch_var, batch_size)
    mu, sigma = POPULATION_MEAN, POPULATION_STD
    fig, (ax_mean, ax_var, ax_spread) = plt.subplots(1, 3, figsize=(13, 3.6))

    _histogram(ax_mean, means, mu - 3 * sigma, mu + 3 * sigma, "tab:blue")
    ax_mean.axvline(mu, color="black", label=f"population mean {mu:g}")
    ax_mean.set(title=f"{len(means)} batch means, N={batch_size}: spread {means.std():.2f}",
                xlabel="batch mean")
    ax_mean.legend(fontsize=8, loc="upper left")

    _histogram(ax_var, variances, 0, 4 * sigma ** 2, "tab:orange")
    ax_var.axvline(sigma ** 2, color="black", label=f"population variance {sigma ** 2:g}")
    ax_var.axvline(variances.mean(), color="tab:red", linestyle="--",
                   label=f"average batch variance {variances.mean():.2f},\n"
                         f"about (N-1)/N x {sigma ** 2:g} = {(batch_size - 1) / batch_size * sigma ** 2:.2f}")
    ax_var.set(title=f"their biased variances: spread {variances.std():.2f}",
               xlabel="batch variance (divide by N)")
    ax_var.legend(fontsize=8, loc="upper right")

    mean_spread, var_spread = _spreads(batch_mean, batch_var)
    sizes = np.array(BATCH_SIZES)
    ax_spread.loglog(sizes, mean_spread, "o-", color="tab:blue", label="spread of batch means")
    ax_spread.loglog(sizes, var_spread, "o-", color="tab:orange",
                     label="spread of batch variances")
    ax_spread.loglog(sizes, sigma / np.sqrt(sizes), ":", color="black",
                     label=r"$\sigma/\sqrt{N}$")
    ax_spread.axvline(batch_size, color="grey", alpha=0.5)
    ax_spread.set(title="halving the noise takes 4x the batch", xlabel="batch size N")
    ax_spread.set_xticks(sizes, [str(s) for s in sizes])
    ticks = [0.1, 0.2, 0.5, 1, 2, 5]
    ax_spread.set_yticks(ticks, [str(t) for t in ticks])
    ax_spread.minorticks_off()
    ax_spread.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    plt.close(fig)
    return fig


def batch_noise_panel(batch_mean, batch_var):
    """Slider over batch sizes 2..256 (powers of two); the statistics are computed
    with the functions given (yours, in the notebook) once they pass their self-checks."""
    if grading():
        return None
    batch_mean = yours_or_ours("batch_mean", batch_mean, ref.batch_mean)
    batch_var = yours_or_ours("batch_var", batch_var, ref.batch_var)
    size = widgets.SelectionSlider(options=BATCH_SIZES, value=32, description="batch size",
                                   continuous_update=False)
    return slider_panel(functools.partial(draw_batch_noise, batch_mean, batch_var),
                        batch_size=size)
