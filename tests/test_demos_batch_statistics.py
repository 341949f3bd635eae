import re

import numpy as np
import pytest

from bn_course.demos import batch_statistics as demo
from bn_course.reference.numpy import batch_mean, batch_var


def test_training_moves_the_hidden_layer_and_lowers_the_loss():
    pre, losses = demo.train_and_record(steps=60)
    assert pre.shape == (61, 512, 64)
    means, stds = pre.mean(axis=1), pre.std(axis=1)
    # Some unit's mean moves by more than one of its initial standard deviations.
    assert np.max(np.abs(means[-1] - means[0]) / stds[0]) > 1
    assert losses[-10:].mean() < losses[:5].mean() / 2


def test_drift_figure_shows_each_snapshot():
    fig = demo.hidden_activation_drift()
    ax_hist, ax_mean, ax_std = fig.axes
    labels = [text.get_text() for text in ax_hist.get_legend().get_texts()]
    assert labels == [f"step {s}" for s in demo.DRIFT_SNAPSHOTS]
    assert len(ax_mean.lines) == len(ax_std.lines) == 4


def test_reduction_picture_has_one_mean_per_feature_then_one_per_example():
    n, d = 6, 4
    left, right = demo.reduction_axes(n=n).axes
    assert len(left.patches) == n * d + d    # the batch, then D means
    assert len(right.patches) == n * d + n   # the batch, then N (wrong-axis) means


@pytest.mark.parametrize("size", [2, 32, 256])
def test_batch_estimates_scatter_as_sampling_theory_says(size):
    means, variances = demo.batch_estimates(batch_mean, batch_var, size)
    sigma = demo.POPULATION_STD
    assert means.shape == variances.shape == (2000,)
    assert means.std() == pytest.approx(sigma / np.sqrt(size), rel=0.1)
    # The biased variance runs low by the factor (N - 1) / N on average.
    assert variances.mean() == pytest.approx((size - 1) / size * sigma ** 2, rel=0.05)


def test_batch_estimates_use_the_functions_given():
    def unbiased_var(x):
        return x.var(axis=0, ddof=1)

    def mean_keepdims(x):  # (1, D) is allowed by the exercise API
        return x.mean(axis=0, keepdims=True)

    means, variances = demo.batch_estimates(mean_keepdims, unbiased_var, 2)
    assert means.shape == (2000,)
    assert variances.mean() == pytest.approx(demo.POPULATION_STD ** 2, rel=0.1)


def _spread_in_title(ax):
    return float(re.search(r"spread ([0-9.]+)", ax.get_title()).group(1))


def test_batch_size_slider_narrows_the_histograms(not_grading):
    panel = demo.batch_noise_panel(batch_mean, batch_var)
    panel.sliders["batch_size"].value = 2
    wide_mean, wide_var = (_spread_in_title(ax) for ax in panel.figure.axes[:2])
    panel.sliders["batch_size"].value = 256
    ax_mean, ax_var, ax_spread = panel.figure.axes
    assert "N=256" in ax_mean.get_title()
    # 128 times the batch: about sqrt(128) = 11 times less spread.
    assert wide_mean / _spread_in_title(ax_mean) > 8
    assert wide_var / _spread_in_title(ax_var) > 5
    assert ax_spread.lines[-1].get_xdata()[0] == 256  # the marker follows the slider


def test_panel_is_none_under_nbgrader(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert demo.batch_noise_panel(batch_mean, batch_var) is None
