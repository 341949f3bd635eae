"""Figures, sliders and the "forgot model.eval()" lab for notebook 04 (train vs eval).

torch is imported only by the functions that train or compare with it.
"""

from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from bn_course.data import drifting_stream
from bn_course.demos._guard import array_shaped, running_yours, yours_or_ours
from bn_course.reference import numpy as ref
from bn_course.widgets import grading, slider_panel

MOMENTA = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


# --- how much each past batch counts ------------------------------------------

def ema_weights(momentum, num_batches):
    """Weight of each of the last ``num_batches`` batch statistics (oldest first) in
    an exponential moving average started at 0 (the initial value keeps the rest)."""
    age = np.arange(num_batches)[::-1]  # 0 for the newest batch
    return momentum * (1 - momentum) ** age


def ema_weights_figure(num_batches=200, momenta=(0.1, 0.01)):
    """The weights of a running average after ``num_batches`` training steps, for a
    few momenta and for the cumulative average (PyTorch's momentum=None)."""
    fig, ax = plt.subplots(figsize=(9, 3.4))
    step = np.arange(1, num_batches + 1)
    for momentum in momenta:
        ax.plot(step, ema_weights(momentum, num_batches), lw=2, label=f"momentum = {momentum:g}")
    ax.plot(step, np.full(num_batches, 1 / num_batches), "k--", lw=1.5,
            label=f"cumulative average (momentum=None): 1/{num_batches} each")
    ax.set(xlabel="training step that produced the batch statistics",
           ylabel="weight in the running value", yscale="log", ylim=(1e-6, 0.3),
           title=f"What the running statistics are made of after {num_batches} steps")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


# --- momentum on a drifting stream ---------------------------------------------

def track_stream(update_running_stats, stream, momentum):
    """Running means (T, D) after each batch of ``stream``, starting from PyTorch's
    initial values. ``momentum=None`` gives the cumulative average, as in PyTorch:
    the t-th update uses momentum 1/t."""
    num_features = stream.batches.shape[2]
    running_mean, running_var = np.zeros(num_features), np.ones(num_features)
    history = []
    for t, batch in enumerate(stream.batches, start=1):
        m = 1 / t if momentum is None else momentum
        running_mean, running_var = update_running_stats(running_mean, running_var, batch, m)
        history.append(np.array(running_mean, dtype=np.float64).reshape(num_features))
    return np.stack(history)


def momentum_panel(update_running_stats, stream=None):
    """A momentum slider over a stream whose mean drifts, as the input of a layer does
    while the weights below it train; uses the student's ``update_running_stats`` once it
    passes its self-check."""
    if grading():
        return None
    update_running_stats = yours_or_ours("update_running_stats", update_running_stats,
                                         ref.update_running_stats)
    if stream is None:
        stream = drifting_stream(num_batches=200, batch_size=16, drift_per_batch=0.05)
    step = np.arange(1, len(stream.means) + 1)
    true_mean = stream.means[:, 0]
    batch_means = stream.batches.mean(axis=1)[:, 0]

    def draw(momentum):
        cumulative = track_stream(update_running_stats, stream, None)[:, 0]
        running = track_stream(update_running_stats, stream, momentum)[:, 0]
        lag = true_mean[-1] - running[-1]
        wiggle = _wiggle(step[len(step) // 2:], running[len(step) // 2:])
        fig, ax = plt.subplots(figsize=(10, 4))
        ax.plot(step, batch_means, ".", color="0.7", ms=4, label="mean of each batch")
        ax.plot(step, true_mean, "k--", lw=1.5, label="true mean")
        ax.plot(step, cumulative, color="C2", lw=1.5, label="cumulative average (momentum=None)")
        ax.plot(step, running, color="C3", lw=2.5, label=f"running mean, momentum={momentum:g}")
        ax.set(xlabel="training step (batch)", ylabel="feature mean",
               title=f"last step: true mean - running mean = {lag:.2f} (lag); "
                     f"wiggle around its own trend: {wiggle:.2f} (noise)")
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        return fig  # the panel shows it, then closes it

    return slider_panel(draw, momentum=widgets.SelectionSlider(
        options=MOMENTA, value=0.1, description="momentum", continuous_update=False))


def _wiggle(step, values):
    """Standard deviation of values around the best straight line through them."""
    slope, intercept = np.polyfit(step, values, deg=1)
    return float(np.std(values - (slope * step + intercept)))


# --- the student's class next to torch.nn.BatchNorm1d --------------------------

def compare_with_torch(BatchNorm1d, num_features=4, batch_size=8, momentum=0.2, seed=0):
    """Drive the student's ``BatchNorm1d`` and ``torch.nn.BatchNorm1d`` (float64) with
    the same batches, three train calls then two eval calls, and print the largest
    differences in the output and the running statistics after each call.
    Nothing under nbgrader (it would import torch for every submission)."""
    if grading():
        return
    with running_yours("BatchNorm1d"):
        _compare_with_torch(BatchNorm1d, num_features, batch_size, momentum, seed)


def _compare_with_torch(BatchNorm1d, num_features, batch_size, momentum, seed):
    import torch

    from bn_course.train import one_thread

    rng = np.random.default_rng(seed)
    mine = BatchNorm1d(num_features, momentum=momentum)
    theirs = torch.nn.BatchNorm1d(num_features, momentum=momentum, dtype=torch.float64)
    gamma, beta = rng.uniform(0.5, 2.0, num_features), rng.uniform(-1.0, 1.0, num_features)
    mine.gamma, mine.beta = gamma.copy(), beta.copy()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(gamma))
        theirs.bias.copy_(torch.from_numpy(beta))

    print(f"{'call':>4}  {'mode':<5}  {'output':>8}  {'running_mean':>12}  {'running_var':>11}")
    for call, mode in enumerate(["train", "train", "train", "eval", "eval"], start=1):
        x = rng.normal(3.0, 2.0, size=(batch_size, num_features))
        mine.train() if mode == "train" else mine.eval()
        theirs.train(mode == "train")
        with torch.no_grad(), one_thread():
            expected = theirs(torch.from_numpy(x)).numpy()
        differences = [_max_difference(mine(x), expected),
                       _max_difference(mine.running_mean, theirs.running_mean.numpy()),
                       _max_difference(mine.running_var, theirs.running_var.numpy())]
        print(f"{call:>4}  {mode:<5}  " + "  ".join(
            f"{d:>{w}.1e}" for d, w in zip(differences, (8, 12, 11))))


def _max_difference(mine, theirs):
    return float(np.max(np.abs(array_shaped(mine, theirs.shape) - theirs)))


# --- the "forgot model.eval()" lab ---------------------------------------------

@dataclass(frozen=True)
class ForgotEvalResult:
    eval_accuracy: float         # model.eval(): the same for any batch size
    train_mode_accuracy: dict    # inference batch size -> accuracy in train mode
    steps: int
    layer: str                   # whose BatchNorm1d ran the test images
    torch_eval_accuracy: float   # the same network run by torch, in eval mode


def forgot_eval_experiment(BatchNorm1d=ref.BatchNorm1d, layer="the course's BatchNorm1d",
                           steps=300, batch_sizes=(2, 3, 4, 8, 32, 128), seed=0):
    """Train a small MLP with BN on the digits (torch), then test it with ``BatchNorm1d``
    (a NumPy class with notebook 04's API, holding the trained parameters and running
    statistics) in eval mode and, as if ``model.eval()`` had been forgotten, in train
    mode on batches of each size."""
    from bn_course.data import load_digits
    from bn_course.train import evaluate, make_mlp, train

    data = load_digits(seed=seed)
    model = make_mlp(data.num_features, hidden=64, depth=2, num_classes=data.num_classes,
                     bn=True, seed=seed)
    train(model, data, steps=steps, lr=0.1, seed=seed, eval_every=steps)
    x_test, y_test = data.to_torch("test")
    numpy_net = NumpyNet(model, BatchNorm1d)
    x, y = x_test.numpy().astype(np.float64), y_test.numpy()
    train_mode = {size: numpy_net.accuracy(x, y, size, train_mode=True) for size in batch_sizes}
    return ForgotEvalResult(numpy_net.accuracy(x, y, len(x)), train_mode, steps, layer,
                            evaluate(model, x_test, y_test))


class NumpyNet:
    """A trained ``make_mlp`` network (Linear, BatchNorm1d, ReLU) run in NumPy, with a
    NumPy ``BatchNorm1d`` class (notebook 04's API) in place of each torch one."""

    def __init__(self, model, BatchNorm1d):
        from torch import nn

        self.layers = []
        for layer in model:
            if isinstance(layer, nn.Linear):
                bias = 0.0 if layer.bias is None else _numpy(layer.bias)
                self.layers.append(("linear", (_numpy(layer.weight).T, bias)))
            elif isinstance(layer, nn.BatchNorm1d):
                self.layers.append(("bn", {name: _numpy(getattr(layer, torch_name))
                                           for name, torch_name in _BN_STATE.items()}))
            elif isinstance(layer, nn.ReLU):
                self.layers.append(("relu", None))
            else:
                raise TypeError(f"NumpyNet runs Linear, BatchNorm1d and ReLU, not {layer}")
        self.BatchNorm1d = BatchNorm1d

    def accuracy(self, x, y, batch_size, train_mode=False):
        """Fraction of the examples classified right, run in batches of ``batch_size``.
        Every call starts from the trained state: train mode's updates of the running
        statistics do not carry over (they would be the second bug)."""
        from bn_course.train import batch_slices

        forward = self._fresh(train_mode)
        correct = sum(int((forward(x[batch]).argmax(axis=1) == y[batch]).sum())
                      for batch in batch_slices(len(x), batch_size))
        return correct / len(x)

    def _fresh(self, train_mode):
        steps = []
        for kind, value in self.layers:
            if kind == "linear":
                weight, bias = value
                steps.append(lambda x, weight=weight, bias=bias: x @ weight + bias)
            elif kind == "bn":
                bn = self.BatchNorm1d(len(value["gamma"]))
                for name, array in value.items():
                    setattr(bn, name, array.copy())
                bn.train() if train_mode else bn.eval()
                steps.append(lambda x, bn=bn: np.asarray(bn(x)))
            else:
                steps.append(lambda x: np.maximum(x, 0.0))

        def forward(x):
            for step in steps:
                x = step(x)
            return x

        return forward


_BN_STATE = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean",
             "running_var": "running_var"}


def _numpy(tensor):
    return tensor.detach().numpy().astype(np.float64)


def forgot_eval_figure(result):
    sizes = list(result.train_mode_accuracy)
    accuracy = [100 * a for a in result.train_mode_accuracy.values()]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    bars = ax.bar([str(s) for s in sizes], accuracy, color="C3", alpha=0.8,
                  label="train mode (forgot model.eval())")
    ax.bar_label(bars, fmt="%.0f%%", padding=-14, color="white", fontsize=9)
    ax.axhline(100 * result.eval_accuracy, color="C0", lw=2,
               label=f"eval mode, any batch size: {100 * result.eval_accuracy:.1f}% "
                     f"(torch: {100 * result.torch_eval_accuracy:.1f}%)")
    ax.axhline(10, color="0.5", ls=":", lw=1, label="chance (10 classes)")
    ax.set(xlabel="examples per batch at test time", ylabel="test accuracy (%)", ylim=(0, 105),
           title=f"The same trained network ({result.steps} steps), two ways to run it,\n"
                 f"with {result.layer} in place of torch's")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def forgot_eval_lab(BatchNorm1d=None, steps=300):
    """The lab in one call: train, test both ways with ``BatchNorm1d`` (the student's, once
    it passes its self-check; the course's otherwise), and plot. Nothing under nbgrader."""
    if grading():
        return None
    yours = BatchNorm1d is not None and yours_or_ours(
        "BatchNorm1d", BatchNorm1d, None, what="lab") is not None
    layer = "your BatchNorm1d" if yours else "the course's BatchNorm1d"
    return forgot_eval_figure(forgot_eval_experiment(
        BatchNorm1d if yours else ref.BatchNorm1d, layer, steps=steps))
