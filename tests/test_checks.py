"""The checkers: correct answers pass however they are written, and anything else a
student can hand in (exceptions, wrong types and shapes, NaN, endless loops, sys.exit,
modified inputs, hard-coded answers, random junk) fails with a message that says what
is wrong, without the checker itself ever raising or writing to stderr.

Wrong answers that the catalogue names are tested in test_mistakes.py.
"""

import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bn_course
from bn_course.checks import (EXERCISES, GROUPS, NOTEBOOK_EXERCISES, CheckResult, Progress,
                              check, grade)

CORRECT = []  # (exercise, implementation)


def correct(exercise):
    """Register the decorated function or class as a right answer to exercise."""

    def register(implementation):
        CORRECT.append((exercise, implementation))
        return implementation

    return register


def as_tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def run_python(code, timeout=120):
    """Run code in a fresh interpreter (clean imports, clean hidden cases); its stdout."""
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                               capture_output=True, text=True, timeout=timeout, check=False)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


# --- 01 ---------------------------------------------------------------------

@correct("batch_mean")
def mean_method(x):
    return x.mean(axis=0)


@correct("batch_mean")
def mean_keepdims(x):
    return np.mean(x, axis=0, keepdims=True)  # (1, D) is allowed


@correct("batch_mean")
def mean_einsum(x):
    return np.einsum("nd->d", x) / x.shape[0]


@correct("batch_mean")
def mean_loop_over_features(x):
    return np.array([x[:, j].sum() / len(x) for j in range(x.shape[1])], dtype=x.dtype)


@correct("batch_mean")
def mean_with_torch(x):
    return torch.from_numpy(x).mean(dim=0).numpy()


@correct("batch_var")
def var_numpy(x):
    return np.var(x, axis=0)


@correct("batch_var")
def var_two_pass_keepdims(x):
    centred = x - x.mean(axis=0, keepdims=True)
    return (centred ** 2).sum(axis=0, keepdims=True) / x.shape[0]


@correct("batch_var")
def var_einsum_in_input_dtype(x):
    centred = x - x.mean(axis=0, dtype=x.dtype)
    return np.einsum("nd,nd->d", centred, centred) / x.dtype.type(len(x))


@correct("batch_var")
def var_with_torch(x):
    return torch.var(as_tensor(x), dim=0, unbiased=False).numpy()


# Written the ways students write them (tests/test_mutants_nb01.py makes the mistakes).

@correct("batch_mean")
def mean_first_time_torch_import(x):
    import torch  # a first import inside the answer is not a call to batch norm
    return torch.as_tensor(x).mean(dim=0).numpy()


@correct("batch_mean")
def mean_by_matmul(x):
    return np.ones(len(x), dtype=x.dtype) @ x / x.dtype.type(len(x))


@correct("batch_mean")
def mean_statistics_fmean(x):
    import statistics
    return np.array([statistics.fmean(column) for column in x.T])


@correct("batch_var")
def var_square_of_std(x):
    return np.std(x, axis=0) ** 2


@correct("batch_var")
def var_keepdims_in_input_dtype(x):
    centred = x - x.mean(axis=0, keepdims=True)
    return (centred * centred).mean(axis=0, keepdims=True, dtype=x.dtype)


@correct("batch_var")
def var_in_place_on_a_copy(x):
    centred = x.copy()
    centred -= centred.mean(axis=0)
    centred **= 2
    return centred.mean(axis=0)


@correct("batch_var")
def var_welford_loop(x):
    # Welford's one-pass update is stable: no cancellation at 1e6 offsets.
    mean, m2 = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for k, row in enumerate(x, start=1):
        delta = row - mean
        mean += delta / k
        m2 += delta * (row - mean)
    return m2 / len(x)


@correct("batch_var")
def var_statistics_pvariance(x):
    import statistics
    return np.array([statistics.pvariance(column) for column in x.T.tolist()])


@correct("batch_var")
def var_first_time_torch_import(x):
    import torch
    return torch.var(torch.from_numpy(x), dim=0, correction=0).numpy()


@correct("batch_var")
def var_covariance_diagonal(x):
    return np.diagonal(np.atleast_2d(np.cov(x, rowvar=False, bias=True))).copy()


# --- 02, 03 -----------------------------------------------------------------

@correct("normalize")
def normalize_broadcast(x, mean, var, eps=1e-5):
    return (x - mean) / np.sqrt(var + eps)


@correct("normalize")
def normalize_row_vectors(x, mean, var, eps=1e-5):
    return (x - mean.reshape(1, -1)) * (var.reshape(1, -1) + eps) ** -0.5


@correct("normalize")
def normalize_float32_eps(x, mean, var, eps=1e-5):
    return np.divide(x - mean, np.sqrt(var + x.dtype.type(eps)))


@correct("normalize")
def normalize_with_torch(x, mean, var, eps=1e-5):
    return ((as_tensor(x) - as_tensor(mean)) * torch.rsqrt(as_tensor(var) + eps)).numpy()


@correct("normalize")
def normalize_in_place_on_a_copy(x, mean, var, eps=1e-5):
    out = x.astype(x.dtype, copy=True)
    out -= mean
    out /= np.sqrt(var + eps)
    return out


@correct("normalize")
def normalize_loop_over_features(x, mean, var, eps=1e-5):
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        out[:, j] = (x[:, j] - mean[j]) / np.sqrt(var[j] + eps)
    return out


@correct("normalize")
def normalize_first_time_torch_import(x, mean, var, eps=1e-5):
    import torch
    t = torch.from_numpy(np.ascontiguousarray(x))
    return ((t - torch.from_numpy(mean)) * torch.rsqrt(torch.from_numpy(var) + eps)).numpy()


@correct("normalize")
def normalize_einsum_reciprocal(x, mean, var, eps=1e-5):
    return np.einsum("nd,d->nd", x - mean[None, :], 1.0 / np.sqrt(var + eps))


@correct("batchnorm_forward")
def forward_numpy(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)
    return gamma * x_hat + beta


@correct("batchnorm_forward")
def forward_keepdims_einsum(x, gamma, beta, eps=1e-5):
    centred = x - x.mean(axis=0, keepdims=True)
    var = np.einsum("nd,nd->d", centred, centred)[np.newaxis] / len(x)
    return np.einsum("nd,d->nd", centred / np.sqrt(var + eps), gamma) + beta[np.newaxis]


@correct("batchnorm_forward")
def forward_loop_over_features(x, gamma, beta, eps=1e-5):
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        column = x[:, j]
        out[:, j] = gamma[j] * (column - column.mean()) / np.sqrt(column.var() + eps) + beta[j]
    return out


@correct("batchnorm_forward")
def forward_with_torch_ops(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    var, mean = torch.var_mean(t, dim=0, correction=0)
    return torch.addcmul(as_tensor(beta), (t - mean) / torch.sqrt(var + eps),
                         as_tensor(gamma)).numpy()


@correct("batchnorm_forward")
def forward_staged_like_cs231n(x, gamma, beta, eps=1e-5):
    n = x.shape[0]
    mu = 1.0 / n * np.sum(x, axis=0)
    xmu = x - mu
    var = 1.0 / n * np.sum(xmu ** 2, axis=0)
    ivar = 1.0 / np.sqrt(var + eps)
    return gamma * (xmu * ivar) + beta


@correct("batchnorm_forward")
def forward_first_time_torch_import(x, gamma, beta, eps=1e-5):
    import torch
    t = torch.from_numpy(np.ascontiguousarray(x))
    var, mean = torch.var_mean(t, dim=0, keepdim=True, correction=0)
    x_hat = (t - mean) / torch.sqrt(var + eps)
    return (x_hat * torch.from_numpy(gamma) + torch.from_numpy(beta)).numpy()


@correct("batchnorm_forward")
def forward_in_input_dtype_row_vectors(x, gamma, beta, eps=1e-5):
    # (1, D) statistics and eps cast to x's dtype: float32 arithmetic for float32 input.
    mean = x.mean(axis=0, keepdims=True)
    var = np.square(x - mean).mean(axis=0, keepdims=True)
    inv_std = x.dtype.type(1) / np.sqrt(var + x.dtype.type(eps))
    return (x - mean) * inv_std * gamma.reshape(1, -1) + beta.reshape(1, -1)


@correct("batchnorm_forward")
def forward_in_place_on_own_array(x, gamma, beta, eps=1e-5):
    out = x - x.mean(axis=0)
    out /= np.sqrt(np.mean(out ** 2, axis=0) + eps)
    out *= gamma
    out += beta
    return out


# --- 04 ---------------------------------------------------------------------

@correct("update_running_stats")
def update_new_arrays(running_mean, running_var, x, momentum=0.1):
    new_mean = (1 - momentum) * running_mean + momentum * x.mean(axis=0)
    new_var = (1 - momentum) * running_var + momentum * x.var(axis=0, ddof=1)
    return new_mean, new_var


@correct("update_running_stats")
def update_in_place(running_mean, running_var, x, momentum=0.1):
    # The API allows updating the given running arrays in place.
    running_mean *= 1 - momentum
    running_mean += momentum * x.mean(axis=0)
    running_var *= 1 - momentum
    running_var += momentum * np.var(x, axis=0, ddof=1)
    return running_mean, running_var


@correct("update_running_stats")
def update_keepdims_list(running_mean, running_var, x, momentum=0.1):
    n = x.shape[0]
    mean = x.mean(axis=0, keepdims=True)
    var = ((x - mean) ** 2).sum(axis=0, keepdims=True) / (n - 1)
    return [running_mean + momentum * (mean - running_mean),
            running_var + momentum * (var - running_var)]


@correct("update_running_stats")
def update_with_torch_lerp(running_mean, running_var, x, momentum=0.1):
    t = as_tensor(x)
    return (torch.lerp(as_tensor(running_mean), t.mean(0), momentum).numpy(),
            torch.lerp(as_tensor(running_var), t.var(0), momentum).numpy())


@correct("update_running_stats")
def update_bessel_factor(running_mean, running_var, x, momentum=0.1):
    n = len(x)
    unbiased = np.var(x, axis=0) * n / (n - 1)
    return ((1 - momentum) * running_mean + momentum * np.mean(x, axis=0),
            (1 - momentum) * running_var + momentum * unbiased)


@correct("update_running_stats")
def update_first_time_torch_import(running_mean, running_var, x, momentum=0.1):
    import torch
    var, mean = torch.var_mean(torch.from_numpy(np.ascontiguousarray(x)), dim=0)
    new_mean = torch.from_numpy(running_mean) * (1 - momentum) + mean * momentum
    new_var = torch.from_numpy(running_var) * (1 - momentum) + var * momentum
    return new_mean.numpy(), new_var.numpy()


@correct("update_running_stats")
def update_np_average(running_mean, running_var, x, momentum=0.1):
    weights = [1 - momentum, momentum]
    return (np.average([running_mean, x.mean(axis=0)], axis=0, weights=weights),
            np.average([running_var, x.var(axis=0, ddof=1)], axis=0, weights=weights))


@correct("batchnorm_eval")
def eval_numpy(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta


@correct("batchnorm_eval")
def eval_folded_scale(x, running_mean, running_var, gamma, beta, eps=1e-5):
    scale = gamma / np.sqrt(running_var + eps)
    return x * scale[None, :] + (beta - running_mean * scale)[None, :]


@correct("batchnorm_eval")
def eval_with_torch(x, running_mean, running_var, gamma, beta, eps=1e-5):
    x_hat = (as_tensor(x) - as_tensor(running_mean)) / torch.sqrt(as_tensor(running_var) + eps)
    return (x_hat * as_tensor(gamma) + as_tensor(beta)).numpy()


@correct("batchnorm_eval")
def eval_first_time_torch_import(x, running_mean, running_var, gamma, beta, eps=1e-5):
    import torch
    t = torch.from_numpy(np.ascontiguousarray(x))
    scale = torch.from_numpy(gamma) * torch.rsqrt(torch.from_numpy(running_var) + eps)
    return ((t - torch.from_numpy(running_mean)) * scale + torch.from_numpy(beta)).numpy()


@correct("batchnorm_eval")
def eval_einsum_in_input_dtype(x, running_mean, running_var, gamma, beta, eps=1e-5):
    scale = gamma / np.sqrt(running_var + x.dtype.type(eps))
    return np.einsum("nd,d->nd", x - running_mean, scale) + beta


@correct("batchnorm_eval")
def eval_loop_over_examples(x, running_mean, running_var, gamma, beta, eps=1e-5):
    std = np.sqrt(running_var + eps)
    return np.stack([gamma * (row - running_mean) / std + beta for row in x])


@correct("BatchNorm1d")
class LayerReturningSelf:
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.eps, self.momentum, self.training = eps, momentum, True
        self.gamma, self.beta = np.ones(num_features), np.zeros(num_features)
        self.running_mean, self.running_var = np.zeros(num_features), np.ones(num_features)

    def train(self):
        self.training = True
        return self

    def eval(self):
        self.training = False
        return self

    def __call__(self, x):
        if not self.training:
            return self.gamma * (x - self.running_mean) / np.sqrt(self.running_var + self.eps) \
                + self.beta
        if len(x) < 2:
            raise ValueError("need at least two examples in train mode")
        out = self.gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + self.eps) + self.beta
        m = self.momentum
        self.running_mean = (1 - m) * self.running_mean + m * x.mean(0)
        self.running_var = (1 - m) * self.running_var + m * x.var(0, ddof=1)
        return out


@correct("BatchNorm1d")
class LayerReturningNoneUpdatingInPlace:
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.gamma = np.ones(num_features)
        self.beta = np.zeros(num_features)
        self.running_mean = np.zeros(num_features)
        self.running_var = np.ones(num_features)
        self.training = True

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def __call__(self, x):
        if self.training:
            if x.shape[0] == 1:
                raise ValueError("a batch of one has no variance")
            mean, var = x.mean(axis=0, keepdims=True), x.var(axis=0, keepdims=True)
            n = x.shape[0]
            self.running_mean *= 1 - self.momentum
            self.running_mean += self.momentum * mean.ravel()
            self.running_var *= 1 - self.momentum
            self.running_var += self.momentum * var.ravel() * n / (n - 1)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / np.sqrt(var + self.eps) * self.gamma + self.beta

@correct("BatchNorm1d")
class LayerWithRowVectors:
    """(1, D) arrays throughout (the API allows them) and in-place updates with out=."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.eps, self.momentum, self.training = eps, momentum, True
        self.gamma = np.ones((1, num_features))
        self.beta = np.zeros((1, num_features))
        self.running_mean = np.zeros((1, num_features))
        self.running_var = np.ones((1, num_features))

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def __call__(self, x):
        if not self.training:
            mean, var = self.running_mean, self.running_var
        elif x.shape[0] < 2:
            raise ValueError("train mode needs two examples or more")
        else:
            mean, var = x.mean(axis=0, keepdims=True), x.var(axis=0, keepdims=True)
            n, m = x.shape[0], self.momentum
            np.multiply(self.running_mean, 1 - m, out=self.running_mean)
            self.running_mean += m * mean
            np.multiply(self.running_var, 1 - m, out=self.running_var)
            self.running_var += m * var * n / (n - 1)
        return self.gamma * (x - mean) / np.sqrt(var + self.eps) + self.beta


@correct("BatchNorm1d")
class LayerComputingWithTorch:
    """Arithmetic in torch, with a first-time import inside the call; arrays stay NumPy."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.eps, self.momentum, self.training = eps, momentum, True
        self.gamma, self.beta = np.ones(num_features), np.zeros(num_features)
        self.running_mean, self.running_var = np.zeros(num_features), np.ones(num_features)

    def train(self):
        self.training = True
        return self

    def eval(self):
        self.training = False
        return self

    def __call__(self, x):
        import torch
        t = torch.from_numpy(np.ascontiguousarray(x))
        if self.training:
            if t.shape[0] < 2:
                raise ValueError("need more than one example per feature in train mode")
            var, mean = torch.var_mean(t, dim=0, correction=0)
            unbiased = t.var(dim=0)
            m = self.momentum
            self.running_mean = ((1 - m) * torch.from_numpy(self.running_mean) + m * mean).numpy()
            self.running_var = ((1 - m) * torch.from_numpy(self.running_var) + m * unbiased).numpy()
        else:
            mean, var = torch.from_numpy(self.running_mean), torch.from_numpy(self.running_var)
        x_hat = (t - mean) / torch.sqrt(var + self.eps)
        out = x_hat * torch.from_numpy(self.gamma) + torch.from_numpy(self.beta)
        return out.numpy().astype(x.dtype)


@correct("keras_to_torch_momentum")
def keras_one_minus(m):
    return 1 - m


@correct("keras_to_torch_momentum")
def keras_python_float(m):
    return 1.0 - float(m)


@correct("keras_to_torch_momentum")
def keras_numpy_subtract(m):
    return np.subtract(1.0, m)


@correct("keras_to_torch_momentum")
def keras_negated_difference(m):
    return -(m - 1)


@correct("keras_to_torch_momentum")
def keras_absolute_difference(m):
    return abs(1 - m)


# --- 05 ---------------------------------------------------------------------

def backward_staged(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    mu = x.mean(axis=0)
    xc = x - mu
    var = (xc ** 2).mean(axis=0)
    std = np.sqrt(var + eps)
    x_hat = xc / std
    dx_hat = dout * gamma
    dvar = (dx_hat * xc).sum(axis=0) * -0.5 * std ** -3
    dmu = -(dx_hat / std).sum(axis=0) - 2 * dvar * xc.mean(axis=0)
    dx = dx_hat / std + dvar * 2 * xc / n + dmu / n
    return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def backward_compact_keepdims(dout, x, gamma, eps=1e-5):
    x_hat = (x - x.mean(0, keepdims=True)) / np.sqrt(x.var(0, keepdims=True) + eps)
    dgamma = np.einsum("nd,nd->d", dout, x_hat)
    dbeta = np.einsum("nd->d", dout)
    dx = gamma / np.sqrt(x.var(0, keepdims=True) + eps) * (
        dout - dout.mean(0, keepdims=True) - x_hat * (dout * x_hat).mean(0, keepdims=True))
    return dx, dgamma, dbeta


def backward_autograd(dout, x, gamma, eps=1e-5):
    t = as_tensor(x).clone().requires_grad_(True)
    g = as_tensor(gamma).clone().requires_grad_(True)
    b = torch.zeros_like(g, requires_grad=True)
    var, mean = torch.var_mean(t, dim=0, correction=0)
    out = g * (t - mean) / torch.sqrt(var + eps) + b
    out.backward(as_tensor(dout))
    return t.grad.numpy(), g.grad.numpy(), b.grad.numpy()


def backward_loop_over_features_in_input_dtype(dout, x, gamma, eps=1e-5):
    # float32 stays float32 throughout: eps and N as numbers of the input's type.
    n, d = x.shape
    dx, dgamma, dbeta = np.empty_like(x), np.empty(d, x.dtype), np.empty(d, x.dtype)
    for j in range(d):
        std = np.sqrt(x[:, j].var() + x.dtype.type(eps))
        x_hat = (x[:, j] - x[:, j].mean()) / std
        dbeta[j], dgamma[j] = dout[:, j].sum(), (dout[:, j] * x_hat).sum()
        dx[:, j] = gamma[j] / std * (dout[:, j] - dbeta[j] / n - x_hat * dgamma[j] / n)
    return dx, dgamma, dbeta


def backward_autograd_of_own_forward(dout, x, gamma, eps=1e-5):
    import torch  # inside the function, as a student may write it

    t = torch.tensor(x, requires_grad=True)
    g = torch.tensor(gamma, requires_grad=True)
    b = torch.zeros_like(g, requires_grad=True)
    centred = t - t.sum(0) / len(x)
    out = g * centred / torch.sqrt((centred ** 2).mean(0) + eps) + b
    dx, dgamma, dbeta = torch.autograd.grad(out, (t, g, b), torch.tensor(dout))
    return dx.numpy(), dgamma.numpy(), dbeta.numpy()


def backward_staged_without_zero_term(dout, x, gamma, eps=1e-5):
    # dmu leaves out dvar * mean(-2 * xc), which is 0 because xc sums to 0.
    n = x.shape[0]
    xc = x - x.mean(0)
    var = (xc ** 2).mean(0)
    ivar = 1 / np.sqrt(var + eps)
    dxhat = dout * gamma
    dvar = (dxhat * xc).sum(0) * -0.5 * ivar ** 3
    dmu = -(dxhat * ivar).sum(0)
    return dxhat * ivar + dvar * 2 * xc / n + dmu / n, (dout * xc * ivar).sum(0), dout.sum(0)


for _exercise in ("batchnorm_backward", "batchnorm_backward_compact"):
    for _implementation in (backward_staged, backward_compact_keepdims, backward_autograd,
                            backward_loop_over_features_in_input_dtype,
                            backward_autograd_of_own_forward, backward_staged_without_zero_term):
        correct(_exercise)(_implementation)


# --- 06 ---------------------------------------------------------------------

@correct("batchnorm2d_forward")
def forward2d_keepdims(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    return gamma[None, :, None, None] * (x - mean) / np.sqrt(var + eps) + beta[None, :, None, None]


@correct("batchnorm2d_forward")
def forward2d_via_rows(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    rows = x.transpose(0, 2, 3, 1).reshape(-1, c)
    out = gamma * (rows - rows.mean(0)) / np.sqrt(rows.var(0) + eps) + beta
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2)


@correct("batchnorm2d_forward")
def forward2d_loop_over_channels(x, gamma, beta, eps=1e-5):
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        channel = x[:, c]
        out[:, c] = gamma[c] * (channel - channel.mean()) / np.sqrt(channel.var() + eps) + beta[c]
    return out


@correct("batchnorm2d_forward")
def forward2d_with_torch(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    var, mean = torch.var_mean(t, dim=(0, 2, 3), keepdim=True, correction=0)
    return ((t - mean) / torch.sqrt(var + eps) * as_tensor(gamma).view(1, -1, 1, 1)
            + as_tensor(beta).view(1, -1, 1, 1)).numpy()


@correct("batchnorm2d_forward")
def forward2d_einsum_in_input_dtype(x, gamma, beta, eps=1e-5):
    count = x.dtype.type(x.shape[0] * x.shape[2] * x.shape[3])
    centred = x - (np.einsum("nchw->c", x) / count)[:, None, None]
    var = np.einsum("nchw,nchw->c", centred, centred) / count
    scale = gamma / np.sqrt(var + x.dtype.type(eps))
    return centred * scale[:, None, None] + beta[:, None, None]


@correct("batchnorm2d_forward")
def forward2d_channel_rows(x, gamma, beta, eps=1e-5):
    n, c = x.shape[:2]
    per_channel = x.reshape(n, c, -1)  # (N, C, H*W): reduce over axes 0 and 2
    mean = per_channel.mean(axis=(0, 2), keepdims=True)
    var = ((per_channel - mean) ** 2).mean(axis=(0, 2), keepdims=True)
    out = gamma[:, None] * (per_channel - mean) / np.sqrt(var + eps) + beta[:, None]
    return out.reshape(x.shape)


# --- 08 ---------------------------------------------------------------------

def like_channels(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


@correct("layernorm_forward")
def layernorm_keepdims(x, gamma, beta, eps=1e-5):
    axes = tuple(range(1, x.ndim))
    x_hat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


@correct("layernorm_forward")
def layernorm_loop_over_examples(x, gamma, beta, eps=1e-5):
    out = np.empty_like(x)
    for i, example in enumerate(x):
        out[i] = (example - example.mean()) / np.sqrt(example.var() + eps)
    return out * like_channels(gamma, x) + like_channels(beta, x)


@correct("layernorm_forward")
def layernorm_with_torch(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    x_hat = F.layer_norm(t, t.shape[1:], eps=eps)
    return (x_hat * as_tensor(like_channels(gamma, x)) + as_tensor(like_channels(beta, x))).numpy()


@correct("groupnorm_forward")
def groupnorm_reshape(x, gamma, beta, num_groups, eps=1e-5):
    groups = x.reshape(x.shape[0], num_groups, -1)
    x_hat = (groups - groups.mean(-1, keepdims=True)) / np.sqrt(groups.var(-1, keepdims=True) + eps)
    return x_hat.reshape(x.shape) * like_channels(gamma, x) + like_channels(beta, x)


@correct("groupnorm_forward")
def groupnorm_loop_over_groups(x, gamma, beta, num_groups, eps=1e-5):
    size = x.shape[1] // num_groups
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for g in range(num_groups):
            block = x[i, g * size:(g + 1) * size]
            out[i, g * size:(g + 1) * size] = (block - block.mean()) / np.sqrt(block.var() + eps)
    return out * like_channels(gamma, x) + like_channels(beta, x)


@correct("groupnorm_forward")
def groupnorm_with_torch(x, gamma, beta, num_groups, eps=1e-5):
    return F.group_norm(as_tensor(x), num_groups, as_tensor(gamma), as_tensor(beta), eps).numpy()


@correct("fold_batchnorm")
def fold_numpy(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var + bn.eps)
    bias = np.zeros_like(scale) if conv_bias is None else conv_bias
    weight = conv_weight * scale.reshape((-1,) + (1,) * (conv_weight.ndim - 1))
    return weight, (bias - bn.running_mean) * scale + bn.bias


@correct("fold_batchnorm")
def fold_einsum(conv_weight, conv_bias, bn):
    scale = bn.weight * (bn.running_var + bn.eps) ** -0.5
    shift = bn.bias - bn.running_mean * scale
    if conv_bias is not None:
        shift = shift + conv_bias * scale
    return np.einsum("o...,o->o...", conv_weight, scale), shift


@correct("layernorm_forward")
def layernorm_flattened_in_input_dtype(x, gamma, beta, eps=1e-5):
    flat = x.reshape(len(x), -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    var = np.einsum("nk,nk->n", centred, centred)[:, None] / x.dtype.type(flat.shape[1])
    x_hat = (centred / np.sqrt(var + x.dtype.type(eps))).reshape(x.shape)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


@correct("groupnorm_forward")
def groupnorm_torch_split_by_channels(x, gamma, beta, num_groups, eps=1e-5):
    t = as_tensor(x)
    parts = []
    for block in t.split(x.shape[1] // num_groups, dim=1):
        dims = tuple(range(1, block.ndim))
        var, mean = torch.var_mean(block, dim=dims, keepdim=True, correction=0)
        parts.append((block - mean) / torch.sqrt(var + eps))
    return torch.cat(parts, dim=1).numpy() * like_channels(gamma, x) + like_channels(beta, x)


@correct("fold_batchnorm")
def fold_with_torch_diagonal(conv_weight, conv_bias, bn):
    # A diagonal matrix of scales times the flattened filters, as fusion scripts write it.
    scale = torch.diag(as_tensor(bn.weight) / torch.sqrt(as_tensor(bn.running_var) + bn.eps))
    flat = as_tensor(conv_weight).reshape(len(conv_weight), -1)
    bias = torch.zeros(len(conv_weight), dtype=flat.dtype) if conv_bias is None \
        else as_tensor(conv_bias)
    shift = as_tensor(bn.bias) - scale @ as_tensor(bn.running_mean)
    return (scale @ flat).reshape(conv_weight.shape).numpy(), (scale @ bias + shift).numpy()


@correct("BatchNorm2d")
class ModuleFromScratch(torch.nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = torch.nn.Parameter(torch.ones(num_features))
        self.bias = torch.nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        if self.training:
            mean = x.mean(dim=(0, 2, 3))
            var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
            with torch.no_grad():
                m = x.numel() // x.shape[1]
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * m / (m - 1))
                self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return x_hat * self.weight[None, :, None, None] + self.bias[None, :, None, None]


@correct("BatchNorm2d")
class ModuleWithVarMean(ModuleFromScratch):
    def forward(self, x):
        if self.training:
            var, mean = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, correction=0)
            with torch.no_grad():
                self.running_mean.lerp_(mean.flatten(), self.momentum)
                self.running_var.lerp_(x.var(dim=(0, 2, 3)), self.momentum)
                self.num_batches_tracked.add_(1)
        else:
            mean = self.running_mean.view(1, -1, 1, 1)
            var = self.running_var.view(1, -1, 1, 1)
        return torch.addcmul(self.bias.view(1, -1, 1, 1), (x - mean) * torch.rsqrt(var + self.eps),
                             self.weight.view(1, -1, 1, 1))


@correct("BatchNorm2d")
class ModuleSubclassingTorchWithOwnForward(torch.nn.BatchNorm2d):
    """nn.BatchNorm2d's parameters and buffers, the forward pass written by hand."""

    def forward(self, x):
        if self.training:
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            with torch.no_grad():
                count = x.numel() // x.shape[1]
                self.running_mean.mul_(1 - self.momentum).add_(mean, alpha=self.momentum)
                self.running_var.mul_(1 - self.momentum).add_(var * count / (count - 1),
                                                             alpha=self.momentum)
                self.num_batches_tracked.add_(1)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight / torch.sqrt(var + self.eps)
        shift = self.bias - mean * scale
        return x * scale[:, None, None] + shift[:, None, None]


@correct("BatchNorm2d")
class ModuleSubclassUsingTorchHelpers(torch.nn.BatchNorm2d):
    """A subclass that calls nn.BatchNorm2d's own input check and reads its options
    (functions of torch/nn/modules/batchnorm.py that are not batch norm)."""

    def forward(self, x):
        self._check_input_dim(x)
        if not self.training:
            return self._normalize(x, self.running_mean, self.running_var)
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        mean, var = x.mean([0, 2, 3]), x.var([0, 2, 3], unbiased=False)
        count = x.numel() / x.size(1)
        with torch.no_grad():
            self.running_mean = factor * mean + (1 - factor) * self.running_mean
            self.running_var = factor * var * count / (count - 1) + (1 - factor) * self.running_var
        return self._normalize(x, mean, var)

    def _normalize(self, x, mean, var):
        x_hat = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return x_hat * self.weight[None, :, None, None] + self.bias[None, :, None, None]


@correct("BatchNorm2d")
class ModuleUpdatingFromDetachedStatistics(ModuleFromScratch):
    """Buffers reassigned from detached statistics, outside torch.no_grad()."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, N*H*W)
        mean, var = flat.mean(1), flat.var(1, unbiased=False)
        m, stats = self.momentum, flat.detach()
        self.running_mean = (1 - m) * self.running_mean + m * stats.mean(1)
        self.running_var = (1 - m) * self.running_var + m * stats.var(1)
        self.num_batches_tracked = self.num_batches_tracked + 1
        x_hat = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + self.eps)
        return x_hat * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@correct("BatchNorm2d")
class ModuleWithTorchsOptions(torch.nn.Module):
    """The full constructor of torch's layer (affine, track_running_stats, momentum=None
    for a cumulative average), parameters made empty and then reset."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = torch.nn.Parameter(torch.empty(num_features))
        self.bias = torch.nn.Parameter(torch.empty(num_features))
        self.register_buffer("running_mean", torch.empty(num_features))
        self.register_buffer("running_var", torch.empty(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.ones_(self.weight)
        torch.nn.init.zeros_(self.bias)
        self.running_mean.zero_()
        self.running_var.fill_(1.0)

    def forward(self, x):
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
            count = x.numel() / x.size(1)
            with torch.no_grad():
                self.running_mean.copy_(factor * mean + (1 - factor) * self.running_mean)
                self.running_var.copy_(factor * var * count / (count - 1)
                                       + (1 - factor) * self.running_var)
        if not use_batch:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return x_hat * self.weight[None, :, None, None] + self.bias[None, :, None, None]


@correct("BatchNorm2d")
class ModuleWithFrozenParameterStatistics(ModuleFromScratch):
    """Running statistics as nn.Parameter(requires_grad=False), an older idiom: saved in the
    state_dict under the same names and never trained, so it is accepted."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        for name in ("running_mean", "running_var"):
            value = getattr(self, name)
            delattr(self, name)
            setattr(self, name, torch.nn.Parameter(value, requires_grad=False))


@correct("steps_to_reach")
def steps_in_a_loop(steps, accuracy, target):
    for step, value in zip(steps, accuracy):
        if value >= target:
            return step
    raise ValueError(f"never reaches {target}")


@correct("steps_to_reach")
def steps_with_argmax(steps, accuracy, target):
    reached = np.asarray(accuracy) >= target
    if not reached.any():
        raise ValueError("the target is never reached")
    return int(np.asarray(steps)[np.argmax(reached)])


@correct("percentile_trace")
def percentiles_row_by_row(values, q):
    return np.array([np.percentile(row, q) for row in values])


@correct("percentile_trace")
def percentiles_by_interpolation(values, q):
    ordered = np.sort(values, axis=1)
    n = values.shape[1]
    positions = np.asarray(q, dtype=np.float64) / 100 * (n - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, n - 1)
    weight = positions - low
    return ordered[:, low] * (1 - weight) + ordered[:, high] * weight


@correct("ghost_batchnorm_forward")
def ghost_in_a_loop(x, gamma, beta, virtual_batch_size, eps=1e-5):
    slices = []
    for start in range(0, x.shape[0], virtual_batch_size):
        chunk = x[start:start + virtual_batch_size]
        slices.append(gamma * (chunk - chunk.mean(0)) / np.sqrt(chunk.var(0) + eps) + beta)
    return np.vstack(slices)


@correct("ghost_batchnorm_forward")
def ghost_with_np_split(x, gamma, beta, virtual_batch_size, eps=1e-5):
    chunks = np.split(x, range(virtual_batch_size, len(x), virtual_batch_size))
    centred = [c - c.mean(0, keepdims=True) for c in chunks]
    scaled = [c / np.sqrt((c ** 2).mean(0, keepdims=True) + eps) for c in centred]
    return np.concatenate(scaled) * gamma + beta


@correct("recompute_running_stats")
def recompute_cumulative(batches):
    # momentum=None's rule: batch k moves the estimate 1/k of the way.
    for k, x in enumerate(batches, start=1):
        mean_k, var_k = x.mean(0), x.var(0, ddof=1)
        mean = mean_k if k == 1 else mean + (mean_k - mean) / k
        var = var_k if k == 1 else var + (var_k - var) / k
    return mean, var


@correct("recompute_running_stats")
def recompute_stacked(batches):
    stats = np.stack([np.stack([x.mean(0), x.var(0, ddof=1)]) for x in batches])
    return stats[:, 0].mean(0), stats[:, 1].mean(0)


@correct("ghost_batchnorm_forward")
def ghost_with_torch_split(x, gamma, beta, virtual_batch_size, eps=1e-5):
    parts = []
    for chunk in as_tensor(x).split(virtual_batch_size):
        var, mean = torch.var_mean(chunk, dim=0, correction=0)
        parts.append((chunk - mean) / torch.sqrt(var + eps))
    return torch.cat(parts).numpy() * gamma + beta


@correct("recompute_running_stats")
def recompute_from_sums(batches):
    # Sums of the batch means and of the unbiased batch variances, divided at the end.
    count, mean_sum, var_sum = 0, 0.0, 0.0
    for x in batches:
        centred = x - x.mean(axis=0)
        mean_sum = mean_sum + x.mean(axis=0)
        var_sum = var_sum + np.einsum("nd,nd->d", centred, centred) / (len(x) - 1)
        count += 1
    return mean_sum / count, var_sum / count


# A student reads the symptoms; the answers are written out here, as theirs would be
# (reading them from bn_course.reference is calling the course's answer).
@correct("diagnose_bn_bug")
def diagnose_from_a_table(case):
    return {"A": "stats-frozen-while-fine-tuning", "B": "dropout-before-batchnorm",
            "C": "no-bug", "D": "eval-mode-forgotten"}[case]


@correct("diagnose_bn_bug")
def diagnose_one_by_one(case):
    if case == "A":
        return "stats-frozen-while-fine-tuning"
    if case == "B":
        return "dropout-before-batchnorm"
    return "no-bug" if case == "C" else "eval-mode-forgotten"


def test_reading_the_answer_key_is_not_a_pass():
    """Regression: the key once lived in the demos, out of the watch's sight."""
    from bn_course.reference.case_files import planted_bug

    result = check("diagnose_bn_bug", lambda case: planted_bug(case))
    assert not result.passed and result.mistake == "calls-course-reference", result.message


# --- notebooks 09 and 10 ----------------------------------------------------------------

def _is_batchnorm(module):
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


@correct("freeze_batchnorm")
def freeze_by_wrapping_train(model):
    """Each BN layer's train() is wrapped so that it always means eval()."""
    for module in model.modules():
        if _is_batchnorm(module):
            module.eval()
            module.train = lambda mode=True, layer=module: torch.nn.Module.train(layer, False)
            module.weight.requires_grad = False
            module.bias.requires_grad = False
    return model


@correct("freeze_batchnorm")
def freeze_with_a_class_swap(model):
    """Each BN layer becomes an instance of a subclass whose train() keeps it in eval."""
    for module in model.modules():
        if _is_batchnorm(module):
            base = type(module)
            module.__class__ = type(f"Frozen{base.__name__}", (base,), {
                "train": lambda self, mode=True: base.train(self, False)})
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)
    return model


@correct("zero_init_last_bn")
def zero_last_bn_of_each_branch(model):
    from bn_course.blocks import ResidualBlock

    for block in model.modules():
        if isinstance(block, ResidualBlock):
            norms = [m for m in block.branch.modules() if _is_batchnorm(m)]
            torch.nn.init.zeros_(norms[-1].weight)
    return model


@correct("zero_init_last_bn")
def zero_last_bn_by_walking_backwards(model):
    from bn_course.blocks import ResidualBlock

    for block in model.modules():
        if isinstance(block, ResidualBlock):
            for module in reversed(list(block.branch.modules())):
                if _is_batchnorm(module):
                    with torch.no_grad():
                        module.weight.fill_(0.0)
                    break
    return model


@correct("param_groups")
def groups_by_module_type(model, weight_decay):
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) not in seen:
                seen.add(id(parameter))
                exempt = _is_batchnorm(module) or name.endswith("bias")
                (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@correct("param_groups")
def groups_by_name_lookup(model, weight_decay):
    norm_names = {name for name, m in model.named_modules() if _is_batchnorm(m)}
    groups = {True: [], False: []}
    for name, parameter in model.named_parameters():  # each tensor once, tied ones too
        owner, _, leaf = name.rpartition(".")
        groups[owner in norm_names or leaf == "bias"].append(parameter)
    return [{"params": groups[False], "weight_decay": weight_decay},
            {"params": groups[True], "weight_decay": 0.0}]


@correct("merge_batch_stats")
def merge_by_sums_around_the_mean(counts, means, variances):
    counts = np.asarray(counts, dtype=np.float64)[:, None]
    total = counts.sum()
    mean = (counts * means).sum(axis=0) / total
    spread = (counts * (variances + (means - mean) ** 2)).sum(axis=0)
    return mean, spread / total


@correct("merge_batch_stats")
def merge_two_at_a_time(counts, means, variances):
    """Chan et al.'s pairwise update, one part after another."""
    n, mean, m2 = 0.0, np.zeros(means.shape[1]), np.zeros(means.shape[1])
    for count, part_mean, part_var in zip(counts, means, variances):
        delta = part_mean - mean
        new_n = n + count
        mean = mean + delta * count / new_n
        m2 = m2 + part_var * count + delta ** 2 * n * count / new_n
        n = new_n
    return mean, m2 / n


@correct("batch_renorm_forward")
def renorm_step_by_step(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    mean, var = x.mean(axis=0), x.var(axis=0)
    sigma_batch, sigma = np.sqrt(var + eps), np.sqrt(running_var + eps)
    r = np.clip(sigma_batch / sigma, 1 / r_max, r_max)
    d = np.clip((mean - running_mean) / sigma, -d_max, d_max)
    return gamma * ((x - mean) / sigma_batch * r + d) + beta


@correct("batch_renorm_forward")
def renorm_through_torch(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    t = torch.from_numpy(np.ascontiguousarray(x))
    mean, std = t.mean(0), torch.sqrt(t.var(0, unbiased=False) + eps)
    sigma = torch.sqrt(torch.from_numpy(np.asarray(running_var)) + eps)
    r = torch.clamp(std / sigma, 1 / r_max, r_max)
    d = torch.clamp((mean - torch.from_numpy(np.asarray(running_mean))) / sigma, -d_max, d_max)
    out = ((t - mean) / std * r + d) * torch.from_numpy(gamma) + torch.from_numpy(beta)
    return out.numpy()


@correct("build_mlp")
def mlp_from_a_list(norm_layer, in_features, hidden, depth, num_classes):
    layers, width = [], in_features
    for _ in range(depth):
        layers.append(torch.nn.Linear(width, hidden, bias=norm_layer is None))
        if norm_layer is not None:
            layers.append(norm_layer(hidden))
        layers.append(torch.nn.Sigmoid())
        width = hidden
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, num_classes))


@correct("build_mlp")
def mlp_block_by_block(norm_layer, in_features, hidden, depth, num_classes):
    def block(width):
        if norm_layer is None:
            return [torch.nn.Linear(width, hidden), torch.nn.Sigmoid()]
        return [torch.nn.Linear(width, hidden, bias=False), norm_layer(hidden), torch.nn.Sigmoid()]

    layers = block(in_features)
    for _ in range(depth - 1):
        layers += block(hidden)
    layers.append(torch.nn.Linear(hidden, num_classes))
    return torch.nn.Sequential(*layers)


def first_correct(exercise):
    return next(impl for name, impl in CORRECT if name == exercise)


# --- correct answers pass -----------------------------------------------------

def test_every_exercise_has_correct_answers():
    counts = {name: sum(1 for e, _ in CORRECT if e == name) for name in EXERCISES}
    assert all(count >= 2 for count in counts.values()), counts


@pytest.mark.parametrize("exercise, implementation", CORRECT,
                         ids=[f"{e}-{impl.__name__}" for e, impl in CORRECT])
def test_correct_answer_passes(exercise, implementation):
    result = check(exercise, implementation)
    assert result.passed, result.message
    assert result.mistake is None
    assert "hidden cases match" in result.message


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("exercise", list(EXERCISES))
def test_grade_returns_none_for_a_correct_answer(exercise, group):
    assert grade(exercise, first_correct(exercise), group) is None


@pytest.mark.parametrize("group", GROUPS)
def test_grade_raises_the_diagnosis(group):
    def unbiased(x):
        return x.var(axis=0, ddof=1)

    expected = check("batch_var", unbiased, groups=(group,))
    with pytest.raises(AssertionError) as raised:
        grade("batch_var", unbiased, group)
    # The message, then the catalogue id on a line of its own for the class report.
    assert str(raised.value) == expected.message + "\n[mistake: unbiased-variance]"
    assert "N - 1" in str(raised.value)


def test_unknown_group_or_exercise_raises_value_error():
    with pytest.raises(ValueError, match="group"):
        grade("batch_mean", mean_method, group="tricky")
    with pytest.raises(ValueError, match="batch_mean"):
        check("batch_means", mean_method)


def test_hidden_non_contiguous_cases_hand_over_non_contiguous_arrays():
    # The awkward group promises non-contiguous input: the candidate must see it as such.
    seen = []

    def spy(x):
        seen.append(x.flags.c_contiguous)
        return x.mean(axis=0)

    assert check("batch_mean", spy, groups="awkward").passed
    cases = EXERCISES["batch_mean"].cases("awkward")
    promised = [i for i, case in enumerate(cases)
                if "non-contiguous" in case.description or "column-major" in case.description]
    assert promised
    assert [seen[i] for i in promised] == [False] * len(promised)


# --- what a failing candidate is told ----------------------------------------

# Exercises whose answers are NumPy arrays (not a torch module, a diagnosis string or a step).
# Exercises whose answer returns arrays (the others return a module, a model, groups, a
# step or a string).
NUMPY_EXERCISES = [name for name in EXERCISES
                   if name not in ("BatchNorm2d", "diagnose_bn_bug", "steps_to_reach",
                                   "build_mlp", "freeze_batchnorm", "zero_init_last_bn",
                                   "param_groups")]


@pytest.mark.parametrize("answer", [None, 3, ["no-bug"], "not a bug we know", np.zeros(2)])
def test_a_diagnosis_outside_the_list_names_the_choices(answer):
    result = check("diagnose_bn_bug", lambda case: answer)
    assert not result.passed
    assert "return one of 'eval-mode-forgotten'" in result.message


def spoiled(exercise, spoil):
    """The first correct answer to exercise with spoil() applied to each value it returns."""
    good = first_correct(exercise)
    if isinstance(good, type):
        class Spoiled(good):
            def __call__(self, x):
                return spoil(super().__call__(x))
        return Spoiled

    def candidate(*args, **kwargs):
        result = good(*args, **kwargs)
        if isinstance(result, tuple):
            return tuple(spoil(value) for value in result)
        return spoil(result)

    return candidate


SPOILS = {
    "returns None": (lambda out: None, "return"),
    "returns a torch tensor": (lambda out: torch.from_numpy(np.asarray(out)), ".numpy()"),
    "returns a wrong shape": (lambda out: np.asarray(out)[..., np.newaxis], "shape"),
    "returns NaN": (lambda out: np.full(np.shape(out), np.nan), "NaN"),
    "returns integers": (lambda out: np.round(out).astype(np.int64), "dtype int64"),
}


@pytest.mark.parametrize("spoil", list(SPOILS))
@pytest.mark.parametrize("exercise", NUMPY_EXERCISES)
def test_bad_return_value_is_named(exercise, spoil):
    transform, expected = SPOILS[spoil]
    result = check(exercise, spoiled(exercise, transform))
    assert not result.passed
    assert expected in result.message


@pytest.mark.parametrize("exercise", NUMPY_EXERCISES)
def test_a_list_is_not_an_array(exercise):
    result = check(exercise, spoiled(exercise, lambda out: np.atleast_1d(out).tolist()))
    assert not result.passed
    wanted = "a number" if exercise == "keras_to_torch_momentum" else "NumPy array"
    assert wanted in result.message and "list" in result.message


def test_module_forward_returning_none_asks_for_a_return():
    class ForgetsReturn(first_correct("BatchNorm2d")):
        def forward(self, x):
            super().forward(x)

    result = check("BatchNorm2d", ForgetsReturn)
    assert not result.passed
    assert "return" in result.message


def test_module_forward_returning_numpy_asks_for_a_tensor():
    class ReturnsNumpy(first_correct("BatchNorm2d")):
        def forward(self, x):
            return super().forward(x).detach().numpy()

    result = check("BatchNorm2d", ReturnsNumpy)
    assert not result.passed
    assert "torch.Tensor" in result.message


def raising(exercise, error):
    """A candidate that raises error when called (for a class: when built)."""
    good = first_correct(exercise)
    if isinstance(good, type):
        class Raises(good):
            def __init__(self, *args, **kwargs):
                raise error
        return Raises

    def candidate(*args, **kwargs):
        raise error

    return candidate


@pytest.mark.parametrize("exercise", list(EXERCISES))
def test_an_exception_is_named(exercise):
    result = check(exercise, raising(exercise, ZeroDivisionError("boom at step 3")))
    assert not result.passed
    assert "ZeroDivisionError: boom at step 3" in result.message


@pytest.mark.parametrize("exercise", list(EXERCISES))
def test_the_untouched_skeleton_is_not_implemented_yet(exercise):
    result = check(exercise, raising(exercise, NotImplementedError()))
    assert not result.passed
    assert "Not implemented yet" in result.message


def test_an_exception_that_cannot_be_printed_is_still_a_failure():
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("a broken __str__")

    def candidate(x):
        raise Unprintable()

    result = check("batch_mean", candidate)
    assert not result.passed
    assert "Unprintable" in result.message


def test_sys_exit_is_a_failure_not_an_exit():
    def exits(x):
        sys.exit(3)

    result = check("batch_mean", exits)
    assert not result.passed
    assert "SystemExit" in result.message


def test_swallowing_every_exception_reads_as_a_missing_return():
    def careful(x):
        try:
            return x.mean(axis=2)
        except Exception:  # noqa: BLE001, S110 -- the student's habit under test
            pass

    result = check("batch_mean", careful)
    assert not result.passed
    assert "return" in result.message


@pytest.mark.parametrize("exercise, value, expected", [
    ("update_running_stats", lambda out: out[:1], "tuple of 2"),
    ("update_running_stats", lambda out: out[0], "tuple of 2"),
    ("batchnorm_backward", lambda out: out[:2], "tuple of 3"),
    ("batchnorm_backward_compact", lambda out: out + out[:1], "tuple of 3"),
])
def test_wrong_number_of_returned_values(exercise, value, expected):
    good = first_correct(exercise)
    result = check(exercise, lambda *args, **kwargs: value(tuple(good(*args, **kwargs))))
    assert not result.passed
    assert expected in result.message


@pytest.mark.parametrize("candidate", [None, 3, "batch_var", np.zeros(3)])
def test_a_non_callable_candidate(candidate):
    result = check("batch_var", candidate)
    assert not result.passed
    assert "batch_var(x)" in result.message


@pytest.mark.parametrize("exercise, first_argument", [
    ("batch_var", "x"), ("normalize", "x"), ("batchnorm_eval", "x"),
    ("batchnorm_backward", "dout"), ("groupnorm_forward", "x")])
def test_modifying_an_input_in_place_is_named(exercise, first_argument):
    def modifies_first_argument(first, *args, **kwargs):
        result = first_correct(exercise)(first.copy(), *args, **kwargs)
        first *= 2
        return result

    result = check(exercise, modifies_first_argument)
    assert not result.passed
    assert result.mistake == "modifies-input"
    assert f"`{first_argument}`" in result.message


def endless(x):
    while True:
        pass


def endless_despite_except(x):
    while True:
        try:
            x = x + 1
        except Exception:  # noqa: BLE001, S110 -- the student's habit under test
            pass


@pytest.mark.parametrize("candidate", [endless, endless_despite_except])
def test_an_endless_loop_is_stopped(candidate):
    handler = signal.getsignal(signal.SIGALRM)
    result = check("batch_mean", candidate)
    assert not result.passed
    assert "endless loop" in result.message
    # The alarm is cleaned up: no timer left running, the previous handler back.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is handler
    assert check("batch_mean", mean_method).passed


@pytest.mark.parametrize("exercise", [name for name in NUMPY_EXERCISES if name != "BatchNorm1d"])
def test_a_hard_coded_answer_fails(exercise):
    """The reference's outputs for the first basic case, returned whatever the input."""
    case = EXERCISES[exercise].cases("basic")[0]
    outputs = [value for _, value in case.play(EXERCISES[exercise].reference)]
    answer = outputs[0] if len(outputs) == 1 else tuple(outputs)
    result = check(exercise, lambda *args, **kwargs: answer)
    assert not result.passed
    with pytest.raises(AssertionError):
        grade(exercise, lambda *args, **kwargs: answer, "basic")


def test_complex_output_is_a_dtype_problem_not_a_diagnosis():
    def complex_forward(x, gamma, beta, eps=1e-5):
        return forward_numpy(x, gamma, beta, eps).astype(np.complex128)

    result = check("batchnorm_forward", complex_forward)
    assert not result.passed
    assert result.mistake is None, result.message
    assert "complex" in result.message


def test_own_helper_named_batch_norm_is_not_pytorchs():
    # The student's own code, in a folder whose name happens to contain "torch".
    source = textwrap.dedent("""
        import numpy as np

        def batch_norm(x, gamma, beta, eps=1e-5):
            return gamma * (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps) + beta
    """)
    namespace = {}
    exec(compile(source, "/home/student/pytorch-notes/helpers.py", "exec"), namespace)  # noqa: S102
    result = check("batchnorm_forward", namespace["batch_norm"])
    assert result.passed, result.message


def test_changing_bn_in_place_is_caught_and_leaves_the_cases_intact():
    # bn is an object holding arrays, not an array argument: changing its arrays in place
    # must be named, and must not change the hidden cases for the checks that follow
    # (a fresh interpreter, so that the cases of this session stay clean).
    out = run_python("""
        import numpy as np
        from bn_course.checks import check

        def fold(conv_weight, conv_bias, bn, variance=None):
            variance = bn.running_var + bn.eps if variance is None else variance
            scale = bn.weight / np.sqrt(variance)
            bias = np.zeros_like(scale) if conv_bias is None else conv_bias
            weight = conv_weight * scale.reshape((-1,) + (1,) * (conv_weight.ndim - 1))
            return weight, (bias - bn.running_mean) * scale + bn.bias

        def adds_eps_to_running_var_in_place(conv_weight, conv_bias, bn):
            bn.running_var += bn.eps
            return fold(conv_weight, conv_bias, bn, variance=bn.running_var)

        print(check("fold_batchnorm", fold).passed)
        print(check("fold_batchnorm", adds_eps_to_running_var_in_place).mistake)
        print(check("fold_batchnorm", fold).passed)
    """)
    assert out.split() == ["True", "modifies-input", "True"]


# --- random junk never breaks the checker --------------------------------------

def junk_arrays():
    dtypes = st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex128])
    numeric = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5))
    objects = hnp.arrays(object, hnp.array_shapes(max_dims=2, max_side=4),
                         elements=st.one_of(st.none(), st.floats(), st.text(max_size=3)))
    special = hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=5),
                         elements=st.sampled_from([np.nan, np.inf, -np.inf, 0.0]))
    return st.one_of(numeric, objects, special)


SCALAR_JUNK = st.one_of(st.floats(), st.integers(), st.none(), st.text(max_size=5),
                        st.lists(st.lists(st.floats(), max_size=3), max_size=3), junk_arrays())
JUNK = st.one_of(SCALAR_JUNK, st.tuples(SCALAR_JUNK, SCALAR_JUNK),
                 st.tuples(SCALAR_JUNK, SCALAR_JUNK, SCALAR_JUNK))


def returning(exercise, value):
    """A candidate that returns value from every call (a layer's call or forward)."""
    good = first_correct(exercise)
    if exercise == "BatchNorm2d":
        class Junk(good):
            def forward(self, x):
                return value
        return Junk
    if isinstance(good, type):
        class JunkLayer(good):
            def __call__(self, x):
                return value
        return JunkLayer
    return lambda *args, **kwargs: value


@pytest.mark.parametrize("exercise", list(EXERCISES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=JUNK)
def test_junk_return_values_fail_with_a_message(exercise, value):
    result = check(exercise, returning(exercise, value))
    assert isinstance(result, CheckResult)
    assert not result.passed
    assert result.message.strip()


# --- silence: nbgrader scores a cell that writes to stderr 0 --------------------

def noisy_var(x):
    """Right answer, but NumPy warns on the way (log of negatives, 0/0, overflow)."""
    _ = np.log(-np.abs(x)), np.float64(0) / np.float64(0), np.exp(np.float64(1e4))
    print("debugging output", file=sys.stderr)
    warnings.warn("a student's own warning")
    return x.var(axis=0)


def forgot_eps(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(0)) / x.std(0) + beta  # 0/0 on a constant feature


def complex_var(x):
    return x.var(axis=0).astype(np.complex128)


@pytest.mark.parametrize("exercise, candidate", [
    ("batch_var", var_numpy), ("batchnorm_forward", forward_numpy),
    ("BatchNorm1d", LayerReturningSelf), ("batch_var", noisy_var),
    ("batchnorm_forward", forgot_eps), ("batch_var", complex_var),
], ids=["correct", "correct-forward", "correct-layer", "numpy-warnings", "divides-by-zero",
        "complex-output"])
def test_check_and_grade_write_nothing_to_stderr(exercise, candidate, capfd):
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        check(exercise, candidate)
        for group in GROUPS:
            try:
                grade(exercise, candidate, group)
            except AssertionError:
                pass
    assert capfd.readouterr().err == ""
    assert [str(w.message) for w in escaped] == []


# --- display and progress ----------------------------------------------------------

def test_html_escapes_the_message():
    def shouts(x):
        raise ValueError("<script>alert('x')</script> & more")

    result = check("batch_mean", shouts)
    html = result._repr_html_()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html and "&amp; more" in html


def test_progress_counts_passing_exercises():
    progress = Progress("01")
    assert "0/2 exercises pass" in str(progress.summary())

    result = progress.check("batch_mean", mean_method)
    assert isinstance(result, CheckResult) and result.passed
    summary = progress.summary()
    assert "1/2 exercises pass" in str(summary)  # batch_var not checked yet
    assert "1/2 exercises pass" in summary._repr_html_()

    assert not progress.check("batch_var", lambda x: x.var(axis=0, ddof=1)).passed
    assert "1/2 exercises pass" in str(progress.summary())
    progress.check("batch_var", var_numpy)  # the latest check counts
    assert "2/2 exercises pass" in str(progress.summary())


def test_progress_of_every_notebook_lists_its_exercises():
    for notebook, names in NOTEBOOK_EXERCISES.items():
        text = str(Progress(notebook).summary())
        assert f"0/{len(names)} exercises pass" in text
        assert all(name in text for name in names)


def test_progress_rejects_an_unknown_notebook():
    with pytest.raises(ValueError, match="11"):
        Progress("11")


def test_package_exposes_check_and_progress():
    assert bn_course.check is check
    assert bn_course.Progress is Progress


# --- import cost --------------------------------------------------------------

def test_importing_the_checkers_imports_neither_torch_nor_sklearn():
    out = run_python("""
        import sys
        import bn_course
        import bn_course.checks
        print(sorted(m for m in ("torch", "sklearn") if m in sys.modules))
    """)
    assert out.strip() == "[]"


def test_checking_numpy_exercises_does_not_import_torch():
    # Notebooks 01-05 need only NumPy: neither a pass nor a diagnosis may load torch.
    out = run_python("""
        import sys
        import numpy as np
        from bn_course.checks import check
        check("batch_var", lambda x: x.var(axis=0))
        check("batch_var", lambda x: 2 * x.var(axis=0))
        check("normalize", lambda x, mean, var, eps=1e-5: (x - mean) / np.sqrt(var + eps))
        check("batchnorm_forward", lambda x, gamma, beta, eps=1e-5: 2 * x)
        check("batchnorm_eval", lambda x, m, v, gamma, beta, eps=1e-5: 2 * x)
        print("torch" in sys.modules)
    """)
    assert out.strip() == "False"


def test_aten_batch_norm_overload_is_named_in_a_fresh_interpreter():
    # First use of torch.ops.aten.batch_norm happens while the checker watches calls.
    out = run_python("""
        import torch
        from bn_course.checks import check

        def forward(x, gamma, beta, eps=1e-5):
            t = [torch.from_numpy(a) for a in (x, gamma, beta)]
            return torch.ops.aten.batch_norm.default(
                t[0], t[1], t[2], None, None, True, 0.1, eps, False).numpy()

        print(check("batchnorm_forward", forward).mistake)
    """)
    assert out.strip() == "uses-builtin-batchnorm"


class ReassigningBatchNorm2d(torch.nn.Module):
    """Correct, but replaces its buffers with new tensors instead of updating them in
    place (assignment to a registered buffer name keeps it a buffer)."""

    def __init__(self, channels, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = torch.nn.Parameter(torch.ones(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0))

    def forward(self, x):
        per_channel = (1, -1, 1, 1)
        if self.training:
            mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
            count = x.numel() // x.shape[1]
            m = self.momentum
            self.running_mean = (1 - m) * self.running_mean + m * mean.detach()
            self.running_var = (1 - m) * self.running_var + m * var.detach() * count / (count - 1)
            self.num_batches_tracked = self.num_batches_tracked + 1
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.view(per_channel)) / torch.sqrt(var.view(per_channel) + self.eps)
        return x_hat * self.weight.view(per_channel) + self.bias.view(per_channel)


def test_a_module_that_reassigns_its_buffers_passes():
    result = check("BatchNorm2d", ReassigningBatchNorm2d)
    assert result.passed, result.message


class WithoutBatchCounter(ReassigningBatchNorm2d):
    def __init__(self, channels, eps=1e-5, momentum=0.1):
        super().__init__(channels, eps, momentum)
        del self.num_batches_tracked

    def forward(self, x):
        self.num_batches_tracked = torch.tensor(0)  # a plain attribute now
        return super().forward(x)


def test_a_missing_buffer_is_named():
    result = check("BatchNorm2d", WithoutBatchCounter)
    assert not result.passed
    assert "missing ['num_batches_tracked']" in result.message
    assert result.mistake == "num-batches-not-registered"  # not "buffers-not-registered"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_module_check_runs_on_cuda_when_there_is_one():
    devices = set()

    class Recording(ReassigningBatchNorm2d):
        def forward(self, x):
            devices.add(x.device.type)
            return super().forward(x)

    result = check("BatchNorm2d", Recording)
    assert result.passed, result.message
    assert devices == {"cuda"}


def test_an_attribute_set_to_none_is_not_told_to_return():
    """A layer that keeps its running mean under another name has no `return` to add."""
    class RunningMeanElsewhere(first_correct("BatchNorm1d")):
        def __init__(self, num_features, **kwargs):
            super().__init__(num_features, **kwargs)
            self.mean_so_far, self.running_mean = self.running_mean, None

    result = check("BatchNorm1d", RunningMeanElsewhere)
    assert not result.passed
    assert "layer.running_mean" in result.message and "None" in result.message
    assert "return" not in result.message, result.message


def test_a_wrong_shape_that_nothing_names_is_an_observation():
    def keeps_every_example(x):
        return x - x.mean(axis=0)  # (N, D) where (D,) is expected

    result = check("batch_mean", keeps_every_example)
    assert not result.passed and result.mistake is None
    assert result.observation == "wrong-shape"
    assert "has shape" in result.message


def test_nan_outputs_are_not_taken_for_ignoring_eps():
    """Regression (blind evaluation): running mean and variance swapped and eps outside the
    square root give NaN wherever the running mean is negative; eps is used all the same."""
    def swapped_running_statistics(x, running_mean, running_var, gamma, beta, eps=1e-5):
        return gamma * (x - running_var) / (np.sqrt(running_mean) + eps) + beta

    result = check("batchnorm_eval", swapped_running_statistics)
    assert not result.passed
    assert result.observation != "ignores-eps"
    assert "eps is not used" not in result.message, result.message
