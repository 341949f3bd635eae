import numpy as np
import pytest
from answers import solution

from bn_course.demos import backward as demo
from bn_course.reference.numpy import batchnorm_backward, batchnorm_forward


def without_variance_path(dout, x, gamma, eps=1e-5):
    """The wrong backward pass of the notebook's Trap 1: dx keeps only the mean's path."""
    std = np.sqrt(x.var(axis=0) + eps)
    x_hat = (x - x.mean(axis=0)) / std
    return gamma / std * (dout - dout.mean(axis=0)), (dout * x_hat).sum(0), dout.sum(0)


@pytest.fixture
def batch():
    return demo.example_batch()


def test_forward_is_batchnorm_and_gives_beta_for_a_batch_of_one(batch):
    x, gamma, _ = batch
    beta = np.linspace(-1, 1, x.shape[1])
    np.testing.assert_allclose(demo.forward(x, gamma, beta), batchnorm_forward(x, gamma, beta))
    np.testing.assert_array_equal(demo.forward(x[:1], gamma, beta), beta[None, :])


def test_numerical_gradient_of_a_known_function_leaves_x_alone():
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    original = x.copy()
    grad = demo.numerical_gradient(lambda z: z ** 3, x, dout)
    np.testing.assert_allclose(grad, 3 * original ** 2 * dout, rtol=1e-8, atol=1e-9)
    np.testing.assert_array_equal(x, original)


def test_numerical_gradients_match_the_reference_backward(batch):
    x, gamma, dout = batch
    for numeric, exact in zip(demo.numerical_gradients(x, gamma, dout),
                              batchnorm_backward(dout, x, gamma)):
        np.testing.assert_allclose(numeric, exact, rtol=1e-6, atol=1e-8)


def test_gradient_check_passes_a_right_backward_and_fails_a_wrong_one(batch):
    x, gamma, dout = batch
    assert demo.gradient_check(batchnorm_backward, x, gamma, dout).passed
    wrong = demo.gradient_check(without_variance_path, x, gamma, dout)
    assert not wrong.passed
    assert [name for name, *_ in wrong.rows] == ["dx", "dgamma", "dbeta"]
    assert "MISMATCH" in str(wrong).splitlines()[2]  # the dx row


def test_trap_dout_ones_lets_the_wrong_backward_pass(batch):
    x, gamma, _ = batch
    ones = np.ones_like(x)
    assert demo.gradient_check(without_variance_path, x, gamma, ones).passed
    # The true dx is zero up to rounding: a sum of outputs does not depend on x.
    assert np.abs(batchnorm_backward(ones, x, gamma)[0]).max() < 1e-12


def test_trap_float32_fails_a_right_backward_at_the_float64_step(batch):
    x32, gamma32, dout32 = (a.astype(np.float32) for a in batch)
    check = demo.gradient_check(batchnorm_backward, x32, gamma32, dout32)
    assert not check.passed and check.dtype == "float32"
    assert check.rows[0][1] > 1e-4


def test_trap_batch_of_one_lets_the_wrong_backward_pass(batch):
    x, gamma, dout = batch
    assert demo.gradient_check(without_variance_path, x[:1], gamma, dout[:1]).passed


def test_trap_constant_feature_needs_a_step_below_sqrt_eps(batch):
    x, gamma, dout = batch
    x = x.copy()
    x[:, -1] = 5.0
    assert demo.gradient_check(batchnorm_backward, x, gamma, dout, h=1e-5).passed
    assert not demo.gradient_check(batchnorm_backward, x, gamma, dout, h=1e-3).passed


def test_step_errors_are_v_shaped_and_float32_is_worse(batch):
    x, gamma, dout = batch
    errors64 = demo.step_errors(batchnorm_backward, x, gamma, dout)
    errors32 = demo.step_errors(batchnorm_backward, x, gamma, dout, dtype=np.float32)
    best = errors64.argmin()
    assert errors64[best] < 1e-9
    assert 0 < best < len(demo.STEPS) - 1
    assert errors64[0] > 100 * errors64[best] and errors64[-1] > 100 * errors64[best]
    assert errors32.min() > 1e-6
    # float32 is worse wherever rounding matters; at the largest steps truncation
    # dominates both
    small = demo.STEPS <= 1e-2
    assert np.all(errors32[small] > errors64[small])


def test_graph_figure_draws_every_node_and_edge():
    ax = demo.graph_figure().axes[0]
    texts = [t.get_text() for t in ax.texts]
    for _, forward_text, backward_text, _ in demo._GRAPH_NODES.values():
        assert forward_text in texts and backward_text in texts
    arrows = [child for child in ax.get_children()
              if type(child).__name__ == "Annotation" and child.arrow_patch is not None]
    assert len(arrows) == len(demo._GRAPH_EDGES)


def _marker_errors(panel):
    """The circled errors at the slider's h: float64, then float32."""
    lines = panel.figure.axes[0].get_lines()
    return [line.get_ydata()[0] for line in lines if len(line.get_xdata()) == 1]


def test_step_slider_moves_the_marker_along_the_curve(not_grading):
    panel = demo.step_size_panel(batchnorm_backward)
    at_default = _marker_errors(panel)
    assert at_default[0] < 1e-9 and at_default[1] > 1e-3  # float64 good, float32 poor

    panel.sliders["h"].value = 1e-2
    at_large_step = _marker_errors(panel)
    assert at_large_step[0] > 100 * at_default[0]  # truncation error in float64
    assert at_large_step[1] < at_default[1]  # float32 prefers the larger step
    assert "1e-02" in panel.figure.axes[1].get_title()


def test_step_panel_draws_the_course_answer_for_a_wrong_one(not_grading, capsys):
    panel = demo.step_size_panel(without_variance_path)
    assert _marker_errors(panel)[0] < 1e-6  # the exact dx: the course's, not the wrong one
    assert "your `batchnorm_backward`, which does not pass" in capsys.readouterr().out


def test_gradient_check_reports_a_crash_or_a_wrong_shape_in_one_line(capsys):
    x, gamma, dout = demo.example_batch()

    def unfinished(dout, x, gamma, eps=1e-5):
        raise NotImplementedError()

    def one_gradient(dout, x, gamma, eps=1e-5):
        return dout

    assert demo.gradient_check(unfinished, x, gamma, dout) is None
    assert demo.gradient_check(one_gradient, x, gamma, dout) is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "`unfinished`: it is not implemented yet" in lines[0]
    assert "`one_gradient` to return (dx, dgamma, dbeta)" in lines[1]


def test_step_panel_is_none_under_nbgrader(grading):
    assert demo.step_size_panel(batchnorm_backward) is None


def test_timing_table_times_numpy_and_torch(not_grading):
    yours = solution("05_backward", "batchnorm_backward")
    table = demo.timing_table(yours, yours, shape=(16, 8), repeats=1)
    names = [name for name, _ in table.rows]
    assert len(names) == 4 and "NumPy, compact (yours)" in names
    assert any("native" in name for name in names)
    assert all(seconds > 0 for _, seconds in table.rows)


def test_timing_table_is_skipped_under_nbgrader(grading):
    assert demo.timing_table(batchnorm_backward, batchnorm_backward) is None
