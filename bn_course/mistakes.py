"""The catalogue of known mistakes: data, not code paths.

Each entry names one mistake in one exercise and carries a *variant*: an
implementation that makes exactly that mistake. When a student's answer is
wrong, the checker runs every variant of the exercise on the same hidden cases;
a variant whose outputs match the student's gives the diagnosis and the hint.
So a mistake is recognised however it is written.

A few mistakes are *detected* rather than matched: changing an input in place,
and calling a ready-made batch norm (PyTorch's, or this course's own answers).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bn_course.reference import numpy as ref


@dataclass(frozen=True)
class Mistake:
    id: str
    exercise: str
    variant: Callable
    diagnosis: str
    hint: str


# --- building blocks for the variants --------------------------------------

def _mean(x):
    return x.mean(axis=0)


def _normalized(x, eps, ddof=0, axis=0, eps_outside=False, sqrt=True):
    """x_hat with one knob per classic mistake."""
    centred = x - x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, ddof=ddof, keepdims=True)
    if eps_outside:
        return centred / (np.sqrt(var) + eps)
    return centred / (np.sqrt(var + eps) if sqrt else var + eps)


def _in_place_normalize(x, mean, var, eps=1e-5):
    x -= mean
    x /= np.sqrt(var + eps)
    return x


def _torch_batch_norm(x, gamma, beta, eps=1e-5):
    import torch
    import torch.nn.functional as F
    out = F.batch_norm(torch.from_numpy(x), None, None, torch.from_numpy(gamma),
                       torch.from_numpy(beta), training=True, eps=eps)
    return out.numpy()


class _BuggyBatchNorm1d:
    """A NumPy BatchNorm1d with one mistake switched on (a class attribute).

    Self-contained on purpose: the checker flags any candidate that calls the
    course's reference, and these variants are played as candidates in tests."""

    flipped_momentum = False   # running = momentum * running + (1 - momentum) * batch
    biased_running_var = False
    updates_in_eval = False    # "after" or "before" normalizing
    no_update_in_train = False
    updates_before_normalizing = False
    batch_stats_in_eval = False
    no_error_for_one = False
    running_var_start = 1.0

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.eps, self.momentum, self.training = eps, momentum, True
        self.gamma, self.beta = np.ones(num_features), np.zeros(num_features)
        self.running_mean = np.zeros(num_features)
        self.running_var = np.full(num_features, self.running_var_start)

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def _update(self, x):
        weight_new = 1 - self.momentum if self.flipped_momentum else self.momentum
        var = x.var(axis=0, ddof=0 if self.biased_running_var else 1)
        self.running_mean = (1 - weight_new) * self.running_mean + weight_new * _mean(x)
        self.running_var = (1 - weight_new) * self.running_var + weight_new * var

    def _scale_shift(self, x, mean, var):
        return self.gamma * (x - mean) / np.sqrt(var + self.eps) + self.beta

    def __call__(self, x):
        if self.training and len(x) < 2:
            if not self.no_error_for_one:
                raise ValueError("need at least two examples in train mode")
            return np.broadcast_to(self.beta, x.shape).copy()
        if self.updates_before_normalizing and self.training or (
                self.updates_in_eval == "before" and not self.training):
            self._update(x)
        use_batch = self.training and not self.updates_before_normalizing
        if use_batch or (not self.training and self.batch_stats_in_eval):
            out = self._scale_shift(x, _mean(x), x.var(axis=0))
        else:
            out = self._scale_shift(x, self.running_mean, self.running_var)
        should_update = (not self.no_update_in_train and not self.updates_before_normalizing
                         if self.training else self.updates_in_eval == "after")
        if should_update:
            self._update(x)
        return out


def _layer_with(**bugs):
    return type("BuggyBatchNorm1d", (_BuggyBatchNorm1d,), bugs)


def _backward_with(dx_terms="all", dgamma_of="x_hat", dbeta_axis=0, dgamma_axis=0, ddof=0,
                   use_gamma=True, ddof_in_variance_path=True):
    """A batchnorm_backward with one knob per classic mistake. With ddof=1 it is
    the exact gradient of a forward pass that used the unbiased variance, unless
    ddof_in_variance_path=False keeps dividing by N on the path through the variance."""

    def backward(dout, x, gamma, eps=1e-5):
        n = x.shape[0] - (ddof if ddof_in_variance_path else 0)
        centred = x - x.mean(axis=0)
        inv_std = 1 / np.sqrt(x.var(axis=0, ddof=ddof) + eps)
        x_hat = centred * inv_std
        dbeta = dout.sum(axis=dbeta_axis)
        dgamma = (dout * (x_hat if dgamma_of == "x_hat" else x)).sum(axis=dgamma_axis)
        scale = (gamma if use_gamma else 1.0) * inv_std
        if dx_terms == "none":
            dx = dout * scale
        elif dx_terms == "mean_only":
            dx = scale * (dout - dout.mean(axis=0))
        else:
            dx = scale * (dout - dout.mean(axis=0) - x_hat * (dout * x_hat).sum(axis=0) / n)
        return dx, dgamma, dbeta

    return backward


def _forward2d_over(axes, ddof=0):
    def forward(x, gamma, beta, eps=1e-5):
        centred = x - x.mean(axis=axes, keepdims=True)
        x_hat = centred / np.sqrt(x.var(axis=axes, ddof=ddof, keepdims=True) + eps)
        return x_hat * gamma.reshape(1, -1, 1, 1) + beta.reshape(1, -1, 1, 1)
    return forward


BIASED_HINT = ("Normalize with the biased variance: divide by N, as np.var(x, axis=0) does "
               "by default (ddof=0). PyTorch does the same.")
EPS_HINT = "eps goes inside the square root: (x - mean) / np.sqrt(var + eps)."
AXIS_HINT = ("x has shape (N, D): one row per example. Reduce over the batch axis, axis=0, "
             "to get one value per feature.")

CATALOGUE = [
    # --- batch_mean ---
    Mistake("axis-0-vs-1", "batch_mean", lambda x: x.mean(axis=1),
            "You averaged over the features of each example (axis=1), giving one value per "
            "example instead of one per feature.", AXIS_HINT),
    Mistake("no-axis", "batch_mean", lambda x: np.mean(x),
            "You averaged over every value in the batch, giving a single number.", AXIS_HINT),
    Mistake("sum-not-mean", "batch_mean", lambda x: x.sum(axis=0),
            "You returned the sum over the batch, not the mean.",
            "Divide the sum by the number of examples N = x.shape[0], or use x.mean(axis=0)."),
    # --- batch_var ---
    Mistake("axis-0-vs-1", "batch_var", lambda x: x.var(axis=1),
            "You took the variance across the features of each example (axis=1).", AXIS_HINT),
    Mistake("unbiased-variance", "batch_var", lambda x: x.var(axis=0, ddof=1),
            "You divided by N - 1 (the unbiased estimator, like np.var(x, ddof=1) or "
            "torch.var's default).", BIASED_HINT),
    Mistake("std-instead-of-var", "batch_var", lambda x: x.std(axis=0),
            "You returned the standard deviation, the square root of the variance.",
            "The variance is the mean of the squared deviations: do not take the square root."),
    Mistake("forgot-to-centre", "batch_var", lambda x: (x ** 2).mean(axis=0),
            "You averaged x**2 without subtracting the mean first.",
            "Subtract the per-feature mean, then average the squared deviations."),
    Mistake("no-axis", "batch_var", lambda x: np.var(x),
            "You took one variance over every value in the batch.", AXIS_HINT),
    # --- normalize ---
    Mistake("eps-outside-sqrt", "normalize",
            lambda x, mean, var, eps=1e-5: (x - mean) / (np.sqrt(var) + eps),
            "You added eps to the standard deviation, outside the square root.", EPS_HINT),
    Mistake("forgot-eps", "normalize", lambda x, mean, var, eps=1e-5: (x - mean) / np.sqrt(var),
            "You left out eps, so a feature with zero variance divides 0 by 0.", EPS_HINT),
    Mistake("var-instead-of-std", "normalize",
            lambda x, mean, var, eps=1e-5: (x - mean) / (var + eps),
            "You divided by the variance instead of the standard deviation.",
            "Divide by np.sqrt(var + eps): the standard deviation has the units of x."),
    Mistake("forgot-to-centre", "normalize", lambda x, mean, var, eps=1e-5: x / np.sqrt(var + eps),
            "You scaled x but did not subtract the mean.", "Compute (x - mean) first."),
    Mistake("ignores-given-statistics", "normalize",
            lambda x, mean, var, eps=1e-5: (x - _mean(x)) / np.sqrt(x.var(axis=0) + eps),
            "You recomputed the mean and variance from x instead of using the mean and var "
            "you were given.",
            "Use the arguments: later the same function normalizes with running statistics."),
    Mistake("modifies-input", "normalize", _in_place_normalize,
            "Your function changed an input array in place (e.g. `x -= mean`), so the caller's "
            "data is gone.",
            "Build a new array instead: `centred = x - mean` leaves x untouched."),
    # --- batchnorm_forward ---
    Mistake("gamma-beta-swapped", "batchnorm_forward",
            lambda x, gamma, beta, eps=1e-5: beta * _normalized(x, eps) + gamma,
            "You swapped gamma and beta: gamma scales and beta shifts.",
            "Return gamma * x_hat + beta."),
    Mistake("forgot-shift", "batchnorm_forward",
            lambda x, gamma, beta, eps=1e-5: gamma * _normalized(x, eps),
            "You scaled by gamma but never added beta.", "Return gamma * x_hat + beta."),
    Mistake("forgot-scale", "batchnorm_forward",
            lambda x, gamma, beta, eps=1e-5: _normalized(x, eps) + beta,
            "You added beta but never multiplied by gamma.", "Return gamma * x_hat + beta."),
    Mistake("returns-normalized-not-scaled", "batchnorm_forward",
            lambda x, gamma, beta, eps=1e-5: _normalized(x, eps),
            "You returned the normalized x_hat without the scale and shift.",
            "Finish with gamma * x_hat + beta: the layer learns gamma and beta."),
    Mistake("unbiased-variance", "batchnorm_forward",
            lambda x, gamma, beta, eps=1e-5: gamma * _normalized(x, eps, ddof=1) + beta,
            "You normalized with the unbiased variance (divide by N - 1).", BIASED_HINT),
    Mistake("eps-outside-sqrt", "batchnorm_forward",
            lambda x, gamma, beta, eps=1e-5: gamma * _normalized(x, eps, eps_outside=True) + beta,
            "You added eps to the standard deviation, outside the square root.", EPS_HINT),
    Mistake("forgot-eps", "batchnorm_forward",
            lambda x, gamma, beta, eps=1e-5: gamma * _normalized(x, 0.0) + beta,
            "You left out eps.", EPS_HINT),
    Mistake("axis-0-vs-1", "batchnorm_forward",
            lambda x, gamma, beta, eps=1e-5: gamma * _normalized(x, eps, axis=1) + beta,
            "You normalized each example across its features (axis=1): that is LayerNorm, "
            "not BatchNorm.", AXIS_HINT),
    Mistake("var-instead-of-std", "batchnorm_forward",
            lambda x, gamma, beta, eps=1e-5: gamma * _normalized(x, eps, sqrt=False) + beta,
            "You divided by the variance instead of the standard deviation.",
            "Divide by np.sqrt(var + eps)."),
    Mistake("calls-course-reference", "batchnorm_forward",
            lambda x, gamma, beta, eps=1e-5: ref.batchnorm_forward(x, gamma, beta, eps),
            "Your function calls the course's own answer in bn_course.reference.",
            "Write it yourself with NumPy: the exercise is the implementation."),
    Mistake("uses-builtin-batchnorm", "batchnorm_forward", _torch_batch_norm,
            "Your function calls PyTorch's batch norm (F.batch_norm, torch.batch_norm or "
            "nn.BatchNorm*).",
            "Write it yourself from the formula: that is the whole exercise."),
    # --- update_running_stats ---
    Mistake("momentum-convention-flipped", "update_running_stats",
            lambda rm, rv, x, momentum=0.1: (momentum * rm + (1 - momentum) * _mean(x),
                                             momentum * rv + (1 - momentum) * x.var(0, ddof=1)),
            "You used momentum as the weight of the OLD value (Keras' convention).",
            "In PyTorch momentum weighs the new batch: "
            "running = (1 - momentum) * running + momentum * batch."),
    Mistake("running-var-biased", "update_running_stats",
            lambda rm, rv, x, momentum=0.1: ((1 - momentum) * rm + momentum * _mean(x),
                                             (1 - momentum) * rv + momentum * x.var(0)),
            "You updated the running variance with the biased batch variance (divide by N).",
            "The running variance estimates the population's: use the unbiased batch variance, "
            "np.var(x, axis=0, ddof=1), as PyTorch does."),
    Mistake("returns-batch-statistics", "update_running_stats",
            lambda rm, rv, x, momentum=0.1: (_mean(x), x.var(0, ddof=1)),
            "You returned the batch statistics and dropped the running ones.",
            "Blend them: (1 - momentum) * running + momentum * batch."),
    Mistake("running-var-from-std", "update_running_stats",
            lambda rm, rv, x, momentum=0.1: ((1 - momentum) * rm + momentum * _mean(x),
                                             (1 - momentum) * rv + momentum * x.std(0, ddof=1)),
            "You blended the batch standard deviation into the running VARIANCE.",
            "Use np.var(x, axis=0, ddof=1) for the running variance."),
    Mistake("forgot-running-var", "update_running_stats",
            lambda rm, rv, x, momentum=0.1: ((1 - momentum) * rm + momentum * _mean(x), rv),
            "You updated the running mean but returned the running variance unchanged.",
            "Update both statistics with the same rule."),
    # --- batchnorm_eval ---
    Mistake("batch-stats-in-eval", "batchnorm_eval",
            lambda x, rm, rv, gamma, beta, eps=1e-5: gamma * _normalized(x, eps) + beta,
            "You normalized with the batch's own statistics. In eval mode the running "
            "statistics are used, so one example's output does not depend on the others.",
            "Use running_mean and running_var instead of x.mean and x.var."),
    Mistake("eps-outside-sqrt", "batchnorm_eval",
            lambda x, rm, rv, gamma, beta, eps=1e-5: gamma * (x - rm) / (np.sqrt(rv) + eps) + beta,
            "You added eps to the standard deviation, outside the square root.", EPS_HINT),
    Mistake("gamma-beta-swapped", "batchnorm_eval",
            lambda x, rm, rv, gamma, beta, eps=1e-5: beta * (x - rm) / np.sqrt(rv + eps) + gamma,
            "You swapped gamma and beta.", "Return gamma * x_hat + beta."),
    Mistake("var-instead-of-std", "batchnorm_eval",
            lambda x, rm, rv, gamma, beta, eps=1e-5: gamma * (x - rm) / (rv + eps) + beta,
            "You divided by the running variance instead of its square root.",
            "Divide by np.sqrt(running_var + eps)."),
    Mistake("returns-normalized-not-scaled", "batchnorm_eval",
            lambda x, rm, rv, gamma, beta, eps=1e-5: (x - rm) / np.sqrt(rv + eps),
            "You returned x_hat without the scale and shift.", "Return gamma * x_hat + beta."),
    # --- BatchNorm1d ---
    Mistake("updates-in-eval", "BatchNorm1d", _layer_with(updates_in_eval="after"),
            "Your layer changes its running statistics in eval mode.",
            "Only train mode updates them; eval mode just reads them."),
    Mistake("updates-in-eval", "BatchNorm1d", _layer_with(updates_in_eval="before"),
            "Your layer changes its running statistics in eval mode.",
            "Only train mode updates them; eval mode just reads them."),
    Mistake("no-update-in-train", "BatchNorm1d", _layer_with(no_update_in_train=True),
            "Your layer never updates its running statistics in train mode.",
            "In train mode, after computing the output, update running_mean and running_var "
            "(update_running_stats)."),
    Mistake("updates-before-normalizing", "BatchNorm1d",
            _layer_with(updates_before_normalizing=True),
            "In train mode your layer updates the running statistics first and normalizes "
            "with them, instead of with the batch's statistics.",
            "Train mode normalizes with the batch mean and variance; the update is a side effect."),
    Mistake("batch-stats-in-eval", "BatchNorm1d", _layer_with(batch_stats_in_eval=True),
            "In eval mode your layer normalizes with the batch's statistics.",
            "In eval mode use running_mean and running_var (batchnorm_eval)."),
    Mistake("momentum-convention-flipped", "BatchNorm1d", _layer_with(flipped_momentum=True),
            "Your layer uses momentum as the weight of the OLD running value.",
            "PyTorch: running = (1 - momentum) * running + momentum * batch."),
    Mistake("running-var-biased", "BatchNorm1d", _layer_with(biased_running_var=True),
            "Your layer updates the running variance with the biased batch variance.",
            "Use the unbiased batch variance (ddof=1) for the running variance."),
    Mistake("no-error-for-batch-of-one", "BatchNorm1d", _layer_with(no_error_for_one=True),
            "In train mode your layer accepts a batch of one example, whose variance is 0.",
            "Raise ValueError when x.shape[0] < 2 in train mode, as PyTorch does."),
    Mistake("running-var-starts-at-zero", "BatchNorm1d", _layer_with(running_var_start=0.0),
            "Your layer starts with running_var = 0.",
            "Start with running_mean = zeros and running_var = ones, as PyTorch does: an "
            "untrained layer in eval mode then leaves its input unchanged."),
    # --- keras_to_torch_momentum ---
    Mistake("keras-momentum-not-converted", "keras_to_torch_momentum", lambda m: m,
            "You returned Keras' momentum unchanged.",
            "Keras' momentum weighs the old value, PyTorch's the new one: they add up to 1."),
    Mistake("keras-conversion-sign-flipped", "keras_to_torch_momentum", lambda m: m - 1,
            "You returned m - 1, a negative momentum.", "PyTorch's momentum is 1 - m."),
]


_BACKWARD_MISTAKES = [
    ("dbeta-sum-wrong-axis", _backward_with(dbeta_axis=1),
     "Your dbeta sums over the features (axis=1) instead of over the batch.",
     "beta has one entry per feature: sum its gradient over axis=0."),
    ("dgamma-sum-wrong-axis", _backward_with(dgamma_axis=1),
     "Your dgamma sums over the features (axis=1) instead of over the batch.",
     "gamma has one entry per feature: sum dout * x_hat over axis=0."),
    ("dbeta-dgamma-sum-wrong-axis", _backward_with(dbeta_axis=1, dgamma_axis=1),
     "Your dbeta and dgamma sum over the features (axis=1) instead of over the batch.",
     "beta and gamma have one entry per feature: sum their gradients over axis=0."),
    ("dgamma-uses-x-not-xhat", _backward_with(dgamma_of="x"),
     "Your dgamma multiplies dout by x instead of by the normalized x_hat.",
     "out = gamma * x_hat + beta, so dgamma = sum(dout * x_hat, axis=0)."),
    ("dx-missing-mean-terms", _backward_with(dx_terms="none"),
     "Your dx treats the mean and variance as constants (dx = dout * gamma / std).",
     "The batch mean and variance depend on every x: follow both extra paths through "
     "the graph, through mean(dout) and through mean(dout * x_hat)."),
    ("dx-only-right-for-ones-dout", _backward_with(dx_terms="mean_only"),
     "Your dx is missing the term through the variance, x_hat * mean(dout * x_hat). It "
     "vanishes when dout is all ones, which is why a check with dout = ones passes.",
     "dx = gamma / std * (dout - mean(dout) - x_hat * mean(dout * x_hat))."),
    ("dx-forgot-gamma", _backward_with(use_gamma=False),
     "Your dx leaves out gamma.", "The output is gamma * x_hat + beta: dx_hat = dout * gamma."),
    ("unbiased-variance", _backward_with(ddof=1),
     "Your backward pass uses the unbiased variance (N - 1).", BIASED_HINT),
    ("unbiased-variance", _backward_with(ddof=1, ddof_in_variance_path=False),
     "Your backward pass uses the unbiased variance (N - 1).", BIASED_HINT),
]

CATALOGUE += [Mistake(mistake_id, exercise, variant, diagnosis, hint)
              for exercise in ("batchnorm_backward", "batchnorm_backward_compact")
              for mistake_id, variant, diagnosis, hint in _BACKWARD_MISTAKES]

CHANNEL_HINT = ("x has shape (N, C, H, W): every channel has one mean and one variance, "
                "taken over axis=(0, 2, 3).")
CATALOGUE += [
    Mistake("stats-over-hw-only", "batchnorm2d_forward", _forward2d_over((2, 3)),
            "You took statistics over H and W of each image separately (InstanceNorm).",
            CHANNEL_HINT),
    Mistake("stats-over-n-only", "batchnorm2d_forward", _forward2d_over(0),
            "You took statistics over the batch axis only, one per pixel and channel.",
            CHANNEL_HINT),
    Mistake("stats-per-example", "batchnorm2d_forward", _forward2d_over((1, 2, 3)),
            "You normalized each example over all its channels and pixels (LayerNorm).",
            CHANNEL_HINT),
    Mistake("unbiased-variance", "batchnorm2d_forward", _forward2d_over((0, 2, 3), ddof=1),
            "You normalized with the unbiased variance.", BIASED_HINT),
]

def _reached(accuracy, target, strictly=False):
    accuracy = np.asarray(accuracy)
    reached = np.flatnonzero(accuracy > target if strictly else accuracy >= target)
    if len(reached) == 0:
        raise ValueError("never reached")
    return reached


def _returns_index(steps, accuracy, target):
    return int(_reached(accuracy, target)[0])


def _index_times_interval(steps, accuracy, target):
    steps = np.asarray(steps)
    interval = steps[1] - steps[0] if len(steps) > 1 else 0
    return int(_reached(accuracy, target)[0] * interval)


def _strict_inequality(steps, accuracy, target):
    return int(np.asarray(steps)[_reached(accuracy, target, strictly=True)[0]])


def _stays_above(steps, accuracy, target):
    """The step from which the curve never falls below the target again."""
    below = np.flatnonzero(np.asarray(accuracy) < target)
    first_for_good = below[-1] + 1 if len(below) else 0
    if first_for_good == len(accuracy):
        raise ValueError("never reached")
    return int(np.asarray(steps)[first_for_good])


def _none_when_never_reached(steps, accuracy, target):
    reached = np.flatnonzero(np.asarray(accuracy) >= target)
    return int(np.asarray(steps)[reached[0]]) if len(reached) else None


def _sorts_in_place(values, q):
    values.sort(axis=1)
    return np.percentile(values, q, axis=1).T


def _rank_from_n(values, q):
    """A hand-made percentile: the sorted value at rank floor(q / 100 * N)."""
    n = values.shape[1]
    ranks = np.minimum((np.asarray(q, dtype=np.float64) / 100 * n).astype(int), n - 1)
    return np.sort(values, axis=1)[:, ranks]


def _groupnorm_with(layout="consecutive", over_batch=False, ddof=0):
    """groupnorm_forward with one knob per classic mistake; layout "strided" puts
    channel c in group c % G instead of c // (C / G)."""

    def groupnorm(x, gamma, beta, num_groups, eps=1e-5):
        n, c = x.shape[:2]
        if layout == "strided":
            groups = x.reshape(n, c // num_groups, num_groups, -1).swapaxes(1, 2)
        else:
            groups = x.reshape(n, num_groups, c // num_groups, -1)
        axes = (0, 2, 3) if over_batch else (2, 3)
        x_hat = (groups - groups.mean(axis=axes, keepdims=True)) / np.sqrt(
            groups.var(axis=axes, ddof=ddof, keepdims=True) + eps)
        if layout == "strided":
            x_hat = x_hat.swapaxes(1, 2)
        shape = (1, c) + (1,) * (x.ndim - 2)
        return x_hat.reshape(x.shape) * gamma.reshape(shape) + beta.reshape(shape)

    return groupnorm


def _layernorm_with(**bugs):
    def layernorm(x, gamma, beta, eps=1e-5):
        axes = bugs.get("axes", tuple(range(1, x.ndim)))
        centred = x - x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, ddof=bugs.get("ddof", 0), keepdims=True)
        std = np.sqrt(var) + eps if bugs.get("eps_outside") else np.sqrt(var + eps)
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        return centred / std * gamma.reshape(shape) + beta.reshape(shape)
    return layernorm


def _fold_with(**bugs):
    def fold(conv_weight, conv_bias, bn):
        bias = np.zeros(len(conv_weight)) if conv_bias is None or bugs.get("ignore_bias") \
            else conv_bias
        eps = 0.0 if bugs.get("forgot_eps") else bn.eps
        std = bn.running_var + eps if bugs.get("var_not_std") else np.sqrt(bn.running_var + eps)
        scale = bn.weight / std
        folded_bias = (bias * scale + bn.bias if bugs.get("no_mean_shift")
                       else (bias - bn.running_mean) * scale + bn.bias)
        return conv_weight * scale.reshape((-1,) + (1,) * (conv_weight.ndim - 1)), folded_bias
    return fold


def _ghost_with(split="consecutive", ddof=0):
    """ghost_batchnorm_forward with one knob per mistake. split: "consecutive" (right),
    "whole" (one batch), "strided" (every k-th example), "count" (B pieces, not size B)."""

    def ghost(x, gamma, beta, virtual_batch_size, eps=1e-5):
        n, size = len(x), virtual_batch_size
        pieces = -(-n // size)  # how many virtual batches, rounding up
        groups = {
            "consecutive": [np.arange(start, min(start + size, n)) for start in range(0, n, size)],
            "whole": [np.arange(n)],
            "strided": [np.arange(first, n, pieces) for first in range(pieces)],
            "count": [piece for piece in np.array_split(np.arange(n), size) if len(piece)],
        }[split]
        out = np.empty(x.shape, dtype=x.dtype)
        for index in groups:
            chunk = x[index]
            out[index] = (chunk - chunk.mean(axis=0)) / np.sqrt(
                chunk.var(axis=0, ddof=ddof) + eps)
        return out * gamma + beta

    return ghost


def _ema_of_batches(batches, momentum=0.1):
    mean, var = 0.0, 1.0  # PyTorch's starting values
    for x in batches:
        mean = (1 - momentum) * mean + momentum * x.mean(axis=0)
        var = (1 - momentum) * var + momentum * x.var(axis=0, ddof=1)
    return mean, var


def _average_of_batches(batches, ddof=1):
    means = [x.mean(axis=0) for x in batches]
    variances = [x.var(axis=0, ddof=ddof) for x in batches]
    return np.mean(means, axis=0), np.mean(variances, axis=0)


def _counting_reset_values(batches):
    """The average with the reset values (mean 0, variance 1) counted as one more batch."""
    mean, var = _average_of_batches(batches)
    k = len(batches)
    return k * mean / (k + 1), (k * var + 1.0) / (k + 1)


def _pooled(batches):
    everything = np.concatenate(list(batches))
    return everything.mean(axis=0), everything.var(axis=0, ddof=1)


def _last_batch(batches):
    x = list(batches)[-1]
    return x.mean(axis=0), x.var(axis=0, ddof=1)


def _always(answer):
    def diagnose(case):
        return answer

    return diagnose


def _buggy_torch_layer(**bugs):
    """A from-scratch torch BatchNorm2d with one mistake (built on first use, so
    that importing the catalogue does not import torch)."""

    def build(num_features, eps=1e-5, momentum=0.1):
        import torch

        class BuggyBatchNorm2d(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.eps, self.momentum = eps, momentum
                self.weight = torch.nn.Parameter(torch.ones(num_features))
                self.bias = torch.nn.Parameter(torch.zeros(num_features))
                buffers = {"running_mean": torch.zeros(num_features),
                           "running_var": torch.ones(num_features),
                           "num_batches_tracked": torch.tensor(0)}
                for name, value in buffers.items():
                    if bugs.get("plain_attributes"):
                        setattr(self, name, value)
                    else:
                        self.register_buffer(name, value)

            def forward(self, x):
                axes = bugs.get("axes", (0, 2, 3))
                batch_mean = x.mean(axes, keepdim=True)
                batch_var = x.var(axes, unbiased=False, keepdim=True)
                use_batch = self.training or bugs.get("batch_stats_in_eval")
                mean = batch_mean if use_batch else self.running_mean.view(1, -1, 1, 1)
                var = batch_var if use_batch else self.running_var.view(1, -1, 1, 1)
                out = (x - mean) / torch.sqrt(var + self.eps)
                out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
                if self.training or bugs.get("updates_in_eval"):
                    self._update(x)
                return out

            @torch.no_grad()
            def _update(self, x):
                n = x.numel() // x.shape[1]
                var = x.var((0, 2, 3), unbiased=False)
                if not bugs.get("biased_running_var"):
                    var = var * n / (n - 1)
                new = 1 - self.momentum if bugs.get("flipped_momentum") else self.momentum
                self.running_mean.mul_(1 - new).add_(new * x.mean((0, 2, 3)))
                self.running_var.mul_(1 - new).add_(new * var)
                if not bugs.get("forgets_num_batches_tracked"):
                    self.num_batches_tracked += 1

        return BuggyBatchNorm2d()

    return build


def _wraps_torch_layer(num_features, eps=1e-5, momentum=0.1):
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)

        def forward(self, x):
            return self.inner(x)

    return Wrapper()


MODULE_HINT = ("Mirror torch.nn.BatchNorm2d: nn.Parameter weight and bias, register_buffer for "
               "running_mean, running_var and num_batches_tracked.")
CATALOGUE += [
    Mistake("momentum-convention-flipped", "BatchNorm2d", _buggy_torch_layer(flipped_momentum=True),
            "Your module uses momentum as the weight of the OLD running value.",
            "PyTorch: running = (1 - momentum) * running + momentum * batch."),
    Mistake("running-var-biased", "BatchNorm2d", _buggy_torch_layer(biased_running_var=True),
            "Your module updates the running variance with the biased batch variance.",
            "Multiply the biased variance by M / (M - 1), M = N * H * W values per channel."),
    Mistake("updates-in-eval", "BatchNorm2d", _buggy_torch_layer(updates_in_eval=True),
            "Your module updates its running statistics in eval mode.",
            "Update them only when self.training is True."),
    Mistake("batch-stats-in-eval", "BatchNorm2d", _buggy_torch_layer(batch_stats_in_eval=True),
            "In eval mode your module normalizes with the batch's statistics.",
            "In eval mode (self.training is False) use the running buffers."),
    Mistake("stats-over-hw-only", "BatchNorm2d", _buggy_torch_layer(axes=(2, 3)),
            "Your module takes statistics over H and W of each image separately.", CHANNEL_HINT),
    Mistake("num-batches-not-tracked", "BatchNorm2d",
            _buggy_torch_layer(forgets_num_batches_tracked=True),
            "Your module never increments num_batches_tracked.",
            "Add 1 to num_batches_tracked at every training step, as torch.nn.BatchNorm2d does "
            "(momentum=None uses it for a cumulative average)."),
    Mistake("buffers-not-registered", "BatchNorm2d", _buggy_torch_layer(plain_attributes=True),
            "Your running statistics are plain attributes, so they are missing from the "
            "state_dict and do not move with .to(device).", MODULE_HINT),
    Mistake("uses-builtin-batchnorm", "BatchNorm2d", _wraps_torch_layer,
            "Your module wraps or calls PyTorch's own batch norm.",
            "Write the forward pass yourself from torch operations: that is the exercise."),
]

PERCENTILE_AXIS_HINT = ("values has shape (T, N): one row per moment of training. Take the "
                        "percentiles of each row, over the examples: axis=1.")
INTERPOLATION_HINT = ("np.percentile(values, q, axis=1) interpolates between the two nearest "
                      "ranks; a sorted value at a rounded rank is only close to it.")

CATALOGUE += [
    # --- steps_to_reach ---
    Mistake("returns-index", "steps_to_reach", _returns_index,
            "You returned the position of the evaluation in the list, not its training step.",
            "Return steps[t], the step at which accuracy[t] was measured."),
    Mistake("index-times-interval", "steps_to_reach", _index_times_interval,
            "You computed the step as position * (steps[1] - steps[0]). That is only right "
            "when evaluations start at step 0 and are evenly spaced; a run's last evaluation "
            "falls on its last step, wherever that is.",
            "Read the step from the list: steps[t]."),
    Mistake("strict-inequality", "steps_to_reach", _strict_inequality,
            "You waited for the accuracy to exceed the target (>), so an accuracy exactly "
            "equal to it did not count.",
            "Reaching the target means accuracy >= target: the final accuracy of a run can "
            "equal one of its evaluations."),
    Mistake("stays-above", "steps_to_reach", _stays_above,
            "You returned the step from which the accuracy stays at or above the target for "
            "good, not the first step at which it reaches it.",
            "Stop at the first evaluation with accuracy >= target, even if a later one dips "
            "below it again."),
    Mistake("no-error-when-never-reached", "steps_to_reach", _none_when_never_reached,
            "When the accuracy never reaches the target, your function does not raise "
            "ValueError.",
            "After the loop, `raise ValueError(...)`: no step is the honest answer, and "
            "returning None, -1 or the last step would pass a wrong number on."),
    # --- percentile_trace ---
    Mistake("axis-0-vs-1", "percentile_trace", lambda values, q: np.percentile(
                values, q, axis=0).T,
            "You took the percentiles of each example over time (axis=0) instead of each "
            "moment over the examples.", PERCENTILE_AXIS_HINT),
    Mistake("transposed-output", "percentile_trace", lambda values, q: np.percentile(
                values, q, axis=1),
            "Your values are right but your array has shape (len(q), T): np.percentile puts "
            "the percentiles first.",
            "Transpose the result (.T) to get one row per moment: shape (T, len(q))."),
    Mistake("no-axis", "percentile_trace", lambda values, q: np.percentile(values, q),
            "You took the percentiles of all the values at once, not of each moment.",
            PERCENTILE_AXIS_HINT),
    Mistake("fraction-not-percent", "percentile_trace",
            lambda values, q: np.percentile(values, np.asarray(q) / 100, axis=1).T,
            "You divided q by 100: np.percentile takes percentiles between 0 and 100 "
            "(it is np.quantile that takes fractions between 0 and 1).",
            "Pass q as given: np.percentile(values, q, axis=1)."),
    Mistake("rank-rounded-down", "percentile_trace",
            lambda values, q: np.percentile(values, q, axis=1, method="lower").T,
            "You took the sorted value at the rank q / 100 * (N - 1) rounded down, without "
            "interpolating.", INTERPOLATION_HINT),
    Mistake("rank-from-n", "percentile_trace", _rank_from_n,
            "You took the sorted value at the rank q / 100 * N rounded down: not the "
            "interpolated percentile (and off by one rank at the top).", INTERPOLATION_HINT),
    Mistake("modifies-input", "percentile_trace", _sorts_in_place,
            "Your function sorted `values` in place (values.sort()), which scrambles the "
            "caller's data: each column no longer belongs to one example.",
            "np.sort(values, axis=1) returns a sorted copy; np.percentile needs no sorting."),
]

LAYERNORM_HINT = ("LayerNorm normalizes each example on its own: statistics over every axis "
                  "but the batch axis, axis=tuple(range(1, x.ndim)).")
GROUP_HINT = ("Reshape to (N, num_groups, C // num_groups, H * W): consecutive channels form a "
              "group, as in torch.nn.functional.group_norm; then reduce over axes (2, 3).")
FOLD_HINT = ("In eval mode BN is y = scale * (z - running_mean) + beta with scale = "
             "gamma / sqrt(running_var + eps): scale each output channel's weights, and fold "
             "the bias as (b - running_mean) * scale + beta.")
CATALOGUE += [
    Mistake("layernorm-over-batch-axis", "layernorm_forward", _layernorm_with(axes=0),
            "You normalized each feature over the batch: that is BatchNorm, not LayerNorm.",
            LAYERNORM_HINT),
    Mistake("layernorm-over-channels-only", "layernorm_forward", _layernorm_with(axes=1),
            "For images you normalized over the channels of each pixel only.", LAYERNORM_HINT),
    Mistake("unbiased-variance", "layernorm_forward", _layernorm_with(ddof=1),
            "You normalized with the unbiased variance.", BIASED_HINT),
    Mistake("eps-outside-sqrt", "layernorm_forward", _layernorm_with(eps_outside=True),
            "You added eps to the standard deviation, outside the square root.", EPS_HINT),
    Mistake("wrong-group-axis", "groupnorm_forward", _groupnorm_with(layout="strided"),
            "Your groups take every G-th channel (reshape to (N, C // G, G, ...)) instead of "
            "consecutive channels.", GROUP_HINT),
    Mistake("groups-over-batch", "groupnorm_forward", _groupnorm_with(over_batch=True),
            "Your group statistics also average over the batch axis, so examples are mixed "
            "again, as in BatchNorm.", GROUP_HINT),
    Mistake("unbiased-variance", "groupnorm_forward", _groupnorm_with(ddof=1),
            "You normalized with the unbiased variance.", BIASED_HINT),
    Mistake("fold-forgot-eps", "fold_batchnorm", _fold_with(forgot_eps=True),
            "Your folded scale is gamma / sqrt(running_var), without eps.", FOLD_HINT),
    Mistake("fold-bias-without-mean-shift", "fold_batchnorm", _fold_with(no_mean_shift=True),
            "Your folded bias leaves out the running mean: BN subtracts it before scaling.",
            FOLD_HINT),
    Mistake("fold-ignores-conv-bias", "fold_batchnorm", _fold_with(ignore_bias=True),
            "Your folded bias ignores the convolution's own bias.", FOLD_HINT),
    Mistake("fold-var-instead-of-std", "fold_batchnorm", _fold_with(var_not_std=True),
            "Your folded scale divides by the running variance instead of its square root.",
            FOLD_HINT),
]

GHOST_HINT = ("Cut x into consecutive slices x[start:start + virtual_batch_size] (the last one "
              "may be shorter) and normalize each slice with its own mean and variance.")
RECOMPUTE_HINT = ("Give every batch the same weight: average the batch means, and average the "
                  "unbiased batch variances (PyTorch's momentum=None gives batch k weight 1/k).")
CHECKLIST_HINT = ("Go through the checklist in order: does the deployed accuracy depend on the "
                  "batch size? Then, from the first BN layer on, do the inputs' mean and variance "
                  "agree with the running ones?")

CATALOGUE += [
    # --- ghost_batchnorm_forward ---
    Mistake("ghost-stats-over-whole-batch", "ghost_batchnorm_forward", _ghost_with("whole"),
            "You normalized with the statistics of the whole batch: that is plain batch norm, "
            "and virtual_batch_size changes nothing.", GHOST_HINT),
    Mistake("ghost-strided-virtual-batches", "ghost_batchnorm_forward", _ghost_with("strided"),
            "Your virtual batches take every k-th example (x[j::k]) instead of consecutive "
            "examples.", GHOST_HINT),
    Mistake("ghost-size-read-as-count", "ghost_batchnorm_forward", _ghost_with("count"),
            "You cut x into virtual_batch_size pieces (np.array_split(x, virtual_batch_size)): "
            "virtual_batch_size is the number of examples per virtual batch, not the number "
            "of virtual batches.", GHOST_HINT),
    Mistake("unbiased-variance", "ghost_batchnorm_forward", _ghost_with(ddof=1),
            "You normalized with the unbiased variance.", BIASED_HINT),
    # --- recompute_running_stats ---
    Mistake("recompute-with-momentum", "recompute_running_stats", _ema_of_batches,
            "You blended the batches with an exponential moving average (momentum 0.1), as "
            "training does: the result leans toward the last batches and still remembers the "
            "starting values 0 and 1.", RECOMPUTE_HINT),
    Mistake("running-var-biased", "recompute_running_stats",
            lambda batches: _average_of_batches(batches, ddof=0),
            "You averaged the biased batch variances (divide by N).",
            "Running statistics use the unbiased batch variance, np.var(x, axis=0, ddof=1), "
            "as in training."),
    Mistake("counts-initial-values", "recompute_running_stats",
            _counting_reset_values,
            "Your average counts the reset values (mean 0, variance 1) as if they were a batch.",
            "Average only the batches you are given."),
    Mistake("pools-all-examples", "recompute_running_stats", _pooled,
            "You put all examples into one big batch. Its variance also counts how much the "
            "batch means differ, and a larger batch weighs more: not what BN's running "
            "statistics hold.", RECOMPUTE_HINT),
    Mistake("last-batch-only", "recompute_running_stats", _last_batch,
            "You returned the statistics of the last batch only.", RECOMPUTE_HINT),
    # --- diagnose_bn_bug: a wrong answer is told why it does not fit, never the answer ---
    Mistake("wrongly-blames-eval-mode", "diagnose_bn_bug", _always("eval-mode-forgotten"),
            "A forgotten model.eval() makes each prediction depend on the rest of its batch, "
            "so the deployed accuracy would change with the batch size. Here it does not.",
            CHECKLIST_HINT),
    Mistake("wrongly-blames-frozen-statistics", "diagnose_bn_bug",
            _always("stats-frozen-while-fine-tuning"),
            "Stale running statistics show at the first BN layer as inputs whose mean sits far "
            "from the running mean (a large |mean - running mean| / running std). In this case "
            "file the first BN layer's means agree.",
            CHECKLIST_HINT),
    Mistake("wrongly-blames-dropout", "diagnose_bn_bug", _always("dropout-before-batchnorm"),
            "Dropout feeding a BN layer inflates only the variance that layer sees in training: "
            "in eval mode its inputs' variance is well below the running variance while their "
            "mean still agrees. This case file does not show that pattern.", CHECKLIST_HINT),
    Mistake("misses-the-bug", "diagnose_bn_bug", _always("no-bug"),
            "This model has a symptom that a healthy one does not.", CHECKLIST_HINT),
]

# Detected, not matched: these ids are reported for any exercise.
DETECTED = {
    "modifies-input": next(m for m in CATALOGUE if m.id == "modifies-input"),
    "calls-course-reference": next(m for m in CATALOGUE if m.id == "calls-course-reference"),
    "uses-builtin-batchnorm": next(m for m in CATALOGUE if m.id == "uses-builtin-batchnorm"),
}


def mistakes_for(exercise):
    return [m for m in CATALOGUE if m.exercise == exercise]


def mistake_named(exercise, mistake_id):
    """The exercise's own entry for a detected mistake, else the generic one."""
    own = [m for m in mistakes_for(exercise) if m.id == mistake_id]
    return own[0] if own else DETECTED[mistake_id]
