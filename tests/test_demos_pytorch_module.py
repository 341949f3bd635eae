import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from bn_course.checks import EXERCISES
from bn_course.demos import pytorch_module as demo
from bn_course.reference.torch import BatchNorm2d


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"),
                                                 (False, False, "cpu")])
def test_pick_device_prefers_cuda_then_mps(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert demo.pick_device() == torch.device(expected)


def _highlighted_cells(ax):
    """How many of the drawn unit squares are coloured as sharing the statistics."""
    colours = ax.collections[0].get_facecolors()
    return int(np.sum(np.all(np.isclose(colours, matplotlib.colors.to_rgba(demo.SHARED)),
                             axis=1)))


def test_reduction_figure_highlights_what_each_norm_averages_over():
    fig = demo.reduction_axes_figure()
    n, c, hw = demo.CUBE["N"], demo.CUBE["C"], demo.CUBE["HW"]
    visible = {  # visible cells of the blue set: front face + top face + right side face
        "Batch norm": hw + n + n * hw,       # the last channel, everywhere
        "Layer norm": c * hw + c + hw,       # the front example, everywhere
        "Instance norm": hw + 1 + hw,        # the front example's last channel
        "Group norm": 2 * hw + 2 + hw,       # the front example's last two channels
    }
    assert len(fig.axes) == len(visible)
    for ax, (name, count) in zip(fig.axes, visible.items()):
        assert ax.get_title().startswith(name)
        assert _highlighted_cells(ax) == count


def _difference_rows(text):
    """The numbers of the per-call rows that compare_with_torch prints."""
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (
        [str(k)] for k in range(1, 6))]
    return np.array([[float(v) for v in row[2:]] for row in rows])


def test_compare_with_torch_shows_a_correct_module_agrees(not_grading, capsys):
    demo.compare_with_torch(BatchNorm2d, torch.device("cpu"))
    out = capsys.readouterr().out
    differences = _difference_rows(out)
    assert differences.shape == (5, 6)
    assert differences.max() < 1e-12
    assert "eval outputs differ by" in out and "yours: ['bias', 'num_batches_tracked'" in out


def test_compare_with_torch_shows_a_flipped_momentum(not_grading, capsys):
    exercise = EXERCISES["BatchNorm2d"]
    flipped = exercise.implementation_of(exercise.mistake("momentum-convention-flipped"))
    demo.compare_with_torch(flipped, torch.device("cpu"))
    differences = _difference_rows(capsys.readouterr().out)
    running_mean, output = differences[:, 3], differences[:, 0]
    assert np.all(running_mean > 0.1)
    assert output[:3].max() < 1e-12 < output[3:].min()  # only eval mode uses them


def test_compare_with_torch_prints_nothing_under_nbgrader(grading, capsys):
    demo.compare_with_torch(BatchNorm2d, torch.device("cpu"))
    assert capsys.readouterr().out == ""


def test_classic_pipeline_drops_the_conv_bias_only_when_bn_follows_it():
    x = torch.randn(5, 64)
    for order, has_bias in [("bn-relu", False), ("relu-bn", True)]:
        model = demo.classic_pipeline(order=order)
        conv = model[1]
        assert isinstance(conv, nn.Conv2d) and (conv.bias is not None) == has_bias
        assert model(x).shape == (5, 10)
    kinds = [type(layer).__name__ for layer in demo.classic_pipeline(BatchNorm2d)]
    assert kinds == ["Unflatten", "Conv2d", "BatchNorm2d", "ReLU", "Dropout", "Flatten",
                     "Linear"]
    with pytest.raises(ValueError, match="order"):
        demo.classic_pipeline(order="bn-bn")


def test_classic_pipeline_weights_depend_on_the_seed_only():
    state = torch.random.get_rng_state()
    first, second = demo.classic_pipeline(seed=3), demo.classic_pipeline(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(first[1].weight, second[1].weight)
    assert not torch.equal(first[1].weight, demo.classic_pipeline(seed=4)[1].weight)


def test_smoothed_is_a_trailing_moving_average():
    values = np.arange(1.0, 7.0)
    np.testing.assert_allclose(demo._smoothed(values, window=3),
                               [1.0, 1.5, 2.0, 3.0, 4.0, 5.0])


def test_training_curves_plot_each_model(not_grading):
    fig = demo.training_curves({"a": demo.classic_pipeline(), "b": demo.classic_pipeline(seed=1)},
                               steps=10)
    loss, accuracy = fig.axes
    assert len(loss.get_lines()) == 2 and len(accuracy.get_lines()) == 2
    assert len(loss.get_lines()[0].get_ydata()) == 10
    assert [t.get_text().split(":")[0] for t in accuracy.get_legend().get_texts()] == ["a", "b"]


def test_training_curves_are_skipped_under_nbgrader(grading):
    assert demo.training_curves({"a": demo.classic_pipeline()}) is None


@pytest.fixture(scope="module")
def shift():
    return demo.variance_shift_experiment(dropout=0.5, steps=30)


def test_dropout_before_bn_inflates_the_variance_it_learns(shift):
    assert shift.ratio[0] == pytest.approx(1.0)
    assert np.all(np.diff(shift.ratio) > 0)  # the more dropout, the larger the shift
    # In eval mode the second BN sees clearly less variance than it divides by.
    assert np.mean(shift.eval_var / shift.running_var) < 0.8


def test_reestimating_without_dropout_matches_the_eval_variance():
    model = demo.stacked_blocks(dropout=0.5)
    demo.train_seeded(model, steps=20)
    x_train, _ = demo.digits().to_torch("train")
    fixed = demo._reestimated(model, x_train)
    seen = []
    fixed[6].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    with torch.no_grad():
        fixed.eval()(x_train)
    eval_var = seen[0].var(dim=(0, 2, 3))
    np.testing.assert_allclose(fixed[6].running_var, eval_var, rtol=0.05)
    # the statistics learned with dropout on were too large
    assert model[6].running_var.mean() > 1.2 * fixed[6].running_var.mean()


def test_variance_shift_figure_reports_the_shift(shift):
    fig = demo.variance_shift_figure(shift)
    left, right = fig.axes
    assert f"{np.mean(shift.eval_var / shift.running_var):.0%}" in left.get_title()
    np.testing.assert_allclose(right.get_lines()[0].get_ydata(), shift.ratio)
    assert "as trained" in fig.get_suptitle()


def test_variance_shift_lab_is_skipped_under_nbgrader(grading):
    assert demo.variance_shift_lab() is None
