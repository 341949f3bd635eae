"""Notebook 09's demos: the fine-tuning traps, fine-tuning strategies, zero-gamma init,
scale invariance and weight decay, and low precision, measured live."""

import numpy as np
import pytest

from bn_course.demos import in_practice as demo
from bn_course.reference import torch as ref


def eval_once(model):
    """The trap: eval() once, undone by the training loop's model.train()."""
    return model.eval()


def test_each_trap_moves_the_running_statistics():
    assert demo.trap_train_after_eval() > 0.1
    assert demo.trap_no_grad() > 0.1
    statistics, parameters = demo.trap_requires_grad()
    assert statistics > 0.1 and parameters == 0.0


def test_traps_print_three_measured_lines(not_grading, capsys):
    demo.traps()
    assert len(capsys.readouterr().out.strip().splitlines()) == 4


def test_fine_tuning_strategies_as_the_notebook_describes_them():
    result = demo.fine_tuning_experiment(ref.freeze_batchnorm)
    accuracy = dict(zip(["as is", "adabn", "train", "frozen", "adabn frozen"],
                        result.accuracy.values()))
    assert accuracy["adabn"] > accuracy["as is"] + 0.2  # the shift is in the statistics
    assert accuracy["adabn frozen"] > accuracy["frozen"]
    assert accuracy["train"] > accuracy["as is"]
    assert result.old_domain_accuracy > 0.9
    assert demo.fine_tuning_figure(result) is not None


def test_eval_once_fine_tunes_exactly_like_bn_in_train_mode():
    trap = demo.fine_tuning_experiment(eval_once).accuracy
    assert trap[demo.FINE_TUNING[3]] == trap[demo.FINE_TUNING[2]]


def test_re_estimated_statistics_are_those_of_the_new_data():
    import torch

    x = torch.randn(64, 64) * 2 + 3  # one batch of the pass
    model = demo.re_estimated(demo.pretrained(), x)
    first = demo._batchnorms(model)[0]
    z = model[0](x)
    assert torch.allclose(first.running_mean, z.mean(0), atol=1e-5)
    assert torch.allclose(first.running_var, z.var(0), rtol=1e-4)
    assert not demo.pretrained().training  # the cached model is untouched


def test_zero_gamma_trains_the_deep_residual_network_better():
    runs = demo.zero_init_experiment(ref.zero_init_last_bn, seeds=(0, 1))
    final = {name: np.mean([h.test_accuracy[-1] for h in histories])
             for name, histories in runs.histories.items()}
    assert final["zero gamma"] > final["default"] + 0.15
    # What notebook 09 says: with zero-gamma the network trains on every seed.
    assert all(h.test_accuracy[-1] > 0.9 for h in runs.histories["zero gamma"])
    assert demo.zero_init_figure(runs) is not None


@pytest.mark.parametrize("scale", [10.0, 100.0])
def test_bn_makes_the_weight_scale_irrelevant_but_the_gradient_smaller(scale):
    difference, ratio = demo.scale_invariance(scale)
    assert difference < 1e-5  # up to eps, which is not scaled
    assert ratio == pytest.approx(scale, rel=1e-5)  # eps again


def test_weight_decay_shrinks_the_norm_and_raises_the_relative_step():
    runs = demo.weight_decay_experiment(ref.param_groups, decays=(0.0, 3e-2), steps=300)
    plain, decayed = runs[0.0], runs[3e-2]
    assert decayed.weight_norm[-1] < 0.5 * plain.weight_norm[-1]
    assert decayed.relative_update[-50:].mean() > 3 * plain.relative_update[-50:].mean()
    assert decayed.test_accuracy > 0.9


def test_low_precision_variances():
    small, large = demo.variance_errors(1.0), demo.variance_errors(1e3)
    assert max(small.values()) < 1e-3
    assert large["float16, one pass: mean(x^2) - mean(x)^2"] == np.inf  # 1e6 overflows
    assert large["float32, two passes"] < 1e-5
    assert large["bfloat16 storage, exact arithmetic"] > 0.1


def test_autocast_report_measures_dtypes(not_grading, capsys):
    demo.autocast_report()
    out = capsys.readouterr().out
    assert "running_mean torch.float32" in out and "returns torch.bfloat16" in out


def test_panels_and_labs_do_nothing_under_nbgrader(grading, capsys):
    assert demo.precision_panel() is None
    assert demo.fine_tuning_lab(ref.freeze_batchnorm) is None
    assert demo.zero_init_lab(ref.zero_init_last_bn) is None
    assert demo.weight_decay_lab(ref.param_groups) is None
    demo.traps(), demo.autocast_report(), demo.print_scale_invariance()
    assert capsys.readouterr().out == ""


def test_precision_panel_redraws(not_grading):
    panel = demo.precision_panel()
    panel.sliders["log10_offset"].value = 3.0
    assert "1000" in panel.figure.axes[0].get_title()
