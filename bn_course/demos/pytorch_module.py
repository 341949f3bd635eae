"""Figures and small experiments for notebook 06 (batch norm as a PyTorch module).

The experiments train on the bundled 8x8 digits with ``bn_course.train``, on the CPU: these
networks are far too small to gain from a GPU. Under nbgrader they do nothing.
"""

import copy
import functools
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import PolyCollection
from torch import nn

from bn_course.demos._guard import WrongOutput, running_yours, yours_or_ours
from bn_course.widgets import grading

# --- the device ---------------------------------------------------------------


def pick_device():
    """The best device this machine has: a CUDA GPU, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# --- which values share a mean and a variance ---------------------------------

CUBE = {"N": 6, "C": 4, "HW": 5}  # examples, channels, pixels (H and W on one axis)
DEPTH = (0.55, 0.35)  # how one step along N moves on the page: an oblique projection

SHARED = "#4a86e8"  # the colour of the cells that share one mean and variance
# For each normalization, the cells (n, c) that share their statistics with the cell of the
# front example n = 0 and the last channel c = C - 1 (every pixel of a cell shares them).
NORMALIZATIONS = {
    "Batch norm": ("one channel: all examples, all pixels",
                   lambda n, c: c == CUBE["C"] - 1),
    "Layer norm": ("one example: all channels, all pixels", lambda n, c: n == 0),
    "Instance norm": ("one example, one channel", lambda n, c: n == 0 and c == CUBE["C"] - 1),
    "Group norm": ("one example, a group of channels",
                   lambda n, c: n == 0 and c >= CUBE["C"] - 2),
}


def _page(c, n, hw):
    """Where the point (channel c, example n, pixel hw) of the cube lands on the page."""
    return c + n * DEPTH[0], hw + n * DEPTH[1]


def _visible_cells():
    """The unit squares on the three faces the viewer sees (front, top, right side), each
    with the (n, c) of the cube cell it belongs to."""
    n_max, c_max, hw_max = CUBE["N"], CUBE["C"], CUBE["HW"]
    cells = []
    for c in range(c_max):
        for hw in range(hw_max):  # front face, example n = 0
            cells.append(([(c, 0, hw), (c + 1, 0, hw), (c + 1, 0, hw + 1), (c, 0, hw + 1)],
                          (0, c)))
        for n in range(n_max):  # top face
            cells.append(([(c, n, hw_max), (c + 1, n, hw_max), (c + 1, n + 1, hw_max),
                           (c, n + 1, hw_max)], (n, c)))
    for n in range(n_max):
        for hw in range(hw_max):  # right side face, channel c = C - 1
            cells.append(([(c_max, n, hw), (c_max, n + 1, hw), (c_max, n + 1, hw + 1),
                           (c_max, n, hw + 1)], (n, c_max - 1)))
    return cells


def _draw_cube(ax, shares_statistics, title, subtitle):
    cells = _visible_cells()
    polygons = [[_page(*corner) for corner in corners] for corners, _ in cells]
    colours = [SHARED if shares_statistics(n, c) else "#f1f3f4" for _, (n, c) in cells]
    ax.add_collection(PolyCollection(polygons, facecolors=colours, edgecolors="0.45",
                                     linewidths=0.6))
    n_max, c_max, hw_max = CUBE["N"], CUBE["C"], CUBE["HW"]
    ax.text(c_max / 2, -0.5, "C (channels)", ha="center", va="top", fontsize=9)
    ax.text(-0.35, hw_max / 2, "H, W (pixels)", ha="right", va="center", rotation=90,
            fontsize=9)
    corner = _page(c_max, n_max / 2, 0)
    ax.text(corner[0] + 0.25, corner[1] - 0.1, "N (examples)", ha="left", va="center",
            rotation=np.degrees(np.arctan2(*DEPTH[::-1])), fontsize=9)
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    ax.set(xlim=(-1.2, c_max + n_max * DEPTH[0] + 1.4),
           ylim=(-1.0, hw_max + n_max * DEPTH[1] + 0.2), aspect="equal")
    ax.axis("off")


def reduction_axes_figure():
    """A batch of images as a cube (N, C, and H, W on one axis); the blue cells share one
    mean and one variance, for batch norm and, for comparison, three relatives (notebook 08)."""
    fig, axes = plt.subplots(1, len(NORMALIZATIONS), figsize=(14, 3.3))
    for ax, (title, (subtitle, rule)) in zip(axes, NORMALIZATIONS.items()):
        _draw_cube(ax, rule, title, subtitle)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


# --- the student's module next to torch.nn.BatchNorm2d ------------------------

def compare_with_torch(BatchNorm2d, device, channels=3, momentum=0.2, seed=0):
    """Drive ``BatchNorm2d`` (the student's class) and ``torch.nn.BatchNorm2d`` with the same
    batches on ``device``: three train steps with a backward pass, then two eval calls. Print
    the largest differences after each call, then swap their state_dicts and compare again.
    float64, except on MPS, which has no float64. Nothing under nbgrader."""
    if grading():
        return
    with running_yours("BatchNorm2d"):
        _compare_with_torch(BatchNorm2d, device, channels, momentum, seed)


def _compare_with_torch(BatchNorm2d, device, channels, momentum, seed):
    like = {"device": device,
            "dtype": torch.float32 if torch.device(device).type == "mps" else torch.float64}
    generator = torch.Generator().manual_seed(seed)
    mine = BatchNorm2d(channels, momentum=momentum).to(**like)
    theirs = nn.BatchNorm2d(channels, momentum=momentum).to(**like)
    with torch.no_grad():
        for layer in (mine, theirs):
            layer.weight.copy_(torch.linspace(0.5, 2.0, channels))
            layer.bias.copy_(torch.linspace(-1.0, 1.0, channels))

    names = ["output", "x.grad", "weight.grad", "running_mean", "running_var",
             "num_batches_tracked"]
    print(f"largest differences, {like['dtype']} on {device}:")
    print(f"{'call':>4}  {'mode':<5}" + "".join(f"{name:>21}" for name in names))
    for call, mode in enumerate(["train", "train", "train", "eval", "eval"], start=1):
        x = (3.0 + 2.0 * torch.randn(8, channels, 4, 4, generator=generator)).to(**like)
        dout = torch.randn(x.shape, generator=generator).to(**like)
        results = [_step(layer.train(mode == "train"), x, dout) for layer in (mine, theirs)]
        print(f"{call:>4}  {mode:<5}" + "".join(
            f"{_max_difference(a, b):>21.1e}" for a, b in zip(*results)))

    x = (3.0 + 2.0 * torch.randn(8, channels, 4, 4, generator=generator)).to(**like)
    print(f"\nstate_dict keys, yours: {sorted(mine.state_dict())}")
    print(f"state_dict keys, torch: {sorted(theirs.state_dict())}")
    for source, target, text in [(mine, nn.BatchNorm2d, "torch's layer loaded with yours"),
                                 (theirs, BatchNorm2d, "your layer loaded with torch's")]:
        loaded = target(channels, momentum=momentum).to(**like)
        loaded.load_state_dict(source.state_dict())
        with torch.no_grad():
            difference = _max_difference(loaded.eval()(x), source.eval()(x))
        print(f"{text}: eval outputs differ by {difference:.1e}")


def _step(layer, x, dout):
    """Outputs, gradients and buffers of one call with a backward pass."""
    x = x.clone().requires_grad_(True)
    layer.zero_grad()
    out = layer(x)
    out.backward(dout)
    return [out, x.grad, layer.weight.grad, layer.running_mean, layer.running_var,
            layer.num_batches_tracked]


def _max_difference(a, b):
    if a is None or b is None:
        return float("nan")  # a gradient that never arrived
    if not isinstance(a, torch.Tensor) or a.shape != b.shape:
        shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise WrongOutput(f"{shape} where torch's layer gives a tensor of shape "
                          f"{tuple(b.shape)}")
    return (a.detach().double() - b.detach().double()).abs().max().item()


# --- the classic pipeline on the digits ---------------------------------------

@functools.lru_cache(maxsize=1)
def digits():
    """The bundled digits split (loaded once: scikit-learn takes a moment to import)."""
    from bn_course.data import load_digits
    return load_digits()


def classic_pipeline(norm_layer=nn.BatchNorm2d, order="bn-relu", dropout=0.2, channels=8,
                     seed=0):
    """The classic Conv -> BN -> ReLU -> Dropout -> FC pipeline, for the 8x8 digits.

    The model takes flat (N, 64) images, as ``bn_course.train`` feeds them, and reshapes
    them to (N, 1, 8, 8). ``order="relu-bn"`` puts BN after the activation. The conv has
    no bias when BN follows it directly. The weights depend only on ``seed``.
    ``norm_layer`` (a class, e.g. the student's ``BatchNorm2d``) is used once it passes
    its self-check; until then the course's ``BatchNorm2d`` stands in for it.
    """
    if order not in ("bn-relu", "relu-bn"):
        raise ValueError(f'order must be "bn-relu" or "relu-bn", got {order!r}')
    if norm_layer is not nn.BatchNorm2d:
        from bn_course.reference.torch import BatchNorm2d

        norm_layer = yours_or_ours("BatchNorm2d", norm_layer, BatchNorm2d, what="pipeline")
    with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG left as it was
        torch.manual_seed(seed)
        conv = nn.Conv2d(1, channels, kernel_size=3, padding=1, bias=order == "relu-bn")
        block = ([norm_layer(channels), nn.ReLU()] if order == "bn-relu"
                 else [nn.ReLU(), norm_layer(channels)])
        return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), conv, *block, nn.Dropout(dropout),
                             nn.Flatten(), nn.Linear(channels * 8 * 8, 10))


def train_seeded(model, steps, lr=0.1, seed=0, eval_every=25):
    """``bn_course.train.train`` on the digits, with dropout's random masks seeded too."""
    from bn_course.train import train

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return train(model, digits(), steps=steps, lr=lr, seed=seed, eval_every=eval_every)


def training_curves(models, steps=80, lr=0.1):
    """Train each of ``{name: model}`` on the digits (same batches, same dropout masks)
    and plot the loss and the test accuracy. None under nbgrader."""
    if grading():
        return None
    histories = {name: train_seeded(model, steps, lr) for name, model in models.items()}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
    for name, history in histories.items():
        left.plot(history.step, _smoothed(history.loss), lw=1.5, label=name)
        right.plot(history.eval_step, 100 * np.array(history.test_accuracy), "o-", ms=3,
                   label=f"{name}: {100 * history.test_accuracy[-1]:.1f}%")
    left.set(xlabel="training step", ylabel="training loss (smoothed)", yscale="log",
             title="loss on the mini-batches")
    right.set(xlabel="training step", ylabel="test accuracy (%), eval mode", ylim=(60, 100),
              title=f"held-out digits, after {steps} steps")
    left.legend(fontsize=8)
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def _smoothed(values, window=10):
    """Moving average over the last ``window`` values (fewer at the start)."""
    sums = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


# --- dropout before a batch norm: the variance shift --------------------------

def stacked_blocks(dropout, channels=8, seed=0):
    """Two blocks, with dropout *between* them, so that a BN follows the dropout:
    Conv3x3 -> BN -> ReLU -> Dropout -> Conv1x1 -> BN -> ReLU -> FC."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(channels, channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Flatten(), nn.Linear(channels * 8 * 8, 10))


@dataclass(frozen=True)
class VarianceShift:
    dropout: float            # the rate the model was trained with
    running_var: np.ndarray   # (C,) what the second BN divides by in eval mode
    eval_var: np.ndarray      # (C,) the variance of its input in eval mode (dropout off)
    probes: np.ndarray        # dropout rates tried on the trained model
    ratio: np.ndarray         # variance of its input with dropout on / off, for each probe
    accuracy: float           # test accuracy, eval mode, as trained
    accuracy_reestimated: float  # after recomputing the BN statistics without dropout


def variance_shift_experiment(dropout=0.5, steps=60,
                              probes=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7), seed=0):
    """Train ``stacked_blocks(dropout)``, then measure what the second BN sees in train
    and in eval mode (Li et al., 2019)."""
    # One torch thread, as bn_course.train uses: for tensors this small a second thread
    # costs more than it saves, many times more on a busy machine.
    from bn_course.train import one_thread

    with one_thread():
        return _measure_variance_shift(dropout, steps, probes, seed)


def _measure_variance_shift(dropout, steps, probes, seed):
    from bn_course.train import evaluate

    model = stacked_blocks(dropout, seed=seed)
    history = train_seeded(model, steps, seed=seed, eval_every=steps)
    drop, second_bn = model[4], model[6]
    x_train, _ = digits().to_torch("train")

    def input_variance(rate):
        """Per-channel variance of the second BN's input, the rest of the model in eval
        mode and dropout at ``rate`` (0: off, as in eval mode)."""
        model.eval()
        drop.p = rate
        drop.train(rate > 0)
        seen = []
        hook = second_bn.register_forward_hook(lambda module, inputs, output:
                                               seen.append(inputs[0]))
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model(x_train)
        hook.remove()
        return seen[0].var(dim=(0, 2, 3)).numpy()

    eval_var = input_variance(0.0)
    ratio = np.array([np.mean(input_variance(rate) / eval_var) for rate in probes])
    drop.p = dropout
    x_test, y_test = digits().to_torch("test")
    return VarianceShift(dropout, second_bn.running_var.numpy().copy(), eval_var,
                         np.asarray(probes), ratio, history.test_accuracy[-1],
                         evaluate(_reestimated(model, x_train), x_test, y_test))


def _reestimated(model, x_train, batch_size=64):
    """A copy of the model whose BN statistics are recomputed over the training set with
    dropout off: the cumulative average (momentum=None) of every batch's statistics."""
    model = copy.deepcopy(model).train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        for start in range(0, len(x_train) - batch_size + 1, batch_size):
            model(x_train[start:start + batch_size])
    return model


def variance_shift_figure(result):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    channels = np.arange(len(result.eval_var))
    left.bar(channels - 0.2, result.running_var, width=0.4, color="C3",
             label="running_var: learned in train mode, dropout on")
    left.bar(channels + 0.2, result.eval_var, width=0.4, color="C0",
             label="actual variance in eval mode, dropout off")
    left.set(xlabel="channel of the second BN", ylabel="variance of its input",
             title=f"in eval mode the input has {np.mean(result.eval_var / result.running_var):.0%}"
                   " of the variance BN expects")
    left.legend(fontsize=8)
    right.plot(result.probes, result.ratio, "o-", color="C3")
    right.axhline(1.0, color="0.5", lw=1, ls="--")
    right.set(xlabel="dropout rate before the BN (same trained model)",
              ylabel="variance with dropout on / off", title="the shift grows with the rate")
    fig.suptitle(f"Dropout {result.dropout:g} right before a BN. Test accuracy: "
                 f"{100 * result.accuracy:.1f}% as trained, "
                 f"{100 * result.accuracy_reestimated:.1f}% with the BN statistics "
                 "re-estimated without dropout", fontsize=10)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def variance_shift_lab(dropout=0.5, steps=60):
    """The experiment and its figure in one call. None under nbgrader."""
    if grading():
        return None
    return variance_shift_figure(variance_shift_experiment(dropout, steps))
