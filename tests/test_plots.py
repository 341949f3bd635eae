"""bn_course.plots: running means, curves, percentile bands and histograms."""

import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bn_course import plots


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_running_mean_averages_each_window():
    values = [1.0, 2.0, 6.0, 3.0, 8.0]
    np.testing.assert_allclose(plots.running_mean(values, 2), [1.5, 4.0, 4.5, 5.5])
    np.testing.assert_allclose(plots.running_mean(values, 5), [4.0])
    np.testing.assert_allclose(plots.running_mean(values, 1), values)


def test_running_mean_keeps_a_divergence_visible():
    smoothed = plots.running_mean([1.0, 2.0, np.nan, 1.0, 1.0, 1.0], 2)
    assert np.isnan(smoothed[1]) and np.isnan(smoothed[2])
    assert smoothed[-1] == 1.0


@pytest.mark.parametrize("window", [0, 6])
def test_running_mean_rejects_a_window_that_does_not_fit(window):
    with pytest.raises(ValueError, match="window must be between 1 and 5"):
        plots.running_mean(np.ones(5), window)


def test_curves_draws_one_labelled_line_per_series(ax):
    series = {"a": ([0, 1, 2], [3, 4, 5]), "b": ([0, 1], [1, 0])}
    lines = plots.curves(ax, series, colors={"a": "red"}, lw=3)
    assert [line.get_label() for line in lines] == ["a", "b"]
    np.testing.assert_array_equal(lines[0].get_ydata(), [3, 4, 5])
    assert lines[0].get_color() == "red" and lines[0].get_linewidth() == 3
    assert lines[1].get_color() != "red"  # no colour given: matplotlib's cycle


def test_percentile_band_shades_between_the_outer_columns(ax):
    x = np.arange(4)
    trace = np.array([[-1, 0, 2], [-2, 0.5, 1], [0, 1, 3], [-1, 0, 1]], dtype=float)
    middle = plots.percentile_band(ax, x, trace, color="C0", label="median")
    np.testing.assert_array_equal(middle.get_ydata(), trace[:, 1])
    assert middle.get_label() == "median"
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == trace[:, 0].min() and band[:, 1].max() == trace[:, 2].max()


@pytest.mark.parametrize("shape", [(4,), (4, 2), (3, 3)])
def test_percentile_band_rejects_a_trace_of_the_wrong_shape(ax, shape):
    with pytest.raises(ValueError, match="trace must be"):
        plots.percentile_band(ax, np.arange(4), np.zeros(shape), color="C0")


def test_histograms_share_their_bins(ax):
    rng = np.random.default_rng(0)
    samples = {"narrow": rng.normal(0, 1, 500), "wide": rng.normal(5, 3, 500)}
    edges = plots.histograms(ax, samples, bins=30, colors={"wide": "C3"})
    assert len(edges) == 31
    assert edges[0] == min(v.min() for v in samples.values())
    assert edges[-1] == max(v.max() for v in samples.values())
    assert [patch.get_label() for patch in ax.patches] == ["narrow", "wide"]


def test_importing_plots_loads_no_torch():
    code = "import sys, bn_course.plots; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
