"""Small, seeded training runs on CPU for the notebooks' experiments (04, 07).

Everything random comes from explicit generators: the weights from ``make_mlp(seed=...)``
and the order of the mini-batches from ``train(seed=...)``. Two runs with the same
arguments give identical histories, whatever the global torch seed is.

    data = load_digits()
    model = make_mlp(data.num_features, hidden=64, depth=2, num_classes=10, bn=True)
    history = train(model, data, steps=300, lr=0.1)
    history.test_accuracy[-1]
"""

import copy
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "History", "evaluate", "make_mlp", "train"]

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


def make_mlp(in_features, hidden, depth, num_classes, bn, activation="relu", init_scale=1.0,
             seed=0):
    """``depth`` blocks of Linear -> [BatchNorm1d] -> activation, then a Linear to the logits.

    Weights are Gaussian with standard deviation ``init_scale / sqrt(fan_in)`` (1.0 keeps the
    variance of the signal through a linear layer); biases start at 0. The weights depend only
    on ``seed`` and the shapes, so the models with and without BN start from the same weights.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers, width = [], in_features
    for _ in range(depth):
        # BN subtracts the batch mean, which cancels any constant a bias adds, and its beta
        # shifts the output instead: a bias before BN would be a parameter that learns nothing.
        layers.append(nn.Linear(width, hidden, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(ACTIVATIONS[activation]())
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    model = nn.Sequential(*layers)
    _init_linear_layers(model, init_scale, torch.Generator().manual_seed(seed))
    return model


def _init_linear_layers(model, init_scale, generator):
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                std = init_scale / math.sqrt(layer.in_features)
                nn.init.normal_(layer.weight, std=std, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()


@dataclass
class History:
    """What ``train`` records.

    ``step``/``loss``: the mini-batch loss of every step (1, 2, ..., steps), before its update.
    ``eval_step``/``train_accuracy``/``test_accuracy``: eval-mode accuracies at step 0 (the
    untrained model), every ``eval_every`` steps, and after the last step.
    """

    step: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    eval_step: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)

    @property
    def diverged(self):
        """True when some loss was NaN or infinite (a learning rate too high for the model)."""
        return not all(math.isfinite(loss) for loss in self.loss)


def train(model, data, steps, lr, batch_size=64, seed=0, eval_every=50, progress=True):
    """Plain SGD on the cross-entropy of ``data`` (a ``bn_course.data.Digits``).

    Each epoch is a fresh shuffle of the training set cut into full batches of
    ``batch_size`` (the remainder is dropped, so BN never sees a batch of one). The model is
    trained in place and left in train mode; returns a ``History``. ``progress`` shows a tqdm
    bar, which appears only once a run has taken more than a second.
    """
    x_train, y_train = data.to_torch("train")
    x_test, y_test = data.to_torch("test")
    if not 2 <= batch_size <= len(x_train):
        raise ValueError(f"batch_size must be between 2 and {len(x_train)}, got {batch_size}")
    batches = _shuffled_batches(len(x_train), batch_size, torch.Generator().manual_seed(seed))
    history = History()

    def record_accuracy(step):
        history.eval_step.append(step)
        history.train_accuracy.append(evaluate(model, x_train, y_train))
        history.test_accuracy.append(evaluate(model, x_test, y_test))

    with _one_thread():
        record_accuracy(0)
        model.train()
        for step in _progress_bar(range(1, steps + 1), progress):
            index = next(batches)
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            model.zero_grad()
            loss.backward()
            _sgd_step(model, lr)
            history.step.append(step)
            history.loss.append(loss.item())
            if step % eval_every == 0 or step == steps:
                record_accuracy(step)
    return history


@contextmanager
def _one_thread():
    """Run torch on one CPU thread, then restore the setting.

    These layers are too small to gain from threads, and on a busy 2-core machine torch's
    threads wait for each other: 200 steps took 1-19 s with two threads, 0.3 s with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _sgd_step(model, lr):
    # torch.optim.SGD(lr=lr).step() does the same, but importing torch.optim loads
    # torch._dynamo: 1-2 s of every notebook that trains, for three lines.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.grad is not None:  # None: frozen, or not used by the loss
                parameter -= lr * parameter.grad


def _shuffled_batches(n, batch_size, generator):
    """Index tensors without end: each epoch a new permutation, cut into full batches."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def _progress_bar(iterable, enabled):
    from tqdm.auto import tqdm

    # No bar while nbgrader grades: a console bar writes to stderr, and nbgrader gives a
    # test cell that writes to stderr no points (it sets NBGRADER_EXECUTION while grading).
    enabled = enabled and "NBGRADER_EXECUTION" not in os.environ
    return tqdm(iterable, desc="training", disable=not enabled, delay=1.0)


def evaluate(model, x, y, batch_size=None, train_mode=False):
    """Fraction of the examples whose largest logit is their label.

    Eval mode (the default) normalizes with BN's running statistics, so ``batch_size`` (None:
    all at once) does not change the answer. ``train_mode=True`` is what forgetting
    ``model.eval()`` does: each batch is normalized with its own statistics. It runs on a copy
    of the model, because train mode would also overwrite the running statistics. A batch of
    one has no variance (PyTorch raises), so train mode needs ``batch_size >= 2``; a last
    batch of one is merged into the batch before it.
    """
    parameter = next(model.parameters())
    x = torch.as_tensor(x, dtype=parameter.dtype, device=parameter.device)
    y = torch.as_tensor(y, device=parameter.device)
    if train_mode:
        if batch_size is None or batch_size < 2:
            raise ValueError(
                "evaluating in train mode needs batch_size >= 2: BatchNorm cannot normalize "
                f"a batch of one example (got batch_size={batch_size})")
        return _accuracy(copy.deepcopy(model).train(), x, y, batch_size)
    was_training = model.training
    try:
        return _accuracy(model.eval(), x, y, batch_size or len(x))
    finally:
        model.train(was_training)


def _accuracy(model, x, y, batch_size):
    correct = 0
    with torch.no_grad(), _one_thread():
        for batch in _batch_slices(len(x), batch_size):
            correct += (model(x[batch]).argmax(dim=1) == y[batch]).sum().item()
    return correct / len(x)


def _batch_slices(n, batch_size):
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()  # a last batch of one joins the batch before it
    return [slice(start, end) for start, end in zip(starts, starts[1:] + [n])]
