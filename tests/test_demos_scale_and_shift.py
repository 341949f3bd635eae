import numpy as np
import pytest

from bn_course.demos import scale_and_shift as demo
from bn_course.reference.numpy import batchnorm_forward


def test_normalized_inputs_keep_a_sigmoid_nearly_linear():
    z = np.random.default_rng(0).standard_normal(10_000)
    assert demo.linearity(z) > 0.97
    assert demo.linearity(4 * z) < 0.9  # gamma = 4 reaches the curved, saturating parts


def test_sigmoid_figure_shows_the_three_stages():
    fig = demo.sigmoid_linear_region()
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 3
    r2 = [float(t.rsplit("=", 1)[1]) for t in titles]
    # Normalizing makes the sigmoid look linear; gamma and beta give the curve back.
    assert r2[1] > 0.95 and r2[0] < 0.9 and r2[2] < 0.9


def test_skewed_feature_is_skewed():
    x = demo.skewed_feature()[:, 0]
    skewness = np.mean((x - x.mean()) ** 3) / x.std() ** 3
    assert skewness > 1


def _batch_in_sigmoid_plot(panel):
    """The BN outputs scattered over the sigmoid curve (the panel's right axes)."""
    return panel.figure.axes[1].collections[0].get_offsets()[:, 0]


def test_gamma_beta_sliders_redraw_the_output(not_grading):
    panel = demo.gamma_beta_panel(batchnorm_forward)
    y = _batch_in_sigmoid_plot(panel)
    assert abs(y.mean()) < 1e-9 and y.std() == pytest.approx(1, abs=1e-3)

    panel.sliders["gamma"].value = 2.0
    panel.sliders["beta"].value = -1.5
    y = _batch_in_sigmoid_plot(panel)
    assert y.mean() == pytest.approx(-1.5) and y.std() == pytest.approx(2, abs=1e-3)
    assert "mean -1.50, std 2.00" in panel.figure.axes[0].get_title()


def test_panel_draws_the_function_it_is_given_once_it_passes(not_grading):
    calls = []

    def yours(x, gamma, beta, eps=1e-5):
        calls.append(x.shape)
        return gamma * (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps) + beta

    panel = demo.gamma_beta_panel(yours)
    called = len(calls)
    panel.sliders["beta"].value = 1.0
    assert len(calls) == called + 1


def test_a_wrong_answer_is_named_and_the_course_answer_drawn(not_grading, capsys):
    def shift_only(x, gamma, beta, eps=1e-5):
        return x + beta

    panel = demo.gamma_beta_panel(shift_only)
    drawn = _batch_in_sigmoid_plot(panel)
    assert abs(drawn.mean()) < 1e-6 and drawn.std() == pytest.approx(1, abs=1e-3)
    assert "your `batchnorm_forward`, which does not pass" in capsys.readouterr().out


def test_panel_is_none_under_nbgrader(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert demo.gamma_beta_panel(batchnorm_forward) is None


def test_gamma_zero_collapses_the_feature_without_warnings(not_grading, recwarn):
    panel = demo.gamma_beta_panel(batchnorm_forward)
    panel.sliders["gamma"].value = 0.0
    np.testing.assert_allclose(_batch_in_sigmoid_plot(panel), 0.0)
    assert "all inputs equal" in panel.figure.axes[1].get_title()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
