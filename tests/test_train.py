"""bn_course.train: seeded MLPs, a deterministic SGD loop, and train- vs eval-mode accuracy."""

import numpy as np
import pytest
import torch
from torch import nn

from bn_course.data import load_digits
from bn_course.train import RandomShift, _progress_bar, activation_inputs, evaluate, make_mlp, train

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


def test_training_leaves_frozen_parameters_alone(digits):
    model = digits_mlp(bn=True)
    model[0].weight.requires_grad_(False)
    frozen, trained = model[0].weight.clone(), model[3].weight.clone()
    train(model, digits, steps=5, lr=LR, progress=False)
    assert torch.equal(model[0].weight, frozen)
    assert not torch.equal(model[3].weight, trained)


def test_a_parameter_the_loss_does_not_use_is_left_alone(digits):
    model = digits_mlp(bn=True)
    model.unused = nn.Parameter(torch.ones(3))  # registered and trainable, never used
    trained = model[3].weight.clone()
    train(model, digits, steps=5, lr=LR, progress=False)
    assert torch.equal(model.unused, torch.ones(3))
    assert not torch.equal(model[3].weight, trained)


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


# --- random shifts after BN (Santurkar et al.'s "noisy BN") ---

def test_make_mlp_bn_noise_puts_a_random_shift_after_every_bn():
    noisy = digits_mlp(bn=True, activation="sigmoid", bn_noise=0.5)
    kinds = [type(layer) for layer in noisy]
    assert kinds == [nn.Linear, nn.BatchNorm1d, RandomShift, nn.Sigmoid] * 2 + [nn.Linear]
    assert all(layer.strength == 0.5 for layer in noisy if isinstance(layer, RandomShift))
    plain = digits_mlp(bn=True, activation="sigmoid")
    for a, b in zip(linear_weights(noisy), linear_weights(plain)):
        assert torch.equal(a, b)  # the noise does not change the initial weights


def test_make_mlp_refuses_bn_noise_without_bn():
    with pytest.raises(ValueError, match="bn_noise shifts the output of BatchNorm"):
        digits_mlp(bn=False, bn_noise=1.0)


def test_random_shift_moves_every_unit_by_a_fresh_draw_at_each_training_step():
    strength = 1.0
    layer = RandomShift(5, strength, seed=3)
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    first, second = layer(x), layer(x)
    assert not torch.allclose(first, second)
    # One scale and one shift per unit, shared by every example of the batch.
    scale = (second[0] - second[1]) / (x[0] - x[1])
    shift = second[0] - scale * x[0]
    torch.testing.assert_close(second, x * scale + shift)
    assert torch.all(shift.abs() <= strength)
    assert torch.all((scale >= 1 / (1 + strength) - 1e-6) & (scale <= 1 + strength + 1e-6))
    torch.testing.assert_close(layer.apply_last_draw(x), second)  # no new draw


def test_random_shift_leaves_eval_mode_alone_and_is_seeded():
    x = torch.randn(4, 3)
    layer = RandomShift(3, 2.0, seed=1).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(RandomShift(3, 2.0, seed=1)(x), RandomShift(3, 2.0, seed=1)(x))
    assert not torch.equal(RandomShift(3, 2.0, seed=1)(x), RandomShift(3, 2.0, seed=2)(x))


def test_training_with_random_shifts_is_deterministic(digits):
    def run():
        model = digits_mlp(bn=True, activation="sigmoid", bn_noise=1.0, seed=2)
        return train(model, digits, steps=40, lr=LR, eval_every=20, progress=False)

    assert run() == run()


# --- what the activation functions receive ---

def test_activation_inputs_are_what_training_feeds_each_activation(digits):
    model = digits_mlp(bn=True, activation="sigmoid", bn_noise=0.5)
    train(model, digits, steps=20, lr=LR, progress=False)
    x, _ = digits.to_torch("test")
    state = {name: value.clone() for name, value in model.state_dict().items()}

    seen = []
    hooks = [layer.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
             for layer in model if isinstance(layer, nn.Sigmoid)]
    replay = [layer for layer in model if isinstance(layer, RandomShift)]
    with torch.no_grad():
        h = x
        for layer in model:  # training mode by hand: batch statistics, the last draw
            if isinstance(layer, RandomShift):
                h = layer.apply_last_draw(h)
            elif isinstance(layer, nn.BatchNorm1d):
                h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + layer.eps)
                h = h * layer.weight + layer.bias
            else:
                h = layer(h)
    for hook in hooks:
        hook.remove()

    recorded = activation_inputs(model, x)
    assert len(recorded) == 2 and len(replay) == 2
    for mine, expected in zip(recorded, seen):
        assert mine.dtype == np.float32 and mine.shape == (len(x), 64)
        np.testing.assert_allclose(mine, expected.numpy(), rtol=1e-4, atol=1e-5)
    after = model.state_dict()  # running statistics included
    assert all(torch.equal(state[name], after[name]) for name in state)


def test_recording_preactivations_leaves_training_unchanged(digits):
    def run(record):
        model = digits_mlp(bn=True, activation="sigmoid", seed=1)
        history = train(model, digits, steps=30, lr=LR, eval_every=10, progress=False,
                        record_preactivations=record)
        return history, model.state_dict()

    (plain, state), (recorded, recorded_state) = run(False), run(True)
    assert plain == recorded  # == leaves the recorded arrays out
    assert all(torch.equal(state[name], recorded_state[name]) for name in state)
    assert plain.preactivations == []
    again, _ = run(True)
    assert all(np.array_equal(a, b)
               for a, b in zip(recorded.preactivations, again.preactivations))


def test_recorded_preactivations_have_one_array_per_evaluation(digits):
    model = make_mlp(64, hidden=7, depth=3, num_classes=10, bn=False, activation="sigmoid")
    history = train(model, digits, steps=25, lr=LR, eval_every=10, progress=False,
                    record_preactivations=True)
    assert len(history.preactivations) == len(history.eval_step) == 4
    assert all(values.shape == (3, len(digits.y_test), 7)
               for values in history.preactivations)
    trace = history.unit_inputs(layer=-1, unit=6)
    assert trace.shape == (4, len(digits.y_test))
    np.testing.assert_array_equal(trace[2], history.preactivations[2][2][:, 6])
    # Without BN the input of the first sigmoid is just the first linear layer's output.
    x, _ = digits.to_torch("test")
    with torch.no_grad():
        np.testing.assert_allclose(history.unit_inputs(layer=0, unit=0)[-1],
                                   model[0](x)[:, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_unit_inputs_needs_a_recording(trained_bn):
    _, history = trained_bn
    with pytest.raises(ValueError, match="record_preactivations=True"):
        history.unit_inputs()
