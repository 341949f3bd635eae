"""Small, seeded training runs on CPU for the notebooks' experiments (04, 07).

Everything random comes from explicit generators: the weights (and the noise of
``bn_noise``) from ``make_mlp(seed=...)`` and the order of the mini-batches from
``train(seed=...)``. Two runs with the same arguments give identical histories, whatever
the global torch seed is.

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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "History", "RandomShift", "activation_inputs", "evaluate", "make_mlp",
           "train"]

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


class RandomShift(nn.Module):
    """Moves and stretches each unit's distribution by a random amount, redrawn at every
    training step: ``x * scale + shift`` with, per unit, ``shift`` uniform in
    ``[-strength, strength]`` and ``log(scale)`` uniform in ``[-log(1 + strength),
    log(1 + strength)]``. Every example of a batch gets the same ``scale`` and ``shift``,
    so the layer above sees its input distribution jump from step to step: internal
    covariate shift made on purpose, in the spirit of Santurkar et al. (2018).

    Eval mode leaves the input unchanged. ``apply_last_draw(x)`` applies the draw of the
    latest training step without drawing again (to look at what training saw).
    """

    def __init__(self, num_features, strength, seed=0):
        super().__init__()
        self.strength = strength
        self.generator = torch.Generator().manual_seed(seed)
        self.scale = torch.ones(num_features)
        self.shift = torch.zeros(num_features)

    def forward(self, x):
        if not self.training:
            return x
        self._draw()
        return self.apply_last_draw(x)

    def apply_last_draw(self, x):
        return x * self.scale + self.shift

    def _draw(self):
        def uniform(half_width):  # uniform in [-half_width, half_width], one per unit
            return (2 * torch.rand(len(self.scale), generator=self.generator) - 1) * half_width

        self.shift = uniform(self.strength)
        self.scale = torch.exp(uniform(math.log1p(self.strength)))

    def extra_repr(self):
        return f"{len(self.scale)}, strength={self.strength}"


def make_mlp(in_features, hidden, depth, num_classes, bn, activation="relu", init_scale=1.0,
             seed=0, bn_noise=0.0):
    """``depth`` blocks of Linear -> [BatchNorm1d [-> RandomShift]] -> activation, then a
    Linear to the logits.

    Weights are Gaussian with standard deviation ``init_scale / sqrt(fan_in)`` (1.0 keeps the
    variance of the signal through a linear layer); biases start at 0. The weights depend only
    on ``seed`` and the shapes, so the models with and without BN start from the same weights.
    ``bn_noise > 0`` (with ``bn=True``) puts a ``RandomShift`` of that strength after every BN.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if bn_noise and not bn:
        raise ValueError("bn_noise shifts the output of BatchNorm: it needs bn=True")
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
    if bn_noise:
        model = with_random_shifts(model, nn.BatchNorm1d, bn_noise, seed)
    init_linear_layers(model, init_scale, seed)
    return model


def with_random_shifts(model, after, strength, seed=0):
    """A Sequential with the layers of ``model`` and a ``RandomShift`` of ``strength`` after
    every layer of type ``after`` (a normalization layer class)."""
    layers, shifted = [], 0
    for layer in model:
        layers.append(layer)
        if isinstance(layer, after):
            # Its own stream per layer, so the weights are those of the model without noise.
            noise_seed = int(np.random.SeedSequence([seed, shifted]).generate_state(1)[0])
            layers.append(RandomShift(layer_width(layer), strength, seed=noise_seed))
            shifted += 1
    return nn.Sequential(*layers)


def layer_width(layer):
    """The number of features of a normalization layer: ``num_features``, or the length of
    its ``weight``."""
    width = getattr(layer, "num_features", None)
    return width if width is not None else len(layer.weight)


def init_linear_layers(model, init_scale, seed=0):
    """Gaussian weights with standard deviation ``init_scale / sqrt(fan_in)`` and zero
    biases for every Linear layer of ``model``, in order, from a generator seeded with
    ``seed``: two models whose Linear layers have the same shapes get the same weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                std = init_scale / math.sqrt(layer.in_features)
                nn.init.normal_(layer.weight, std=std, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()
    return model


@dataclass
class History:
    """What ``train`` records.

    ``step``/``loss``: the mini-batch loss of every step (1, 2, ..., steps), before its update.
    ``eval_step``/``train_accuracy``/``test_accuracy``: eval-mode accuracies at step 0 (the
    untrained model), every ``eval_every`` steps, and after the last step.
    ``preactivations`` (only with ``train(record_preactivations=True)``): at each eval step,
    an array (hidden layers, test examples, units) of what every activation function
    receives, from ``activation_inputs``. Arrays are not part of ``==``: compare them with
    ``np.array_equal``.
    """

    step: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    eval_step: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    preactivations: list = field(default_factory=list, compare=False, repr=False)

    @property
    def diverged(self):
        """True when some loss was NaN or infinite (a learning rate too high for the model)."""
        return not all(math.isfinite(loss) for loss in self.loss)

    def unit_inputs(self, layer=-1, unit=0):
        """(eval steps, test examples): the input of one unit's activation function over
        training. Needs ``train(record_preactivations=True)``."""
        if not self.preactivations:
            raise ValueError("nothing recorded: train with record_preactivations=True")
        return np.stack([values[layer][:, unit] for values in self.preactivations])


def train(model, data, steps, lr, batch_size=64, seed=0, eval_every=50, progress=True,
          record_preactivations=False):
    """Plain SGD on the cross-entropy of ``data`` (a ``bn_course.data.Digits``).

    Each epoch is a fresh shuffle of the training set cut into full batches of
    ``batch_size`` (the remainder is dropped, so BN never sees a batch of one). The model is
    trained in place and left in train mode; returns a ``History``. ``progress`` shows a tqdm
    bar, which appears only once a run has taken more than a second.
    ``record_preactivations`` also records, at each eval step, the inputs of every
    activation function on the test split (see ``History.preactivations``).
    """
    x_train, y_train = data.to_torch("train")
    x_test, y_test = data.to_torch("test")
    if not 2 <= batch_size <= len(x_train):
        raise ValueError(f"batch_size must be between 2 and {len(x_train)}, got {batch_size}")
    batches = _shuffled_batches(len(x_train), batch_size, torch.Generator().manual_seed(seed))
    parameters = [p for p in model.parameters() if p.requires_grad]  # frozen ones stay put
    history = History()

    def record(step):
        history.eval_step.append(step)
        history.train_accuracy.append(evaluate(model, x_train, y_train))
        history.test_accuracy.append(evaluate(model, x_test, y_test))
        if record_preactivations:
            history.preactivations.append(np.stack(activation_inputs(model, x_test)))

    with one_thread():
        record(0)
        model.train()
        for step in _progress_bar(range(1, steps + 1), progress):
            index = next(batches)
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            _sgd_step(parameters, loss, lr)
            history.step.append(step)
            history.loss.append(loss.item())
            if step % eval_every == 0 or step == steps:
                record(step)
    return history


@contextmanager
def one_thread():
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


def _sgd_step(parameters, loss, lr):
    # torch.optim.SGD(lr=lr).step() does the same, but importing torch.optim loads
    # torch._dynamo: 1-2 s of every notebook that trains, for three lines. Asking autograd
    # for the gradients of a fixed list of parameters also skips zero_grad() and the walk
    # through the modules that model.parameters() makes at every step.
    gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
    # None: a parameter the loss does not use. (At least one is used: a loss that depends
    # on no parameter has no graph, and autograd.grad has raised already.)
    used = [(p, g) for p, g in zip(parameters, gradients) if g is not None]
    with torch.no_grad():
        # p -= lr * g for every parameter in one call (as torch.optim.SGD does by default):
        # the same numbers, 8% less time per step for these small networks.
        torch._foreach_add_([p for p, _ in used], [g for _, g in used], alpha=-lr)


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


def activation_inputs(model, x):
    """What each activation function of ``model`` (a Sequential of Linear layers,
    activations, normalization layers and ``RandomShift``s, as ``make_mlp`` builds)
    receives for the examples ``x``, as training computes it: one float32 array
    (N, units) per hidden layer.

    Training mode is what the paper's Figure 1 shows: BN normalizes with the statistics of
    the batch it is given, here ``x`` itself, and a ``RandomShift`` applies its latest draw.
    Nothing in the model changes (BN's running statistics included: a normalization layer
    runs as a copy of itself), so recording during training leaves the training run
    exactly as it would have been.
    """
    inputs = []
    x = torch.as_tensor(x)
    with torch.no_grad(), one_thread():
        for layer in model:
            if isinstance(layer, RandomShift):
                x = layer.apply_last_draw(x)
            elif isinstance(layer, tuple(ACTIVATIONS.values())):
                inputs.append(x.numpy().copy())
                x = layer(x)
            elif isinstance(layer, nn.Linear):
                x = layer(x)
            else:  # a normalization layer: batch statistics, running ones left alone
                x = copy.deepcopy(layer).train()(x)
    return inputs


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
    with torch.no_grad(), one_thread():
        for batch in batch_slices(len(x), batch_size):
            correct += (model(x[batch]).argmax(dim=1) == y[batch]).sum().item()
    return correct / len(x)


def batch_slices(n, batch_size):
    """Slices that cut ``n`` examples into consecutive batches of ``batch_size``; a last
    batch of one joins the batch before it (BatchNorm cannot normalize it in train mode)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()  # a last batch of one joins the batch before it
    return [slice(start, end) for start, end in zip(starts, starts[1:] + [n])]
