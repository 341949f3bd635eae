import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from bn_course.checks import relative_error
from bn_course.demos import beyond as demo
from bn_course.reference.numpy import (
    fold_batchnorm,
    groupnorm_forward,
    layernorm_forward,
)
from bn_course.timing import Timings

# The answers to notebook 08's new exercises, as a student writes them (the course's own
# answers join bn_course.reference once the lead merges their checkers).

def ghost_batchnorm_forward(x, gamma, beta, virtual_batch_size, eps=1e-5):
    pieces = []
    for start in range(0, len(x), virtual_batch_size):
        chunk = x[start:start + virtual_batch_size]
        pieces.append(gamma * (chunk - chunk.mean(0)) / np.sqrt(chunk.var(0) + eps) + beta)
    return np.concatenate(pieces)


def recompute_running_stats(batches):
    return (np.mean([x.mean(0) for x in batches], axis=0),
            np.mean([x.var(0, ddof=1) for x in batches], axis=0))


def fold_without_mean_shift(conv_weight, conv_bias, bn):
    """Wrong: the folded bias forgets to subtract the running mean (NumPy inputs, as
    the checker and the demos give them)."""
    weight, bias = fold_batchnorm(conv_weight, conv_bias, bn)
    return weight, bias + bn.running_mean * bn.weight / np.sqrt(bn.running_var + bn.eps)


# --- 1. folding ---------------------------------------------------------------------

def test_folded_net_computes_what_conv_and_bn_compute_in_eval_mode():
    model = demo.conv_bn_net(channels=4, depth=3, dtype=torch.float64)
    folded = demo.folded_net(model, fold_batchnorm)
    assert not any(isinstance(layer, nn.BatchNorm2d) for layer in folded)
    assert sum(isinstance(layer, nn.Conv2d) for layer in folded) == 3
    x = torch.randn(5, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert relative_error(folded(x).numpy(), model(x).numpy()) < 1e-12
        # BN has real work to do here: without it the output is far off.
        plain = nn.Sequential(*[layer for layer in model if not isinstance(layer, nn.BatchNorm2d)])
        assert relative_error(plain(x).numpy(), model(x).numpy()) > 0.1


def verify_fold_errors(capsys, fold):
    demo.verify_fold(fold)
    out = capsys.readouterr().out
    numbers = [float(word.rstrip(",")) for line in out.splitlines()
               for word in line.split() if "e-" in word or "e+" in word]
    return out, numbers


def test_verify_fold_shows_tiny_errors_and_the_train_mode_gap(not_grading, capsys):
    out, numbers = verify_fold_errors(capsys, fold_batchnorm)
    *against_torch, eval_mode, train_mode = numbers
    assert len(against_torch) == 4 and max(against_torch) < 1e-12
    assert eval_mode < 1e-12
    assert train_mode > 0.05
    assert "train mode" in out


def test_verify_fold_exposes_a_fold_without_the_mean_shift(not_grading, capsys):
    _, numbers = verify_fold_errors(capsys, fold_without_mean_shift)
    assert numbers[1] > 1e-3 and numbers[3] > 1e-3  # the biases
    assert numbers[0] < 1e-12  # the weights are right


def test_verify_fold_takes_tensors_that_require_grad(not_grading, capsys):
    def fold_in_torch(conv_weight, conv_bias, bn):
        weight = torch.as_tensor(conv_weight).requires_grad_()  # as if it were a Parameter
        scale = torch.as_tensor(bn.weight) / torch.sqrt(torch.as_tensor(bn.running_var) + bn.eps)
        bias = torch.zeros_like(scale) if conv_bias is None else torch.as_tensor(conv_bias)
        return (weight * scale.reshape(-1, 1, 1, 1),
                (bias - torch.as_tensor(bn.running_mean)) * scale + torch.as_tensor(bn.bias))

    _, numbers = verify_fold_errors(capsys, fold_in_torch)
    assert max(numbers[:4]) < 1e-12  # right, whatever the type it returns


def test_verify_fold_names_a_crash_or_a_wrong_shape_in_one_line(not_grading, capsys):
    def unfinished(conv_weight, conv_bias, bn):
        raise NotImplementedError()

    def one_number(conv_weight, conv_bias, bn):
        return 1.0, 2.0

    demo.verify_fold(unfinished)
    demo.verify_fold(one_number)
    lines = [line for line in capsys.readouterr().out.splitlines() if "could not run" in line]
    assert lines[0] == ("This check could not run your `fold_batchnorm`: it is not implemented "
                        "yet (it raises NotImplementedError).")
    assert lines[1] == ("This check could not run your `fold_batchnorm`: it returned "
                        "an array of shape (), not (6, 6, 3, 3).")
    assert len(lines) == 2


def test_fold_speedup_times_both_networks(not_grading):
    table = demo.fold_speedup(fold_batchnorm, channels=8, depth=2, batch_size=4, size=8,
                              rounds=2)
    assert isinstance(table, Timings)
    assert [name for name, _ in table.rows] == ["2 x (conv -> BN -> ReLU)",
                                               "2 x (folded conv -> ReLU)"]
    assert all(seconds > 0 for _, seconds in table.rows)


def test_folding_demos_do_nothing_under_nbgrader(grading, capsys):
    assert demo.fold_speedup(fold_batchnorm) is None
    demo.verify_fold(fold_batchnorm)
    assert capsys.readouterr().out == ""


# --- 2. small batches ---------------------------------------------------------------

def test_axes_figure_highlights_the_values_that_share_statistics(not_grading):
    fig = demo.normalization_axes_figure(num_examples=4, num_channels=6, num_groups=2)
    highlighted = [sum(patch.get_facecolor() == matplotlib.colors.to_rgba("C0")
                       for patch in ax.patches) for ax in fig.axes]
    # BN: one channel of every example; LN: every channel of one example; GN: one group; IN: 1
    assert highlighted == [4, 6, 3, 1]


def test_compare_norms_with_torch_shows_tiny_errors(not_grading, capsys):
    demo.compare_norms_with_torch(layernorm_forward, groupnorm_forward)
    lines = capsys.readouterr().out.splitlines()[1:]
    errors = [float(line.rsplit(maxsplit=1)[1]) for line in lines]
    assert len(errors) == 5 and max(errors) < 1e-12


def test_compare_norms_with_torch_exposes_batch_statistics(not_grading, capsys):
    def batchnorm_instead(x, gamma, beta, eps=1e-5):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x_hat = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
        return gamma.reshape(shape) * x_hat + beta.reshape(shape)

    demo.compare_norms_with_torch(batchnorm_instead, groupnorm_forward)
    lines = capsys.readouterr().out.splitlines()[1:]
    assert all(float(line.rsplit(maxsplit=1)[1]) > 0.01 for line in lines[:2])


def test_small_conv_net_classifies_flat_digits():
    for norm in ("BN", "GN"):
        assert demo.small_conv_net(norm)(torch.zeros(3, 64)).shape == (3, 10)
    with pytest.raises(ValueError, match="BN"):
        demo.small_conv_net("LN")


@pytest.fixture(scope="module")
def runs():
    return demo.batch_size_runs()  # the panel's arguments, so the panel reuses the memo


def test_batchnorm_collapses_at_batch_size_two_while_groupnorm_learns(runs):
    def accuracy(norm, size):
        return runs[norm, size].test_accuracy[-1]

    assert accuracy("GN", 2) > accuracy("BN", 2) + 0.15
    assert accuracy("BN", 2) < 0.7
    for norm in ("BN", "GN"):
        assert accuracy(norm, 32) > 0.9
    assert accuracy("BN", 8) > accuracy("BN", 2) + 0.3


def test_batch_size_slider_moves_the_highlight_and_the_loss_curves(not_grading, runs):
    panel = demo.batch_size_panel()
    left, right = panel.figure.axes
    assert right.get_lines()[0].get_ydata()[-1] == pytest.approx(
        np.mean(runs["BN", 2].loss[-10:]))

    panel.sliders["batch_size"].value = 32
    left, right = panel.figure.axes
    highlights = [line for line in left.get_lines() if len(line.get_xdata()) == 1
                  and line.get_linestyle() == "None"]
    assert [line.get_xdata()[0] for line in highlights] == [32, 32]
    assert right.get_title() == "Training at batch size 32"
    assert right.get_lines()[1].get_ydata()[-1] == pytest.approx(
        np.mean(runs["GN", 32].loss[-10:]))


def test_batch_size_panel_is_none_under_nbgrader(grading):
    assert demo.batch_size_panel() is None
    assert demo.normalization_axes_figure() is None


# --- 3. ghost batch norm ------------------------------------------------------------

def test_ghost_noise_follows_the_gaussian_prediction():
    sizes = np.array([2, 4, 8, 16, 32, 64])
    noise = demo.ghost_noise(ghost_batchnorm_forward, sizes)
    assert np.all(np.diff(noise) < 0)
    np.testing.assert_allclose(noise, np.sqrt(1.5 / sizes), rtol=0.15)


def test_ghost_noise_is_zero_for_plain_batchnorm():
    def plain(x, gamma, beta, virtual_batch_size, eps=1e-5):
        return ghost_batchnorm_forward(x, gamma, beta, len(x), eps)

    assert np.all(demo.ghost_noise(plain, [2, 16, 128]) < 1e-12)


def test_ghost_noise_figure_plots_the_measured_noise(not_grading):
    fig = demo.ghost_noise_figure(ghost_batchnorm_forward, virtual_batch_sizes=(4, 16, 64))
    measured = fig.axes[0].get_lines()[0].get_ydata()
    np.testing.assert_allclose(measured, demo.ghost_noise(ghost_batchnorm_forward, [4, 16, 64]))


def test_ghost_noise_figure_is_none_under_nbgrader(grading):
    assert demo.ghost_noise_figure(ghost_batchnorm_forward) is None


# --- 4. precise BN ------------------------------------------------------------------

def small_bn_mlp():
    with demo._seeded(0):
        return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(),
                             nn.Linear(6, 4), nn.BatchNorm1d(4))


def test_recompute_with_the_students_function_matches_torch_momentum_none():
    model = small_bn_mlp()
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(0)) * 3 + 1
    mine = demo.recompute_with(recompute_running_stats, model, x, batch_size=16)
    theirs = demo.recompute_with_torch(model, x, batch_size=16)
    assert not mine.training and not theirs.training
    assert max(demo._statistics_errors(mine, theirs)) < 1e-6  # float32 models
    # the model itself is left as it was
    assert torch.equal(model[1].running_mean, torch.zeros(6))


@pytest.fixture(scope="module")
def precise():
    return demo.precise_bn_experiment(recompute_running_stats)


def test_recomputed_statistics_rescue_a_short_run_with_a_small_momentum(precise):
    assert precise.torch_error < 1e-5
    assert precise.precise_accuracy[0.01] > precise.ema_accuracy[0.01] + 0.05
    assert precise.precise_accuracy[0.01] > 0.9
    # With the default momentum the moving average has caught up: little to gain.
    assert abs(precise.precise_accuracy[0.1] - precise.ema_accuracy[0.1]) < 0.02


def test_the_momentum_does_not_change_training(precise):
    np.testing.assert_array_equal(precise.batch_means[0.1], precise.batch_means[0.01])
    assert precise.precise_accuracy[0.1] == precise.precise_accuracy[0.01]


def test_the_slow_running_mean_lags_behind(precise):
    distance = {m: abs(precise.running_means[m][-1] - precise.precise_mean) for m in (0.1, 0.01)}
    assert distance[0.01] > 3 * distance[0.1]


def test_a_moving_average_is_not_a_recomputation(precise):
    def ema(batches):
        mean, var = 0.0, 1.0
        for x in batches:
            mean, var = 0.9 * mean + 0.1 * x.mean(0), 0.9 * var + 0.1 * x.var(0, ddof=1)
        return mean, var

    assert demo.precise_bn_experiment(ema, momenta=(0.1,)).torch_error > 0.01


def test_precise_bn_figure_shows_the_accuracies(precise):
    fig = demo.precise_bn_figure(precise)
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    expected = [100 * precise.ema_accuracy[m] for m in (0.1, 0.01)] + [
        100 * precise.precise_accuracy[m] for m in (0.1, 0.01)]
    np.testing.assert_allclose(heights, expected)


def test_precise_bn_lab_is_none_under_nbgrader(grading):
    assert demo.precise_bn_lab(recompute_running_stats) is None


# --- 5. case files --------------------------------------------------------------------

def test_every_bug_is_planted_once():
    assert sorted(demo.planted_bug(case) for case in "ABCD") == sorted(demo.BN_BUGS)


@pytest.fixture(scope="module")
def symptoms():
    files = demo.case_file_symptoms()
    return {demo.planted_bug(case): dict(zip(demo.SYMPTOMS, values))
            for case, values in files.symptoms.items()}


def probe(symptoms, bug, words):
    (value,) = [v for name, v in symptoms[bug].items() if all(w in name for w in words)]
    return value


def test_each_bug_shows_its_symptom(symptoms):
    def get(bug, *words):
        return probe(symptoms, bug, words)

    for bug in demo.BN_BUGS:
        batch_dependence = get(bug, "whole") - get(bug, "batches of 4")
        if bug == "eval-mode-forgotten":
            assert batch_dependence > 0.2
        else:
            assert batch_dependence == 0
    assert get("stats-frozen-while-fine-tuning", "BN 1", "mean") > 1
    assert get("stats-frozen-while-fine-tuning", "whole") < get(
        "stats-frozen-while-fine-tuning", "train-mode") - 0.2
    assert get("dropout-before-batchnorm", "BN 1", "mean") < 0.1
    assert get("dropout-before-batchnorm", "BN 1", "variance") < 0.5
    for bug in ("no-bug", "eval-mode-forgotten"):
        for layer in ("BN 1", "BN 2"):
            assert get(bug, layer, "mean") < 0.1
            assert 0.9 < get(bug, layer, "variance") < 1.1
    assert get("no-bug", "whole") > 0.9


def test_case_files_do_not_depend_on_the_global_random_state():
    torch.manual_seed(123)
    torch.rand(7)
    again = demo.case_file_symptoms.__wrapped__()  # bypass the memo
    assert again == demo.case_file_symptoms()


def test_case_files_table_lists_every_symptom(not_grading):
    table = demo.case_files()
    text, html = str(table), table._repr_html_()
    for name in demo.SYMPTOMS:
        assert name in text and name in html
    assert "case D" in html


def test_case_files_are_none_under_nbgrader(grading):
    assert demo.case_files() is None
