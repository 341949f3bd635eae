"""The mistake catalogue, tested by mutation.

Every catalogued mistake is made again here, written the way a student might write
it and differently from the catalogue's own variant (np.var vs sums, keepdims, einsum,
loops, torch on NumPy input, in-place updates, float32 arithmetic...). The checker must
name each one with the catalogue's id, which shows that a mistake is recognised by
what it computes, not by how it is spelled. The detected mistakes (modifying an input,
calling the course's answers, calling PyTorch's batch norm) are made in several
exercises. Then the catalogue's own variants: each is named by its own id, and within
an exercise no two variants (nor a variant and the reference) compute nearly the same
thing, or one diagnosis would shadow the other.
"""

import math

import numpy as np
import pytest

# Imported here, not inside the candidates: the checker gives each call of a candidate a
# time limit, and a first `import torch` would spend a good part of it.
import torch
import torch.nn.functional as F

import bn_course.reference.numpy as course_answers
import bn_course.reference.torch as course_torch_answers
from bn_course.checks import check, relative_error
from bn_course.exercises import EXERCISES, GROUPS, WRONG_DIAGNOSIS, CandidateProblem
from bn_course.mistakes import CATALOGUE, DETECTED, mistake_named

MUTANTS = []  # (exercise, mistake id, implementation)


def mutant(exercise, mistake_id):
    """Register the decorated function or class as a candidate that makes mistake_id."""

    def register(implementation):
        MUTANTS.append((exercise, mistake_id, implementation))
        return implementation

    return register


def as_tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a))


# --- batch_mean -------------------------------------------------------------

@mutant("batch_mean", "axis-0-vs-1")
def mean_per_example_einsum(x):
    return np.einsum("nd->n", x) / x.shape[1]


@mutant("batch_mean", "axis-0-vs-1")
def mean_per_example_loop(x):
    return np.array([sum(row) / len(row) for row in x])


@mutant("batch_mean", "no-axis")
def mean_of_everything(x):
    return x.sum() / x.size


@mutant("batch_mean", "sum-not-mean")
def column_sums_in_input_dtype(x):
    return np.sum(x, axis=0, dtype=x.dtype, keepdims=True)


@mutant("batch_mean", "sum-not-mean")
def column_sums_by_matmul(x):
    return np.ones(x.shape[0], dtype=x.dtype) @ x


# --- batch_var --------------------------------------------------------------

@mutant("batch_var", "axis-0-vs-1")
def var_per_example(x):
    centred = x - x.mean(axis=1, keepdims=True)
    return (centred ** 2).mean(axis=1)


@mutant("batch_var", "unbiased-variance")
def var_over_n_minus_one(x):
    n = x.shape[0]
    centred = x - x.sum(axis=0) / n
    return (centred * centred).sum(axis=0) / (n - 1)


@mutant("batch_var", "unbiased-variance")
def var_with_torch_default(x):
    return torch.var(as_tensor(x), dim=0).numpy()


@mutant("batch_var", "std-instead-of-var")
def root_mean_square_deviation(x):
    centred = x - x.mean(axis=0, keepdims=True)
    return np.sqrt(np.mean(centred ** 2, axis=0, keepdims=True))


@mutant("batch_var", "forgot-to-centre")
def mean_square_einsum(x):
    return np.einsum("nd,nd->d", x, x) / len(x)


@mutant("batch_var", "no-axis")
def var_of_everything(x):
    flat = x.ravel()
    return ((flat - flat.mean()) ** 2).mean()


# --- normalize --------------------------------------------------------------

@mutant("normalize", "eps-outside-sqrt")
def normalize_eps_on_std(x, mean, var, eps=1e-5):
    return (x - mean[np.newaxis, :]) / (var ** 0.5 + eps)


@mutant("normalize", "forgot-eps")
def normalize_no_eps(x, mean, var, eps=1e-5):
    return (x - mean) * var ** -0.5


@mutant("normalize", "var-instead-of-std")
def normalize_by_variance(x, mean, var, eps=1e-5):
    return np.divide(np.subtract(x, mean), np.add(var, eps))


@mutant("normalize", "forgot-to-centre")
def normalize_scale_only(x, mean, var, eps=1e-5):
    return x * (1.0 / np.sqrt(var + eps))


@mutant("normalize", "ignores-given-statistics")
def normalize_with_own_statistics(x, mean, var, eps=1e-5):
    own_mean = x.mean(axis=0, keepdims=True)
    own_var = np.var(x, axis=0, keepdims=True)
    return (x - own_mean) / np.sqrt(own_var + eps)


@mutant("normalize", "modifies-input")
def normalize_centring_in_place(x, mean, var, eps=1e-5):
    x -= mean
    return x / np.sqrt(var + eps)


# --- batchnorm_forward ------------------------------------------------------

def student_x_hat(x, eps, ddof=0):
    """x_hat from explicit sums, as a student writes it before knowing np.var."""
    n = x.shape[0]
    mu = x.sum(axis=0) / n
    var = ((x - mu) ** 2).sum(axis=0) / (n - ddof)
    return (x - mu) / np.sqrt(var + eps)


@mutant("batchnorm_forward", "gamma-beta-swapped")
def forward_swapped(x, gamma, beta, eps=1e-5):
    return student_x_hat(x, eps) * beta[np.newaxis] + gamma[np.newaxis]


@mutant("batchnorm_forward", "forgot-shift")
def forward_no_beta(x, gamma, beta, eps=1e-5):
    centred = x - x.mean(0)
    var = np.einsum("nd,nd->d", centred, centred) / len(x)
    return gamma * centred / np.sqrt(var + eps)


@mutant("batchnorm_forward", "forgot-scale")
def forward_no_gamma(x, gamma, beta, eps=1e-5):
    return np.add(student_x_hat(x, eps), beta)


@mutant("batchnorm_forward", "returns-normalized-not-scaled")
def forward_x_hat_only(x, gamma, beta, eps=1e-5):
    return student_x_hat(x, eps)


@mutant("batchnorm_forward", "unbiased-variance")
def forward_ddof_one(x, gamma, beta, eps=1e-5):
    std = np.sqrt(np.std(x, axis=0, ddof=1) ** 2 + eps)
    return gamma * (x - x.mean(axis=0)) / std + beta


@mutant("batchnorm_forward", "unbiased-variance")
def forward_with_torch_var(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    x_hat = (t - t.mean(0)) / torch.sqrt(t.var(0) + eps)
    return (x_hat * as_tensor(gamma) + as_tensor(beta)).numpy()


@mutant("batchnorm_forward", "eps-outside-sqrt")
def forward_eps_on_std(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(axis=0)) / (x.std(axis=0) + eps) + beta


@mutant("batchnorm_forward", "forgot-eps")
def forward_no_eps(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(axis=0)) / x.std(axis=0) + beta


@mutant("batchnorm_forward", "axis-0-vs-1")
def forward_per_example_loop(x, gamma, beta, eps=1e-5):
    rows = [(row - row.mean()) / np.sqrt(row.var() + eps) for row in x]
    return np.stack(rows) * gamma + beta


@mutant("batchnorm_forward", "var-instead-of-std")
def forward_divides_by_variance(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=0, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=0, keepdims=True)
    return gamma * (x - mean) / (var + eps) + beta


@mutant("batchnorm_forward", "calls-course-reference")
def forward_imports_the_answer(x, gamma, beta, eps=1e-5):
    from bn_course.reference.numpy import batchnorm_forward as answer
    return answer(x, gamma, beta, eps)


@mutant("batchnorm_forward", "calls-course-reference")
def forward_on_top_of_course_normalize(x, gamma, beta, eps=1e-5):
    return gamma * course_answers.normalize(x, x.mean(0), x.var(0), eps) + beta


@mutant("batchnorm_forward", "uses-builtin-batchnorm")
def forward_with_functional_batch_norm(x, gamma, beta, eps=1e-5):
    out = F.batch_norm(as_tensor(x), None, None, weight=as_tensor(gamma), bias=as_tensor(beta),
                       training=True, eps=eps)
    return out.numpy()


@mutant("batchnorm_forward", "uses-builtin-batchnorm")
def forward_with_torch_batch_norm(x, gamma, beta, eps=1e-5):
    out = torch.batch_norm(as_tensor(x), as_tensor(gamma), as_tensor(beta), None, None,
                           True, 0.1, eps, False)
    return out.numpy()


@mutant("batchnorm_forward", "uses-builtin-batchnorm")
def forward_with_nn_module(x, gamma, beta, eps=1e-5):
    layer = torch.nn.BatchNorm1d(x.shape[1], eps=eps, dtype=torch.from_numpy(x).dtype)
    with torch.no_grad():
        layer.weight.copy_(as_tensor(gamma))
        layer.bias.copy_(as_tensor(beta))
        return layer(as_tensor(x)).numpy()


@mutant("batchnorm_forward", "uses-builtin-batchnorm")
def forward_with_aten_overload(x, gamma, beta, eps=1e-5):
    # An aten batch-norm kernel called through its overload (torch.ops.aten.<op>.default).
    out, _, _ = torch.ops.aten.native_batch_norm.default(
        as_tensor(x), as_tensor(gamma), as_tensor(beta), None, None, True, 0.1, eps)
    return out.numpy()


@mutant("batchnorm_forward", "uses-builtin-batchnorm")
def forward_with_aten_legit_no_stats(x, gamma, beta, eps=1e-5):
    out, _, _ = torch.ops.aten._native_batch_norm_legit.no_stats(
        as_tensor(x), as_tensor(gamma), as_tensor(beta), True, 0.1, eps)
    return out.numpy()


@mutant("batchnorm_forward", "modifies-input")
def forward_normalizes_x_in_place(x, gamma, beta, eps=1e-5):
    x -= x.mean(axis=0)
    x /= np.sqrt((x ** 2).mean(axis=0) + eps)
    return gamma * x + beta


@mutant("batchnorm_forward", "modifies-input")
def forward_folds_scale_into_gamma(x, gamma, beta, eps=1e-5):
    gamma /= np.sqrt(x.var(axis=0) + eps)
    return (x - x.mean(axis=0)) * gamma + beta


# --- update_running_stats ---------------------------------------------------

def unbiased_var(x):
    n = x.shape[0]
    return ((x - x.mean(axis=0)) ** 2).sum(axis=0) / (n - 1)


@mutant("update_running_stats", "momentum-convention-flipped")
def update_keras_style_in_place(running_mean, running_var, x, momentum=0.1):
    running_mean *= momentum
    running_mean += (1 - momentum) * x.mean(axis=0)
    running_var *= momentum
    running_var += (1 - momentum) * unbiased_var(x)
    return running_mean, running_var


@mutant("update_running_stats", "running-var-biased")
def update_with_torch_biased_var(running_mean, running_var, x, momentum=0.1):
    t = as_tensor(x)
    new_mean = torch.lerp(as_tensor(running_mean), t.mean(0), momentum)
    new_var = torch.lerp(as_tensor(running_var), t.var(0, correction=0), momentum)
    return new_mean.numpy(), new_var.numpy()


@mutant("update_running_stats", "returns-batch-statistics")
def update_returns_batch_covariance_diagonal(running_mean, running_var, x, momentum=0.1):
    covariance = np.atleast_2d(np.cov(x, rowvar=False))
    return x.mean(axis=0), np.diagonal(covariance).copy()


@mutant("update_running_stats", "running-var-from-std")
def update_blends_std(running_mean, running_var, x, momentum=0.1):
    new_mean = running_mean + momentum * (x.mean(axis=0) - running_mean)
    new_var = running_var + momentum * (np.sqrt(unbiased_var(x)) - running_var)
    return new_mean, new_var


@mutant("update_running_stats", "forgot-running-var")
def update_mean_only(running_mean, running_var, x, momentum=0.1):
    new_mean = [(1 - momentum) * m + momentum * x[:, j].mean()
                for j, m in enumerate(running_mean)]
    return np.array(new_mean, dtype=running_mean.dtype), running_var.copy()


@mutant("update_running_stats", "modifies-input")
def update_centres_x_in_place(running_mean, running_var, x, momentum=0.1):
    mean = x.mean(axis=0)
    x -= mean
    var = (x ** 2).sum(axis=0) / (len(x) - 1)
    return ((1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var)


# --- batchnorm_eval ---------------------------------------------------------

@mutant("batchnorm_eval", "batch-stats-in-eval")
def eval_with_batch_statistics(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return gamma * student_x_hat(x, eps) + beta


@mutant("batchnorm_eval", "eps-outside-sqrt")
def eval_eps_on_std(x, running_mean, running_var, gamma, beta, eps=1e-5):
    scale = gamma / (np.sqrt(running_var) + eps)
    return (x - running_mean) * scale + beta


@mutant("batchnorm_eval", "gamma-beta-swapped")
def eval_swapped(x, running_mean, running_var, gamma, beta, eps=1e-5):
    x_hat = np.divide(x - running_mean[None, :], np.sqrt(running_var + eps)[None, :])
    return x_hat * beta[None, :] + gamma[None, :]


@mutant("batchnorm_eval", "var-instead-of-std")
def eval_divides_by_variance(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return np.einsum("nd,d->nd", x - running_mean, gamma / (running_var + eps)) + beta


@mutant("batchnorm_eval", "returns-normalized-not-scaled")
def eval_x_hat_only(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return (x - running_mean) * (running_var + eps) ** -0.5


@mutant("batchnorm_eval", "modifies-input")
def eval_centres_x_in_place(x, running_mean, running_var, gamma, beta, eps=1e-5):
    x -= running_mean
    return gamma * x / np.sqrt(running_var + eps) + beta


@mutant("batchnorm_eval", "uses-builtin-batchnorm")
def eval_with_functional_batch_norm(x, running_mean, running_var, gamma, beta, eps=1e-5):
    out = F.batch_norm(as_tensor(x), as_tensor(running_mean), as_tensor(running_var),
                       as_tensor(gamma), as_tensor(beta), training=False, eps=eps)
    return out.numpy()


# --- BatchNorm1d ------------------------------------------------------------

class StudentBatchNorm1d:
    """A correct layer laid out unlike the catalogue's: keepdims statistics, in-place
    running updates, train()/eval() returning self. Each mutant below overrides one
    method to make one mistake (test_student_layer_is_correct keeps this base honest)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.eps, self.momentum, self.training = eps, momentum, True
        self.gamma, self.beta = np.ones(num_features), np.zeros(num_features)
        self.running_mean = np.zeros(num_features)
        self.running_var = self.initial_running_var(num_features)

    def initial_running_var(self, num_features):
        return np.ones(num_features)

    def train(self):
        self.training = True
        return self

    def eval(self):
        self.training = False
        return self

    def batch_statistics(self, x):
        mean = x.mean(axis=0, keepdims=True)
        return mean, ((x - mean) ** 2).mean(axis=0, keepdims=True)

    def weight_of_new(self):
        return self.momentum

    def running_update_var(self, x):
        return np.var(x, axis=0, ddof=1)

    def update(self, x):
        weight = self.weight_of_new()
        self.running_mean *= 1 - weight
        self.running_mean += weight * x.mean(axis=0)
        self.running_var *= 1 - weight
        self.running_var += weight * self.running_update_var(x)

    def check_batch(self, x):
        if x.shape[0] < 2:
            raise ValueError("train mode needs a batch of at least two examples")

    def scale_shift(self, x, mean, var):
        return (x - mean) / np.sqrt(var + self.eps) * self.gamma + self.beta

    def forward_train(self, x):
        self.check_batch(x)
        out = self.scale_shift(x, *self.batch_statistics(x))
        self.update(x)
        return out

    def forward_eval(self, x):
        return self.scale_shift(x, self.running_mean, self.running_var)

    def __call__(self, x):
        return self.forward_train(x) if self.training else self.forward_eval(x)


@mutant("BatchNorm1d", "updates-in-eval")
class UpdatesInEval(StudentBatchNorm1d):
    def forward_eval(self, x):
        out = super().forward_eval(x)
        self.update(x)
        return out


@mutant("BatchNorm1d", "updates-in-eval")
class UpdatesBeforeCheckingTheMode(StudentBatchNorm1d):
    """The update sits at the top of __call__, so it also runs (first) in eval mode."""

    def __call__(self, x):
        if self.training:
            self.check_batch(x)
        statistics = self.batch_statistics(x)
        self.update(x)
        return self.scale_shift(x, *statistics) if self.training else self.forward_eval(x)


@mutant("BatchNorm1d", "no-update-in-train")
class NeverUpdates(StudentBatchNorm1d):
    def update(self, x):
        pass


@mutant("BatchNorm1d", "updates-before-normalizing")
class UpdatesFirst(StudentBatchNorm1d):
    def forward_train(self, x):
        self.check_batch(x)
        self.update(x)
        return self.forward_eval(x)


@mutant("BatchNorm1d", "batch-stats-in-eval")
class BatchStatisticsInEval(StudentBatchNorm1d):
    def forward_eval(self, x):
        return self.scale_shift(x, *self.batch_statistics(x))


@mutant("BatchNorm1d", "momentum-convention-flipped")
class KerasMomentum(StudentBatchNorm1d):
    def weight_of_new(self):
        return 1 - self.momentum


@mutant("BatchNorm1d", "running-var-biased")
class BiasedRunningVar(StudentBatchNorm1d):
    def running_update_var(self, x):
        return self.batch_statistics(x)[1][0]


@mutant("BatchNorm1d", "no-error-for-batch-of-one")
class AcceptsBatchOfOne(StudentBatchNorm1d):
    def check_batch(self, x):
        pass


@mutant("BatchNorm1d", "running-var-starts-at-zero")
class RunningVarFromZero(StudentBatchNorm1d):
    def initial_running_var(self, num_features):
        return np.zeros(num_features)


@mutant("BatchNorm1d", "modifies-input")
class CentresInPlace(StudentBatchNorm1d):
    def forward_train(self, x):
        self.check_batch(x)
        mean, var = self.batch_statistics(x)
        self.update(x)
        x -= mean
        return x / np.sqrt(var + self.eps) * self.gamma + self.beta


@mutant("BatchNorm1d", "calls-course-reference")
class EvalByCourseAnswer(StudentBatchNorm1d):
    def forward_eval(self, x):
        return course_answers.batchnorm_eval(x, self.running_mean, self.running_var,
                                             self.gamma, self.beta, self.eps)


@mutant("BatchNorm1d", "uses-builtin-batchnorm")
class WrapsTorchModule:
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.module = torch.nn.BatchNorm1d(num_features, eps=eps, momentum=momentum,
                                           dtype=torch.float64)
        self.eps, self.momentum = eps, momentum
        self.gamma, self.beta = np.ones(num_features), np.zeros(num_features)

    @property
    def training(self):
        return self.module.training

    @property
    def running_mean(self):
        return self.module.running_mean.numpy().copy()

    @property
    def running_var(self):
        return self.module.running_var.numpy().copy()

    def train(self):
        self.module.train()

    def eval(self):
        self.module.eval()

    def __call__(self, x):
        with torch.no_grad():
            self.module.weight.copy_(as_tensor(self.gamma))
            self.module.bias.copy_(as_tensor(self.beta))
            return self.module(as_tensor(x).double()).numpy().astype(x.dtype)


# --- keras_to_torch_momentum ------------------------------------------------

@mutant("keras_to_torch_momentum", "keras-momentum-not-converted")
def keras_as_is(m):
    return float(m)


@mutant("keras_to_torch_momentum", "keras-conversion-sign-flipped")
def keras_negated(m):
    return -(1 - m)


@mutant("keras_to_torch_momentum", "calls-course-reference")
def keras_by_course_answer(m):
    return course_answers.keras_to_torch_momentum(m)


# --- batchnorm_backward (staged, one node at a time) and _compact --------------

def staged_backward(dout, x, gamma, eps, *, ddof=0, keep_gamma=True, paths=("mean", "var"),
                    dgamma_factor="x_hat", reduce_axis=0):
    """A node-by-node backward written for these tests, with one switch per mistake."""
    n = x.shape[0]
    mu = np.mean(x, axis=0, keepdims=True)
    xc = x - mu
    var = np.sum(xc ** 2, axis=0, keepdims=True) / (n - ddof)
    std = np.sqrt(var + eps)
    x_hat = xc / std
    dx_hat = dout * gamma if keep_gamma else dout
    dxc = dx_hat / std
    if "var" in paths:
        dvar = np.sum(dx_hat * xc, axis=0, keepdims=True) * -0.5 / std ** 3
        dxc = dxc + dvar * 2 * xc / n
    dx = dxc - np.mean(dxc, axis=0, keepdims=True) if "mean" in paths else dxc
    factor = x_hat if dgamma_factor == "x_hat" else x
    return dx, np.sum(dout * factor, axis=reduce_axis), np.sum(dout, axis=reduce_axis)


@mutant("batchnorm_backward", "dbeta-dgamma-sum-wrong-axis")
def backward_sums_over_features(dout, x, gamma, eps=1e-5):
    return staged_backward(dout, x, gamma, eps, reduce_axis=1)


@mutant("batchnorm_backward", "dbeta-sum-wrong-axis")
def backward_dbeta_over_features(dout, x, gamma, eps=1e-5):
    dx, dgamma, _ = staged_backward(dout, x, gamma, eps)
    return dx, dgamma, dout.sum(axis=1)


@mutant("batchnorm_backward", "dgamma-sum-wrong-axis")
def backward_dgamma_over_features(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = staged_backward(dout, x, gamma, eps)
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return dx, np.einsum("nd,nd->n", dout, x_hat), dbeta


@mutant("batchnorm_backward", "dgamma-uses-x-not-xhat")
def backward_dgamma_from_x(dout, x, gamma, eps=1e-5):
    return staged_backward(dout, x, gamma, eps, dgamma_factor="x")


@mutant("batchnorm_backward", "dx-missing-mean-terms")
def backward_statistics_as_constants(dout, x, gamma, eps=1e-5):
    return staged_backward(dout, x, gamma, eps, paths=())


@mutant("batchnorm_backward", "dx-only-right-for-ones-dout")
def backward_without_variance_path(dout, x, gamma, eps=1e-5):
    return staged_backward(dout, x, gamma, eps, paths=("mean",))


@mutant("batchnorm_backward", "dx-forgot-gamma")
def backward_without_gamma(dout, x, gamma, eps=1e-5):
    return staged_backward(dout, x, gamma, eps, keep_gamma=False)


@mutant("batchnorm_backward", "unbiased-variance")
def backward_unbiased_forward_pass(dout, x, gamma, eps=1e-5):
    # N - 1 in the forward statistics only; the variance path still divides by N.
    return staged_backward(dout, x, gamma, eps, ddof=1)


@mutant("batchnorm_backward", "unbiased-variance")
def backward_autograd_unbiased(dout, x, gamma, eps=1e-5):
    # The exact gradient of a forward pass that uses torch.var's default (N - 1):
    # a student who lets autograd differentiate the unbiased forward gets this.
    return autograd_backward(dout, x, gamma, eps, forward=lambda t: t.var(0))


def autograd_backward(dout, x, gamma, eps, forward=None, detach_mean=False, detach_var=False):
    """Gradients from torch autograd of gamma * x_hat + beta, on NumPy input."""
    t = as_tensor(x).clone().requires_grad_(True)
    g = as_tensor(gamma).clone().requires_grad_(True)
    b = torch.zeros_like(g, requires_grad=True)
    mean = t.mean(0)
    var = forward(t) if forward else t.var(0, correction=0)
    mean = mean.detach() if detach_mean else mean
    var = var.detach() if detach_var else var
    out = g * (t - mean) / torch.sqrt(var + eps) + b
    out.backward(as_tensor(dout))
    return t.grad.numpy(), g.grad.numpy(), b.grad.numpy()


@mutant("batchnorm_backward_compact", "dgamma-sum-wrong-axis")
def compact_dgamma_over_features(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = autograd_backward(dout, x, gamma, eps)
    x_hat = student_x_hat(x, eps)
    return dx, (dout * x_hat).sum(axis=1), dbeta


@mutant("batchnorm_backward_compact", "dbeta-sum-wrong-axis")
def compact_dbeta_over_features(dout, x, gamma, eps=1e-5):
    dx, dgamma, _ = autograd_backward(dout, x, gamma, eps)
    return dx, dgamma, np.add.reduce(dout, axis=1)


@mutant("batchnorm_backward_compact", "dbeta-dgamma-sum-wrong-axis")
def compact_sums_over_features(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    x_hat = student_x_hat(x, eps)
    dx = gamma / np.sqrt(x.var(0) + eps) * (
        dout - dout.mean(0) - x_hat * np.einsum("nd,nd->d", dout, x_hat) / n)
    return dx, np.einsum("nd,nd->n", dout, x_hat), np.einsum("nd->n", dout)


@mutant("batchnorm_backward_compact", "dgamma-uses-x-not-xhat")
def compact_dgamma_from_x(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = autograd_backward(dout, x, gamma, eps)
    return dx, np.einsum("nd,nd->d", dout, x), dbeta


@mutant("batchnorm_backward_compact", "dx-missing-mean-terms")
def compact_autograd_detached_statistics(dout, x, gamma, eps=1e-5):
    return autograd_backward(dout, x, gamma, eps, detach_mean=True, detach_var=True)


@mutant("batchnorm_backward_compact", "dx-only-right-for-ones-dout")
def compact_autograd_detached_variance(dout, x, gamma, eps=1e-5):
    return autograd_backward(dout, x, gamma, eps, detach_var=True)


@mutant("batchnorm_backward_compact", "dx-forgot-gamma")
def compact_without_gamma(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    x_hat = student_x_hat(x, eps)
    dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
    dx = (n * dout - dbeta - x_hat * dgamma) / (n * np.sqrt(x.var(0) + eps))
    return dx, dgamma, dbeta


@mutant("batchnorm_backward_compact", "unbiased-variance")
def compact_unbiased(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    x_hat = student_x_hat(x, eps, ddof=1)
    dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
    inv_std = 1 / np.sqrt(np.var(x, axis=0, ddof=1) + eps)
    return gamma * inv_std * (dout - dbeta / n - x_hat * dgamma / n), dgamma, dbeta


@mutant("batchnorm_backward_compact", "calls-course-reference")
def compact_by_course_staged_answer(dout, x, gamma, eps=1e-5):
    return course_answers.batchnorm_backward(dout, x, gamma, eps)


@mutant("batchnorm_backward", "modifies-input")
def backward_scales_dout_in_place(dout, x, gamma, eps=1e-5):
    x_hat = student_x_hat(x, eps)
    dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
    dout *= gamma  # dx_hat, written over dout
    dx = (dout - dout.mean(0) - x_hat * (dout * x_hat).mean(0)) / np.sqrt(x.var(0) + eps)
    return dx, dgamma, dbeta


# --- batchnorm2d_forward ----------------------------------------------------

def per_channel(v):
    return v[np.newaxis, :, np.newaxis, np.newaxis]


@mutant("batchnorm2d_forward", "stats-over-hw-only")
def forward2d_instance_norm_loops(x, gamma, beta, eps=1e-5):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = x[i, c]
            out[i, c] = gamma[c] * (plane - plane.mean()) / np.sqrt(plane.var() + eps) + beta[c]
    return out


@mutant("batchnorm2d_forward", "stats-over-n-only")
def forward2d_over_batch_axis(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return per_channel(gamma) * x_hat + per_channel(beta)


@mutant("batchnorm2d_forward", "stats-per-example")
def forward2d_per_example_flattened(x, gamma, beta, eps=1e-5):
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(axis=1)[:, None, None, None]
    var = flat.var(axis=1)[:, None, None, None]
    return per_channel(gamma) * (x - mean) / np.sqrt(var + eps) + per_channel(beta)


@mutant("batchnorm2d_forward", "unbiased-variance")
def forward2d_channels_last_ddof_one(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    rows = np.moveaxis(x, 1, -1).reshape(-1, c)
    out = gamma * (rows - rows.mean(0)) / np.sqrt(rows.var(0, ddof=1) + eps) + beta
    return np.moveaxis(out.reshape(n, h, w, c), -1, 1)


@mutant("batchnorm2d_forward", "unbiased-variance")
def forward2d_torch_var(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    var = t.var(dim=(0, 2, 3), keepdim=True)
    out = (t - t.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(var + eps)
    return (out * as_tensor(per_channel(gamma)) + as_tensor(per_channel(beta))).numpy()


@mutant("batchnorm2d_forward", "modifies-input")
def forward2d_centres_in_place(x, gamma, beta, eps=1e-5):
    x -= x.mean(axis=(0, 2, 3), keepdims=True)
    return per_channel(gamma) * x / np.sqrt((x ** 2).mean(axis=(0, 2, 3), keepdims=True) + eps) \
        + per_channel(beta)


@mutant("batchnorm2d_forward", "uses-builtin-batchnorm")
def forward2d_with_functional_batch_norm(x, gamma, beta, eps=1e-5):
    return F.batch_norm(as_tensor(x), None, None, as_tensor(gamma), as_tensor(beta),
                        training=True, eps=eps).numpy()


# --- layernorm_forward, groupnorm_forward, fold_batchnorm --------------------

def like_channels(v, x):
    """A per-feature / per-channel vector shaped to broadcast against x."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


@mutant("layernorm_forward", "layernorm-over-batch-axis")
def layernorm_over_batch(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=0)
    var = np.mean((x - mu) ** 2, axis=0)
    return like_channels(gamma, x) * (x - mu) / np.sqrt(var + eps) + like_channels(beta, x)


@mutant("layernorm_forward", "layernorm-over-channels-only")
def layernorm_over_axis_one(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


@mutant("layernorm_forward", "unbiased-variance")
def layernorm_flattened_ddof_one(x, gamma, beta, eps=1e-5):
    flat = x.reshape(len(x), -1)
    mean = flat.mean(axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
    var = flat.var(axis=1, ddof=1).reshape((-1,) + (1,) * (x.ndim - 1))
    return like_channels(gamma, x) * (x - mean) / np.sqrt(var + eps) + like_channels(beta, x)


@mutant("layernorm_forward", "eps-outside-sqrt")
def layernorm_eps_on_std(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    dims = tuple(range(1, x.ndim))
    x_hat = (t - t.mean(dims, keepdim=True)) / (t.std(dims, keepdim=True, correction=0) + eps)
    return (x_hat * as_tensor(like_channels(gamma, x)) + as_tensor(like_channels(beta, x))).numpy()


@mutant("groupnorm_forward", "wrong-group-axis")
def groupnorm_every_gth_channel(x, gamma, beta, num_groups, eps=1e-5):
    n, c = x.shape[:2]
    interleaved = x.reshape(n, c // num_groups, num_groups, -1)
    mean = interleaved.mean(axis=(1, 3), keepdims=True)
    var = interleaved.var(axis=(1, 3), keepdims=True)
    x_hat = ((interleaved - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


@mutant("groupnorm_forward", "groups-over-batch")
def groupnorm_blocks_over_whole_batch(x, gamma, beta, num_groups, eps=1e-5):
    size = x.shape[1] // num_groups
    out = np.empty_like(x)
    for g in range(num_groups):
        block = x[:, g * size:(g + 1) * size]
        out[:, g * size:(g + 1) * size] = (block - block.mean()) / np.sqrt(block.var() + eps)
    return out * like_channels(gamma, x) + like_channels(beta, x)


@mutant("groupnorm_forward", "unbiased-variance")
def groupnorm_torch_default_var(x, gamma, beta, num_groups, eps=1e-5):
    t = as_tensor(x).reshape(x.shape[0], num_groups, -1)
    x_hat = ((t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, keepdim=True) + eps)).numpy()
    return x_hat.reshape(x.shape) * like_channels(gamma, x) + like_channels(beta, x)


@mutant("layernorm_forward", "calls-course-reference")
def layernorm_as_one_course_group(x, gamma, beta, eps=1e-5):
    return course_answers.groupnorm_forward(x, gamma, beta, num_groups=1, eps=eps)


@mutant("groupnorm_forward", "modifies-input")
def groupnorm_centres_a_view_of_x(x, gamma, beta, num_groups, eps=1e-5):
    groups = x.reshape(x.shape[0], num_groups, -1)  # a view: writing to it writes to x
    groups -= groups.mean(axis=-1, keepdims=True)
    x_hat = (groups / np.sqrt((groups ** 2).mean(axis=-1, keepdims=True) + eps)).reshape(x.shape)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


def fold_scaled_weight(conv_weight, scale):
    return np.einsum("o...,o->o...", conv_weight, scale)


@mutant("fold_batchnorm", "fold-forgot-eps")
def fold_without_eps(conv_weight, conv_bias, bn):
    scale = bn.weight * bn.running_var ** -0.5
    bias = np.zeros_like(scale) if conv_bias is None else conv_bias
    return fold_scaled_weight(conv_weight, scale), scale * (bias - bn.running_mean) + bn.bias


@mutant("fold_batchnorm", "fold-bias-without-mean-shift")
def fold_bias_scaled_only(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var + bn.eps)
    bias = 0.0 if conv_bias is None else conv_bias
    return fold_scaled_weight(conv_weight, scale), bn.bias + bias * scale


@mutant("fold_batchnorm", "fold-ignores-conv-bias")
def fold_drops_conv_bias(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var + bn.eps)
    return fold_scaled_weight(conv_weight, scale), bn.bias - bn.running_mean * scale


@mutant("fold_batchnorm", "fold-var-instead-of-std")
def fold_divides_by_variance(conv_weight, conv_bias, bn):
    scale = np.divide(bn.weight, bn.running_var + bn.eps)
    bias = 0.0 if conv_bias is None else conv_bias
    weight = conv_weight * scale[(slice(None),) + (np.newaxis,) * (conv_weight.ndim - 1)]
    return weight, (bias - bn.running_mean) * scale + bn.bias


# --- BatchNorm2d (a torch module) -------------------------------------------

def channel_view(v):
    return v.view(1, -1, 1, 1)


class StudentBatchNorm2d(torch.nn.Module):
    """A correct from-scratch module (lerp_ updates, buffers registered in a loop); each
    mutant below overrides one method (test_student_module_is_correct keeps it honest)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = torch.nn.Parameter(torch.ones(num_features))
        self.bias = torch.nn.Parameter(torch.zeros(num_features))
        self.keep_state(running_mean=torch.zeros(num_features),
                        running_var=torch.ones(num_features),
                        num_batches_tracked=torch.tensor(0, dtype=torch.long))

    def keep_state(self, **tensors):
        for name, value in tensors.items():
            self.register_buffer(name, value)

    def normalizing_statistics(self, x):
        var, mean = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, correction=0)
        return mean, var

    def running_weight(self):
        return self.momentum

    def running_update_var(self, x):
        return x.var(dim=(0, 2, 3))  # torch's default: unbiased

    @torch.no_grad()
    def update(self, x):
        weight = self.running_weight()
        self.running_mean.lerp_(x.mean(dim=(0, 2, 3)), weight)
        self.running_var.lerp_(self.running_update_var(x), weight)
        self.count_batch()

    def count_batch(self):
        self.num_batches_tracked += 1

    def forward_eval(self, x):
        return self.scale_shift(x, channel_view(self.running_mean), channel_view(self.running_var))

    def scale_shift(self, x, mean, var):
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)
        return x_hat * channel_view(self.weight) + channel_view(self.bias)

    def forward(self, x):
        if not self.training:
            return self.forward_eval(x)
        out = self.scale_shift(x, *self.normalizing_statistics(x))
        self.update(x)
        return out


@mutant("BatchNorm2d", "momentum-convention-flipped")
class ModuleKerasMomentum(StudentBatchNorm2d):
    def running_weight(self):
        return 1.0 - self.momentum


@mutant("BatchNorm2d", "running-var-biased")
class ModuleBiasedRunningVar(StudentBatchNorm2d):
    def running_update_var(self, x):
        return x.var(dim=(0, 2, 3), unbiased=False)


@mutant("BatchNorm2d", "updates-in-eval")
class ModuleUpdatesInEval(StudentBatchNorm2d):
    def forward_eval(self, x):
        out = super().forward_eval(x)
        self.update(x)
        return out


@mutant("BatchNorm2d", "batch-stats-in-eval")
class ModuleBatchStatisticsInEval(StudentBatchNorm2d):
    def forward_eval(self, x):
        return self.scale_shift(x, *self.normalizing_statistics(x))


@mutant("BatchNorm2d", "stats-over-hw-only")
class ModuleInstanceStatistics(StudentBatchNorm2d):
    def normalizing_statistics(self, x):
        flat = x.flatten(2)
        return flat.mean(-1)[..., None, None], flat.var(-1, unbiased=False)[..., None, None]


@mutant("BatchNorm2d", "num-batches-not-tracked")
class ModuleForgetsBatchCount(StudentBatchNorm2d):
    def count_batch(self):
        pass


@mutant("BatchNorm2d", "buffers-not-registered")
class ModulePlainAttributes(StudentBatchNorm2d):
    def keep_state(self, **tensors):
        self.__dict__.update(tensors)


@mutant("BatchNorm2d", "uses-builtin-batchnorm")
class ModuleFunctionalBatchNorm(StudentBatchNorm2d):
    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)


@mutant("BatchNorm2d", "uses-builtin-batchnorm")
class ModuleSubclassesTorch(torch.nn.BatchNorm2d):
    pass


@mutant("BatchNorm2d", "calls-course-reference")
class ModuleSubclassesCourseAnswer(course_torch_answers.BatchNorm2d):
    pass


# --- notebook 07: reading training histories ---------------------------------

@mutant("steps_to_reach", "returns-index")
def steps_position(steps, accuracy, target):
    for t, value in enumerate(accuracy):
        if value >= target:
            return t
    raise ValueError("not reached")


@mutant("steps_to_reach", "index-times-interval")
def steps_from_spacing(steps, accuracy, target):
    hits = [t for t, value in enumerate(accuracy) if value >= target]
    if not hits:
        raise ValueError("not reached")
    spacing = steps[1] - steps[0] if len(steps) > 1 else 0
    return hits[0] * spacing


@mutant("steps_to_reach", "strict-inequality")
def steps_strictly_above(steps, accuracy, target):
    for step, value in zip(steps, accuracy):
        if value > target:
            return step
    raise ValueError("not reached")


@mutant("steps_to_reach", "stays-above")
def steps_for_good(steps, accuracy, target):
    answer = None
    for step, value in zip(steps, accuracy):
        if value < target:
            answer = None
        elif answer is None:
            answer = step
    if answer is None:
        raise ValueError("not reached")
    return answer


@mutant("steps_to_reach", "no-error-when-never-reached")
def steps_index_error(steps, accuracy, target):
    return np.asarray(steps)[np.asarray(accuracy) >= target][0]


@mutant("percentile_trace", "axis-0-vs-1")
def percentiles_over_time(values, q):
    return np.stack([np.percentile(values[:, :], p, axis=0) for p in q], axis=1)


@mutant("percentile_trace", "transposed-output")
def percentiles_one_row_per_q(values, q):
    return np.array([[np.percentile(row, p) for row in values] for p in q])


@mutant("percentile_trace", "no-axis")
def percentiles_of_everything(values, q):
    return np.percentile(values.ravel(), q)


@mutant("percentile_trace", "fraction-not-percent")
def percentiles_as_fractions(values, q):
    return np.quantile(values, np.asarray(q) / 10000, axis=1).T


@mutant("percentile_trace", "rank-rounded-down")
def percentiles_rank_floor(values, q):
    ordered = np.sort(values, axis=1)
    ranks = np.floor(np.asarray(q) / 100 * (values.shape[1] - 1)).astype(int)
    return ordered[:, ranks]


@mutant("percentile_trace", "rank-from-n")
def percentiles_rank_of_n(values, q):
    ordered = np.sort(values, axis=1)
    n = values.shape[1]
    return np.stack([ordered[:, min(int(p * n / 100), n - 1)] for p in q], axis=1)


@mutant("percentile_trace", "modifies-input")
def percentiles_sorting_in_place(values, q):
    values.sort(axis=1)
    n = values.shape[1]
    positions = np.asarray(q) / 100 * (n - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, n - 1)
    weight = positions - low
    return values[:, low] * (1 - weight) + values[:, high] * weight


# --- notebook 08: ghost batch norm, re-estimated statistics, diagnosis ---

@mutant("ghost_batchnorm_forward", "ghost-stats-over-whole-batch")
def ghost_plain_batchnorm(x, gamma, beta, virtual_batch_size, eps=1e-5):
    return gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + beta


@mutant("ghost_batchnorm_forward", "ghost-strided-virtual-batches")
def ghost_by_step_slicing(x, gamma, beta, virtual_batch_size, eps=1e-5):
    pieces = int(np.ceil(len(x) / virtual_batch_size))
    out = np.zeros_like(x)
    for j in range(pieces):
        chunk = x[j::pieces]
        out[j::pieces] = gamma * (chunk - chunk.mean(0)) / np.sqrt(chunk.var(0) + eps) + beta
    return out


@mutant("ghost_batchnorm_forward", "ghost-size-read-as-count")
def ghost_array_split(x, gamma, beta, virtual_batch_size, eps=1e-5):
    chunks = np.array_split(x, virtual_batch_size)
    return np.concatenate([gamma * (c - c.mean(0)) / np.sqrt(c.var(0) + eps) + beta
                           for c in chunks if len(c)])


@mutant("ghost_batchnorm_forward", "unbiased-variance")
def ghost_ddof_one(x, gamma, beta, virtual_batch_size, eps=1e-5):
    out = []
    for start in range(0, len(x), virtual_batch_size):
        c = x[start:start + virtual_batch_size]
        out.append(gamma * (c - c.mean(0)) / np.sqrt(c.std(0, ddof=1) ** 2 + eps) + beta)
    return np.vstack(out)


@mutant("recompute_running_stats", "recompute-with-momentum")
def recompute_ema_loop(batches):
    mean, var = 0, 1
    for x in batches:
        mean = 0.9 * mean + 0.1 * np.mean(x, axis=0)
        var = 0.9 * var + 0.1 * np.var(x, axis=0, ddof=1)
    return mean, var


@mutant("recompute_running_stats", "running-var-biased")
def recompute_biased(batches):
    stats = [(x.mean(0), ((x - x.mean(0)) ** 2).mean(0)) for x in batches]
    return sum(m for m, _ in stats) / len(stats), sum(v for _, v in stats) / len(stats)


@mutant("recompute_running_stats", "counts-initial-values")
def recompute_cumulative_from_reset(batches):
    mean, var = 0.0, 1.0
    for k, x in enumerate(batches, start=2):  # the reset values count as batch 1
        mean += (x.mean(0) - mean) / k
        var += (x.var(0, ddof=1) - var) / k
    return mean, var


@mutant("recompute_running_stats", "pools-all-examples")
def recompute_pooled(batches):
    x = np.vstack(batches)
    return x.mean(0), x.var(0, ddof=1)


@mutant("recompute_running_stats", "last-batch-only")
def recompute_last(batches):
    for x in batches:
        mean, var = x.mean(0), x.var(0, ddof=1)
    return mean, var


@mutant("recompute_running_stats", "modifies-input")
def recompute_in_place(batches):
    means, variances = [], []
    for x in batches:
        means.append(x.mean(0))
        x -= means[-1]  # changes the caller's arrays
        variances.append((x ** 2).sum(0) / (len(x) - 1))
    return np.mean(means, 0), np.mean(variances, 0)


def diagnose_blaming(answer):
    """A student who reads every case file the same way (a dict, unlike _always)."""
    cases = dict.fromkeys("ABCD", answer)
    return lambda case: cases[case]


MUTANTS += [("diagnose_bn_bug", mistake_id, diagnose_blaming(answer))
            for answer, mistake_id in WRONG_DIAGNOSIS.items()]


# --- the tests --------------------------------------------------------------

def test_every_catalogue_entry_has_a_mutant():
    covered = {(exercise, mistake_id) for exercise, mistake_id, _ in MUTANTS}
    missing = {(m.exercise, m.id) for m in CATALOGUE} - covered
    assert not missing, f"catalogue entries without a mutant here: {sorted(missing)}"


def test_detected_mistakes_are_made_in_several_exercises():
    for mistake_id in DETECTED:
        exercises = {exercise for exercise, i, _ in MUTANTS if i == mistake_id}
        assert len(exercises) >= 3, (mistake_id, exercises)


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS,
                         ids=[f"{e}-{i}-{impl.__name__}" for e, i, impl in MUTANTS])
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    known = mistake_named(exercise, mistake_id)
    assert implementation is not known.variant
    result = check(exercise, implementation)
    assert not result.passed
    assert result.mistake == mistake_id, result.message
    assert known.diagnosis in result.message
    assert known.hint in result.message


@pytest.mark.parametrize("exercise, base", [("BatchNorm1d", StudentBatchNorm1d),
                                            ("BatchNorm2d", StudentBatchNorm2d)])
def test_student_class_that_mutants_override_is_correct(exercise, base):
    result = check(exercise, base)
    assert result.passed, result.message


@pytest.mark.parametrize("mistake", CATALOGUE, ids=[f"{m.exercise}-{m.id}" for m in CATALOGUE])
def test_catalogue_variant_is_diagnosed_as_itself(mistake):
    result = check(mistake.exercise, mistake.variant)
    assert not result.passed
    assert result.mistake == mistake.id, result.message


# --- the catalogue's variants are far apart ---------------------------------

# Two implementations count as different when some output on some hidden case differs by
# at least this relative error: far above both tolerances (1e-6 float64, 1e-4 float32),
# so that a student's rounding cannot make one variant pass for another.
DISTINCT = 1e-2
MATCHED = [m for m in CATALOGUE if m.id not in DETECTED]


def outputs_on_every_case(exercise, implementation):
    with np.errstate(all="ignore"):
        return [case.play(implementation) for group in GROUPS for case in exercise.cases(group)]


def output_distance(a, b):
    """Relative error between two outputs; inf when they differ in kind, shape or NaN/inf."""
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return 0.0 if type(a) is type(b) and a == b else math.inf
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == b.size and a.shape != b.shape and 1 in a.shape + b.shape:
        a = a.reshape(b.shape)  # (1, D) and (D,) stand for the same statistic
    if a.shape != b.shape:
        return math.inf
    finite = np.isfinite(a)
    if not np.array_equal(finite, np.isfinite(b)) or not np.array_equal(
            a[~finite], b[~finite], equal_nan=True):
        return math.inf
    return relative_error(a[finite], b[finite])


def distance(played_a, played_b):
    return max(output_distance(value_a, value_b)
               for outputs_a, outputs_b in zip(played_a, played_b)
               for (_, value_a), (_, value_b) in zip(outputs_a, outputs_b))


@pytest.mark.parametrize("exercise_name", sorted({m.exercise for m in MATCHED}))
def test_variants_are_pairwise_distinct_and_differ_from_the_reference(exercise_name):
    exercise = EXERCISES[exercise_name]
    played = {"reference": outputs_on_every_case(exercise, exercise.reference)}
    for mistake in MATCHED:
        if mistake.exercise != exercise_name:
            continue
        try:
            played[mistake.id] = outputs_on_every_case(exercise, mistake.variant)
        except CandidateProblem as problem:
            # Named by the case before any output is compared (a module whose buffers
            # are plain attributes): no output to confuse with another variant's.
            if problem.mistake != mistake.id:
                raise
    names = list(played)
    distances = {(a, b): distance(played[a], played[b])
                 for i, a in enumerate(names) for b in names[i + 1:]}
    too_close = {pair: d for pair, d in distances.items() if d < DISTINCT}
    assert not too_close, too_close
