"""Experiments, figures and the slider panel for notebook 08 (beyond batch norm).

Five parts, in the notebook's order: folding BN into the convolution before it, other
normalizations at small batch sizes, ghost batch norm, re-estimating the running statistics
(precise BN), and case files of models with a planted BN bug. torch and the digits (through
scikit-learn) load only inside the functions that need them. Under nbgrader every function
that trains, times or draws returns None without doing anything.
"""

import contextlib
import copy
import functools
import statistics
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from bn_course import plots
from bn_course.demos._guard import array_shaped, running_yours, yours_or_ours
from bn_course.numerics import relative_error
from bn_course.reference import numpy as ref
from bn_course.reference.case_files import BN_BUGS, CASE_LETTERS, planted_bug  # noqa: F401 (BN_BUGS: read by the notebook)
from bn_course.widgets import grading, slider_panel


@contextlib.contextmanager
def _seeded(seed):
    """Layers built inside get the same initial weights on every run; the caller's
    global torch random state is restored afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _to_tensor(values, like):
    """The student's NumPy output as a tensor with the dtype of ``like``."""
    import torch

    return torch.as_tensor(_float64(values)).to(like.dtype)


def _float64(values):
    """A float64 NumPy array from an array or a tensor (detached: a tensor that requires
    grad refuses np.asarray)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
    return np.asarray(values, dtype=np.float64)


def _fold(fold_batchnorm, conv, bn):
    """``fold_batchnorm`` called as its self-check calls it: NumPy arrays, and a ``bn``
    with NumPy weight, bias, running_mean, running_var and eps."""
    from types import SimpleNamespace

    arrays = SimpleNamespace(eps=bn.eps, **{name: _float64(getattr(bn, name)) for name in
                                            ("weight", "bias", "running_mean", "running_var")})
    bias = None if conv.bias is None else _float64(conv.bias)
    return fold_batchnorm(_float64(conv.weight), bias, arrays)


# --- 1. folding BN into the convolution ------------------------------------------

def conv_bn_net(channels=32, depth=4, seed=0, dtype=None):
    """``depth`` blocks of Conv3x3 (bias=False) -> BatchNorm2d -> ReLU, in eval mode.

    Training would leave BN with running statistics and gamma, beta far from their start
    values; here they are drawn at random (seeded), so that folding has work to do.
    """
    import torch
    from torch import nn

    layers = []
    with _seeded(seed):
        for _ in range(depth):
            layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU()]
        model = nn.Sequential(*layers).to(dtype or torch.float32)
        with torch.no_grad():
            for bn in model.modules():
                if isinstance(bn, nn.BatchNorm2d):
                    bn.running_mean.normal_(0.0, 0.5)
                    bn.running_var.uniform_(0.3, 3.0)
                    bn.weight.uniform_(0.5, 1.5)
                    bn.bias.normal_(0.0, 0.5)
    return model.eval()


def folded_conv(conv, bn, fold_batchnorm):
    """One Conv2d computing ``bn(conv(x))`` in eval mode, with the weight and bias that
    ``fold_batchnorm`` returns for them (given as NumPy arrays, see ``_fold``)."""
    import torch
    from torch import nn

    weight, bias = _fold(fold_batchnorm, conv, bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True)
    fused = fused.to(conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(_to_tensor(array_shaped(weight, tuple(conv.weight.shape)),
                                      conv.weight))
        fused.bias.copy_(_to_tensor(array_shaped(bias, (conv.out_channels,)), conv.weight))
    return fused.eval()


def folded_net(model, fold_batchnorm):
    """A copy of a Sequential model in which every Conv2d followed by a BatchNorm2d has
    become a single Conv2d (``folded_conv``)."""
    from torch import nn

    layers, folded = list(model), []
    while layers:
        layer = layers.pop(0)
        if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
            folded.append(folded_conv(layer, layers.pop(0), fold_batchnorm))
        else:
            folded.append(copy.deepcopy(layer))
    return nn.Sequential(*folded).eval()


def verify_fold(fold_batchnorm, seed=0):
    """Print how far the student's folding is from PyTorch's ``fuse_conv_bn_eval``, and
    from conv -> BN itself in eval and in train mode (float64, max relative error).
    A fold that raises or returns the wrong shapes gets one line instead of the table.
    Nothing under nbgrader."""
    if grading():
        return
    with running_yours("fold_batchnorm", what="check"):
        _verify_fold(fold_batchnorm, seed)


def _verify_fold(fold_batchnorm, seed):
    import torch
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    block = conv_bn_net(channels=6, depth=1, seed=seed, dtype=torch.float64)
    conv, bn = block[0], block[1]
    with _seeded(seed + 1):
        conv_with_bias = nn.Conv2d(6, 6, 3, padding=1).to(torch.float64).eval()
    print("fold_batchnorm vs torch.nn.utils.fusion.fuse_conv_bn_eval (max relative error):")
    for name, layer in [("conv without bias", conv), ("conv with bias", conv_with_bias)]:
        weight, bias = _fold(fold_batchnorm, layer, bn)
        theirs = fuse_conv_bn_eval(layer, bn)
        print(f"  {name:<17}  weight {_error(weight, theirs.weight):.1e}, "
              f"bias {_error(bias, theirs.bias):.1e}")

    fused = folded_conv(conv, bn, fold_batchnorm)
    x = torch.randn(8, 6, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        eval_mode = _error(fused(x), bn.eval()(conv(x)))
        train_mode = _error(fused(x), bn.train()(conv(x)))
    bn.eval()
    print("the folded conv's output vs conv -> BN on a batch of 8 images:")
    print(f"  BN in eval mode   {eval_mode:.1e}")
    print(f"  BN in train mode  {train_mode:.1e}  (train mode normalizes with this batch's "
          "statistics, not the running ones)")


def _error(mine, theirs):
    return relative_error(array_shaped(mine, tuple(theirs.shape)),
                          theirs.detach().double().numpy())


def fold_speedup(fold_batchnorm, channels=32, depth=4, batch_size=16, size=16, rounds=7):
    """Median time of an eval-mode forward pass through ``conv_bn_net`` and through its
    folded copy (one thread), as a ``bn_course.timing.Timings`` table. None under nbgrader.

    Each round times both networks (three calls each, after a warm-up); the table gives the
    median over the rounds. Alternating keeps a burst of load on a shared machine from
    landing on one network only.
    """
    if grading():
        return None
    fold_batchnorm = yours_or_ours("fold_batchnorm", fold_batchnorm, ref.fold_batchnorm,
                                   what="timing")
    import torch

    from bn_course.timing import Timings, compare
    from bn_course.train import one_thread

    model = conv_bn_net(channels, depth)
    folded = folded_net(model, fold_batchnorm)
    x = torch.randn(batch_size, channels, size, size, generator=torch.Generator().manual_seed(0))
    networks = {f"{depth} x (conv -> BN -> ReLU)": lambda: model(x),
                f"{depth} x (folded conv -> ReLU)": lambda: folded(x)}
    with torch.no_grad(), one_thread():
        rounds = [dict(compare(networks, repeats=3).rows) for _ in range(rounds)]
    return Timings([(name, statistics.median(times[name] for times in rounds))
                    for name in networks])


# --- 2. normalizations for small batches ------------------------------------------

NORMALIZATIONS = {
    # name: (which cells of the (N, C) grid share the highlighted cell's statistics, blurb)
    "BatchNorm": (lambda n, c, group: c == 0, "per channel, over the batch"),
    "LayerNorm": (lambda n, c, group: n == 0, "per example, over all channels"),
    "GroupNorm": (lambda n, c, group: n == 0 and group == 0, "per example and channel group"),
    "InstanceNorm": (lambda n, c, group: n == 0 and c == 0, "per example and channel"),
}


def normalization_axes_figure(num_examples=4, num_channels=6, num_groups=2):
    """Four grids of examples (rows) by channels (columns), each cell standing for the
    H x W values of one channel of one image. The blue cells share one mean and one
    variance. None under nbgrader."""
    if grading():
        return None
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    per_group = num_channels // num_groups
    for ax, (name, (shares, blurb)) in zip(axes, NORMALIZATIONS.items()):
        for n in range(num_examples):
            for c in range(num_channels):
                colour = "C0" if shares(n, c, c // per_group) else "0.92"
                ax.add_patch(Rectangle((c, n), 1, 1, facecolor=colour, edgecolor="white", lw=2))
        ax.set(xlim=(0, num_channels), ylim=(num_examples, 0), xticks=[], yticks=[],
               xlabel="channels C", title=f"{name}\n{blurb}")
        ax.set_aspect("equal")
        ax.set_ylabel("examples N")
    axes[2].set_title(f"GroupNorm ({num_groups} groups)\n{NORMALIZATIONS['GroupNorm'][1]}")
    fig.suptitle("Which values share one mean and variance (each cell: the H x W pixels "
                 "of one channel of one image)", fontsize=10)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def compare_norms_with_torch(layernorm_forward, groupnorm_forward, seed=0):
    """Print the max relative error of the student's LayerNorm and GroupNorm against
    torch.nn.functional.layer_norm / group_norm (float64). A function that raises or
    returns the wrong shape gets one line instead of its rows. Nothing under nbgrader."""
    if grading():
        return
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    print("max relative error against torch.nn.functional (float64):")
    with running_yours("layernorm_forward"):
        for shape in [(8, 10), (4, 6, 5, 5)]:
            x, gamma, beta = _norm_inputs(rng, shape)
            # F.layer_norm takes an elementwise weight over the normalized axes: a
            # per-channel gamma is broadcast over H and W to match.
            weight = torch.from_numpy(gamma).reshape((-1,) + (1,) * (len(shape) - 2))
            bias = torch.from_numpy(beta).reshape(weight.shape)
            expected = F.layer_norm(torch.from_numpy(x), shape[1:],
                                    weight.expand(shape[1:]), bias.expand(shape[1:]), eps=1e-5)
            yours = array_shaped(layernorm_forward(x, gamma, beta), shape)
            print(f"  layernorm_forward, x {shape}:  "
                  f"{relative_error(yours, expected.numpy()):.1e}")
    with running_yours("groupnorm_forward"):
        for groups in (1, 3, 6):
            x, gamma, beta = _norm_inputs(rng, (4, 6, 5, 5))
            expected = F.group_norm(torch.from_numpy(x), groups, torch.from_numpy(gamma),
                                    torch.from_numpy(beta), eps=1e-5)
            yours = array_shaped(groupnorm_forward(x, gamma, beta, groups), x.shape)
            print(f"  groupnorm_forward, x (4, 6, 5, 5), {groups} group(s):  "
                  f"{relative_error(yours, expected.numpy()):.1e}")


def _norm_inputs(rng, shape):
    channels = shape[1]
    offsets = rng.uniform(-3, 3, size=(1, channels) + (1,) * (len(shape) - 2))
    x = offsets + rng.uniform(0.5, 2.0) * rng.standard_normal(shape)
    return x, rng.uniform(0.5, 2.0, channels), rng.uniform(-1.0, 1.0, channels)


NORM_BATCH_SIZES = (2, 4, 8, 32)


def small_conv_net(norm, width=8, seed=0):
    """The digits as (N, 1, 8, 8) images through three conv -> norm -> ReLU blocks and a
    linear layer. The last conv covers the whole 4x4 map, so its norm sees one value per
    channel and image: BatchNorm there has only N values per channel to work with.

    norm: "BN" (BatchNorm2d) or "GN" (GroupNorm with 4 groups).
    """
    from torch import nn

    def normalization(channels):
        return nn.BatchNorm2d(channels) if norm == "BN" else nn.GroupNorm(4, channels)

    if norm not in ("BN", "GN"):
        raise ValueError(f'norm must be "BN" or "GN", got {norm!r}')
    with _seeded(seed):
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, width, 3, padding=1, bias=False), normalization(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            normalization(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 4, bias=False), normalization(4 * width), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * width, 10))


@functools.lru_cache(maxsize=4)
def batch_size_runs(batch_sizes=NORM_BATCH_SIZES, steps=100, lr=0.1, seed=0):
    """Train ``small_conv_net`` with BN and with GN at each batch size: the same steps,
    learning rate and initial weights; only the batch size and the norm change.
    Returns {(norm, batch_size): History}. Memoized: the slider only reads from it."""
    from bn_course.data import load_digits
    from bn_course.train import train

    data = load_digits(seed=seed)
    return {(norm, size): train(small_conv_net(norm, seed=seed), data, steps=steps, lr=lr,
                                batch_size=size, seed=seed, eval_every=steps, progress=False)
            for size in batch_sizes for norm in ("BN", "GN")}


def batch_size_figure(runs, batch_size):
    """Left: final test accuracy against batch size, BN vs GN, ``batch_size`` marked.
    Right: the training loss of both at ``batch_size`` (average of 10 steps)."""
    sizes = sorted({size for _, size in runs})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for norm, colour in [("BN", "C0"), ("GN", "C1")]:
        accuracy = [100 * runs[norm, size].test_accuracy[-1] for size in sizes]
        left.plot(sizes, accuracy, "o-", color=colour, label=norm)
        left.plot(batch_size, 100 * runs[norm, batch_size].test_accuracy[-1], "o", ms=14,
                  mfc="none", mec=colour, mew=2)
        history = runs[norm, batch_size]
        right.plot(history.step[9:], plots.running_mean(history.loss, 10), color=colour,
                   label=f"{norm}: test accuracy {100 * history.test_accuracy[-1]:.0f}%")
    left.axvline(batch_size, color="0.6", ls=":")
    left.set_xscale("log", base=2)
    left.minorticks_off()
    left.set(xticks=sizes, xticklabels=[str(s) for s in sizes], ylim=(0, 100),
             xlabel="batch size (the same number of steps for each)",
             ylabel="test accuracy (%), eval mode", title="Final accuracy after training")
    right.set(xlabel="training step", ylabel="training loss (10-step average)", ylim=(0, 2.5),
              title=f"Training at batch size {batch_size}")
    for ax in (left, right):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig  # the panel shows it, then closes it


def batch_size_panel(batch_sizes=NORM_BATCH_SIZES, steps=100):
    """A batch-size slider over ``batch_size_runs`` (trained once, when the panel is built)."""
    if grading():
        return None
    runs = batch_size_runs(tuple(batch_sizes), steps)
    return slider_panel(
        lambda batch_size: batch_size_figure(runs, batch_size),
        batch_size=widgets.SelectionSlider(options=list(batch_sizes), value=batch_sizes[0],
                                           description="batch size", continuous_update=False))


# --- 3. ghost batch norm ------------------------------------------------------------

def ghost_noise(ghost_batchnorm_forward, virtual_batch_sizes, batch_size=512, features=64,
                seed=0):
    """How far ghost BN's output is from plain BN's over the whole batch: the root mean
    square difference for each virtual batch size, on Gaussian data (gamma 1, beta 0).
    It measures the noise each example gets from the statistics of its small group."""
    x = np.random.default_rng(seed).standard_normal((batch_size, features))
    gamma, beta = np.ones(features), np.zeros(features)
    whole_batch = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-5)
    return np.array([np.sqrt(np.mean((ghost_batchnorm_forward(x, gamma, beta, size)
                                      - whole_batch) ** 2))
                     for size in virtual_batch_sizes])


def ghost_noise_figure(ghost_batchnorm_forward,
                       virtual_batch_sizes=(2, 4, 8, 16, 32, 64, 128, 256)):
    """The noise of ``ghost_noise`` against the virtual batch size, with the Gaussian
    prediction sqrt(1.5 / B). None under nbgrader."""
    if grading():
        return None
    yours = yours_or_ours("ghost_batchnorm_forward", ghost_batchnorm_forward, None)
    ghost_batchnorm_forward = yours or ref.ghost_batchnorm_forward
    owner = "your" if yours else "the course's"
    sizes = np.array(virtual_batch_sizes)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(sizes, ghost_noise(ghost_batchnorm_forward, sizes), "o-", lw=2,
            label=f"{owner} ghost_batchnorm_forward (batch of 512)")
    ax.plot(sizes, np.sqrt(1.5 / sizes), "k--", lw=1, label=r"$\sqrt{1.5 / B}$")
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    ax.set(yscale="log", xticks=sizes, xticklabels=[str(s) for s in sizes],
           xlabel="virtual batch size B",
           ylabel="RMS of (ghost BN - whole-batch BN)",
           title="The noise ghost BN puts back into a large batch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


# --- 4. re-estimating the running statistics (precise BN) ----------------------------

def _batchnorms(model):
    from bn_course.blocks import batchnorm_layers  # imports torch: only when a model exists

    return batchnorm_layers(model)


def recompute_with(recompute_running_stats, model, x, batch_size=64):
    """A copy of ``model`` in eval mode whose BN running statistics come from the student's
    ``recompute_running_stats``, fed each BN layer's inputs during one pass over ``x`` in
    train mode (batches of ``batch_size``): the inputs that training itself would give them."""
    import torch

    from bn_course.train import one_thread

    model = copy.deepcopy(model).train()
    inputs = {bn: [] for bn in _batchnorms(model)}
    hooks = [bn.register_forward_hook(
        lambda layer, args, output: inputs[layer].append(args[0].double().numpy().copy()))
        for bn in inputs]
    with torch.no_grad(), one_thread():
        for batch in torch.split(x, batch_size):
            model(batch)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for bn, batches in inputs.items():
            mean, var = recompute_running_stats(batches)
            bn.running_mean.copy_(_to_tensor(mean, bn.running_mean).reshape(-1))
            bn.running_var.copy_(_to_tensor(var, bn.running_var).reshape(-1))
    return model.eval()


def recompute_with_torch(model, x, batch_size=64):
    """The same with PyTorch alone: reset the statistics, momentum=None (a cumulative
    average), one pass in train mode. torch.optim.swa_utils.update_bn does this too."""
    import torch

    from bn_course.train import one_thread

    model = copy.deepcopy(model).train()
    for bn in _batchnorms(model):
        bn.reset_running_stats()
        bn.momentum = None
    with torch.no_grad(), one_thread():
        for batch in torch.split(x, batch_size):
            model(batch)
    return model.eval()


@dataclass(frozen=True)
class PreciseBNResult:
    steps: int
    lr: float
    ema_accuracy: dict      # momentum -> test accuracy with the running statistics of training
    precise_accuracy: dict  # momentum -> test accuracy after recomputing them
    torch_error: float      # largest relative error of the recomputed statistics vs PyTorch's
    unit: int               # the unit of the first BN layer whose statistics are traced
    batch_means: dict       # momentum -> its batch mean at every step (train mode)
    running_means: dict     # momentum -> its running mean after every step
    precise_mean: float     # its recomputed mean


def precise_bn_experiment(recompute_running_stats, momenta=(0.1, 0.01), steps=50, lr=0.5,
                          depth=3, seed=0):
    """Train the same MLP with BN on raw pixel values (0 to 16) for a few steps with a
    large learning rate, once per BN momentum, then test it with the running statistics of
    training and with statistics recomputed by the student's function."""
    from bn_course.data import load_digits
    from bn_course.train import evaluate, make_mlp, train

    data = load_digits(seed=seed, standardize=False)
    x_train, _ = data.to_torch("train")
    x_test, y_test = data.to_torch("test")
    ema, precise, batch_means, running_means, errors = {}, {}, {}, {}, []
    for momentum in momenta:
        model = make_mlp(data.num_features, hidden=64, depth=depth, num_classes=10, bn=True,
                         seed=seed)
        for bn in _batchnorms(model):
            bn.momentum = momentum
        with _traced(_batchnorms(model)[0]) as trace:
            train(model, data, steps=steps, lr=lr, seed=seed, eval_every=steps, progress=False)
        recomputed = recompute_with(recompute_running_stats, model, x_train)
        errors += _statistics_errors(recomputed, recompute_with_torch(model, x_train))
        ema[momentum] = evaluate(model, x_test, y_test)
        precise[momentum] = evaluate(recomputed, x_test, y_test)
        batch_means[momentum] = np.array(trace["batch"])
        running_means[momentum] = np.array(trace["running"])
    unit = 0
    precise_mean = float(_batchnorms(recomputed)[0].running_mean[unit])
    return PreciseBNResult(steps, lr, ema, precise, max(errors), unit,
                           {m: b[:, unit] for m, b in batch_means.items()},
                           {m: r[:, unit] for m, r in running_means.items()}, precise_mean)


@contextlib.contextmanager
def _traced(bn):
    """Record a BN layer's batch means and running means at every train-mode call."""
    trace = {"batch": [], "running": []}

    def record(layer, args, output):
        if layer.training:  # evaluate() calls it in eval mode too
            trace["batch"].append(args[0].detach().mean(dim=0).numpy().copy())
            trace["running"].append(layer.running_mean.numpy().copy())  # already updated

    hook = bn.register_forward_hook(record)
    try:
        yield trace
    finally:
        hook.remove()


def _statistics_errors(mine, theirs):
    return [relative_error(getattr(a, name).numpy(), getattr(b, name).numpy())
            for a, b in zip(_batchnorms(mine), _batchnorms(theirs))
            for name in ("running_mean", "running_var")]


def precise_bn_figure(result):
    """Left: test accuracy with the running statistics of training vs recomputed ones, per
    momentum. Right: one unit's batch means during training, its running means, and the
    recomputed value."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), width_ratios=(1, 1.6))
    momenta = list(result.ema_accuracy)
    where = np.arange(len(momenta))
    for offset, (label, accuracy, colour) in enumerate([
            ("running statistics from training (EMA)", result.ema_accuracy, "C3"),
            ("recomputed after training (precise BN)", result.precise_accuracy, "C2")]):
        bars = left.bar(where + 0.4 * offset - 0.2, [100 * accuracy[m] for m in momenta],
                        width=0.4, color=colour, label=label)
        left.bar_label(bars, fmt="%.1f", fontsize=8)
    left.set(xticks=where, xticklabels=[f"momentum {m:g}" for m in momenta], ylim=(0, 135),
             yticks=range(0, 101, 20), ylabel="test accuracy (%)",
             title=f"{result.steps} steps, learning rate {result.lr:g}")
    left.legend(fontsize=7, loc="upper center")

    steps = np.arange(1, result.steps + 1)
    first = momenta[0]
    right.plot(steps, result.batch_means[first], ".", color="0.6", ms=5,
               label="batch mean at each step (train mode)")
    for colour, momentum in zip(("C0", "C3"), momenta):
        right.plot(steps, result.running_means[momentum], color=colour, lw=2,
                   label=f"running mean, momentum {momentum:g}")
    right.axhline(result.precise_mean, color="C2", ls="--", lw=2,
                  label="recomputed with the final weights")
    right.set(xlabel="training step", ylabel=f"unit {result.unit} of the first BN layer",
              title="What eval mode will subtract")
    right.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def precise_bn_lab(recompute_running_stats):
    """The experiment in one call: print the check against PyTorch and the accuracies,
    and return the figure. None under nbgrader."""
    if grading():
        return None
    yours = yours_or_ours("recompute_running_stats", recompute_running_stats, None,
                          what="lab")
    result = precise_bn_experiment(yours or ref.recompute_running_stats)
    whose = "your" if yours else "the course's"
    print(f"{whose} statistics vs PyTorch's momentum=None pass: max relative error "
          f"{result.torch_error:.1e}")
    for momentum in result.ema_accuracy:
        print(f"momentum {momentum:g}: test accuracy {100 * result.ema_accuracy[momentum]:.1f}% "
              f"with the running statistics, {100 * result.precise_accuracy[momentum]:.1f}% "
              "recomputed")
    return precise_bn_figure(result)


# --- 5. case files: a planted BN bug to diagnose --------------------------------------

def _case_model(dropout_on_input, seed):
    """Two Linear -> BN -> ReLU blocks and a linear head; Dropout(0.5) before the head,
    or (the bug) on the input, where it feeds the first BN layer."""
    import torch
    from torch import nn

    layers = [nn.Linear(64, 64, bias=False), nn.BatchNorm1d(64), nn.ReLU(),
              nn.Linear(64, 64, bias=False), nn.BatchNorm1d(64), nn.ReLU()]
    dropout_at = 0 if dropout_on_input else len(layers)
    layers.insert(dropout_at, nn.Dropout(0.5))
    model = nn.Sequential(*layers, nn.Linear(64, 10))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for linear in model.modules():
            if isinstance(linear, nn.Linear):
                nn.init.normal_(linear.weight, std=linear.in_features ** -0.5,
                                generator=generator)
                if linear.bias is not None:
                    linear.bias.zero_()
    return model


def _new_scanner(digits):
    """The same digits from a scanner with more contrast and a brighter background."""
    from bn_course.data import Digits

    return Digits(1.5 * digits.x_train + 3.0, digits.y_train,
                  1.5 * digits.x_test + 3.0, digits.y_test)


def _fine_tuned(bug, pretrained, data, steps, seed):
    """The pretrained weights and statistics, fine-tuned on ``data`` with ``bug`` planted."""
    from torch import nn

    from bn_course.train import train

    model = _case_model(dropout_on_input=bug == "dropout-before-batchnorm", seed=seed)
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.BatchNorm1d))]
    trained = [m for m in pretrained.modules() if isinstance(m, (nn.Linear, nn.BatchNorm1d))]
    for layer, source in zip(layers, trained):
        layer.load_state_dict(source.state_dict())
    if bug == "stats-frozen-while-fine-tuning":
        for bn in _batchnorms(model):
            bn.momentum = 0.0  # "keep the pretrained statistics": they never move again
    train(model, data, steps=steps, lr=0.1, seed=seed + 1, eval_every=steps, progress=False)
    return model


SYMPTOMS = (
    "train-mode accuracy on training batches of 64 (what the training loop sees)",
    "deployed: test accuracy, whole test set in one batch",
    "deployed: test accuracy, test set in batches of 4",
    "BN 1 inputs: |mean - running mean| / running std",
    "BN 1 inputs: variance / running variance",
    "BN 2 inputs: |mean - running mean| / running std",
    "BN 2 inputs: variance / running variance",
)


def _symptoms(model, bug, data):
    """The probes of the checklist, as numbers in the order of SYMPTOMS."""
    from bn_course.train import evaluate

    x_train, y_train = data.to_torch("train")
    x_test, y_test = data.to_torch("test")
    deployed_in_train_mode = bug == "eval-mode-forgotten"

    def deployed(batch_size):
        return evaluate(model, x_test, y_test, batch_size=batch_size,
                        train_mode=deployed_in_train_mode)

    values = [evaluate(model, x_train, y_train, batch_size=64, train_mode=True),
              deployed(len(x_test)), deployed(4)]
    for shift, ratio in _bn_input_statistics(model, x_train):
        values += [shift, ratio]
    return values


def _bn_input_statistics(model, x):
    """For each BN layer, in eval mode on x: the median over units of how far the input's
    mean is from the running mean (in running standard deviations), and of the ratio of
    the input's variance to the running variance."""
    import torch

    from bn_course.train import one_thread

    model = copy.deepcopy(model).eval()
    inputs = []
    hooks = [bn.register_forward_hook(lambda layer, args, output: inputs.append(args[0]))
             for bn in _batchnorms(model)]
    with torch.no_grad(), one_thread():
        model(x)
    for hook in hooks:
        hook.remove()
    statistics = []
    for bn, z in zip(_batchnorms(model), inputs):
        std = bn.running_var.sqrt()
        shift = ((z.mean(dim=0) - bn.running_mean).abs() / std).median().item()
        ratio = (z.var(dim=0) / bn.running_var).median().item()
        statistics.append((shift, ratio))
    return statistics


@dataclass(frozen=True)
class CaseFiles:
    """Symptoms of each case file: {case: [value for each of SYMPTOMS]}."""

    symptoms: dict

    def rows(self):
        cases = list(self.symptoms)
        for i, name in enumerate(SYMPTOMS):
            values = [self.symptoms[case][i] for case in cases]
            percent = "accuracy" in name
            yield name, [f"{100 * v:.1f}%" if percent else f"{v:.2f}" for v in values]

    def __str__(self):
        width = max(len(name) for name in SYMPTOMS)
        lines = [f"{'':<{width}}  " + "  ".join(f"{case:>6}" for case in self.symptoms)]
        lines += [f"{name:<{width}}  " + "  ".join(f"{v:>6}" for v in values)
                  for name, values in self.rows()]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self):
        head = "".join(f"<th>case {case}</th>" for case in self.symptoms)
        body = "".join(
            f"<tr><td style='text-align:left'>{name}</td>"
            + "".join(f"<td>{v}</td>" for v in values) + "</tr>"
            for name, values in self.rows())
        return f"<table><tr><th></th>{head}</tr>{body}</table>"


@functools.lru_cache(maxsize=2)
def case_file_symptoms(pretrain_steps=200, fine_tune_steps=100, seed=0):
    """Pretrain one model on the digits, fine-tune a copy for each case file on the new
    scanner's digits with its planted bug, and measure the symptoms."""
    from bn_course.data import load_digits
    from bn_course.train import train

    old = load_digits(seed=seed)
    new = _new_scanner(old)
    with _seeded(seed):  # dropout draws its masks from torch's global generator
        pretrained = _case_model(dropout_on_input=False, seed=seed)
        train(pretrained, old, steps=pretrain_steps, lr=0.1, seed=seed,
              eval_every=pretrain_steps, progress=False)
        return CaseFiles({
            case: _symptoms(_fine_tuned(bug, pretrained, new, fine_tune_steps, seed), bug, new)
            for case, bug in ((case, planted_bug(case)) for case in CASE_LETTERS)})


def case_files():
    """The case files' symptoms as a table. None under nbgrader."""
    if grading():
        return None
    return case_file_symptoms()
