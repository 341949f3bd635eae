"""The reference answers of notebooks 09-10 (bn_course.reference.numpy: merge_batch_stats,
batch_renorm_forward; bn_course.reference.torch: freeze_batchnorm, zero_init_last_bn,
param_groups, batch_renorm) against float64 NumPy/PyTorch oracles."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bn_course.blocks import ResidualBlock, batchnorm_layers, conv_block, mlp_block
from bn_course.reference import numpy as ref
from bn_course.reference import torch as tref

TOL = 1e-12


def rel_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.max(np.abs(a - b)) / max(1e-8, np.max(np.abs(a) + np.abs(b)))


# --- merge_batch_stats ---------------------------------------------------------------------

def split_stats(parts):
    counts = np.array([len(p) for p in parts])
    return counts, np.stack([p.mean(axis=0) for p in parts]), np.stack([p.var(axis=0) for p in parts])


@pytest.mark.parametrize("sizes", [[4, 4], [1, 7], [3, 1, 12, 2], [50], [2, 2, 2, 2, 2, 2, 2, 2]])
@pytest.mark.parametrize("offset", [0.0, 1e4])
@pytest.mark.parametrize("seed", [0, 1])
def test_merge_equals_the_statistics_of_the_concatenation(sizes, offset, seed):
    rng = np.random.default_rng(seed)
    # Each part drawn around its own mean: the spread of the means is part of the variance.
    parts = [offset + rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 2), (n, 5)) for n in sizes]
    mean, var = ref.merge_batch_stats(*split_stats(parts))
    whole = np.concatenate(parts)
    assert mean.shape == var.shape == (5,)
    assert rel_error(mean, whole.mean(axis=0)) <= TOL
    assert rel_error(var, torch.from_numpy(whole).var(dim=0, unbiased=False).numpy()) <= 1e-10


def test_merge_keeps_the_digits_of_a_large_offset():
    rng = np.random.default_rng(3)
    parts = [1e8 + rng.standard_normal((n, 3)) for n in (5, 9)]
    _, var = ref.merge_batch_stats(*split_stats(parts))
    assert rel_error(var, np.concatenate(parts).var(axis=0)) <= 1e-6


def test_merge_leaves_its_inputs_alone():
    counts, means, variances = split_stats([np.arange(6.0).reshape(3, 2), np.ones((2, 2))])
    copies = [a.copy() for a in (counts, means, variances)]
    ref.merge_batch_stats(counts, means, variances)
    assert all(np.array_equal(a, b) for a, b in zip(copies, (counts, means, variances)))


@pytest.mark.parametrize("counts, means, variances, match", [
    ([2, 0], np.zeros((2, 3)), np.ones((2, 3)), "positive"),
    ([2, 3], np.zeros((2, 3)), np.ones((3, 3)), r"\(K, D\)"),
    ([], np.zeros((0, 3)), np.zeros((0, 3)), "non-empty"),
])
def test_merge_rejects_bad_input(counts, means, variances, match):
    with pytest.raises(ValueError, match=match):
        ref.merge_batch_stats(np.array(counts), means, variances)


# --- batch_renorm_forward ------------------------------------------------------------------

def renorm_inputs(seed, n=6, d=4, offset=0.0):
    rng = np.random.default_rng(seed)
    x = offset + rng.normal(rng.uniform(-2, 2, d), rng.uniform(0.3, 3, d), (n, d))
    running_mean = offset + rng.uniform(-2, 2, d)
    running_var = rng.uniform(0.2, 4, d)
    return x, running_mean, running_var, rng.uniform(0.5, 2, d), rng.uniform(-1, 1, d)


def torch_renorm(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    """The torch reference in float64, on copies (it updates the running statistics)."""
    args = [torch.tensor(a, dtype=torch.float64) for a in (x, running_mean, running_var,
                                                           gamma, beta)]
    return tref.batch_renorm(*args, r_max=r_max, d_max=d_max, training=True, eps=eps)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("r_max, d_max", [(1.0, 0.0), (1.5, 0.5), (3.0, 5.0), (1e9, 1e9)])
@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_batch_renorm_numpy_matches_torch(seed, r_max, d_max, eps):
    inputs = renorm_inputs(seed)
    mine = ref.batch_renorm_forward(*inputs, r_max, d_max, eps=eps)
    assert rel_error(mine, torch_renorm(*inputs, r_max, d_max, eps).detach()) <= TOL


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_batch_renorm_limits_are_batch_norm_and_eval_mode(seed, offset):
    inputs = renorm_inputs(seed, offset=offset)
    t = {name: torch.from_numpy(a) for name, a in zip(
        ("x", "mean", "var", "gamma", "beta"), inputs)}
    as_bn = F.batch_norm(t["x"], None, None, t["gamma"], t["beta"], training=True)
    as_eval = F.batch_norm(t["x"], t["mean"], t["var"], t["gamma"], t["beta"], training=False)
    assert rel_error(ref.batch_renorm_forward(*inputs, 1.0, 0.0), as_bn) <= 1e-10
    assert rel_error(ref.batch_renorm_forward(*inputs, 1e9, 1e9), as_eval) <= 1e-10


def test_batch_renorm_clips_r_and_d():
    # A batch with std 10 and mean 100 against running statistics 0 and 1: r and d clip.
    x = np.array([[90.0], [110.0]])
    out = ref.batch_renorm_forward(x, np.zeros(1), np.ones(1), np.ones(1), np.zeros(1),
                                   r_max=3.0, d_max=5.0, eps=0.0)
    assert np.allclose(out.ravel(), [-1 * 3 + 5, 1 * 3 + 5])


@pytest.mark.parametrize("seed", range(3))
def test_batch_renorm_backward_treats_r_and_d_as_constants(seed):
    x, running_mean, running_var, gamma, beta = renorm_inputs(seed, n=5, d=3)
    dout = torch.from_numpy(np.random.default_rng(seed + 10).standard_normal(x.shape))
    xt = torch.tensor(x, requires_grad=True)
    gt, bt = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    out = tref.batch_renorm(xt, torch.from_numpy(running_mean.copy()),
                            torch.from_numpy(running_var.copy()), gt, bt, 2.0, 1.0, True)
    out.backward(dout)
    # The oracle: gamma * (x_hat * r + d) + beta with r and d computed aside as numbers, i.e.
    # batch norm with weight gamma * r and bias gamma * d + beta.
    std_b = np.sqrt(x.var(axis=0) + 1e-5)
    std = np.sqrt(running_var + 1e-5)
    r = torch.from_numpy(np.clip(std_b / std, 0.5, 2.0))
    d = torch.from_numpy(np.clip((x.mean(axis=0) - running_mean) / std, -1.0, 1.0))
    xo = torch.tensor(x, requires_grad=True)
    go, bo = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    F.batch_norm(xo, None, None, go * r, go * d + bo, training=True).backward(dout)
    for mine, oracle in [(xt, xo), (gt, go), (bt, bo)]:
        assert rel_error(mine.grad, oracle.grad) <= 1e-10


def test_batch_renorm_module_updates_running_stats_as_batch_norm():
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours, theirs = tref.BatchRenorm(3).double(), nn.BatchNorm2d(3).double()
    ours(x * 3 + 1)
    theirs(x * 3 + 1)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-12)
    theirs.load_state_dict(ours.state_dict())  # the same state_dict keys, both ways
    ours.eval(), theirs.eval()
    assert torch.allclose(ours(x), theirs(x), rtol=1e-12)


# --- freeze_batchnorm ----------------------------------------------------------------------

def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8)), nn.ReLU(),
                         nn.Linear(8, 3))


def train_steps(model, steps=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(steps):
        model.train()  # what every training loop does
        x = torch.randn(16, 6, generator=generator) * 2 + 1
        loss = F.cross_entropy(model(x), torch.randint(0, 3, (16,), generator=generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def snapshot(modules):
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]


def test_frozen_batchnorm_survives_train_and_training_steps():
    model = small_net()
    for bn in batchnorm_layers(model):  # statistics that differ from the start values
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    before_bn = snapshot(batchnorm_layers(model))
    before_linear = snapshot([model[0], model[5]])
    assert tref.freeze_batchnorm(model) is model
    train_steps(model)
    assert all(not bn.training for bn in batchnorm_layers(model))
    for old, new in zip(before_bn, snapshot(batchnorm_layers(model))):
        assert all(torch.equal(old[k], new[k]) for k in old)
    for old, new in zip(before_linear, snapshot([model[0], model[5]])):
        assert not torch.equal(old["weight"], new["weight"])  # the rest still learns


def test_frozen_model_in_train_mode_computes_what_eval_mode_computes():
    model = small_net()
    x = torch.randn(5, 6)
    expected = copy.deepcopy(model).eval()(x)
    tref.freeze_batchnorm(model).train()
    assert torch.equal(model(x), expected)
    twin = copy.deepcopy(model).train()  # a deep copy stays frozen
    assert torch.equal(twin(x), expected)
    assert not any(bn.training for bn in batchnorm_layers(twin))


def test_frozen_model_passes_gradients_through_and_loads_into_the_original():
    model = tref.freeze_batchnorm(small_net())
    model(torch.randn(4, 6)).sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for bn in batchnorm_layers(model) for p in bn.parameters())
    fresh = small_net(seed=1)
    fresh.load_state_dict(model.state_dict())  # strict: the same keys
    assert fresh[1].training  # the original architecture is untouched


# --- zero_init_last_bn ---------------------------------------------------------------------

def residual_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        conv_block(4), nn.Sequential(conv_block(4, 8, stride=2), conv_block(8)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def test_zero_init_zeroes_the_last_bn_of_each_branch_only():
    model = residual_net()
    before = {name: p.clone() for name, p in model.named_parameters()}
    assert tref.zero_init_last_bn(model) is model
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"3.branch.4.weight", "4.0.branch.4.weight", "4.1.branch.4.weight"}
    assert all(model.get_parameter(name).abs().sum() == 0 for name in changed)


def test_zero_init_blocks_start_as_their_shortcut():
    model = tref.zero_init_last_bn(residual_net()).eval()
    block = model[4][0]
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(block(x), torch.relu(block.shortcut(x)))
    identity_block = model[3]
    x = torch.relu(torch.randn(2, 4, 6, 6))  # a block's input comes out of a ReLU
    assert torch.equal(identity_block(x), x)


def test_zero_init_finds_blocks_of_any_kind_of_branch():
    model = nn.Sequential(mlp_block(5), ResidualBlock(nn.Sequential(
        nn.Linear(5, 5), nn.BatchNorm1d(5), nn.Sequential(nn.ReLU(), nn.BatchNorm1d(5)))))
    tref.zero_init_last_bn(model)
    assert model[0].branch[4].weight.abs().sum() == 0
    assert model[1].branch[2][1].weight.abs().sum() == 0
    assert model[1].branch[1].weight.abs().sum() == 5


# --- param_groups --------------------------------------------------------------------------

class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
        self.blocks = nn.ModuleList([conv_block(4), conv_block(4, 6, stride=2)])
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 2)


@pytest.mark.parametrize("make", [small_net, residual_net, Nested])
def test_param_groups_exempt_bn_and_biases_exactly(make):
    model = make()
    groups = tref.param_groups(model, weight_decay=5e-4)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(decay_of) == len(list(model.parameters()))
    bn_params = {id(p) for bn in batchnorm_layers(model) for p in bn.parameters()}
    for name, parameter in model.named_parameters():
        exempt = id(parameter) in bn_params or name.endswith("bias")
        assert decay_of[id(parameter)] == (0.0 if exempt else 5e-4), name
    torch.optim.SGD(groups, lr=0.1)  # a valid argument for an optimizer


def test_param_groups_count_a_shared_layer_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.BatchNorm1d(4), shared)
    groups = tref.param_groups(model, 0.1)
    assert sorted(len(g["params"]) for g in groups) == [1, 3]
    torch.optim.SGD(groups, lr=0.1)


def test_param_groups_count_a_tied_weight_once():
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.ReLU(), nn.Linear(4, 4, bias=False))
    model[2].weight = model[0].weight  # one tensor, two modules
    groups = tref.param_groups(model, 0.1)
    assert [len(g["params"]) for g in groups] == [1, 0]
    torch.optim.SGD(groups, lr=0.1)  # rejects a parameter listed twice
