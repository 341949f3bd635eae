"""bn_course.train: seeded MLPs, a deterministic SGD loop, and train- vs eval-mode accuracy."""

import numpy as np
import pytest
import torch
from torch import nn

from bn_course.data import load_digits
from bn_course.train import _progress_bar, evaluate, make_mlp, train

# Settings measured on the digits (3 splits x 5 seeds): the BN model reaches 0.96-0.98 test
# accuracy after 200 steps, and 0.44-0.52 when evaluated in train mode on batches of 2.
STEPS, LR, BATCH_SIZE = 200, 0.1, 64


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def digits_mlp(bn, seed=0, **options):
    return make_mlp(64, hidden=64, depth=2, num_classes=10, bn=bn, seed=seed, **options)


@pytest.fixture(scope="module")
def trained_bn(digits):
    model = digits_mlp(bn=True)
    history = train(model, digits, steps=STEPS, lr=LR, batch_size=BATCH_SIZE, seed=0,
                    progress=False)
    return model, history


def test_make_mlp_layers_with_bn():
    model = digits_mlp(bn=True, activation="sigmoid")
    kinds = [type(layer) for layer in model]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.Sigmoid] * 2 + [nn.Linear]
    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    assert [layer.bias is None for layer in linears] == [True, True, False]
    assert linears[-1].out_features == 10


def test_make_mlp_layers_without_bn():
    model = make_mlp(8, hidden=5, depth=3, num_classes=2, bn=False)
    assert [type(layer) for layer in model] == [nn.Linear, nn.ReLU] * 3 + [nn.Linear]
    assert all(layer.bias is not None for layer in model if isinstance(layer, nn.Linear))
    assert model(torch.zeros(4, 8)).shape == (4, 2)


def test_make_mlp_rejects_an_unknown_activation():
    with pytest.raises(ValueError, match="activation must be one of"):
        digits_mlp(bn=True, activation="tanhh")


def linear_weights(model):
    return [layer.weight for layer in model if isinstance(layer, nn.Linear)]


def test_make_mlp_weights_depend_on_the_seed_not_on_bn_or_the_global_rng():
    torch.manual_seed(123)
    with_bn = digits_mlp(bn=True, seed=4)
    torch.manual_seed(456)
    without_bn = digits_mlp(bn=False, seed=4)
    other_seed = digits_mlp(bn=True, seed=5)
    for a, b, c in zip(*map(linear_weights, [with_bn, without_bn, other_seed])):
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


@pytest.mark.parametrize("init_scale", [0.1, 1.0, 3.0])
def test_make_mlp_init_scale_sets_the_weight_spread(init_scale):
    model = make_mlp(400, hidden=300, depth=1, num_classes=10, bn=False, init_scale=init_scale)
    first = model[0]
    expected = init_scale / np.sqrt(400)
    assert abs(first.weight.std().item() / expected - 1) < 0.02
    assert torch.count_nonzero(first.bias) == 0


def test_training_is_deterministic(digits):
    def run(seed):
        model = digits_mlp(bn=True, seed=seed)
        history = train(model, digits, steps=60, lr=LR, batch_size=32, seed=seed,
                        eval_every=20, progress=False)
        return history, model.state_dict()

    (first, state), (second, state_again), (other, _) = run(0), run(0), run(1)
    assert first == second
    assert all(torch.equal(state[name], state_again[name]) for name in state)
    assert first.loss != other.loss


def test_history_records_every_step_and_the_eval_points(trained_bn):
    _, history = trained_bn
    assert history.step == list(range(1, STEPS + 1))
    assert len(history.loss) == STEPS
    assert history.eval_step == [0, 50, 100, 150, 200]
    assert len(history.train_accuracy) == len(history.test_accuracy) == 5
    assert not history.diverged


def test_history_eval_points_include_the_last_step(digits):
    history = train(digits_mlp(bn=False), digits, steps=7, lr=LR, eval_every=3, progress=False)
    assert history.eval_step == [0, 3, 6, 7]


def test_bn_model_learns_the_digits(trained_bn, digits):
    model, history = trained_bn
    assert history.test_accuracy[0] < 0.3  # the untrained model is near chance (0.1)
    assert history.test_accuracy[-1] > 0.93
    assert history.train_accuracy[-1] > 0.95
    assert np.mean(history.loss[-20:]) < 0.3 * np.mean(history.loss[:20])
    assert evaluate(model, digits.x_test, digits.y_test) == history.test_accuracy[-1]


def test_train_leaves_the_model_in_train_mode(trained_bn):
    model, _ = trained_bn
    assert model.training


def test_train_mode_evaluation_on_tiny_batches_is_much_worse(trained_bn, digits):
    model, _ = trained_bn
    eval_mode = evaluate(model, digits.x_test, digits.y_test)
    batches_of_2 = evaluate(model, digits.x_test, digits.y_test, batch_size=2, train_mode=True)
    batches_of_4 = evaluate(model, digits.x_test, digits.y_test, batch_size=4, train_mode=True)
    assert eval_mode > 0.93
    assert batches_of_2 < eval_mode - 0.3
    assert batches_of_2 < batches_of_4 < eval_mode


def test_eval_mode_accuracy_does_not_depend_on_the_batch_size(trained_bn, digits):
    model, _ = trained_bn
    whole = evaluate(model, digits.x_test, digits.y_test)
    assert evaluate(model, digits.x_test, digits.y_test, batch_size=3) == whole


def test_model_without_bn_is_the_same_in_train_and_eval_mode(digits):
    model = digits_mlp(bn=False)
    train(model, digits, steps=30, lr=LR, progress=False)
    assert (evaluate(model, digits.x_test, digits.y_test, batch_size=2, train_mode=True)
            == evaluate(model, digits.x_test, digits.y_test))


def test_evaluate_leaves_the_model_as_it_was(trained_bn, digits):
    model, _ = trained_bn
    before = {name: value.clone() for name, value in model.state_dict().items()}
    model.eval()
    evaluate(model, digits.x_test, digits.y_test, batch_size=2, train_mode=True)
    assert not model.training
    model.train()
    evaluate(model, digits.x_test, digits.y_test)
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.parametrize("batch_size", [None, 0, 1])
def test_train_mode_evaluation_refuses_batches_of_one(trained_bn, digits, batch_size):
    model, _ = trained_bn
    with pytest.raises(ValueError, match="needs batch_size >= 2"):
        evaluate(model, digits.x_test, digits.y_test, batch_size=batch_size, train_mode=True)


def test_train_mode_evaluation_merges_a_last_batch_of_one(trained_bn, digits):
    model, _ = trained_bn
    x, y = digits.x_test[:7], digits.y_test[:7]  # batches of 2, 2, 2 and 1
    accuracy = evaluate(model, x, y, batch_size=2, train_mode=True)
    assert accuracy * 7 == pytest.approx(round(accuracy * 7))


@pytest.mark.parametrize("batch_size", [1, 2000])
def test_train_rejects_batch_sizes_bn_cannot_use(digits, batch_size):
    with pytest.raises(ValueError, match="batch_size must be between 2 and 1347"):
        train(digits_mlp(bn=True), digits, steps=1, lr=LR, batch_size=batch_size)


def test_a_too_high_learning_rate_shows_as_divergence(digits):
    history = train(digits_mlp(bn=False, init_scale=3.0), digits, steps=30, lr=50.0,
                    progress=False)
    assert history.diverged


def test_a_short_run_shows_no_progress_bar(digits, capsys):
    train(digits_mlp(bn=True), digits, steps=5, lr=LR, progress=True)
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_no_progress_bar_while_nbgrader_grades(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    with _progress_bar(range(3), enabled=True) as bar:
        assert not bar.disable
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with _progress_bar(range(3), enabled=True) as bar:
        assert bar.disable
