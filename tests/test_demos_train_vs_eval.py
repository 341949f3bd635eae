import numpy as np
import pytest
from answers import solution

from bn_course.data import drifting_stream
from bn_course.demos import train_vs_eval as demo
from bn_course.reference.numpy import BatchNorm1d, update_running_stats


def test_ema_weights_plus_the_start_value_sum_to_one():
    momentum, steps = 0.1, 30
    weights = demo.ema_weights(momentum, steps)
    assert weights.sum() + (1 - momentum) ** steps == pytest.approx(1)
    assert weights[-1] == momentum  # the newest batch
    assert np.all(np.diff(weights) > 0)  # older batches count less


def test_ema_weights_figure_has_a_line_per_momentum_and_the_cumulative_one():
    fig = demo.ema_weights_figure(num_batches=50, momenta=(0.1, 0.01))
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3
    np.testing.assert_allclose(lines[2].get_ydata(), 1 / 50)


def test_track_stream_matches_a_direct_moving_average():
    stream = drifting_stream(num_batches=20, batch_size=5, num_features=2, seed=1)
    running = demo.track_stream(update_running_stats, stream, momentum=0.3)
    expected = np.zeros(2)
    for batch in stream.batches:
        expected = 0.7 * expected + 0.3 * batch.mean(axis=0)
    np.testing.assert_allclose(running[-1], expected)


def test_momentum_none_is_the_cumulative_average():
    stream = drifting_stream(num_batches=25, batch_size=4, seed=2)
    running = demo.track_stream(update_running_stats, stream, momentum=None)
    batch_means = stream.batches.mean(axis=1)
    np.testing.assert_allclose(running, np.cumsum(batch_means, axis=0)
                               / np.arange(1, 26)[:, None])


def _running_mean_line(panel):
    line = panel.figure.axes[0].get_lines()[3]
    assert line.get_label().startswith("running mean")
    return line.get_ydata()


def test_momentum_slider_trades_lag_for_noise(not_grading):
    stream = drifting_stream(num_batches=200, batch_size=16, drift_per_batch=0.05)
    panel = demo.momentum_panel(update_running_stats, stream)
    assert panel.sliders["momentum"].value == 0.1

    panel.sliders["momentum"].value = 1.0
    # momentum 1 keeps only the newest batch: the running mean is each batch's mean.
    np.testing.assert_allclose(_running_mean_line(panel), stream.batches.mean(axis=1)[:, 0])

    panel.sliders["momentum"].value = 0.01
    lag = stream.means[-1, 0] - _running_mean_line(panel)[-1]
    assert lag > 2  # a small momentum trails a drifting mean far behind
    assert "lag" in panel.figure.axes[0].get_title()


def test_momentum_panel_is_none_under_nbgrader(grading):
    assert demo.momentum_panel(update_running_stats) is None


def test_compare_with_torch_prints_tiny_differences_for_a_correct_class(not_grading, capsys):
    demo.compare_with_torch(BatchNorm1d)
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[1] for row in rows] == ["train"] * 3 + ["eval"] * 2
    assert max(float(value) for row in rows for value in row.split()[2:]) < 1e-12


def test_compare_with_torch_shows_a_class_that_ignores_eval_mode(not_grading, capsys):
    class NoEvalMode(BatchNorm1d):
        def eval(self):
            return self  # stays in train mode

    demo.compare_with_torch(NoEvalMode)
    rows = capsys.readouterr().out.splitlines()[1:]
    assert float(rows[3].split()[2]) > 1e-3  # the first eval-mode output differs


@pytest.fixture(scope="module")
def lab_result():
    return demo.forgot_eval_experiment(steps=300, batch_sizes=(2, 4, 128))


def test_forgetting_eval_mode_costs_accuracy_on_tiny_batches(lab_result):
    assert lab_result.eval_accuracy > 0.9
    tiny, small, large = (lab_result.train_mode_accuracy[n] for n in (2, 4, 128))
    assert tiny < lab_result.eval_accuracy - 0.3
    assert tiny < small < large
    assert large > lab_result.eval_accuracy - 0.05


def test_the_numpy_network_in_eval_mode_agrees_with_torch(lab_result):
    assert lab_result.eval_accuracy == lab_result.torch_eval_accuracy


def test_forgot_eval_lab_runs_your_batchnorm1d(not_grading, capsys):
    calls = []
    YourBatchNorm1d = solution("04_train_vs_eval", "BatchNorm1d")

    class Counted(YourBatchNorm1d):
        def __call__(self, x):
            calls.append(self.training)
            return super().__call__(x)

    fig = demo.forgot_eval_lab(Counted, steps=20)
    assert "with your BatchNorm1d" in fig.axes[0].get_title()
    assert True in calls and False in calls  # train mode and eval mode both ran it
    assert capsys.readouterr().out == ""


def test_forgot_eval_lab_uses_the_course_layer_until_yours_passes(not_grading, capsys):
    class Unfinished:
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            raise NotImplementedError()

    fig = demo.forgot_eval_lab(Unfinished, steps=20)
    assert "with the course's BatchNorm1d" in fig.axes[0].get_title()
    out = capsys.readouterr().out
    assert "your `BatchNorm1d`, which does not pass its self-check yet: Not implemented" in out


def test_forgot_eval_figure_draws_one_bar_per_batch_size(lab_result):
    fig = demo.forgot_eval_figure(lab_result)
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    expected = [100 * a for a in lab_result.train_mode_accuracy.values()]
    np.testing.assert_allclose(heights, expected)


def test_forgot_eval_lab_does_nothing_under_nbgrader(grading):
    assert demo.forgot_eval_lab() is None


def test_compare_with_torch_does_nothing_under_nbgrader(grading, capsys):
    demo.compare_with_torch(BatchNorm1d)
    assert capsys.readouterr().out == ""
