"""bn_course.demos.training_comparisons on small, fast settings; the paper-sized claims
are in tests/test_paper_figure.py."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from answers import solution
from torch import nn

from bn_course.demos import training_comparisons as demo
from bn_course.train import History

SMALL = demo.Settings(hidden=12, steps=20, eval_every=10)
SMALL_PAPER = replace(SMALL, steps=40, record_preactivations=True)


@pytest.fixture
def small_paper(monkeypatch, not_grading):
    """The paper's experiment on a network and a run small enough for a unit test."""
    monkeypatch.setattr(demo, "PAPER", SMALL_PAPER)
    monkeypatch.setattr(demo, "NOISE", replace(SMALL_PAPER, bn=True, bn_noise=1.0, steps=20))


def history_with(test_accuracy, loss=(1.0,)):
    return History(step=list(range(1, len(loss) + 1)), loss=list(loss),
                   eval_step=list(range(len(test_accuracy))), test_accuracy=list(test_accuracy))


# --- measures -----------------------------------------------------------------------------

def test_relative_total_variation_by_hand():
    steps = [0, 10, 20, 30, 40]
    trace = np.array([[-9, 5, 9],     # step 0: skipped (the first 10% of 40 steps)
                      [-1, 0, 1],
                      [-2, 1, 2],
                      [-1, -1, 1],
                      [-2, 0, 2]])
    # The median travels 1 + 2 + 1 = 4; the band is 3 wide on average (2, 4, 2, 4).
    assert demo.relative_total_variation(steps, trace) == pytest.approx(4 / 3)
    assert demo.relative_total_variation(steps, trace, skip_fraction=0) == pytest.approx(
        (5 + 4) / np.mean([18, 2, 4, 2, 4]))


def test_a_median_that_never_moves_has_no_variation():
    trace = np.tile([-1.0, 0.3, 2.0], (6, 1))
    assert demo.relative_total_variation(np.arange(6) * 50, trace) == 0


def test_final_accuracy_is_the_mean_of_the_last_five_evaluations():
    history = history_with([0.1, 0.5, 0.9, 0.8, 0.9, 1.0, 0.9])
    assert demo.final_accuracy(history) == pytest.approx(0.9)
    assert demo.final_accuracy(history, evaluations=2) == pytest.approx(0.95)


@pytest.mark.parametrize("accuracy, loss, expected", [
    ([0.1, 0.9, 0.95], (2.0, 0.5), "trained"),
    ([0.1, 0.12, 0.11], (2.3, 2.3), "stalled"),
    ([0.1, 0.1, 0.1], (2.3, float("nan")), "diverged"),
])
def test_outcome_names_what_happened(accuracy, loss, expected):
    assert demo.outcome(history_with(accuracy, loss)) == expected


def test_normalized_batches_of_two_are_minus_one_and_one():
    values = np.random.default_rng(0).normal(3.0, 2.0, size=101)
    normalized = demo.normalized_in_batches(values, 2)
    assert len(normalized) == 100  # the odd one out is dropped
    np.testing.assert_allclose(normalized.reshape(-1, 2).sum(axis=1), 0, atol=1e-9)
    # |value| = d / sqrt(d^2 + eps) for two values 2d apart: 1, unless they nearly coincide.
    assert np.all(np.abs(normalized) < 1) and np.median(np.abs(normalized)) > 0.9999


@pytest.mark.parametrize("batch_size", [3, 4, 16])
def test_no_normalized_value_lies_beyond_the_square_root_of_n_minus_one(batch_size):
    values = np.random.default_rng(1).standard_cauchy(size=4000)  # wild outliers
    normalized = demo.normalized_in_batches(values, batch_size).reshape(-1, batch_size)
    assert np.abs(normalized).max() <= np.sqrt(batch_size - 1)
    assert np.abs(normalized).max() > 0.99 * np.sqrt(batch_size - 1)  # and it is reached
    mean_square = (normalized ** 2).mean(axis=1)  # var / (var + eps): at most 1
    assert np.all(mean_square < 1) and np.median(mean_square) > 0.9999


# --- runs are remembered ------------------------------------------------------------------

def test_run_trains_once_per_setting():
    settings = replace(SMALL, seed=11)
    first = demo.run(settings)
    trained = demo.runs_trained()
    assert demo.run(replace(SMALL, seed=11)) is first
    assert demo.runs_trained() == trained
    assert first.step == list(range(1, 21)) and first.eval_step == [0, 10, 20]


def test_run_pair_differs_only_in_bn():
    pair = demo.run_pair(SMALL)
    assert set(pair) == {demo.NO_BN, demo.BN}
    assert pair[demo.NO_BN] is demo.run(replace(SMALL, bn=False))
    assert pair[demo.BN] is demo.run(replace(SMALL, bn=True))
    assert pair[demo.NO_BN].loss[0] == pytest.approx(pair[demo.BN].loss[0], rel=0.5)


# --- figures ------------------------------------------------------------------------------

def test_paper_result_measures_with_the_functions_it_is_given(small_paper):
    calls = []
    steps_to_reach = solution("07_training_comparisons", "steps_to_reach")

    def yours(steps, accuracy, target):
        calls.append(target)
        return steps_to_reach(steps, accuracy, target)

    own = demo.paper_result()
    assert own.baseline_final == pytest.approx(
        np.mean(demo.run(replace(SMALL_PAPER, bn=False)).test_accuracy[-5:]))
    assert demo.paper_result(yours) == own
    assert calls[-2:] == [own.baseline_final] * 2  # after its self-check, it measured


def test_paper_result_measures_with_the_course_answers_until_yours_pass(small_paper, capsys):
    def four_hundred(steps, accuracy, target):
        return 400

    def flat(values, q):
        return np.zeros((len(values), len(q)))

    assert demo.paper_result(four_hundred, flat) == demo.paper_result()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "your `steps_to_reach`, which does not pass" in lines[0]
    assert "your `percentile_trace`, which does not pass" in lines[1]


def test_paper_figure_draws_accuracy_and_two_bands_on_one_scale(small_paper):
    fig = demo.paper_figure(unit=3)
    accuracy_ax, without_bn, with_bn = fig.axes
    assert [line.get_label() for line in accuracy_ax.get_lines()[:2]] == [demo.NO_BN, demo.BN]
    assert without_bn.get_ylim() == with_bn.get_ylim()
    for ax, label in [(without_bn, demo.NO_BN), (with_bn, demo.BN)]:
        history = demo.run(replace(SMALL_PAPER, bn=label == demo.BN))
        medians = np.median(history.unit_inputs(layer=-1, unit=3), axis=1)
        np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), medians)
        assert "unit 3" in ax.get_title() and label in ax.get_title()


def test_sweep_has_one_panel_per_value_with_both_networks(not_grading):
    fig = demo.sweep("lr", values=(0.1, 10.0), centre=SMALL)
    assert len(fig.axes) == 2
    for ax, lr in zip(fig.axes, (0.1, 10.0)):
        assert f"learning rate = {lr:g}" in ax.get_title()
        pair = demo.run_pair(replace(SMALL, lr=lr))
        for line, label in zip(ax.get_lines(), (demo.NO_BN, demo.BN)):
            np.testing.assert_array_equal(line.get_ydata(), pair[label].test_accuracy)


def test_sweep_runs_cover_every_value_with_and_without_bn(not_grading):
    runs = demo.sweep_runs("depth", values=(1, 2), centre=SMALL)
    assert list(runs) == [1, 2]
    trained = demo.runs_trained()
    demo.sweep_runs("depth", values=(1, 2), centre=SMALL)
    assert demo.runs_trained() == trained  # all remembered


def test_tiny_batch_histograms_mark_the_bound(not_grading):
    fig = demo.tiny_batch_histograms(batch_sizes=(2, 60))
    assert "1.00" in fig.axes[0].get_title() and "7.68" in fig.axes[1].get_title()
    assert len(fig.axes[0].get_lines()) == 2 and len(fig.axes[1].get_lines()) == 0


def test_noise_figure_compares_three_networks(small_paper):
    result = demo.noise_result()
    assert set(result.steps) == set(result.variation) == {demo.NO_BN, demo.BN, demo.NOISY_BN}
    fig = demo.noise_figure()
    left, right = fig.axes
    assert len(right.get_lines()) == 3
    noisy_median = right.get_lines()[2].get_ydata()
    history = demo.run(demo.NOISE)
    np.testing.assert_allclose(noisy_median,
                               np.median(history.unit_inputs(layer=-1, unit=0), axis=1))
    # Shown up to the noisy run's last step only, for all three.
    assert all(max(line.get_xdata()) == demo.NOISE.steps for line in left.get_lines()[:3])


# --- your network ---------------------------------------------------------------------------

def your_pieces():
    return (solution("07_training_comparisons", "build_mlp"),
            solution("07_training_comparisons", "BatchNorm2d"))


def test_as_batchnorm1d_normalizes_each_feature_like_torch(not_grading):
    layer = demo.as_batchnorm1d(your_pieces()[1])(5).double()
    torch_layer = nn.BatchNorm1d(5).double()
    x = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    for _ in range(2):  # train mode: batch statistics, running ones updated
        torch.testing.assert_close(layer(x), torch_layer(x))
    torch.testing.assert_close(layer.running_var, torch_layer.running_var)
    torch.testing.assert_close(layer.eval()(x), torch_layer.eval()(x))
    assert demo.as_batchnorm1d(your_pieces()[1]) is type(layer)  # one class per layer class


def test_your_network_uses_your_pieces_and_says_so(not_grading, capsys):
    build_mlp, BatchNorm2d = your_pieces()
    network = demo.your_network(build_mlp, BatchNorm2d)
    assert network.build is build_mlp
    assert network.norm_layer is demo.as_batchnorm1d(BatchNorm2d)
    assert network.name == "your BatchNorm2d"
    out = capsys.readouterr().out
    assert "normalize with your BatchNorm2d" in out and "with your build_mlp" in out


def test_your_network_falls_back_to_the_course_with_the_diagnosis(not_grading, capsys):
    from bn_course.reference.torch import BatchNorm1d

    class BatchNorm2d(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            super().__init__()
            raise NotImplementedError()

    def build_mlp(norm_layer, in_features, hidden, depth, num_classes):
        return None

    network = demo.your_network(build_mlp, BatchNorm2d)
    assert network.build is None and network.norm_layer is BatchNorm1d
    assert network.name == "the course's BatchNorm1d"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "because your BatchNorm2d does not pass its self-check yet: Not implemented" in lines[0]
    assert "with the course's build_mlp, because yours does not pass" in lines[1]
    assert "torch.nn.Sequential, got None" in lines[1]


def test_your_layer_trains_the_same_curve_as_torch(small_paper):
    network = demo.your_network(*your_pieces())
    comparison = demo.compare_with_torch(network)
    assert comparison.loss_difference < 1e-5 and comparison.accuracy_difference == 0
    assert comparison.evaluations == len(demo.run(replace(SMALL_PAPER, bn=True)).eval_step)
    assert "your BatchNorm2d" in str(comparison)
    fig = demo.paper_figure(network)
    assert "with BN: your BatchNorm2d" in fig.texts[0].get_text()


def test_a_network_without_bn_is_trained_once_whatever_the_layer(not_grading):
    network = demo.Network(solution("07_training_comparisons", "build_mlp"), nn.BatchNorm1d, "x")
    baseline = demo.run(replace(SMALL, seed=31, network=network))
    assert demo.run(replace(SMALL, seed=31, network=network.with_torch_layer())) is baseline


def test_the_noisy_run_shifts_the_output_of_your_layer(small_paper):
    network = demo.your_network(*your_pieces())
    torch_run = demo.run(replace(demo.NOISE, network=network.with_torch_layer()))
    yours = demo.run(replace(demo.NOISE, network=network))
    np.testing.assert_allclose(yours.loss, torch_run.loss, rtol=1e-4)


# --- the slider panel ---------------------------------------------------------------------

def accuracy_lines(panel):
    return [line for line in panel.figure.axes[1].get_lines()
            if line.get_label() in (demo.NO_BN, demo.BN)]


def test_panel_retrains_on_a_slider_move_and_remembers(not_grading):
    panel = demo.training_panel(centre=replace(SMALL, seed=21))
    assert [line.get_label() for line in accuracy_lines(panel)] == [demo.NO_BN, demo.BN]
    before = accuracy_lines(panel)[1].get_ydata()

    panel.sliders["depth"].value = 1
    assert panel.status.value.startswith("trained 2 new run(s)")
    assert not np.array_equal(accuracy_lines(panel)[1].get_ydata(), before)
    assert "1 sigmoid layers" in panel.figure.texts[0].get_text()

    panel.sliders["depth"].value = 3
    assert panel.status.value.startswith("from memory")
    np.testing.assert_array_equal(accuracy_lines(panel)[1].get_ydata(), before)


def test_panel_bn_switch_shows_one_network_or_both(not_grading):
    panel = demo.training_panel(centre=replace(SMALL, seed=22))
    panel.sliders["bn"].value = "on"
    assert [line.get_label() for line in accuracy_lines(panel)] == [demo.BN]
    panel.sliders["bn"].value = "off"
    assert [line.get_label() for line in accuracy_lines(panel)] == [demo.NO_BN]
    assert panel.status.value.startswith("from memory")


def test_panel_learning_rate_changes_the_loss_curve(not_grading):
    panel = demo.training_panel(centre=replace(SMALL, seed=23))
    loss_before = panel.figure.axes[0].get_lines()[0].get_ydata()
    panel.sliders["lr"].value = 10.0
    assert not np.allclose(panel.figure.axes[0].get_lines()[0].get_ydata(), loss_before)
    assert "learning rate 10" in panel.figure.texts[0].get_text()


def test_everything_is_skipped_under_nbgrader(grading):
    trained = demo.runs_trained()
    assert demo.paper_figure() is None
    assert demo.paper_result() is None
    assert demo.sweep("lr") is None
    assert demo.noise_figure() is None
    assert demo.noise_result() is None
    assert demo.training_panel() is None
    assert demo.tiny_batch_histograms() is None
    assert demo.runs_trained() == trained  # nothing trained


def test_importing_the_demo_loads_no_torch():
    import subprocess
    import sys

    code = ("import sys, bn_course.demos.training_comparisons; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
