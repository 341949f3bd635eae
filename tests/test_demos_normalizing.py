import numpy as np
import pytest

from bn_course.demos import normalizing as demo
from bn_course.reference.numpy import normalize


def test_eps_keeps_float32_rounding_error_from_becoming_signal():
    result = demo.constant_feature_in_float32(value=0.1, n=7)
    # The float32 mean of seven 0.1s is one rounding step off, so "constant" is not.
    assert 0 < result["var"] < 1e-12
    assert np.all(np.abs(result["without_eps"]) > 0.5)  # rounding error blown up to ~1
    assert np.all(np.abs(result["with_eps"]) < 1e-4)    # about 0, as it should be


def test_rounding_noise_prints_both_outputs(capsys):
    demo.rounding_noise()
    lines = capsys.readouterr().out.splitlines()
    assert any(line.strip().startswith("normalized, eps = 0 ") for line in lines)
    assert any(line.strip().startswith("normalized, eps = 1e-05") for line in lines)


def test_output_variance_is_var_over_var_plus_eps():
    variances = np.array([0.0, 1e-7, 1e-5, 1.0, 100.0])
    measured = demo.output_variances(normalize, variances, eps=1e-5)
    np.testing.assert_allclose(measured, variances / (variances + 1e-5), rtol=1e-9, atol=1e-15)
    assert measured[0] == 0 and measured[3] < 1


def test_output_variances_use_the_function_given():
    def forgot_eps(x, mean, var, eps=1e-5):
        return (x - mean) / np.sqrt(var)

    assert demo.output_variances(forgot_eps, [1e-5], eps=1e-5)[0] == pytest.approx(1)


def test_output_variance_figure_plots_curve_and_points_per_eps():
    ax, = demo.output_variance_figure(normalize, eps_values=(1e-5, 1e-3)).axes
    curves_and_points = [line for line in ax.lines if len(line.get_xdata()) > 2]
    assert len(curves_and_points) == 4


def _output_strip(panel, feature):
    """x positions of the normalized values drawn for one feature, or None if none."""
    ax = panel.figure.axes[2 * feature + 1]
    return ax.collections[0].get_offsets()[:, 0] if ax.collections else None


def test_panel_output_stays_centred_whatever_the_shift_and_scale(not_grading):
    panel = demo.normalize_panel(normalize)
    ordinary, tiny, constant = (_output_strip(panel, d) for d in range(3))
    assert abs(ordinary.mean()) < 1e-9 and ordinary.var() == pytest.approx(1 - 1e-5)
    assert tiny.var() == pytest.approx(9e-6 / (9e-6 + 1e-5))  # spread comparable to eps
    assert np.all(constant == 0)

    panel.sliders["shift"].value = 50.0
    panel.sliders["scale"].value = 100.0
    inputs = panel.figure.axes[0].collections[0].get_offsets()[:, 0]
    assert inputs.mean() == pytest.approx(50.0)
    # The same values up to eps: sqrt(1 + eps) before, sqrt(1e4 + eps) now.
    np.testing.assert_allclose(_output_strip(panel, 0), ordinary, rtol=1e-5)
    assert _output_strip(panel, 1).var() > 0.99  # now var >> eps
    assert np.all(_output_strip(panel, 2) == 0)


def test_eps_zero_turns_the_constant_feature_into_nan(not_grading):
    panel = demo.normalize_panel(normalize)
    panel.sliders["eps"].value = 0.0
    assert _output_strip(panel, 2) is None
    assert "NaN" in panel.figure.axes[5].texts[0].get_text()
    assert _output_strip(panel, 1).var() == pytest.approx(1)


def test_panel_draws_the_function_it_is_given_once_it_passes(not_grading):
    calls = []

    def yours(x, mean, var, eps=1e-5):
        calls.append(x.shape)
        return (x - mean) / np.sqrt(var + eps)

    panel = demo.normalize_panel(yours)
    called = len(calls)
    panel.sliders["shift"].value = 10.0
    assert len(calls) == called + 1  # the redraw ran it


def test_a_wrong_normalize_is_named_and_the_course_answer_drawn(not_grading, capsys):
    def forgot_to_centre(x, mean, var, eps=1e-5):
        return x / np.sqrt(var + eps)

    panel = demo.normalize_panel(forgot_to_centre)
    panel.sliders["shift"].value = 10.0
    assert abs(_output_strip(panel, 0).mean()) < 1e-6  # centred: not the wrong answer's
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "your `normalize`, which does not pass" in out
    assert "did not subtract the mean" in out


def test_panel_is_none_under_nbgrader(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert demo.normalize_panel(normalize) is None
