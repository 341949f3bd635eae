"""Experiments and figures for notebook 09 (batch norm in practice).

Four parts, in the notebook's order: fine-tuning on a shifted domain (BN in train mode,
frozen, or with re-estimated statistics) and the three traps of freezing; zero-gamma
initialization of residual blocks at a high learning rate; weight decay on weights that
feed a batch norm; what low precision does to batch statistics, and what autocast does
with batch norm. Everything is measured when it runs (seeded), nothing is typed in.
Under nbgrader every function that trains or draws returns None without doing anything.
"""

import copy
import functools
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from bn_course.demos._guard import yours_or_ours
from bn_course.widgets import grading, slider_panel


def _reference():
    from bn_course.reference import torch as reference

    return reference


def _batchnorms(model):
    from bn_course.blocks import batchnorm_layers

    return batchnorm_layers(model)


# --- 1. fine-tuning on a shifted domain -------------------------------------------------

def new_domain(digits, contrast=1.5, brightness=3.0):
    """The same digits as seen by another scanner: every (standardized) pixel becomes
    ``contrast * pixel + brightness``. The labels do not change."""
    from bn_course.data import Digits

    return Digits(contrast * digits.x_train + brightness, digits.y_train,
                  contrast * digits.x_test + brightness, digits.y_test)


@functools.lru_cache(maxsize=1)
def pretrained(seed=0, steps=300):
    """An MLP with BN (two Linear -> BN -> ReLU blocks) trained on the original digits.
    Cached: callers get it through ``fresh_pretrained`` and change only copies."""
    from bn_course.data import load_digits
    from bn_course.train import make_mlp, train

    data = load_digits(seed=seed)
    model = make_mlp(data.num_features, hidden=64, depth=2, num_classes=10, bn=True, seed=seed)
    train(model, data, steps=steps, lr=0.1, seed=seed, eval_every=steps, progress=False)
    return model.eval()


def fresh_pretrained():
    """A copy of the pretrained model, in eval mode, to experiment on."""
    return copy.deepcopy(pretrained()).eval()


def _moved(before, after):
    """The largest change of any running statistic or BN parameter between two snapshots."""
    return max((a - b).abs().max().item() for a, b in zip(before, after))


def _bn_state(model):
    return [t.detach().clone() for bn in _batchnorms(model)
            for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias)]


def _some_new_domain_batch(size=8):

    from bn_course.data import load_digits

    x, _ = new_domain(load_digits()).to_torch("train")
    return x[:size]


def trap_train_after_eval():
    """Trap 1: ``model.eval()`` before the fine-tuning loop, which calls ``model.train()``
    (as every training loop does). Returns how far BN's state moved in one forward pass."""
    model = fresh_pretrained()
    model.eval()            # "freeze BN"...
    before = _bn_state(model)
    model.train()           # ...undone by the first line of the training loop
    model(_some_new_domain_batch())
    return _moved(before, _bn_state(model))


def trap_no_grad():
    """Trap 2: a forward pass under ``torch.no_grad()`` in train mode (e.g. "just looking
    at the new data"). No gradients, but the running statistics still move."""
    import torch

    model = fresh_pretrained().train()
    before = _bn_state(model)
    with torch.no_grad():
        model(_some_new_domain_batch())
    return _moved(before, _bn_state(model))


def trap_requires_grad():
    """Trap 3: ``requires_grad=False`` on gamma and beta. Returns (how far the running
    statistics moved, how far gamma and beta moved) after one forward pass in train mode."""
    model = fresh_pretrained().train()
    for bn in _batchnorms(model):
        bn.weight.requires_grad_(False)
        bn.bias.requires_grad_(False)
    before = _bn_state(model)
    model(_some_new_domain_batch())
    after = _bn_state(model)
    statistics = [i for i in range(len(before)) if i % 4 < 2]
    parameters = [i for i in range(len(before)) if i % 4 >= 2]
    return (_moved([before[i] for i in statistics], [after[i] for i in statistics]),
            _moved([before[i] for i in parameters], [after[i] for i in parameters]))


def traps():
    """Run the three traps and print what moved. Nothing under nbgrader."""
    if grading():
        return
    statistics, parameters = trap_requires_grad()
    print("largest change of BN's running statistics / gamma / beta after ONE forward pass:")
    print(f"  1. model.eval(), then model.train() (the training loop)  {trap_train_after_eval():.3f}")
    print(f"  2. torch.no_grad(), model in train mode                   {trap_no_grad():.3f}")
    print(f"  3. requires_grad=False on gamma/beta: running statistics  {statistics:.3f}, "
          f"gamma/beta {parameters:.3f}")


def re_estimated(model, x):
    """AdaBN (Li et al., 2016): a copy of ``model`` whose BN statistics are recomputed on
    the new domain's examples ``x`` (one pass in train mode, momentum=None, weights kept)."""
    import torch

    from bn_course.train import one_thread

    model = copy.deepcopy(model).train()
    for bn in _batchnorms(model):
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the pass
    with torch.no_grad(), one_thread():
        for batch in torch.split(x, 64):
            model(batch)
    return model.eval()


FINE_TUNING = (
    "pretrained, as it is",
    "statistics re-estimated (AdaBN), no training",
    "fine-tuned, BN in train mode",
    "fine-tuned, BN frozen",
    "statistics re-estimated, then fine-tuned with BN frozen",
)


@dataclass(frozen=True)
class FineTuning:
    """Test accuracy on the new domain for each strategy of FINE_TUNING, and on the old
    domain for the pretrained model; the settings of the run."""

    accuracy: dict
    old_domain_accuracy: float
    labelled: int
    batch_size: int
    steps: int


def fine_tuning_experiment(freeze_batchnorm, labelled=200, batch_size=4, steps=150, lr=0.01,
                           seed=0):
    """Fine-tune copies of the pretrained model on ``labelled`` examples of the new domain,
    in batches of ``batch_size``, and test each on the new domain's test split."""
    from bn_course.data import Digits, load_digits
    from bn_course.train import evaluate, train

    old = load_digits(seed=seed)
    new = new_domain(old)
    few = Digits(new.x_train[:labelled], new.y_train[:labelled], new.x_test, new.y_test)
    x_few, _ = few.to_torch("train")
    x_test, y_test = new.to_torch("test")

    def fine_tuned(model):
        train(model, few, steps=steps, lr=lr, batch_size=batch_size, seed=seed + 1,
              eval_every=steps, progress=False)
        return model

    models = {
        FINE_TUNING[0]: fresh_pretrained(),
        FINE_TUNING[1]: re_estimated(pretrained(), x_few),
        FINE_TUNING[2]: fine_tuned(fresh_pretrained()),
        FINE_TUNING[3]: fine_tuned(freeze_batchnorm(fresh_pretrained())),
        FINE_TUNING[4]: fine_tuned(freeze_batchnorm(re_estimated(pretrained(), x_few))),
    }
    accuracy = {name: evaluate(model, x_test, y_test) for name, model in models.items()}
    return FineTuning(accuracy, evaluate(pretrained(), *old.to_torch("test")), labelled,
                      batch_size, steps)


def fine_tuning_figure(result):
    fig, ax = plt.subplots(figsize=(9, 3.4))
    names = list(result.accuracy)
    bars = ax.barh(range(len(names)), [100 * result.accuracy[n] for n in names],
                   color=["0.6", "C2", "C3", "C0", "C1"])
    ax.bar_label(bars, fmt="%.1f%%", fontsize=8, padding=3)
    ax.axvline(100 * result.old_domain_accuracy, color="k", ls=":", lw=1,
               label=f"pretrained, on the old domain ({100 * result.old_domain_accuracy:.1f}%)")
    ax.set(yticks=range(len(names)), yticklabels=names, xlim=(0, 112),
           xlabel="test accuracy on the new domain (%)",
           title=f"Fine-tuning on {result.labelled} labelled examples, batches of "
                 f"{result.batch_size}, {result.steps} steps")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def fine_tuning_lab(freeze_batchnorm):
    """The experiment with your ``freeze_batchnorm`` (the course's until yours passes its
    self-check): the accuracies and a bar chart. None under nbgrader."""
    if grading():
        return None
    freeze = yours_or_ours("freeze_batchnorm", freeze_batchnorm,
                           _reference().freeze_batchnorm)
    return fine_tuning_figure(fine_tuning_experiment(freeze))


# --- 2. zero-gamma initialization of residual blocks --------------------------------------

def residual_mlp(depth=16, width=32, seed=0):
    """Linear -> BN -> ReLU, then ``depth`` residual blocks (``bn_course.blocks.mlp_block``),
    then a linear head: a deep residual network for the 64 pixels of the digits."""
    import torch
    from torch import nn

    from bn_course.blocks import mlp_block

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(64, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
                             *[mlp_block(width) for _ in range(depth)], nn.Linear(width, 10))


@dataclass(frozen=True)
class ZeroInitRuns:
    """{"default": [History per seed], "zero gamma": [...]} and the settings."""

    histories: dict
    lr: float
    depth: int


def zero_init_experiment(zero_init_last_bn, seeds=(0, 1, 2), depth=16, lr=1.0, steps=80):
    """Train ``residual_mlp`` at a high learning rate with the default init (every gamma 1)
    and with ``zero_init_last_bn``, on the same seeds (same weights otherwise)."""
    from bn_course.data import load_digits
    from bn_course.train import train

    data = load_digits()
    histories = {"default": [], "zero gamma": []}
    for seed in seeds:
        for name, init in [("default", lambda model: model), ("zero gamma", zero_init_last_bn)]:
            model = init(residual_mlp(depth=depth, seed=seed))
            histories[name].append(train(model, data, steps=steps, lr=lr, seed=seed,
                                         eval_every=steps // 5, progress=False))
    return ZeroInitRuns(histories, lr, depth)


def zero_init_figure(runs):
    from bn_course.plots import running_mean

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    for (name, histories), colour in zip(runs.histories.items(), ("C3", "C0")):
        for i, history in enumerate(histories):
            label = name if i == 0 else None
            left.plot(history.step[9:], running_mean(history.loss, 10), color=colour, lw=1,
                      label=label)
            right.plot(history.eval_step, 100 * np.array(history.test_accuracy), "o-",
                       color=colour, ms=3, label=label)
    left.set(yscale="log", xlabel="training step", ylabel="training loss (10-step average)",
             title=f"{runs.depth} residual blocks, learning rate {runs.lr:g}, "
                   f"{len(runs.histories['default'])} seeds")
    right.set(xlabel="training step", ylabel="test accuracy (%)", ylim=(0, 100),
              title="Each line one seed (the same weights but for gamma)")
    for ax in (left, right):
        ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def zero_init_lab(zero_init_last_bn):
    """The experiment with your ``zero_init_last_bn`` (the course's until yours passes its
    self-check): final accuracies per seed and the figure. None under nbgrader."""
    if grading():
        return None
    zero_init = yours_or_ours("zero_init_last_bn", zero_init_last_bn,
                              _reference().zero_init_last_bn)
    runs = zero_init_experiment(zero_init)
    for name, histories in runs.histories.items():
        finals = ", ".join(f"{100 * h.test_accuracy[-1]:.1f}%" for h in histories)
        print(f"{name:>10}: final test accuracy per seed {finals}")
    return zero_init_figure(runs)


# --- 3. weight decay and scale invariance ---------------------------------------------------

def scale_invariance(scale=10.0, seed=0):
    """A Linear layer followed by BN (train mode), with its weight W and with scale * W.
    Returns (largest output difference, |gradient for W| / |gradient for scale * W|):
    the output does not change, the gradient shrinks by ``scale``."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 16, generator=generator, dtype=torch.float64)
    dout = torch.randn(32, 8, generator=generator, dtype=torch.float64)
    weight = torch.randn(8, 16, generator=generator, dtype=torch.float64)
    outputs, gradients = [], []
    for w in (weight, scale * weight):
        w = w.clone().requires_grad_()
        out = nn.functional.batch_norm(x @ w.T, None, None, training=True)
        out.backward(dout)
        outputs.append(out.detach())
        gradients.append(w.grad.norm().item())
    return (outputs[0] - outputs[1]).abs().max().item(), gradients[0] / gradients[1]


def print_scale_invariance(scales=(0.1, 10.0, 100.0)):
    """The two numbers of ``scale_invariance`` for a few scales. Nothing under nbgrader."""
    if grading():
        return
    print("Linear -> BN with weight W and with c * W:")
    for scale in scales:
        difference, ratio = scale_invariance(scale)
        print(f"  c = {scale:>5g}: largest output difference {difference:.1e}, "
              f"gradient norm ratio |grad W| / |grad cW| = {ratio:.3f}")


@dataclass(frozen=True)
class DecayRun:
    """One training run: per step, the norm of the weights that feed a BN layer and the
    size of their update relative to that norm; the final test accuracy."""

    weight_norm: np.ndarray
    relative_update: np.ndarray
    test_accuracy: float


def train_with_groups(model, groups, data, steps, lr, seed=0):
    """SGD with per-group weight decay (``param["weight_decay"]`` added to the gradient as
    ``wd * p``), as torch.optim.SGD does. Records the first layer's weight norm and the
    relative size of its update at every step."""
    import torch
    import torch.nn.functional as F

    from bn_course.train import one_thread

    x_train, y_train = data.to_torch("train")
    watched = model[0].weight  # the first Linear, which feeds the first BN
    order = torch.Generator().manual_seed(seed)
    norms, updates = [], []
    with one_thread():
        model.train()
        for _ in range(steps):
            index = torch.randint(0, len(x_train), (64,), generator=order)
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            params = [p for g in groups for p in g["params"]]
            grads = torch.autograd.grad(loss, params)
            before = watched.detach().clone()
            with torch.no_grad():
                grads = iter(grads)
                for group in groups:
                    for p in group["params"]:
                        p -= lr * (next(grads) + group["weight_decay"] * p)
            norms.append(watched.norm().item())
            updates.append(((watched - before).norm() / before.norm()).item())
    return np.array(norms), np.array(updates)


def weight_decay_experiment(param_groups, decays=(0.0, 1e-2, 3e-2), steps=400, lr=0.1, seed=0):
    """The same MLP with BN trained with each weight decay on the groups of
    ``param_groups``. Returns {weight decay: DecayRun}."""
    from bn_course.data import load_digits
    from bn_course.train import evaluate, make_mlp

    data = load_digits(seed=seed)
    runs = {}
    for decay in decays:
        model = make_mlp(data.num_features, hidden=64, depth=2, num_classes=10, bn=True,
                         seed=seed)
        norms, updates = train_with_groups(model, param_groups(model, decay), data, steps, lr,
                                           seed)
        runs[decay] = DecayRun(norms, updates, evaluate(model, *data.to_torch("test")))
    return runs


def weight_decay_figure(runs, lr):
    from bn_course.plots import running_mean

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    for (decay, run), colour in zip(runs.items(), ("C3", "C0", "C2")):
        label = f"weight decay {decay:g} (test accuracy {100 * run.test_accuracy:.1f}%)"
        steps = np.arange(1, len(run.weight_norm) + 1)
        left.plot(steps, run.weight_norm, color=colour, label=label)
        right.plot(steps[19:], running_mean(run.relative_update, 20), color=colour, label=label)
    left.set(xlabel="training step", ylabel="|W| of the first layer",
             title="The norm of weights that feed a BN layer")
    right.set(yscale="log", xlabel="training step",
              ylabel="|update of W| / |W| (20-step average)",
              title=f"Effective step size (learning rate {lr:g})")
    for ax in (left, right):
        ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def weight_decay_lab(param_groups, lr=0.1):
    """The experiment with your ``param_groups`` (the course's until yours passes its
    self-check). None under nbgrader."""
    if grading():
        return None
    groups = yours_or_ours("param_groups", param_groups, _reference().param_groups)
    return weight_decay_figure(weight_decay_experiment(groups, lr=lr), lr)


# --- 4. mixed precision -------------------------------------------------------------------

PRECISIONS = (
    "float32, two passes",
    "float16 storage, exact arithmetic",
    "float16, two passes in float16",
    "float16, one pass: mean(x^2) - mean(x)^2",
    "bfloat16 storage, exact arithmetic",
)


def variance_errors(offset, n=2048, seed=0):
    """Relative error of the variance of ``offset + N(0, 1)`` (n values) computed in each of
    PRECISIONS, against the float64 variance of the same values (inf: overflow or NaN)."""
    import torch

    x = offset + np.random.default_rng(seed).standard_normal(n)
    exact = x.var()

    def two_pass(values):
        centred = values - values.mean()
        return (centred * centred).mean()

    def one_pass(values):
        return (values * values).mean() - values.mean() ** 2

    half = torch.from_numpy(x).half()
    estimates = [
        two_pass(torch.from_numpy(x).float()).item(),
        half.double().var(unbiased=False).item(),
        two_pass(half).item(),
        one_pass(half).item(),
        torch.from_numpy(x).bfloat16().double().var(unbiased=False).item(),
    ]
    return {name: abs(value - exact) / exact if np.isfinite(value) else np.inf
            for name, value in zip(PRECISIONS, estimates)}


def precision_figure(log10_offset):
    offset = 10.0 ** log10_offset
    errors = variance_errors(offset)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    values = [min(e, 1e3) for e in errors.values()]
    colours = ["C2", "C1", "C1", "C3", "C4"]
    bars = ax.barh(range(len(errors)), np.maximum(values, 1e-9), color=colours)
    ax.bar_label(bars, labels=["overflow" if not np.isfinite(e) else f"{e:.0e}"
                               for e in errors.values()], fontsize=8, padding=3)
    ax.axvline(0.01, color="k", ls=":", lw=1)
    ax.set(xscale="log", xlim=(1e-9, 1e5), yticks=range(len(errors)),
           yticklabels=list(errors), xlabel="relative error of the variance (log)",
           title=f"Variance of {offset:g} + N(0, 1), 2048 values (dotted: 1%)")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig  # the panel shows it, then closes it


def precision_panel():
    """A slider for the mean of the activations (as a power of ten)."""
    return slider_panel(
        precision_figure,
        log10_offset=widgets.FloatSlider(value=2.0, min=0.0, max=4.0, step=0.5,
                                         description="log10 mean", continuous_update=False))


def autocast_report():
    """What ``torch.autocast`` on the CPU does with Linear -> BatchNorm1d -> ReLU: the dtype
    each layer gets and returns, the dtype of BN's state, and how exact the statistics BN
    computed are, against float64 statistics of the very low-precision values it received.
    Measured; nothing under nbgrader."""
    if grading():
        return
    import torch
    from torch import nn

    for dtype in (torch.bfloat16, torch.float16):
        model = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8, momentum=1.0), nn.ReLU())
        x = torch.randn(256, 16, generator=torch.Generator().manual_seed(0)) + 10.0
        seen = {}

        def record(layer, args, out, seen=seen):  # returns None: a returned value replaces out
            seen[type(layer).__name__] = (args[0], out)

        hooks = [layer.register_forward_hook(record) for layer in model]
        with torch.autocast("cpu", dtype=dtype):
            model(x)
        for hook in hooks:
            hook.remove()
        print(f"torch.autocast('cpu', dtype={dtype}):")
        for name, (given, returned) in seen.items():
            print(f"  {name:<12} gets {given.dtype!s:<15} returns {returned.dtype}")
        bn, received = model[1], seen["BatchNorm1d"][0].detach().double()
        # momentum=1: the running statistics are this batch's (variance unbiased).
        mean_error = _relative(bn.running_mean.double(), received.mean(dim=0))
        var_error = _relative(bn.running_var.double(), received.var(dim=0))
        print(f"  BN's weight is {bn.weight.dtype}, its running_mean {bn.running_mean.dtype}; "
              f"its batch statistics vs float64 ones of its input: mean {mean_error:.0e}, "
              f"variance {var_error:.0e}")


def _relative(a, b):
    from bn_course.numerics import relative_error

    return relative_error(a.numpy(), b.numpy())
