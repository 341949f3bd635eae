"""The NumPy reference against float64 PyTorch, on random, awkward and non-contiguous inputs.

PyTorch is the oracle: every forward, running-statistics update and gradient in
bn_course.reference.numpy is compared with torch.nn.functional / torch.nn / autograd.
"""

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from bn_course.reference import numpy as ref

SEEDS = [0, 1, 2]
SHAPES_2D = [(2, 1), (2, 4), (5, 1), (7, 3), (32, 16)]
# How a test batch is laid out in memory and what its values look like.
LAYOUTS = ["plain", "offset_1e4", "constant_feature", "transposed", "strided"]
SHAPES_4D = [(2, 1, 1, 1), (1, 2, 2, 2), (2, 3, 1, 1), (3, 2, 4, 5), (4, 6, 3, 2)]
EPSILONS = [1e-5, 1e-3, 0.5]
MOMENTA = [0.0, 0.01, 0.1, 0.5, 1.0]
# Both sides compute in float64 with the same formulas: far below the course's 1e-6.
TOL = 1e-9
# At N=2, dx is ~1e-4 of the terms that make it (x_hat is +-1 whatever x is), so the rounding
# of a 1e4-offset mean is amplified: there torch and the reference each sit 1e-8 to 3e-8 from
# the exact gradient (checked once with 50-digit mpmath). Still well inside the course's 1e-6.
BACKWARD_TOL = 1e-7


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads; on a busy 2-core machine torch's two threads
    wait for each other and made this file ~4x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel_error(a, b):
    """The course's global relative error: max|a-b| / max(1e-8, max(|a|+|b|))."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.max(np.abs(a - b)) / max(1e-8, np.max(np.abs(a) + np.abs(b)))


def assert_close(mine, oracle, tol=TOL, context=""):
    if isinstance(oracle, torch.Tensor):
        oracle = oracle.detach().numpy()
    assert np.shape(mine) == np.shape(oracle), (context, np.shape(mine), np.shape(oracle))
    error = rel_error(mine, oracle)
    assert error <= tol, f"{context}: relative error {error:.1e} > {tol:.0e}"


def tensor(a):
    """A float64 tensor that owns a copy: torch updating it in place cannot reach the array."""
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def make_batch(rng, n, d, layout):
    """A float64 (n, d) batch; its layout names the awkward part."""
    if layout == "transposed":
        return rng.normal(1.0, 2.0, size=(d, n)).T
    if layout == "strided":
        return rng.normal(-1.0, 3.0, size=(2 * n, 3 * d))[::2, ::3]
    if layout == "offset_1e4":
        return 1e4 + rng.uniform(-1.0, 1.0, size=(n, d))
    x = rng.normal(0.5, 2.0, size=(n, d))
    if layout == "constant_feature":
        x[:, rng.integers(d)] = 3.25
    return x


def make_images(rng, shape, layout):
    """A float64 (N, C, H, W) batch, either C-contiguous or a channels-last view."""
    n, c, h, w = shape
    if layout == "channels_last":
        return rng.normal(0.5, 2.0, size=(n, h, w, c)).transpose(0, 3, 1, 2)
    if layout == "offset_1e4":
        return 1e4 + rng.uniform(-1.0, 1.0, size=shape)
    return rng.normal(0.5, 2.0, size=shape)


def per_feature(rng, d):
    return rng.uniform(-2.0, 2.0, size=d)


def positive(rng, d):
    return rng.uniform(0.2, 3.0, size=d)


batch_cases = pytest.mark.parametrize(
    "seed, shape, layout",
    [(s, shape, lay) for s in SEEDS for shape in SHAPES_2D for lay in LAYOUTS])


def test_make_batch_layouts_are_what_they_say():
    rng = np.random.default_rng(0)
    assert not make_batch(rng, 5, 3, "transposed").flags.c_contiguous
    assert not make_batch(rng, 5, 3, "strided").flags.c_contiguous
    x = make_batch(rng, 5, 3, "constant_feature")
    assert (x.std(axis=0) == 0).sum() == 1


# --- 01: batch statistics ---

@batch_cases
def test_batch_mean_matches_torch(seed, shape, layout):
    x = make_batch(np.random.default_rng(seed), *shape, layout)
    assert_close(ref.batch_mean(x), tensor(x).mean(dim=0))


@batch_cases
def test_batch_var_is_torchs_biased_variance(seed, shape, layout):
    x = make_batch(np.random.default_rng(seed), *shape, layout)
    assert_close(ref.batch_var(x), tensor(x).var(dim=0, correction=0))


def test_batch_var_keeps_the_digits_of_a_1e4_offset():
    x = 1e4 + np.array([[-1.0], [1.0]])
    assert ref.batch_var(x)[0] == 1.0


# --- 02: normalizing ---

@batch_cases
def test_normalize_matches_functional_batch_norm_with_given_statistics(seed, shape, layout):
    rng = np.random.default_rng(seed)
    x = make_batch(rng, *shape, layout)
    mean, var = per_feature(rng, shape[1]), positive(rng, shape[1])
    for eps in EPSILONS:
        expected = F.batch_norm(tensor(x), tensor(mean), tensor(var), training=False, eps=eps)
        assert_close(ref.normalize(x, mean, var, eps=eps), expected, context=f"eps={eps}")


def test_normalize_accepts_statistics_shaped_1_by_d():
    rng = np.random.default_rng(0)
    x = make_batch(rng, 6, 3, "plain")
    mean, var = per_feature(rng, 3), positive(rng, 3)
    assert_close(ref.normalize(x, mean.reshape(1, 3), var.reshape(1, 3)),
                 ref.normalize(x, mean, var), tol=0)


def test_normalize_default_eps_is_1e_5():
    rng = np.random.default_rng(0)
    x = make_batch(rng, 6, 3, "plain")
    mean, var = per_feature(rng, 3), positive(rng, 3) * 1e-4  # small var: eps shows
    assert_close(ref.normalize(x, mean, var),
                 F.batch_norm(tensor(x), tensor(mean), tensor(var), training=False, eps=1e-5))


# --- 03: scale and shift ---

@batch_cases
def test_batchnorm_forward_matches_functional_batch_norm(seed, shape, layout):
    rng = np.random.default_rng(seed)
    x = make_batch(rng, *shape, layout)
    gamma, beta = per_feature(rng, shape[1]), per_feature(rng, shape[1])
    for eps in EPSILONS:
        expected = F.batch_norm(tensor(x), None, None, tensor(gamma), tensor(beta),
                                training=True, eps=eps)
        assert_close(ref.batchnorm_forward(x, gamma, beta, eps=eps), expected,
                     context=f"eps={eps}")


@pytest.mark.parametrize("seed", SEEDS)
def test_batchnorm_forward_matches_nn_batchnorm1d_in_train_mode(seed):
    rng = np.random.default_rng(seed)
    x = make_batch(rng, 9, 5, "plain")
    bn = nn.BatchNorm1d(5, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(tensor(per_feature(rng, 5)))
        bn.bias.copy_(tensor(per_feature(rng, 5)))
    expected = bn(tensor(x))
    mine = ref.batchnorm_forward(x, bn.weight.detach().numpy(), bn.bias.detach().numpy())
    assert_close(mine, expected)


# --- 04: train vs eval ---

@batch_cases
def test_update_running_stats_one_step_matches_functional_batch_norm(seed, shape, layout):
    rng = np.random.default_rng(seed)
    x = make_batch(rng, *shape, layout)
    running_mean, running_var = per_feature(rng, shape[1]), positive(rng, shape[1])
    for momentum in MOMENTA:
        torch_mean, torch_var = tensor(running_mean), tensor(running_var)
        F.batch_norm(tensor(x), torch_mean, torch_var, training=True, momentum=momentum)
        new_mean, new_var = ref.update_running_stats(running_mean, running_var, x, momentum)
        assert_close(new_mean, torch_mean, context=f"mean, momentum={momentum}")
        assert_close(new_var, torch_var, context=f"var, momentum={momentum}")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("momentum", MOMENTA)
def test_update_running_stats_follows_nn_batchnorm1d_over_a_sequence(seed, momentum):
    rng = np.random.default_rng(seed)
    d = 4
    bn = nn.BatchNorm1d(d, momentum=momentum, dtype=torch.float64)
    # PyTorch's starting values: mean 0, var 1.
    running_mean, running_var = np.zeros(d), np.ones(d)
    for step in range(8):
        x = make_batch(rng, int(rng.integers(2, 10)), d, LAYOUTS[step % len(LAYOUTS)])
        bn(tensor(x))
        running_mean, running_var = ref.update_running_stats(running_mean, running_var, x,
                                                             momentum=momentum)
        assert_close(running_mean, bn.running_mean)
        assert_close(running_var, bn.running_var)


def test_update_running_stats_default_momentum_is_0_1():
    rng = np.random.default_rng(0)
    x = make_batch(rng, 5, 3, "plain")
    torch_mean, torch_var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    F.batch_norm(tensor(x), torch_mean, torch_var, training=True, momentum=0.1)
    new_mean, new_var = ref.update_running_stats(np.zeros(3), np.ones(3), x)
    assert_close(new_mean, torch_mean)
    assert_close(new_var, torch_var)


@batch_cases
def test_batchnorm_eval_matches_functional_batch_norm_in_eval_mode(seed, shape, layout):
    rng = np.random.default_rng(seed)
    x = make_batch(rng, *shape, layout)
    d = shape[1]
    running_mean, running_var = per_feature(rng, d), positive(rng, d)
    gamma, beta = per_feature(rng, d), per_feature(rng, d)
    for eps in EPSILONS:
        expected = F.batch_norm(tensor(x), tensor(running_mean), tensor(running_var),
                                tensor(gamma), tensor(beta), training=False, eps=eps)
        mine = ref.batchnorm_eval(x, running_mean, running_var, gamma, beta, eps=eps)
        assert_close(mine, expected, context=f"eps={eps}")


def test_batchnorm_eval_works_on_a_single_example():
    rng = np.random.default_rng(0)
    x = make_batch(rng, 1, 3, "plain")
    stats = per_feature(rng, 3), positive(rng, 3), per_feature(rng, 3), per_feature(rng, 3)
    expected = F.batch_norm(tensor(x), *map(tensor, stats), training=False)
    assert_close(ref.batchnorm_eval(x, *stats), expected)


# A schedule of calls on the layer: the mode for each call.
MODE_SCHEDULE = ["train", "train", "eval", "train", "eval", "eval", "train", "train", "eval"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("momentum", MOMENTA)
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_batchnorm1d_class_follows_nn_batchnorm1d_through_train_and_eval(seed, momentum, eps):
    rng = np.random.default_rng(seed)
    d = 3
    mine = ref.BatchNorm1d(d, eps=eps, momentum=momentum)
    oracle = nn.BatchNorm1d(d, eps=eps, momentum=momentum, dtype=torch.float64)
    assert mine.training and mine.eps == eps and mine.momentum == momentum
    mine.gamma, mine.beta = per_feature(rng, d), per_feature(rng, d)
    with torch.no_grad():
        oracle.weight.copy_(tensor(mine.gamma))
        oracle.bias.copy_(tensor(mine.beta))
    for step, mode in enumerate(MODE_SCHEDULE):
        getattr(mine, mode)()
        getattr(oracle, mode)()
        assert mine.training == (mode == "train")
        n = int(rng.integers(1 if mode == "eval" else 2, 8))
        x = make_batch(rng, n, d, LAYOUTS[step % len(LAYOUTS)])
        before = mine.running_mean.copy(), mine.running_var.copy()
        assert_close(mine(x), oracle(tensor(x)))
        assert_close(mine.running_mean, oracle.running_mean)
        assert_close(mine.running_var, oracle.running_var)
        if mode == "eval":
            np.testing.assert_array_equal(mine.running_mean, before[0])
            np.testing.assert_array_equal(mine.running_var, before[1])


def test_batchnorm1d_class_starts_like_pytorch():
    mine = ref.BatchNorm1d(4)
    oracle = nn.BatchNorm1d(4, dtype=torch.float64)
    assert mine.training and mine.eps == oracle.eps and mine.momentum == oracle.momentum
    for attr, torch_name in [("gamma", "weight"), ("beta", "bias"),
                             ("running_mean", "running_mean"), ("running_var", "running_var")]:
        np.testing.assert_array_equal(getattr(mine, attr), getattr(oracle, torch_name).detach())


def keras_ema(values, keras_momentum, start):
    """Keras' moving average: the momentum is the weight of the *old* value."""
    moving = start
    for value in values:
        moving = keras_momentum * moving + (1 - keras_momentum) * value
    return moving


@pytest.mark.parametrize("keras_momentum", [0.0, 0.5, 0.9, 0.99, 0.999, 1.0])
@pytest.mark.parametrize("seed", SEEDS)
def test_keras_to_torch_momentum_gives_the_same_moving_average(keras_momentum, seed):
    rng = np.random.default_rng(seed)
    batches = [make_batch(rng, 6, 3, "plain") for _ in range(20)]
    torch_momentum = ref.keras_to_torch_momentum(keras_momentum)
    bn = nn.BatchNorm1d(3, momentum=torch_momentum, dtype=torch.float64)
    for x in batches:
        bn(tensor(x))
    expected = keras_ema([x.mean(axis=0) for x in batches], keras_momentum, start=np.zeros(3))
    assert isinstance(torch_momentum, float)
    assert_close(bn.running_mean, expected)


# --- 05: backward pass ---

BACKWARDS = [ref.batchnorm_backward, ref.batchnorm_backward_compact]


def torch_batchnorm_gradients(dout, x, gamma, beta, eps):
    xt = tensor(x).requires_grad_()
    gt = tensor(gamma).requires_grad_()
    bt = tensor(beta).requires_grad_()
    out = F.batch_norm(xt, None, None, gt, bt, training=True, eps=eps)
    out.backward(tensor(dout))
    return xt.grad, gt.grad, bt.grad


@pytest.mark.parametrize("backward", BACKWARDS, ids=lambda f: f.__name__)
@batch_cases
def test_backward_matches_autograd_with_a_random_upstream_gradient(backward, seed, shape,
                                                                   layout):
    rng = np.random.default_rng(seed)
    x = make_batch(rng, *shape, layout)
    gamma, beta = per_feature(rng, shape[1]), per_feature(rng, shape[1])
    dout = rng.normal(size=shape)
    for eps in EPSILONS:
        mine = backward(dout, x, gamma, eps=eps)
        expected = torch_batchnorm_gradients(dout, x, gamma, beta, eps)
        for name, got, want in zip(["dx", "dgamma", "dbeta"], mine, expected):
            assert_close(got, want, tol=BACKWARD_TOL, context=f"{name}, eps={eps}")


@pytest.mark.parametrize("backward", BACKWARDS, ids=lambda f: f.__name__)
def test_backward_accepts_a_transposed_upstream_gradient(backward):
    rng = np.random.default_rng(0)
    x, gamma = make_batch(rng, 6, 3, "plain"), per_feature(rng, 3)
    dout = rng.normal(size=(3, 6)).T
    expected = torch_batchnorm_gradients(dout, x, gamma, np.zeros(3), 1e-5)
    for got, want in zip(backward(dout, x, gamma), expected):
        assert_close(got, want, tol=BACKWARD_TOL)


def numerical_gradient(f, a, h=1e-6):
    """Centered differences of the scalar f with respect to each entry of a (float64)."""
    grad = np.zeros_like(a)
    for index in np.ndindex(a.shape):
        original = a[index]
        a[index] = original + h
        plus = f()
        a[index] = original - h
        minus = f()
        a[index] = original
        grad[index] = (plus - minus) / (2 * h)
    return grad


@pytest.mark.parametrize("backward", BACKWARDS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(2, 1), (4, 3), (7, 2)])
def test_backward_matches_a_centered_numerical_gradient(backward, seed, shape):
    rng = np.random.default_rng(seed)
    x = make_batch(rng, *shape, "plain")
    gamma, beta = per_feature(rng, shape[1]), per_feature(rng, shape[1])
    dout = rng.normal(size=shape)
    eps = 1e-3

    def loss():  # the oracle's forward: sum(dout * bn(x))
        out = F.batch_norm(tensor(x), None, None, tensor(gamma), tensor(beta),
                           training=True, eps=eps)
        return float((tensor(dout) * out).sum())

    dx, dgamma, dbeta = backward(dout, x, gamma, eps=eps)
    assert_close(dx, numerical_gradient(loss, x), tol=1e-7)
    assert_close(dgamma, numerical_gradient(loss, gamma), tol=1e-7)
    assert_close(dbeta, numerical_gradient(loss, beta), tol=1e-7)


# --- 06: images ---

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES_4D)
@pytest.mark.parametrize("layout", ["plain", "offset_1e4", "channels_last"])
def test_batchnorm2d_forward_matches_functional_batch_norm(seed, shape, layout):
    rng = np.random.default_rng(seed)
    x = make_images(rng, shape, layout)
    gamma, beta = per_feature(rng, shape[1]), per_feature(rng, shape[1])
    for eps in EPSILONS:
        expected = F.batch_norm(tensor(x), None, None, tensor(gamma), tensor(beta),
                                training=True, eps=eps)
        assert_close(ref.batchnorm2d_forward(x, gamma, beta, eps=eps), expected,
                     context=f"eps={eps}")


@pytest.mark.parametrize("seed", SEEDS)
def test_batchnorm2d_forward_matches_nn_batchnorm2d_in_train_mode(seed):
    rng = np.random.default_rng(seed)
    x = make_images(rng, (3, 4, 5, 2), "plain")
    bn = nn.BatchNorm2d(4, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(tensor(per_feature(rng, 4)))
        bn.bias.copy_(tensor(per_feature(rng, 4)))
    mine = ref.batchnorm2d_forward(x, bn.weight.detach().numpy(), bn.bias.detach().numpy())
    assert_close(mine, bn(tensor(x)))


# --- 08: other normalizations and folding ---

@batch_cases
def test_layernorm_forward_2d_matches_functional_layer_norm(seed, shape, layout):
    rng = np.random.default_rng(seed)
    x = make_batch(rng, *shape, layout)
    gamma, beta = per_feature(rng, shape[1]), per_feature(rng, shape[1])
    for eps in EPSILONS:
        expected = F.layer_norm(tensor(x), (shape[1],), tensor(gamma), tensor(beta), eps=eps)
        assert_close(ref.layernorm_forward(x, gamma, beta, eps=eps), expected,
                     context=f"eps={eps}")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES_4D)
@pytest.mark.parametrize("layout", ["plain", "offset_1e4", "channels_last"])
def test_layernorm_forward_4d_matches_functional_layer_norm(seed, shape, layout):
    rng = np.random.default_rng(seed)
    x = make_images(rng, shape, layout)
    _, c, h, w = shape
    gamma, beta = per_feature(rng, c), per_feature(rng, c)
    # F.layer_norm takes an elementwise affine over (C, H, W): spread the per-channel values.
    weight = tensor(np.broadcast_to(gamma[:, None, None], (c, h, w)))
    bias = tensor(np.broadcast_to(beta[:, None, None], (c, h, w)))
    for eps in EPSILONS:
        expected = F.layer_norm(tensor(x), (c, h, w), weight, bias, eps=eps)
        assert_close(ref.layernorm_forward(x, gamma, beta, eps=eps), expected,
                     context=f"eps={eps}")


def group_counts(channels):
    return [g for g in range(1, channels + 1) if channels % g == 0]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(1, 4, 2, 3), (2, 6, 3, 3), (3, 8, 1, 2), (2, 1, 2, 2)])
@pytest.mark.parametrize("layout", ["plain", "offset_1e4", "channels_last"])
def test_groupnorm_forward_matches_functional_group_norm(seed, shape, layout):
    rng = np.random.default_rng(seed)
    x = make_images(rng, shape, layout)
    c = shape[1]
    gamma, beta = per_feature(rng, c), per_feature(rng, c)
    for eps in EPSILONS:
        for groups in group_counts(c):
            expected = F.group_norm(tensor(x), groups, tensor(gamma), tensor(beta), eps=eps)
            assert_close(ref.groupnorm_forward(x, gamma, beta, groups, eps=eps), expected,
                         context=f"groups={groups}, eps={eps}")


def test_groupnorm_forward_takes_sequences_as_torch_does():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 5))  # (N, C, L)
    gamma, beta = per_feature(rng, 6), per_feature(rng, 6)
    expected = F.group_norm(tensor(x), 3, tensor(gamma), tensor(beta))
    assert_close(ref.groupnorm_forward(x, gamma, beta, 3), expected)


def random_eval_bn(rng, channels, affine=True, cls=nn.BatchNorm2d):
    bn = cls(channels, eps=float(rng.choice(EPSILONS)), affine=affine, dtype=torch.float64)
    with torch.no_grad():
        bn.running_mean.copy_(tensor(per_feature(rng, channels)))
        bn.running_var.copy_(tensor(positive(rng, channels)))
        if affine:
            bn.weight.copy_(tensor(per_feature(rng, channels)))
            bn.bias.copy_(tensor(per_feature(rng, channels)))
    return bn.eval()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("conv_bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_fold_batchnorm_matches_fuse_conv_bn_eval(seed, conv_bias, affine):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 5, kernel_size=3, bias=conv_bias, dtype=torch.float64).eval()
    bn = random_eval_bn(rng, 5, affine=affine)
    fused = fuse_conv_bn_eval(conv, bn)
    weight, bias = ref.fold_batchnorm(conv.weight, conv.bias, bn)
    assert isinstance(weight, np.ndarray) and isinstance(bias, np.ndarray)
    assert_close(weight, fused.weight)
    assert_close(bias, fused.bias)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("conv_bias", [True, False])
def test_folded_conv_equals_batchnorm_after_conv_in_eval_mode(seed, conv_bias):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    conv = nn.Conv2d(2, 4, kernel_size=3, padding=1, bias=conv_bias, dtype=torch.float64)
    bn = random_eval_bn(rng, 4)
    x = tensor(rng.normal(size=(3, 2, 6, 5)))
    weight, bias = ref.fold_batchnorm(conv.weight, conv.bias, bn)
    with torch.no_grad():
        expected = bn(conv(x))
    assert_close(F.conv2d(x, tensor(weight), tensor(bias), padding=1), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_fold_batchnorm_takes_numpy_weights_and_a_linear_layer(seed):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    linear = nn.Linear(6, 4, dtype=torch.float64).eval()
    bn = random_eval_bn(rng, 4, cls=nn.BatchNorm1d)
    fused = fuse_linear_bn_eval(linear, bn)
    weight, bias = ref.fold_batchnorm(linear.weight.detach().numpy(),
                                      linear.bias.detach().numpy(), bn)
    assert_close(weight, fused.weight)
    assert_close(bias, fused.bias)


# --- validation: clear errors instead of NumPy broadcasting errors ---

def valid_2d_calls(x):
    """Every (N, D) function, called on x with well-shaped companions."""
    d = x.shape[1] if isinstance(x, np.ndarray) and x.ndim == 2 else 3
    ones, zeros = np.ones(d), np.zeros(d)
    return {
        "batch_mean": lambda: ref.batch_mean(x),
        "batch_var": lambda: ref.batch_var(x),
        "normalize": lambda: ref.normalize(x, zeros, ones),
        "batchnorm_forward": lambda: ref.batchnorm_forward(x, ones, zeros),
        "update_running_stats": lambda: ref.update_running_stats(zeros, ones, x),
        "batchnorm_eval": lambda: ref.batchnorm_eval(x, zeros, ones, ones, zeros),
        "BatchNorm1d": lambda: ref.BatchNorm1d(d)(x),
        "batchnorm_backward": lambda: ref.batchnorm_backward(np.ones((4, d)), x, ones),
        "batchnorm_backward_compact":
            lambda: ref.batchnorm_backward_compact(np.ones((4, d)), x, ones),
    }


TWO_D_FUNCTIONS = list(valid_2d_calls(np.ones((4, 3))))


@pytest.mark.parametrize("name", TWO_D_FUNCTIONS)
@pytest.mark.parametrize("bad_shape", [(3,), (2, 3, 1), (2, 3, 1, 1)])
def test_wrong_ndim_is_a_value_error_naming_the_layout(name, bad_shape):
    x = np.ones(bad_shape)
    with pytest.raises(ValueError, match=r"x must be 2-D \(N, D\), got shape"):
        valid_2d_calls(x)[name]()


@pytest.mark.parametrize("backward", BACKWARDS, ids=lambda f: f.__name__)
def test_backward_names_dout_when_it_has_the_wrong_ndim(backward):
    with pytest.raises(ValueError, match=r"dout must be 2-D \(N, D\), got shape \(4,\)"):
        backward(np.ones(4), np.ones((4, 3)), np.ones(3))


@pytest.mark.parametrize("name", TWO_D_FUNCTIONS)
def test_a_list_instead_of_an_array_is_a_type_error(name):
    x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    with pytest.raises(TypeError, match="x must be a NumPy array, got list"):
        valid_2d_calls(x)[name]()


@pytest.mark.parametrize("call", [
    lambda x: ref.batchnorm2d_forward(x, np.ones(2), np.zeros(2)),
    lambda x: ref.layernorm_forward(x, np.ones(2), np.zeros(2)),
    lambda x: ref.groupnorm_forward(x, np.ones(2), np.zeros(2), 1),
], ids=["batchnorm2d_forward", "layernorm_forward", "groupnorm_forward"])
def test_a_nested_list_of_images_is_a_type_error(call):
    x = np.ones((2, 2, 2, 2)).tolist()
    with pytest.raises(TypeError, match="x must be a NumPy array, got list"):
        call(x)


def test_batchnorm2d_forward_wants_4d_input():
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, C, H, W\), got shape \(4, 3\)"):
        ref.batchnorm2d_forward(np.ones((4, 3)), np.ones(3), np.zeros(3))


@pytest.mark.parametrize("bad_shape", [(4,), (2, 3, 4), (1, 2, 3, 4, 5)])
def test_layernorm_forward_wants_2d_or_4d_input(bad_shape):
    with pytest.raises(ValueError, match=r"x must be 2-D \(N, D\) or 4-D \(N, C, H, W\)"):
        ref.layernorm_forward(np.ones(bad_shape), np.ones(3), np.zeros(3))


def test_batchnorm1d_layer_names_a_batch_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"this layer has 2 features, x has 3"):
        ref.BatchNorm1d(2)(np.ones((4, 3)))


@pytest.mark.parametrize("backward", [ref.batchnorm_backward, ref.batchnorm_backward_compact])
def test_backward_wants_dout_shaped_like_x(backward):
    with pytest.raises(ValueError, match=r"dout must have the shape of x \(4, 3\), got \(1, 3\)"):
        backward(np.ones((1, 3)), np.ones((4, 3)), np.ones(3))


@pytest.mark.parametrize("backward", [ref.batchnorm_backward, ref.batchnorm_backward_compact])
def test_backward_wants_a_finite_eps(backward):
    with pytest.raises(ValueError, match="eps must be a finite number"):
        backward(np.ones((4, 3)), np.ones((4, 3)), np.ones(3), eps=float("nan"))


def test_groupnorm_forward_wants_a_channel_axis():
    with pytest.raises(ValueError, match=r"x must be 2-D \(N, D\) or 3-D \(N, C, L\) or 4-D"):
        ref.groupnorm_forward(np.ones(4), np.ones(4), np.zeros(4), 1)


def mismatched_companions():
    """Calls whose per-feature argument (named by the key) has 2 values for 3 features."""
    x, x4 = np.ones((4, 3)), np.ones((2, 3, 2, 2))
    ones, zeros, two = np.ones(3), np.zeros(3), np.ones(2)
    return [
        ("mean", lambda: ref.normalize(x, two, ones)),
        ("var", lambda: ref.normalize(x, zeros, two)),
        ("gamma", lambda: ref.batchnorm_forward(x, two, zeros)),
        ("beta", lambda: ref.batchnorm_forward(x, ones, two)),
        ("running_mean", lambda: ref.update_running_stats(two, ones, x)),
        ("running_var", lambda: ref.update_running_stats(zeros, two, x)),
        ("running_mean", lambda: ref.batchnorm_eval(x, two, ones, ones, zeros)),
        ("running_var", lambda: ref.batchnorm_eval(x, zeros, two, ones, zeros)),
        ("gamma", lambda: ref.batchnorm_eval(x, zeros, ones, two, zeros)),
        ("beta", lambda: ref.batchnorm_eval(x, zeros, ones, ones, two)),
        ("gamma", lambda: ref.batchnorm_backward(x, x, two)),
        ("gamma", lambda: ref.batchnorm_backward_compact(x, x, two)),
        ("gamma", lambda: ref.batchnorm2d_forward(x4, two, zeros)),
        ("beta", lambda: ref.batchnorm2d_forward(x4, ones, two)),
        ("gamma", lambda: ref.layernorm_forward(x, two, zeros)),
        ("beta", lambda: ref.layernorm_forward(x4, ones, two)),
        ("gamma", lambda: ref.groupnorm_forward(x4, two, zeros, 3)),
        ("beta", lambda: ref.groupnorm_forward(x4, ones, two, 1)),
    ]


@pytest.mark.parametrize("name, call", mismatched_companions(),
                         ids=[f"{i}-{name}" for i, (name, _) in enumerate(mismatched_companions())])
def test_a_per_feature_argument_of_the_wrong_size_is_named(name, call):
    with pytest.raises(ValueError, match=rf"{name} must hold one value per feature \(3\), "
                                         rf"got shape \(2,\)"):
        call()


SINGLE_EXAMPLE_IN_TRAINING = {
    "batchnorm_forward": lambda: ref.batchnorm_forward(np.ones((1, 3)), np.ones(3), np.zeros(3)),
    "update_running_stats":
        lambda: ref.update_running_stats(np.zeros(3), np.ones(3), np.ones((1, 3))),
    "BatchNorm1d.train": lambda: ref.BatchNorm1d(3)(np.ones((1, 3))),
    "batchnorm2d_forward":
        lambda: ref.batchnorm2d_forward(np.ones((1, 2, 1, 1)), np.ones(2), np.zeros(2)),
}


@pytest.mark.parametrize("name", SINGLE_EXAMPLE_IN_TRAINING)
def test_one_value_per_feature_in_training_is_an_error_as_in_pytorch(name):
    with pytest.raises(ValueError, match="needs more than one value per feature"):
        SINGLE_EXAMPLE_IN_TRAINING[name]()


def test_pytorch_also_refuses_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        F.batch_norm(torch.ones(1, 2, 1, 1), None, None, training=True)


def test_batchnorm1d_class_failed_train_call_changes_nothing():
    bn = ref.BatchNorm1d(3)
    with pytest.raises(ValueError, match="needs more than one value per feature"):
        bn(np.ones((1, 3)))
    np.testing.assert_array_equal(bn.running_mean, np.zeros(3))
    np.testing.assert_array_equal(bn.running_var, np.ones(3))


def test_batchnorm1d_class_eval_mode_takes_a_single_example():
    bn = ref.BatchNorm1d(3)
    bn.eval()
    assert bn(np.full((1, 3), 2.0)).shape == (1, 3)


BAD_EPS = [math.nan, math.inf, -math.inf, -1e-5]


def calls_with_eps(eps):
    rng = np.random.default_rng(0)  # no constant feature: eps=0 must not divide by zero
    x, x4 = rng.normal(size=(4, 3)), rng.normal(size=(2, 3, 2, 2))
    ones, zeros = np.ones(3), np.zeros(3)
    return {
        "normalize": lambda: ref.normalize(x, zeros, ones, eps=eps),
        "batchnorm_forward": lambda: ref.batchnorm_forward(x, ones, zeros, eps=eps),
        "batchnorm_eval": lambda: ref.batchnorm_eval(x, zeros, ones, ones, zeros, eps=eps),
        "BatchNorm1d": lambda: ref.BatchNorm1d(3, eps=eps),
        "batchnorm2d_forward": lambda: ref.batchnorm2d_forward(x4, ones, zeros, eps=eps),
        "layernorm_forward": lambda: ref.layernorm_forward(x, ones, zeros, eps=eps),
        "groupnorm_forward": lambda: ref.groupnorm_forward(x4, ones, zeros, 3, eps=eps),
    }


@pytest.mark.parametrize("name", list(calls_with_eps(1e-5)))
@pytest.mark.parametrize("eps", BAD_EPS)
def test_eps_must_be_finite_and_not_negative(name, eps):
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0, got"):
        calls_with_eps(eps)[name]()


@pytest.mark.parametrize("name", list(calls_with_eps(1e-5)))
def test_eps_zero_is_allowed(name):
    calls_with_eps(0.0)[name]()


BAD_MOMENTA = [math.nan, math.inf, -0.1, 1.5]


def calls_with_momentum(momentum):
    return {
        "update_running_stats":
            lambda: ref.update_running_stats(np.zeros(3), np.ones(3), np.ones((4, 3)), momentum),
        "BatchNorm1d": lambda: ref.BatchNorm1d(3, momentum=momentum),
        "keras_to_torch_momentum": lambda: ref.keras_to_torch_momentum(momentum),
    }


@pytest.mark.parametrize("name", list(calls_with_momentum(0.1)))
@pytest.mark.parametrize("momentum", BAD_MOMENTA)
def test_momentum_must_be_finite_and_in_0_1(name, momentum):
    with pytest.raises(ValueError, match=r"momentum must be a finite number in \[0, 1\], got"):
        calls_with_momentum(momentum)[name]()


@pytest.mark.parametrize("groups", [0, -1, 4, 5, 7])
def test_groups_must_divide_the_channels(groups):
    with pytest.raises(ValueError, match=f"6 channels cannot be split into {groups} equal groups"):
        ref.groupnorm_forward(np.ones((2, 6, 2, 2)), np.ones(6), np.zeros(6), groups)


# --- inputs are never modified ---

def every_call(rng):
    """Each reference function once, on fresh random non-contiguous inputs."""
    x = make_batch(rng, 5, 3, "transposed")
    x4 = make_images(rng, (2, 4, 3, 3), "channels_last")
    # Each call draws a fresh vector, so no two arguments share memory.
    vec, vec4 = partial(per_feature, rng, 3), partial(per_feature, rng, 4)
    pos = partial(positive, rng, 3)
    bn = random_eval_bn(rng, 4)
    conv_weight, conv_bias = rng.normal(size=(4, 2, 3, 3)), per_feature(rng, 4)
    return [
        (ref.batch_mean, (x,)),
        (ref.batch_var, (x,)),
        (ref.normalize, (x, vec(), pos())),
        (ref.batchnorm_forward, (x, vec(), vec())),
        (ref.update_running_stats, (vec(), pos(), x)),
        (ref.batchnorm_eval, (x, vec(), pos(), vec(), vec())),
        (ref.batchnorm_backward, (rng.normal(size=(5, 3)), x, vec())),
        (ref.batchnorm_backward_compact, (rng.normal(size=(5, 3)), x, vec())),
        (ref.batchnorm2d_forward, (x4, vec4(), vec4())),
        (ref.layernorm_forward, (x, vec(), vec())),
        (ref.layernorm_forward, (x4, vec4(), vec4())),
        (ref.groupnorm_forward, (x4, vec4(), vec4(), 2)),
        (ref.fold_batchnorm, (conv_weight, conv_bias, bn)),
    ]


@pytest.mark.parametrize("index", range(len(every_call(np.random.default_rng(0)))))
def test_inputs_are_never_modified(index):
    function, args = every_call(np.random.default_rng(index))[index]
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    copies = [a.copy() for a in arrays]
    function(*args)
    for array, copy in zip(arrays, copies):
        np.testing.assert_array_equal(array, copy)


def test_batchnorm1d_class_does_not_modify_its_input():
    rng = np.random.default_rng(0)
    bn = ref.BatchNorm1d(3)
    for mode in ["train", "eval"]:
        getattr(bn, mode)()
        x = make_batch(rng, 5, 3, "strided")
        copy = x.copy()
        bn(x)
        np.testing.assert_array_equal(x, copy)


def test_fold_batchnorm_leaves_the_layers_alone():
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(2, 4, kernel_size=3, dtype=torch.float64)
    bn = random_eval_bn(rng, 4)
    layers = nn.ModuleDict({"conv": conv, "bn": bn})
    before = {name: value.clone() for name, value in layers.state_dict().items()}
    ref.fold_batchnorm(conv.weight, conv.bias, bn)
    after = layers.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
