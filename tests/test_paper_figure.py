"""The claims notebook 07 makes, on the full-sized experiments (seeded: they hold on every
run). The numbers are recomputed here from the histories, independently of the demo's own
measuring code, and then compared with what the demo reports.

The paper's protocol (Ioffe & Szegedy 2015, Figure 1, in miniature): 3 hidden layers of 100
sigmoids on the digits, SGD with learning rate 1.0, batches of 60, 2,000 steps, test
accuracy every 50 steps, final accuracy = the mean of the last 5 evaluations.
"""

from dataclasses import replace

import numpy as np
import pytest
from torch import nn

from bn_course.demos import training_comparisons as demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def paper():
    """The two 2,000-step runs, shared by every test of the module."""
    return demo.paper_runs()


def first_step_reaching(history, target):
    for step, accuracy in zip(history.eval_step, history.test_accuracy):
        if accuracy >= target:
            return step
    return None


def median_variation(history, unit, skip=0.1):
    """Total variation of the median after the first 10% of steps / mean 15-85 width."""
    steps = np.array(history.eval_step)
    values = history.unit_inputs(layer=-1, unit=unit)[steps >= skip * steps[-1]]
    low, median, high = np.percentile(values, [15, 50, 85], axis=1)
    return np.abs(np.diff(median)).sum() / np.mean(high - low)


def test_the_protocol_is_the_papers():
    settings = demo.PAPER
    model = settings.network.model(True, 64, settings.hidden, settings.depth, 10)
    kinds = [type(layer) for layer in model]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.Sigmoid] * 3 + [nn.Linear]
    assert model[0].out_features == 100
    assert (settings.lr, settings.batch_size, settings.steps) == (1.0, 60, 2000)
    assert settings.eval_every == 50 and demo.FINAL_EVALUATIONS == 5


def test_both_networks_follow_the_same_protocol(paper):
    without_bn, with_bn = paper[demo.NO_BN], paper[demo.BN]
    assert without_bn.eval_step == with_bn.eval_step == list(range(0, 2001, 50))
    assert len(without_bn.loss) == len(with_bn.loss) == 2000
    # The same initial weights: the untrained networks classify alike (both near chance).
    assert without_bn.test_accuracy[0] == pytest.approx(with_bn.test_accuracy[0], abs=0.05)
    assert not without_bn.diverged and not with_bn.diverged


def test_bn_reaches_the_baselines_final_accuracy_in_at_least_5x_fewer_steps(paper):
    without_bn, with_bn = paper[demo.NO_BN], paper[demo.BN]
    target = np.mean(without_bn.test_accuracy[-5:])
    baseline_steps = first_step_reaching(without_bn, target)
    bn_steps = first_step_reaching(with_bn, target)
    assert bn_steps is not None and bn_steps > 0
    assert baseline_steps / bn_steps >= 5
    assert np.mean(with_bn.test_accuracy[-5:]) > target  # and it ends higher

    result = demo.paper_result()  # what the notebook shows
    assert (result.baseline_steps, result.bn_steps) == (baseline_steps, bn_steps)
    assert result.baseline_final == pytest.approx(target)


def test_bn_keeps_the_sigmoid_input_steadier(paper):
    without_bn, with_bn = paper[demo.NO_BN], paper[demo.BN]
    baseline, bn = median_variation(without_bn, unit=0), median_variation(with_bn, unit=0)
    assert bn < baseline  # the unit of the figure
    result = demo.paper_result()
    assert (result.baseline_variation, result.bn_variation) == pytest.approx((baseline, bn))
    # Not a lucky unit: most units of the last hidden layer are steadier with BN.
    steadier = [median_variation(with_bn, u) < median_variation(without_bn, u)
                for u in range(100)]
    assert np.mean(steadier) > 0.6
    assert result.units_steadier == pytest.approx(np.mean(steadier))


def test_the_paper_figure_shows_both_claims(paper):
    fig = demo.paper_figure()
    result = demo.paper_result()
    assert f"{result.ratio:.1f}x fewer steps" in fig.axes[0].get_title()
    assert f"{result.bn_variation:.2f}" in fig.axes[2].get_title()


def test_a_learning_rate_that_stalls_the_baseline_trains_with_bn():
    assert 10.0 in demo.SWEEP_VALUES["lr"]  # the notebook's sweep shows this rate
    pair = demo.run_pair(replace(demo.SWEEP, lr=10.0))
    assert demo.outcome(pair[demo.NO_BN]) in ("stalled", "diverged")
    assert demo.final_accuracy(pair[demo.NO_BN]) < 0.2
    assert demo.outcome(pair[demo.BN]) == "trained"
    assert demo.final_accuracy(pair[demo.BN]) > 0.9
    # ...while at the sweep's usual rate both train: the rate is what breaks the baseline.
    usual = demo.run_pair(demo.SWEEP)
    assert all(demo.final_accuracy(h) > 0.9 for h in usual.values())


def test_deep_sigmoid_networks_train_only_with_bn():
    pair = demo.run_pair(replace(demo.SWEEP, depth=8))
    assert demo.outcome(pair[demo.NO_BN]) == "stalled"
    assert demo.final_accuracy(pair[demo.BN]) > 0.9


def test_bn_does_not_care_about_the_initial_weight_scale():
    finals = {label: [demo.final_accuracy(pair[label]) for pair in
                      demo.sweep_runs("init_scale").values()]
              for label in (demo.NO_BN, demo.BN)}
    assert np.ptp(finals[demo.BN]) < 0.03
    assert np.ptp(finals[demo.NO_BN]) > 0.5  # from stalled (scale 0.5) to about 0.95


def test_bn_is_worse_than_the_baseline_on_batches_of_two():
    runs = demo.sweep_runs("batch_size", values=(2, 60))
    assert demo.final_accuracy(runs[2][demo.BN]) < demo.final_accuracy(runs[2][demo.NO_BN])
    assert demo.final_accuracy(runs[60][demo.BN]) > demo.final_accuracy(runs[60][demo.NO_BN])


def test_injected_shifts_move_the_distribution_yet_training_still_beats_the_baseline(paper):
    result = demo.noise_result()
    noisy, baseline = demo.run(demo.NOISE), paper[demo.NO_BN]
    target = np.mean(baseline.test_accuracy[-5:])
    # Faster than the baseline, with 5x fewer steps to its 2,000-step final accuracy...
    assert first_step_reaching(noisy, target) * 5 <= first_step_reaching(baseline, target)
    assert result.steps[demo.NOISY_BN] == first_step_reaching(noisy, target)
    # ...though the sigmoid inputs it trains with move more than the baseline's do.
    assert result.variation[demo.NOISY_BN] > 2 * result.variation[demo.NO_BN]
    assert result.variation[demo.NOISY_BN] > 5 * result.variation[demo.BN]


def test_bn_generalizes_a_little_better_on_the_paper_runs(paper):
    """Both networks fit the training split; BN's test accuracy is higher, so its gap
    between train and test accuracy is smaller (a small effect, as the notebook says)."""
    gaps = demo.generalization_gaps()
    for label, history in paper.items():
        train = np.mean(history.train_accuracy[-5:])
        test = np.mean(history.test_accuracy[-5:])
        assert gaps[label] == pytest.approx((train, test, train - test))
        assert train > 0.99
    assert gaps[demo.BN][2] < gaps[demo.NO_BN][2]


def test_the_notebook_layer_trains_torchs_curve(paper):
    """What notebook 07 says of the student's layer: over the 2,000 steps the losses agree
    within 1e-6 and the test accuracies are identical."""
    from answers import solution

    network = demo.your_network(solution("07_training_comparisons", "build_mlp"),
                                solution("07_training_comparisons", "BatchNorm2d"))
    comparison = demo.compare_with_torch(network)
    assert comparison.loss_difference < 1e-6
    assert comparison.accuracy_difference == 0
    assert demo.paper_runs(network)[demo.BN].test_accuracy == paper[demo.BN].test_accuracy
