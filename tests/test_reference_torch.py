"""bn_course.reference.torch against PyTorch's own batch norm, the float64 oracle."""

import copy
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bn_course.reference.torch import BatchNorm1d, BatchNorm2d, BatchNormFunction, batch_norm

OURS = {2: BatchNorm1d, 3: BatchNorm1d, 4: BatchNorm2d}  # by input ndim
TORCH = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}

# Awkward shapes on purpose: N=2, C=1, L or H*W = 1, N=1 with several pixels.
SHAPES = [(2, 1), (5, 4), (16, 7), (2, 3, 1), (3, 4, 9), (2, 1, 1, 1), (1, 2, 3, 3),
          (2, 3, 4, 5), (6, 5, 2, 7)]
VARIANTS = ["plain", "offset", "constant", "strided"]
SEEDS = [0, 1, 2]
EPS = {0: 1e-5, 1: 1e-3, 2: 0.1}  # by seed: a large eps shows where it goes
MOMENTA = [0.1, 0.5, 1.0, 0.0, None]
# With two values per channel, dx is a tiny (eps-sized) remainder of a cancellation:
# lower precisions keep no digits of it (torch's own float32 kernels neither).
WELL_CONDITIONED = [s for s in SHAPES if math.prod(s) // s[1] > 2]
TORCH_HAS_BIAS_OPTION = "bias" in inspect.signature(nn.BatchNorm1d).parameters

# float64 outputs agree to ~1e-12 (the kernels round differently at 1e4 offsets); dx with
# two values per channel is an eps-sized remainder of a cancellation, where both keep ~9 digits.
TOL = {torch.float64: 1e-9, torch.float32: 1e-5}

DEVICES = [
    pytest.param("cpu", torch.float64, id="cpu"),
    pytest.param("cuda", torch.float64, id="cuda", marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]),
    pytest.param("mps", torch.float32, id="mps", marks=pytest.mark.skipif(
        not torch.backends.mps.is_available(), reason="no MPS device (MPS has no float64)")),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second thread only adds wake-ups (halves this file's time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel_error(a, b):
    """max|a-b| / max(1e-8, max(|a|+|b|)), the course's relative error, in float64 on CPU."""
    a, b = (t.detach().to("cpu", torch.float64) for t in (a, b))
    return ((a - b).abs().max() / (a.abs() + b.abs()).max().clamp(min=1e-8)).item()


def make_input(shape, variant, seed, device="cpu", dtype=torch.float64):
    """A random batch of the given shape; the variant adds what breaks naive code."""
    gen = torch.Generator().manual_seed(seed)
    if variant == "strided":
        # Memory with the axes reversed, then every other example: a non-contiguous view.
        n, *rest = shape
        base = torch.randn((*rest[::-1], 2 * n), generator=gen, dtype=torch.float64)
        x = base.to(device, dtype).permute(*reversed(range(len(shape))))[::2]
        assert not x.is_contiguous()
        return x
    channel_shape = (1, shape[1]) + (1,) * (len(shape) - 2)
    scale = torch.rand(channel_shape, generator=gen, dtype=torch.float64) * 3 + 0.1
    shift = torch.randn(channel_shape, generator=gen, dtype=torch.float64) * 2
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale + shift
    if variant == "offset":
        x = x + 1e4
    elif variant == "constant":
        x[:, 0] = 3.0
    return x.to(device, dtype)


def make_pair(ndim, channels, seed, device="cpu", dtype=torch.float64, **kwargs):
    """(ours on device/dtype, torch's in float64 on CPU) with the same random weight and bias."""
    reference = TORCH[ndim](channels, dtype=torch.float64, **kwargs)
    ours = OURS[ndim](channels, device=device, dtype=dtype, **kwargs)
    gen = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
            theirs.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
            mine.copy_(theirs)
    return ours, reference


def gradients(module, x, dout):
    """(output, dx, dweight, dbias) of module(x) for the upstream gradient dout."""
    x = x.detach().requires_grad_()
    out = module(x)
    inputs = (x, *module.parameters())
    return (out, *torch.autograd.grad(out, inputs, dout))


def assert_close(ours, theirs, tol):
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.shape == reference.shape
        assert rel_error(mine, reference) <= tol


def skip_if_float32_cannot_say(shape, variant, dtype):
    """float32 (MPS) keeps too few digits at 1e4 offsets and for dx with M = 2."""
    if dtype != torch.float64 and (variant == "offset" or shape not in WELL_CONDITIONED):
        pytest.skip("beyond float32's precision: the float64 devices cover this case")


def train_both(ours, reference, x):
    """One training step of each module, on the same values (the oracle's in float64)."""
    ours(x)
    reference(x.to("cpu", torch.float64))


def assert_same_running_stats(ours, reference, tol):
    assert_close([ours.running_mean, ours.running_var],
                 [reference.running_mean, reference.running_var], tol)
    assert ours.num_batches_tracked.item() == reference.num_batches_tracked.item()


# --- forward and backward, train and eval, on every device there is ---

@pytest.mark.parametrize("device, dtype", DEVICES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_train_step_matches_torch(seed, shape, variant, device, dtype):
    """Output, dx, dweight, dbias (random dout) and the running statistics after one step."""
    skip_if_float32_cannot_say(shape, variant, dtype)
    ours, reference = make_pair(len(shape), shape[1], seed, device, dtype, eps=EPS[seed])
    x = make_input(shape, variant, seed, device, dtype)
    dout = make_input(shape, "plain", seed + 100, device, dtype)
    mine = gradients(ours, x, dout)
    expected = gradients(reference, x.to("cpu", torch.float64), dout.to("cpu", torch.float64))
    assert mine[0].dtype == dtype and mine[0].device.type == device
    assert_close(mine, expected, TOL[dtype])
    assert_same_running_stats(ours, reference, TOL[dtype])


@pytest.mark.parametrize("device, dtype", DEVICES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_eval_matches_torch(seed, shape, variant, device, dtype):
    """Eval mode after two training steps: output and gradients from the running stats."""
    skip_if_float32_cannot_say(shape, variant, dtype)
    ours, reference = make_pair(len(shape), shape[1], seed, device, dtype, eps=EPS[seed])
    for step in range(2):
        train_both(ours, reference, make_input(shape, variant, 10 * seed + step, device, dtype))
    ours.eval()
    reference.eval()
    x = make_input(shape, variant, seed + 50, device, dtype)
    dout = make_input(shape, "plain", seed + 100, device, dtype)
    mine = gradients(ours, x, dout)
    expected = gradients(reference, x.to("cpu", torch.float64), dout.to("cpu", torch.float64))
    assert_close(mine, expected, TOL[dtype])
    assert ours.num_batches_tracked.item() == 2  # eval mode updates nothing


@pytest.mark.parametrize("device, dtype", DEVICES)
@pytest.mark.parametrize("momentum", MOMENTA)
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 3, 2, 2)], ids=str)
def test_running_stats_over_several_steps(shape, momentum, device, dtype):
    """EMA for each momentum, the cumulative average for momentum=None, num_batches_tracked."""
    ours, reference = make_pair(len(shape), shape[1], 0, device, dtype, momentum=momentum)
    offset = "offset" if dtype == torch.float64 else "plain"
    for step in range(5):
        train_both(ours, reference, make_input(shape, offset if step == 2 else "plain", step,
                                               device, dtype))
        assert_same_running_stats(ours, reference, TOL[dtype])


def test_momentum_none_is_the_plain_average_of_batch_statistics():
    bn = BatchNorm1d(3, momentum=None, dtype=torch.float64)
    batches = [make_input((6, 3), "plain", seed) for seed in range(4)]
    for batch in batches:
        bn(batch)
    expected_mean = torch.stack([b.mean(0) for b in batches]).mean(0)
    expected_var = torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0)
    assert rel_error(bn.running_mean, expected_mean) <= 1e-14
    assert rel_error(bn.running_var, expected_var) <= 1e-14


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_functional_matches_F_batch_norm(affine, training):
    x = make_input((5, 3, 4), "plain", 0)
    weight = torch.randn(3, dtype=torch.float64) if affine else None
    bias = torch.randn(3, dtype=torch.float64) if affine else None
    ours = [torch.rand(3, dtype=torch.float64) for _ in range(2)]  # running mean, var
    theirs = [t.clone() for t in ours]
    mine = batch_norm(x, *ours, weight, bias, training, 0.3, 1e-3)
    expected = F.batch_norm(x, *theirs, weight, bias, training, 0.3, 1e-3)
    assert rel_error(mine, expected) <= 1e-12
    assert_close(ours, theirs, 1e-14)


# --- the autograd Function on its own ---

@pytest.mark.parametrize("variant", ["plain", "constant", "strided"])
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 1), (2, 3, 2, 2)], ids=str)
def test_gradcheck_function(shape, variant):
    x = make_input(shape, variant, 0).requires_grad_()
    weight = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: BatchNormFunction.apply(x, w, b, 1e-5)[0], (x, weight, bias))
    assert torch.autograd.gradcheck(lambda x: BatchNormFunction.apply(x, None, None, 1e-5)[0],
                                    (x,))


def test_function_returns_biased_batch_statistics():
    x = make_input((6, 3, 2), "plain", 0)
    _, mean, var = BatchNormFunction.apply(x, None, None, 1e-5)
    assert rel_error(mean, x.mean((0, 2))) <= 1e-14
    assert rel_error(var, x.var((0, 2), unbiased=False)) <= 1e-14


def test_double_backward_is_refused_not_wrong():
    x = make_input((4, 3), "plain", 0).requires_grad_()
    out, _, _ = BatchNormFunction.apply(x, None, None, 1e-5)
    dout = torch.randn_like(out, requires_grad=True)
    (dx,) = torch.autograd.grad(out, x, dout, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        dx.sum().backward()


# --- the module's API: construction, state_dict, options ---

@pytest.mark.parametrize("ndim", [2, 4])
def test_constructor_parameters_and_buffers_match_torch(ndim):
    kwargs = {"eps": 1e-3, "momentum": 0.2, "dtype": torch.float64}
    ours, reference = OURS[ndim](5, **kwargs), TORCH[ndim](5, **kwargs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    for (name, mine), (_, theirs) in zip(ours.state_dict().items(),
                                         reference.state_dict().items(), strict=True):
        assert (name, mine.dtype, mine.shape) == (name, theirs.dtype, theirs.shape)
        assert torch.equal(mine, theirs)
    if TORCH_HAS_BIAS_OPTION:  # the repr names it since torch added the option
        assert repr(ours).split("(", 1)[1] == repr(reference).split("(", 1)[1]


@pytest.mark.parametrize("ndim", [2, 3, 4])
def test_state_dict_loads_both_ways(ndim):
    shape = {2: (6, 3), 3: (4, 3, 5), 4: (3, 3, 2, 4)}[ndim]
    trained_ours, trained_theirs = make_pair(ndim, 3, 0)
    for step in range(3):
        batch = make_input(shape, "plain", step)
        trained_ours(batch)
        trained_theirs(batch * 2 + 1)  # different statistics from ours
    fresh_ours = OURS[ndim](3, dtype=torch.float64)
    fresh_theirs = TORCH[ndim](3, dtype=torch.float64)
    fresh_theirs.load_state_dict(trained_ours.state_dict())
    fresh_ours.load_state_dict(trained_theirs.state_dict())
    x = make_input(shape, "plain", 99)
    for module in (trained_ours, trained_theirs, fresh_ours, fresh_theirs):
        module.eval()
    assert rel_error(fresh_theirs(x), trained_ours(x)) <= 1e-12
    assert rel_error(fresh_ours(x), trained_theirs(x)) <= 1e-12
    assert fresh_ours.num_batches_tracked.item() == 3


def test_swapped_into_a_conv_net_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                              nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).double()
    ours = copy.deepcopy(reference)
    ours[1] = BatchNorm2d(4, dtype=torch.float64)
    ours[1].load_state_dict(reference[1].state_dict())
    x = make_input((8, 3, 6, 6), "plain", 0)
    dout = make_input((8, 5), "plain", 1)
    for mode in ("train", "eval"):
        outputs = []
        for net in (ours, reference):
            getattr(net, mode)()
            net.zero_grad()
            outputs.append(net(x))
            outputs[-1].backward(dout)
        assert rel_error(*outputs) <= 1e-12
        for (name, mine), (_, theirs) in zip(ours.named_parameters(),
                                             reference.named_parameters(), strict=True):
            assert rel_error(mine.grad, theirs.grad) <= 1e-10, name
    assert_same_running_stats(ours[1], reference[1], 1e-12)


AFFINE_OPTIONS = [{"affine": True}, {"affine": False}, pytest.param(
    {"affine": True, "bias": False}, id="bias=False", marks=pytest.mark.skipif(
        not TORCH_HAS_BIAS_OPTION, reason="this torch has no BatchNorm(bias=...)"))]


@pytest.mark.parametrize("track_running_stats", [True, False])
@pytest.mark.parametrize("affine_options", AFFINE_OPTIONS)
@pytest.mark.parametrize("shape", [(5, 3), (3, 3, 2, 2)], ids=str)
def test_affine_and_track_running_stats_options(shape, affine_options, track_running_stats):
    options = dict(**affine_options, track_running_stats=track_running_stats)
    ours, reference = make_pair(len(shape), shape[1], 0, **options)
    assert ours.state_dict().keys() == reference.state_dict().keys()
    assert (ours.weight is None) == (reference.weight is None)
    assert (ours.bias is None) == (reference.bias is None)
    assert (ours.running_mean is None) == (not track_running_stats)
    x = make_input(shape, "offset", 0)
    dout = make_input(shape, "plain", 1)
    for mode in ("train", "eval"):  # without running stats, eval uses the batch's
        getattr(ours, mode)()
        getattr(reference, mode)()
        assert_close(gradients(ours, x, dout), gradients(reference, x, dout), 1e-10)


def test_reset_running_stats_matches_torch():
    ours, reference = make_pair(2, 3, 0)
    for module in (ours, reference):
        module(make_input((4, 3), "plain", 0))
        module.reset_running_stats()
    assert_same_running_stats(ours, reference, 0.0)


# --- lower precision ---

@pytest.mark.parametrize("shape", WELL_CONDITIONED, ids=str)
def test_float32_close_to_the_float64_oracle(shape):
    ours, reference = make_pair(len(shape), shape[1], 0, dtype=torch.float32)
    x = make_input(shape, "plain", 0)
    dout = make_input(shape, "plain", 1)
    mine = gradients(ours, x.float(), dout.float())
    assert all(t.dtype == torch.float32 for t in mine)
    assert_close(mine, gradients(reference, x, dout), 1e-5)
    assert_same_running_stats(ours, reference, 1e-5)


def _half_supported_on_cpu(dtype):
    try:
        (torch.ones(2, 2, dtype=dtype) * torch.ones(1, 2, dtype=dtype)).sum(0)
        return True
    except RuntimeError:
        return False


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("module_dtype", ["same", "float32"])
@pytest.mark.parametrize("shape", [(16, 4), (4, 3, 5, 5)], ids=str)
def test_half_precision_input(shape, module_dtype, dtype, tol):
    """Half input computes its statistics in float32 and gives half output."""
    if not _half_supported_on_cpu(dtype):
        pytest.skip(f"{dtype} arithmetic is not supported on this CPU build of torch")
    params_dtype = dtype if module_dtype == "same" else torch.float32
    ours, reference = make_pair(len(shape), shape[1], 0, dtype=params_dtype)
    with torch.no_grad():  # the oracle starts from the same rounded weights
        for theirs, mine in zip(reference.parameters(), ours.parameters(), strict=True):
            theirs.copy_(mine)
    x = make_input(shape, "plain", 0).to(dtype)
    dout = make_input(shape, "plain", 1).to(dtype)
    mine = gradients(ours, x, dout)
    assert mine[0].dtype == mine[1].dtype == dtype
    assert mine[2].dtype == params_dtype
    assert_close(mine, gradients(reference, x.double(), dout.double()), tol)
    assert_same_running_stats(ours, reference, tol)


# --- errors, as torch raises them ---

@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)], ids=str)
def test_one_value_per_channel_in_training_raises(shape):
    ours, reference = make_pair(len(shape), 3, 0)
    x = make_input(shape, "plain", 0)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ours(x)
    with pytest.raises(ValueError):
        reference(x)
    ours.eval()
    reference.eval()
    assert rel_error(ours(x), reference(x)) <= 1e-12  # eval mode is fine with N=1


@pytest.mark.parametrize("cls, shape", [(BatchNorm1d, (2, 3, 4, 5)), (BatchNorm1d, (3,)),
                                        (BatchNorm2d, (2, 3, 4))])
def test_wrong_number_of_dimensions_raises(cls, shape):
    with pytest.raises(ValueError, match="expected"):
        cls(3)(torch.randn(shape))


# --- from scratch: none of PyTorch's batch-norm kernels run ---

class AtenOpRecorder(TorchDispatchMode):
    """Records the name of every aten op that runs, forward and backward."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def aten_ops_of_a_train_and_eval_step(module, shape):
    x = make_input(shape, "plain", 0).requires_grad_()
    dout = make_input(shape, "plain", 1)
    with AtenOpRecorder() as recorder:
        for mode in ("train", "eval"):
            getattr(module, mode)()
            module(x).backward(dout)
    return recorder.names


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 4)], ids=str)
def test_no_aten_batch_norm_op_runs(shape):
    ours, reference = make_pair(len(shape), 3, 0)
    names = aten_ops_of_a_train_and_eval_step(ours, shape)
    assert "aten.sum.dim_IntList" in names  # the recorder does see our ops
    assert not [name for name in names if "batch_norm" in name]
    # ... and it would see torch's kernels, forward and backward:
    native_names = aten_ops_of_a_train_and_eval_step(reference, shape)
    assert any("batch_norm" in name and "backward" in name for name in native_names)
