"""Figures, printouts and the slider of notebook 02 (normalizing). NumPy and matplotlib only.

* ``rounding_noise()``: why eps matters even when a feature is "exactly" constant.
* ``normalize_panel(normalize)``: shift, scale and eps sliders over three features
  (ordinary, tiny spread, constant) before and after normalizing.
* ``output_variance_figure(normalize)``: the output variance is var / (var + eps), not 1.

The panel and the figure run the ``normalize`` they are given (the student's, in the
notebook) once it passes its self-check, and the course's until then.

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


def _normalize_with_batch_stats(normalize, x, eps):
    """normalize(x, ...) with x's own biased statistics; 0/0 gives NaN here without a
    warning, because showing that NaN is the point of eps=0 in these demos."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return normalize(x, x.mean(axis=0), x.var(axis=0), eps)


# --- eps and floating point ---------------------------------------------------

def constant_feature_in_float32(value=0.1, n=7, eps=1e-5):
    """Normalize a float32 feature whose n values all equal ``value``.

    Returns a dict: the computed mean, the centred values, the variance, and the
    output with eps = 0 and with ``eps``. The mean can land one rounding step away
    from ``value``, so "constant" leaves a tiny non-zero variance behind.
    """
    x = np.full((n, 1), value, dtype=np.float32)
    mean = x.mean(axis=0)
    centred = x - mean
    return {
        "mean": mean[0],
        "centred": centred[:, 0],
        "var": x.var(axis=0)[0],
        "without_eps": _normalize_with_batch_stats(ref.normalize, x, 0.0)[:, 0],
        "with_eps": _normalize_with_batch_stats(ref.normalize, x, eps)[:, 0],
    }


def rounding_noise(value=0.1, n=7, eps=1e-5):
    """Print what normalizing a constant float32 feature gives with and without eps."""
    r = constant_feature_in_float32(value, n, eps)
    rows = [("batch mean", f"{r['mean']:.9g}"),
            ("x - mean", f"{np.unique(r['centred'])}  (rounding error, not data)"),
            ("batch variance", f"{r['var']:.3g}"),
            ("normalized, eps = 0", np.unique(r["without_eps"])),
            (f"normalized, eps = {eps:g}", np.unique(r["with_eps"]))]
    print(f"{n} float32 examples, every one equal to {value}:")
    for label, shown in rows:
        print(f"  {label:<24}{shown}")


# --- the slider: shift, scale, eps --------------------------------------------

FEATURES = ("ordinary (spread 1)", "tiny spread (0.003)", "constant")
FEATURE_SPREADS = np.array([1.0, 0.003, 0.0])
EPS_CHOICES = (("0", 0.0), ("1e-8", 1e-8), ("1e-5", 1e-5), ("1e-3", 1e-3), ("0.1", 0.1),
               ("1", 1.0))


def _standard_batch(n=64, seed=0):
    """(n, 3) values with mean exactly 0 and biased variance exactly 1 per column."""
    z = np.random.default_rng(seed).standard_normal((n, len(FEATURES)))
    return (z - z.mean(axis=0)) / z.std(axis=0)


def panel_input(shift, scale, n=64):
    """The three features of the panel: shift + scale * spread * z."""
    return shift + scale * FEATURE_SPREADS * _standard_batch(n)


def _strip(ax, values, colour):
    """One dot per example; a fixed vertical jitter keeps equal values visible."""
    jitter = np.random.default_rng(1).uniform(-0.3, 0.3, len(values))
    ax.scatter(values, jitter, s=12, color=colour, alpha=0.7)
    ax.set_ylim(-1, 1)
    ax.set_yticks([])


def draw_normalize(normalize, shift, scale, eps):
    """Left: each feature as given. Right: after normalizing with its batch statistics,
    on a fixed axis, with the output mean and variance against var / (var + eps)."""
    x = panel_input(shift, scale)
    out = np.asarray(_normalize_with_batch_stats(normalize, x, eps))
    var = x.var(axis=0)
    fig, axes = plt.subplots(len(FEATURES), 2, figsize=(12, 5.2))
    for d, (name, (ax_in, ax_out)) in enumerate(zip(FEATURES, axes)):
        _strip(ax_in, x[:, d], "tab:blue")
        ax_in.set_title(f"input: {name}, var {var[d]:.3g}", fontsize=9, loc="left")
        ax_in.ticklabel_format(useOffset=False)  # show 100.001, not 1e-3 + 1e2
        ax_in.locator_params(axis="x", nbins=5)
        if np.ptp(x[:, d]) == 0:
            ax_in.set_xlim(x[0, d] - 1, x[0, d] + 1)
        ax_out.set_xlim(-3.5, 3.5)
        ax_out.set_ylim(-1, 1)
        ax_out.set_yticks([])
        if np.isnan(out[:, d]).any():
            ax_out.text(0, 0, "NaN for every example: 0 / sqrt(0 + 0)", ha="center",
                        va="center", color="tab:red")
        else:
            _strip(ax_out, out[:, d], "tab:green")
        expected = var[d] / (var[d] + eps) if var[d] + eps > 0 else float("nan")
        mean = np.round(out[:, d].mean(), 4) + 0.0  # + 0.0 turns -0.0 into 0.0
        ax_out.set_title(f"output: mean {mean:.4f}, var {out[:, d].var():.6g}"
                         f"   (var/(var+eps) = {expected:.6g})", fontsize=9, loc="left")
    fig.suptitle(f"normalize(x, mean, var, eps={eps:g}) with x = {shift:g} + {scale:.3g} * "
                 "spread * noise", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


def normalize_panel(normalize):
    """Sliders for the shift and the scale of the input and for eps."""
    if grading():
        return None
    normalize = yours_or_ours("normalize", normalize, ref.normalize)
    return slider_panel(
        functools.partial(draw_normalize, normalize),
        shift=widgets.FloatSlider(value=0.0, min=-100, max=100, step=1, description="shift",
                                  continuous_update=False),
        scale=widgets.FloatLogSlider(value=1.0, base=10, min=-3, max=3, step=0.25,
                                     description="scale", continuous_update=False),
        eps=widgets.SelectionSlider(options=EPS_CHOICES, value=1e-5, description="eps",
                                    continuous_update=False),
    )


# --- the output variance is var / (var + eps) ----------------------------------

def output_variances(normalize, variances, eps, n=256):
    """Measured output variance of normalizing a batch whose biased variance is each
    of ``variances`` (exactly: the batch is a standardized batch scaled to it)."""
    z = _standard_batch(n)[:, 0]
    x = np.sqrt(np.asarray(variances, dtype=np.float64))[None, :] * z[:, None]
    return np.asarray(_normalize_with_batch_stats(normalize, x, eps)).var(axis=0)


def output_variance_figure(normalize, eps_values=(1e-5, 1e-3)):
    """Output variance against input variance (log axis): the curve var / (var + eps)
    and measured points, for each eps; the knee sits at var = eps."""
    normalize = yours_or_ours("normalize", normalize, ref.normalize)
    variances = np.logspace(-9, 3, 25)
    fine = np.logspace(-9, 3, 400)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for eps, colour in zip(eps_values, ("tab:blue", "tab:purple")):
        ax.semilogx(fine, fine / (fine + eps), color=colour, label=f"var / (var + {eps:g})")
        ax.semilogx(variances, output_variances(normalize, variances, eps), "o", color=colour, ms=4,
                    label=f"measured, eps = {eps:g}")
        ax.axvline(eps, color=colour, linestyle=":", alpha=0.6)
    ax.axhline(1, color="grey", linewidth=0.8)
    ax.annotate("smaller var, closer to 0;\na constant feature (var = 0)\ngives exactly 0",
                xy=(variances[0], 0), xytext=(2e-9, 0.35), fontsize=8,
                arrowprops={"arrowstyle": "->"})
    ax.set(xlabel="variance of the input feature", ylabel="variance after normalizing",
           title="Normalizing gives variance var/(var+eps): just under 1 for ordinary features, "
                 "\nabout 1/2 at var = eps (dotted), and 0 for a constant feature (var = 0)")
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    plt.close(fig)
    return fig
