"""Plotting helpers shared by the notebooks: curves, percentile bands and histograms.

Each helper draws on a matplotlib ``Axes`` that the caller made, and returns what it drew,
so a figure function stays in charge of its layout. NumPy and matplotlib only: the
notebooks that use no torch can use these too.
"""

import numpy as np

__all__ = ["curves", "histograms", "percentile_band", "running_mean"]


def running_mean(values, window):
    """The mean of each run of ``window`` consecutive values: ``len(values) - window + 1``
    of them. NaN and inf stay in (a diverged loss should show, not be averaged away)."""
    values = np.asarray(values, dtype=np.float64)
    if not 1 <= window <= len(values):
        raise ValueError(f"window must be between 1 and {len(values)}, got {window}")
    return np.convolve(values, np.ones(window) / window, mode="valid")


def curves(ax, series, colors=None, **style):
    """Draw several ``(x, y)`` series on ``ax``; ``series`` maps a legend label to its
    pair, ``colors`` (optional) a label to its colour. Returns the ``Line2D`` objects."""
    colors = colors or {}
    return [ax.plot(x, y, label=label, color=colors.get(label), **style)[0]
            for label, (x, y) in series.items()]


def percentile_band(ax, x, trace, color, label=None, alpha=0.25):
    """A shaded band between the first and the last column of ``trace`` (T, k) and a line
    for its middle column: e.g. the 15th, 50th and 85th percentiles over time.
    Returns the middle ``Line2D``."""
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 2 or len(trace) != len(x) or trace.shape[1] < 3:
        raise ValueError(f"trace must be (len(x), k >= 3), got {trace.shape} for {len(x)} x")
    ax.fill_between(x, trace[:, 0], trace[:, -1], color=color, alpha=alpha, linewidth=0)
    return ax.plot(x, trace[:, trace.shape[1] // 2], color=color, lw=2, label=label)[0]


def histograms(ax, samples, bins=40, colors=None, density=True):
    """Overlaid step histograms of several samples on shared bins; ``samples`` maps a
    legend label to its values. Returns the bin edges."""
    colors = colors or {}
    everything = np.concatenate([np.ravel(values) for values in samples.values()])
    edges = np.histogram_bin_edges(everything, bins=bins)
    for label, values in samples.items():
        ax.hist(np.ravel(values), bins=edges, density=density, histtype="step", lw=2,
                label=label, color=colors.get(label))
    return edges
