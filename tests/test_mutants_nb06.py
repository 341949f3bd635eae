"""Mutation suite for notebook 06 (images and a PyTorch module): each wrong implementation below must
be named with its catalogue id (see tests/mutation.py)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

# Imported here, not inside the candidates: the checker gives each call of a candidate a
# time limit, and a first `import torch` would spend a good part of it.
import torch
import torch.nn.functional as F
from mutation import Mutants, as_tensor, assert_diagnosed, missing_mutants

import bn_course.reference.torch as course_torch_answers
from bn_course.checks import check

MUTANTS = Mutants()


# --- batchnorm2d_forward ----------------------------------------------------

def per_channel(v):
    return v[np.newaxis, :, np.newaxis, np.newaxis]


@MUTANTS.make("batchnorm2d_forward", "stats-over-hw-only")
def forward2d_instance_norm_loops(x, gamma, beta, eps=1e-5):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = x[i, c]
            out[i, c] = gamma[c] * (plane - plane.mean()) / np.sqrt(plane.var() + eps) + beta[c]
    return out


@MUTANTS.make("batchnorm2d_forward", "stats-over-n-only")
def forward2d_over_batch_axis(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return per_channel(gamma) * x_hat + per_channel(beta)


@MUTANTS.make("batchnorm2d_forward", "stats-per-example")
def forward2d_per_example_flattened(x, gamma, beta, eps=1e-5):
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(axis=1)[:, None, None, None]
    var = flat.var(axis=1)[:, None, None, None]
    return per_channel(gamma) * (x - mean) / np.sqrt(var + eps) + per_channel(beta)


@MUTANTS.make("batchnorm2d_forward", "unbiased-variance")
def forward2d_channels_last_ddof_one(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    rows = np.moveaxis(x, 1, -1).reshape(-1, c)
    out = gamma * (rows - rows.mean(0)) / np.sqrt(rows.var(0, ddof=1) + eps) + beta
    return np.moveaxis(out.reshape(n, h, w, c), -1, 1)


@MUTANTS.make("batchnorm2d_forward", "unbiased-variance")
def forward2d_torch_var(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    var = t.var(dim=(0, 2, 3), keepdim=True)
    out = (t - t.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(var + eps)
    return (out * as_tensor(per_channel(gamma)) + as_tensor(per_channel(beta))).numpy()


@MUTANTS.make("batchnorm2d_forward", "modifies-input")
def forward2d_centres_in_place(x, gamma, beta, eps=1e-5):
    x -= x.mean(axis=(0, 2, 3), keepdims=True)
    return per_channel(gamma) * x / np.sqrt((x ** 2).mean(axis=(0, 2, 3), keepdims=True) + eps) \
        + per_channel(beta)


@MUTANTS.make("batchnorm2d_forward", "uses-builtin-batchnorm")
def forward2d_with_functional_batch_norm(x, gamma, beta, eps=1e-5):
    return F.batch_norm(as_tensor(x), None, None, as_tensor(gamma), as_tensor(beta),
                        training=True, eps=eps).numpy()


def scaled_per_channel(x_hat, gamma, beta):
    return per_channel(gamma) * x_hat + per_channel(beta)


def channel_statistics(x):
    return x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)


# gamma * x_hat + beta with gamma and beta as they come, (C,): NumPy aligns them with W
# (a broadcasting error unless W is C or 1).
@MUTANTS.make("batchnorm2d_forward", "gamma-beta-not-reshaped")
def forward2d_parameters_not_reshaped(x, gamma, beta, eps=1e-5):
    mean, var = channel_statistics(x)
    return np.add(np.multiply(gamma, (x - mean) / np.sqrt(var + eps)), beta)


@MUTANTS.make("batchnorm2d_forward", "unbiased-variance+gamma-beta-not-reshaped")
def forward2d_torch_var_parameters_not_reshaped(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    x_hat = (t - t.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        t.var((0, 2, 3), keepdim=True) + eps)
    return (x_hat * as_tensor(gamma) + as_tensor(beta)).numpy()


@MUTANTS.make("batchnorm2d_forward", "eps-outside-sqrt")
def forward2d_eps_on_std(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    return scaled_per_channel((x - mean) / (x.std(axis=(0, 2, 3), keepdims=True) + eps),
                              gamma, beta)


@MUTANTS.make("batchnorm2d_forward", "forgot-eps")
def forward2d_without_eps(x, gamma, beta, eps=1e-5):
    mean, var = channel_statistics(x)
    return scaled_per_channel((x - mean) / np.sqrt(var), gamma, beta)


@MUTANTS.make("batchnorm2d_forward", "eps-after-division")
def forward2d_eps_added_to_x_hat(x, gamma, beta, eps=1e-5):
    mean, var = channel_statistics(x)
    return scaled_per_channel((x - mean) / np.sqrt(var) + eps, gamma, beta)


@MUTANTS.make("batchnorm2d_forward", "forgot-scale")
def forward2d_shift_only(x, gamma, beta, eps=1e-5):
    mean, var = channel_statistics(x)
    return (x - mean) / np.sqrt(var + eps) + beta.reshape(1, -1, 1, 1)


@MUTANTS.make("batchnorm2d_forward", "forgot-shift")
def forward2d_scale_only(x, gamma, beta, eps=1e-5):
    mean, var = channel_statistics(x)
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(1, -1, 1, 1)


@MUTANTS.make("batchnorm2d_forward", "gamma-beta-swapped")
def forward2d_swapped_parameters(x, gamma, beta, eps=1e-5):
    mean, var = channel_statistics(x)
    return scaled_per_channel((x - mean) / np.sqrt(var + eps), beta, gamma)


# The 1-D layer reused on (N*H*W, C) rows, its x_hat returned instead of its output.
@MUTANTS.make("batchnorm2d_forward", "returns-normalized-not-scaled")
def forward2d_returns_x_hat(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    rows = x.transpose(0, 2, 3, 1).reshape(-1, c)
    x_hat = (rows - rows.mean(0)) / np.sqrt(rows.var(0) + eps)
    return x_hat.reshape(n, h, w, c).transpose(0, 3, 1, 2)


@MUTANTS.make("batchnorm2d_forward", "mean-subtracted-twice")
def forward2d_centres_twice(x, gamma, beta, eps=1e-5):
    mean, var = channel_statistics(x)
    centred = x - mean
    return scaled_per_channel((centred - mean) / np.sqrt(var + eps), gamma, beta)


@MUTANTS.make("batchnorm2d_forward", "var-instead-of-std")
def forward2d_divides_by_variance(x, gamma, beta, eps=1e-5):
    mean, var = channel_statistics(x)
    return scaled_per_channel((x - mean) / (var + eps), gamma, beta)


@MUTANTS.make("batchnorm2d_forward", "std-where-var-belongs")
def forward2d_sqrt_of_std(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = x.std(axis=(0, 2, 3), keepdims=True)
    return scaled_per_channel((x - mean) / np.sqrt(std + eps), gamma, beta)


# np.mean(x) and np.var(x) with the axis left out: one mean for the whole tensor.
@MUTANTS.make("batchnorm2d_forward", "no-axis")
def forward2d_whole_tensor_statistics(x, gamma, beta, eps=1e-5):
    return scaled_per_channel((x - np.mean(x)) / np.sqrt(np.var(x) + eps), gamma, beta)


# The one-pass formula E[x^2] - E[x]^2, right on paper, wrong near 1e6.
@MUTANTS.make("batchnorm2d_forward", "one-pass-variance")
def forward2d_one_pass_variance(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = (x ** 2).mean(axis=(0, 2, 3), keepdims=True) - mean ** 2
    return scaled_per_channel((x - mean) / np.sqrt(var + eps), gamma, beta)


# Spatial batch norm as "reshape to (N*H*W, C) and call the 1-D layer", without the
# transpose that brings C last (a frequent question about CS231n's spatial batch norm).
@MUTANTS.make("batchnorm2d_forward", "reshape-without-moving-channels")
def forward2d_reshape_without_transpose(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    rows = x.reshape(n * h * w, c)
    x_hat = (rows - rows.mean(axis=0)) / np.sqrt(rows.var(axis=0) + eps)
    return (gamma * x_hat + beta).reshape(n, c, h, w)


# A from-scratch library's BatchNorm2d: x.reshape(N, -1) and the 1-D layer, so every
# (channel, pixel) gets its own statistics; here with torch's unbiased default var.
@MUTANTS.make("batchnorm2d_forward", "unbiased-variance+stats-over-n-only")
def forward2d_flattened_examples_torch_var(x, gamma, beta, eps=1e-5):
    flat = as_tensor(x).reshape(x.shape[0], -1)
    x_hat = ((flat - flat.mean(0)) / torch.sqrt(flat.var(0) + eps)).numpy().reshape(x.shape)
    return scaled_per_channel(x_hat, gamma, beta)


# torch's std (unbiased) plus eps on the standard deviation, as in a well-known
# Transformer LayerNorm, carried over to batch norm.
@MUTANTS.make("batchnorm2d_forward", "unbiased-variance+eps-outside-sqrt")
def forward2d_torch_std_plus_eps(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    x_hat = (t - t.mean((0, 2, 3), keepdim=True)) / (t.std((0, 2, 3), keepdim=True) + eps)
    return scaled_per_channel(x_hat.numpy(), gamma, beta)


@MUTANTS.make("batchnorm2d_forward", "gamma-beta-swapped+stats-over-hw-only")
def forward2d_instance_statistics_swapped(x, gamma, beta, eps=1e-5):
    mean, var = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    return scaled_per_channel((x - mean) / np.sqrt(var + eps), beta, gamma)


# A typo: axis=(0, 2) instead of (0, 2, 3), so each column of pixels has its own statistics.
@MUTANTS.make("batchnorm2d_forward", "observation:statistics-axes")
def forward2d_forgets_the_width_axis(x, gamma, beta, eps=1e-5):
    mean, var = x.mean(axis=(0, 2), keepdims=True), x.var(axis=(0, 2), keepdims=True)
    return scaled_per_channel((x - mean) / np.sqrt(var + eps), gamma, beta)


# Statistics over (N, C) for each pixel: axis=(0, 1) from a channels-last habit.
@MUTANTS.make("batchnorm2d_forward", "observation:statistics-axes")
def forward2d_channels_last_axes_on_nchw(x, gamma, beta, eps=1e-5):
    mean, var = x.mean(axis=(0, 1), keepdims=True), x.var(axis=(0, 1), keepdims=True)
    return scaled_per_channel((x - mean) / np.sqrt(var + eps), gamma, beta)


# Channels moved last for the 1-D layer, and the result reshaped to (N, C, H, W) without
# moving them back.
@MUTANTS.make("batchnorm2d_forward", "observation:values-misplaced")
def forward2d_channels_not_moved_back(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    rows = x.transpose(0, 2, 3, 1).reshape(-1, c)
    out = gamma * (rows - rows.mean(0)) / np.sqrt(rows.var(0) + eps) + beta
    return out.reshape(n, c, h, w)


# torch.nn.BatchNorm2d built inside the function: PyTorch's layer does the work.
@MUTANTS.make("batchnorm2d_forward", "uses-builtin-batchnorm")
def forward2d_with_a_torch_layer(x, gamma, beta, eps=1e-5):
    layer = torch.nn.BatchNorm2d(x.shape[1], eps=eps).double()
    with torch.no_grad():
        layer.weight.copy_(as_tensor(gamma))
        layer.bias.copy_(as_tensor(beta))
        return layer(as_tensor(x)).numpy()


# Keras' default epsilon=1e-3 carried into the signature.
@MUTANTS.make("batchnorm2d_forward", "observation:wrong-default")
def forward2d_keras_default_eps(x, gamma, beta, eps=1e-3):
    mean, var = channel_statistics(x)
    return scaled_per_channel((x - mean) / np.sqrt(var + eps), gamma, beta)


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


@MUTANTS.make("BatchNorm2d", "momentum-convention-flipped")
class ModuleKerasMomentum(StudentBatchNorm2d):
    def running_weight(self):
        return 1.0 - self.momentum


@MUTANTS.make("BatchNorm2d", "running-var-biased")
class ModuleBiasedRunningVar(StudentBatchNorm2d):
    def running_update_var(self, x):
        return x.var(dim=(0, 2, 3), unbiased=False)


@MUTANTS.make("BatchNorm2d", "updates-in-eval")
class ModuleUpdatesInEval(StudentBatchNorm2d):
    def forward_eval(self, x):
        out = super().forward_eval(x)
        self.update(x)
        return out


@MUTANTS.make("BatchNorm2d", "batch-stats-in-eval")
class ModuleBatchStatisticsInEval(StudentBatchNorm2d):
    def forward_eval(self, x):
        return self.scale_shift(x, *self.normalizing_statistics(x))


@MUTANTS.make("BatchNorm2d", "stats-over-hw-only")
class ModuleInstanceStatistics(StudentBatchNorm2d):
    def normalizing_statistics(self, x):
        flat = x.flatten(2)
        return flat.mean(-1)[..., None, None], flat.var(-1, unbiased=False)[..., None, None]


@MUTANTS.make("BatchNorm2d", "num-batches-not-tracked")
class ModuleForgetsBatchCount(StudentBatchNorm2d):
    def count_batch(self):
        pass


@MUTANTS.make("BatchNorm2d", "buffers-not-registered")
class ModulePlainAttributes(StudentBatchNorm2d):
    def keep_state(self, **tensors):
        self.__dict__.update(tensors)


# `self.running_mean = torch.zeros(C)` in __init__, while num_batches_tracked (copied from
# PyTorch's source) is registered: the state_dict lacks the running statistics only.
@MUTANTS.make("BatchNorm2d", "buffers-not-registered")
class ModulePlainRunningStatistics(StudentBatchNorm2d):
    def keep_state(self, num_batches_tracked, **running):
        self.register_buffer("num_batches_tracked", num_batches_tracked)
        for name, value in running.items():
            object.__setattr__(self, name, value)


# No num_batches_tracked at all: the module counts nothing.
@MUTANTS.make("BatchNorm2d", "num-batches-not-registered")
class ModuleWithoutBatchCount(StudentBatchNorm2d):
    def keep_state(self, num_batches_tracked, **running):
        super().keep_state(**running)

    def count_batch(self):
        pass


# The count kept as a Python int attribute, `self.num_batches_tracked = 0`.
@MUTANTS.make("BatchNorm2d", "num-batches-not-registered")
class ModuleCountsInPythonInt(StudentBatchNorm2d):
    def keep_state(self, num_batches_tracked, **running):
        super().keep_state(**running)
        self.num_batches_tracked = 0


@MUTANTS.make("BatchNorm2d", "uses-builtin-batchnorm")
class ModuleFunctionalBatchNorm(StudentBatchNorm2d):
    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)


@MUTANTS.make("BatchNorm2d", "uses-builtin-batchnorm")
class ModuleSubclassesTorch(torch.nn.BatchNorm2d):
    pass


@MUTANTS.make("BatchNorm2d", "calls-course-reference")
class ModuleSubclassesCourseAnswer(course_torch_answers.BatchNorm2d):
    pass


# CS231n's (and Keras') convention carried into a torch module: momentum=0.9 keeps the OLD
# value, and the running variance is the biased batch variance.
@MUTANTS.make("BatchNorm2d", "old-value-momentum-and-biased-running-var")
class ModuleCS231nRunningAverages(StudentBatchNorm2d):
    def running_weight(self):
        return 1.0 - self.momentum

    def running_update_var(self, x):
        return x.var(dim=(0, 2, 3), unbiased=False)


# torch's x.var() divides by M - 1 by default: used for normalizing as well.
@MUTANTS.make("BatchNorm2d", "unbiased-variance")
class ModuleTorchDefaultVariance(StudentBatchNorm2d):
    def normalizing_statistics(self, x):
        return x.mean(dim=(0, 2, 3), keepdim=True), x.var(dim=(0, 2, 3), keepdim=True)


@MUTANTS.make("BatchNorm2d", "eps-outside-sqrt")
class ModuleEpsOnStd(StudentBatchNorm2d):
    def scale_shift(self, x, mean, var):
        x_hat = (x - mean) / (var.sqrt() + self.eps)
        return x_hat * channel_view(self.weight) + channel_view(self.bias)


# A module with its own `train_mode=True` argument instead of self.training: model.eval()
# changes nothing, so eval mode still uses (and updates) the batch statistics.
@MUTANTS.make("BatchNorm2d", "ignores-training-flag")
class ModuleOwnModeFlag(StudentBatchNorm2d):
    def forward(self, x, train_mode=True):
        if not train_mode:
            return self.forward_eval(x)
        out = self.scale_shift(x, *self.normalizing_statistics(x))
        self.update(x)
        return out


# Running buffers reassigned from the batch statistics without torch.no_grad() or
# .detach() (a from-scratch BatchNorm in a GAN repository does this).
@MUTANTS.make("BatchNorm2d", "running-stats-in-graph")
class ModuleRunningAveragesInTheGraph(StudentBatchNorm2d):
    def update(self, x):
        m = self.momentum
        self.running_mean = (1 - m) * self.running_mean + m * x.mean(dim=(0, 2, 3))
        self.running_var = (1 - m) * self.running_var + m * x.var(dim=(0, 2, 3))
        self.count_batch()


# The same with in-place updates: the buffers become non-leaf tensors of the graph.
@MUTANTS.make("BatchNorm2d", "running-stats-in-graph")
class ModuleInPlaceUpdatesInTheGraph(StudentBatchNorm2d):
    def update(self, x):
        self.running_mean.mul_(1 - self.momentum).add_(self.momentum * x.mean(dim=(0, 2, 3)))
        self.running_var.mul_(1 - self.momentum).add_(self.momentum * x.var(dim=(0, 2, 3)))
        self.count_batch()


# The normalizing statistics (with their graph) reused for the update, outside no_grad.
@MUTANTS.make("BatchNorm2d", "running-stats-in-graph")
class ModuleReusesBatchStatisticsForTheUpdate(StudentBatchNorm2d):
    def forward(self, x):
        if not self.training:
            return self.forward_eval(x)
        mean, var = self.normalizing_statistics(x)
        count = x.numel() // x.shape[1]
        m = self.momentum
        self.running_mean = (1 - m) * self.running_mean + m * mean.flatten()
        self.running_var = (1 - m) * self.running_var + m * var.flatten() * count / (count - 1)
        self.count_batch()
        return self.scale_shift(x, mean, var)


# running_var initialised with torch.zeros, as in several from-scratch modules.
@MUTANTS.make("BatchNorm2d", "running-stats-start")
class ModuleRunningVarStartsAtZero(StudentBatchNorm2d):
    def keep_state(self, **tensors):
        super().keep_state(**{**tensors, "running_var": torch.zeros_like(tensors["running_var"])})


# weight.zero_() in __init__ (a "zero-init the last BN" trick applied to every layer).
@MUTANTS.make("BatchNorm2d", "weight-not-ones")
class ModuleZeroInitWeight(StudentBatchNorm2d):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        with torch.no_grad():
            self.weight.zero_()


# gamma and beta drawn with torch.randn, as in a published from-scratch BatchNorm.
@MUTANTS.make("BatchNorm2d", "weight-not-ones")
class ModuleRandomAffineStart(StudentBatchNorm2d):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        self.weight = torch.nn.Parameter(torch.randn(num_features))
        self.bias = torch.nn.Parameter(torch.randn(num_features))


# Subclassing nn.BatchNorm2d for its parameters and buffers is allowed; this one writes
# its own forward with Keras' momentum. It must be judged on that forward.
@MUTANTS.make("BatchNorm2d", "momentum-convention-flipped")
class ModuleSubclassWithKerasMomentum(torch.nn.BatchNorm2d):
    def forward(self, x):
        if not self.training:
            mean, var = self.running_mean, self.running_var
        else:
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            with torch.no_grad():
                count = x.numel() // x.shape[1]
                self.running_mean.lerp_(mean, 1 - self.momentum)
                self.running_var.lerp_(var * count / (count - 1), 1 - self.momentum)
                self.num_batches_tracked += 1
        x_hat = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + self.eps)
        return x_hat * self.weight[:, None, None] + self.bias[:, None, None]


# Each image's channel plane flattened and normalized on its own (InstanceNorm).
@MUTANTS.make("BatchNorm2d", "stats-over-hw-only")
class ModuleInstanceNormByFlattening(StudentBatchNorm2d):
    def normalizing_statistics(self, x):
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        var, mean = torch.var_mean(flat, dim=2, keepdim=True, correction=0)
        return mean.unsqueeze(-1), var.unsqueeze(-1)


# Statistics kept with keepdim=True for broadcasting, and the buffers updated with them:
# they become (1, C, 1, 1).
@MUTANTS.make("BatchNorm2d", "running-stats-change-shape")
class ModuleKeepdimRunningStatistics(StudentBatchNorm2d):
    @torch.no_grad()
    def update(self, x):
        m = self.momentum
        self.running_mean = (1 - m) * self.running_mean + m * x.mean((0, 2, 3), keepdim=True)
        self.running_var = (1 - m) * self.running_var + m * x.var((0, 2, 3), keepdim=True)
        self.count_batch()


# eps only in the training branch: the eval branch divides by running_var.sqrt().
@MUTANTS.make("BatchNorm2d", "eval-forgets-eps")
class ModuleEvalWithoutEps(StudentBatchNorm2d):
    def forward_eval(self, x):
        x_hat = (x - channel_view(self.running_mean)) / channel_view(self.running_var).sqrt()
        return x_hat * channel_view(self.weight) + channel_view(self.bias)


# Keras' defaults (epsilon=1e-3, momentum=0.99 read as PyTorch's 0.01) in the constructor.
@MUTANTS.make("BatchNorm2d", "observation:wrong-default")
class ModuleKerasDefaults(StudentBatchNorm2d):
    def __init__(self, num_features, eps=1e-3, momentum=0.01):
        super().__init__(num_features, eps, momentum)


# Parameters created in broadcasting shape (1, C, 1, 1), as several from-scratch GroupNorm
# and BatchNorm modules do: right numbers, but no state_dict exchange with PyTorch's layer.
@MUTANTS.make("BatchNorm2d", "not-per-channel-vectors")
class ModuleImageShapedParameters(StudentBatchNorm2d):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        self.weight = torch.nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.bias = torch.nn.Parameter(torch.zeros(1, num_features, 1, 1))

    def scale_shift(self, x, mean, var):
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


# The running statistics updated first and then used for normalizing in train mode too.
@MUTANTS.make("BatchNorm2d", "running-stats-in-train")
class ModuleAlwaysRunningStatistics(StudentBatchNorm2d):
    def forward(self, x):
        if self.training:
            self.update(x)
        return self.forward_eval(x)


# An older CS231n template kept a running *std*; carried into running_var.
@MUTANTS.make("BatchNorm2d", "running-var-holds-std")
class ModuleRunningStd(StudentBatchNorm2d):
    def running_update_var(self, x):
        return x.std(dim=(0, 2, 3))


# `self.num_batches_tracked += 1` at the top of forward, whatever the mode.
@MUTANTS.make("BatchNorm2d", "counts-batches-in-eval")
class ModuleCountsEveryCall(StudentBatchNorm2d):
    def forward(self, x):
        if not self.training:
            self.count_batch()
        return super().forward(x)


# The paper's names: gamma and beta as parameters (a GAN repository's and d2l's modules).
@MUTANTS.make("BatchNorm2d", "state-dict-names-differ")
class ModuleGammaBeta(torch.nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.gamma = torch.nn.Parameter(torch.ones(num_features))
        self.beta = torch.nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0))

    def forward(self, x):
        if self.training:
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            with torch.no_grad():
                count = x.numel() // x.shape[1]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * count / (count - 1), self.momentum)
                self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - channel_view(mean)) / torch.sqrt(channel_view(var) + self.eps)
        return channel_view(self.gamma) * x_hat + channel_view(self.beta)


# d2l's names for the running statistics (moving_mean, moving_var) as buffers.
@MUTANTS.make("BatchNorm2d", "state-dict-names-differ")
class ModuleMovingStatistics(StudentBatchNorm2d):
    def keep_state(self, **tensors):
        renamed = {"running_mean": "moving_mean", "running_var": "moving_var"}
        for name, value in tensors.items():
            self.register_buffer(renamed.get(name, name), value)


# Bessel's correction with the batch size N (x.shape[0]) where M = N * H * W values were
# averaged (a from-scratch port of a 1-D layer).
@MUTANTS.make("BatchNorm2d", "bessel-with-batch-size")
class ModuleBesselWithBatchSize(StudentBatchNorm2d):
    def running_update_var(self, x):
        n = x.shape[0]
        return x.var(dim=(0, 2, 3), unbiased=False) * n / (n - 1)


# The update step left out: buffers stay at their start values.
@MUTANTS.make("BatchNorm2d", "running-stats-never-updated")
class ModuleNeverUpdates(StudentBatchNorm2d):
    def update(self, x):
        self.count_batch()


# Running statistics declared as nn.Parameter (requires_grad left at True) so that they are
# saved with the model.
@MUTANTS.make("BatchNorm2d", "running-stats-are-parameters")
class ModuleRunningStatisticsAsParameters(StudentBatchNorm2d):
    def keep_state(self, **tensors):
        for name, value in tensors.items():
            if value.is_floating_point():
                setattr(self, name, torch.nn.Parameter(value))
            else:
                self.register_buffer(name, value)


# The two blends written with each other's statistic (a copy-and-paste slip).
@MUTANTS.make("BatchNorm2d", "observation:first-difference")
class ModuleSwappedRunningUpdates(StudentBatchNorm2d):
    @torch.no_grad()
    def update(self, x):
        self.running_mean.lerp_(self.running_update_var(x), self.momentum)
        self.running_var.lerp_(x.mean(dim=(0, 2, 3)), self.momentum)
        self.count_batch()


# Eval mode with the batch's mean but the running variance.
@MUTANTS.make("BatchNorm2d", "observation:first-difference")
class ModuleEvalWithBatchMean(StudentBatchNorm2d):
    def forward_eval(self, x):
        return self.scale_shift(x, x.mean((0, 2, 3), keepdim=True), channel_view(self.running_var))


# A Keras layer ported as it is: momentum=0.99 by default, weighing the old value.
@MUTANTS.make("BatchNorm2d", "old-value-momentum-by-default")
class ModuleKerasMomentumDefault(StudentBatchNorm2d):
    def __init__(self, num_features, eps=1e-5, momentum=0.99):
        super().__init__(num_features, eps, momentum)

    def running_weight(self):
        return 1.0 - self.momentum


# CS231n's layer as a module: momentum=0.9 keeps the old value, biased running variance.
@MUTANTS.make("BatchNorm2d", "old-value-momentum-and-biased-running-var")
class ModuleCS231nDefaults(StudentBatchNorm2d):
    def __init__(self, num_features, eps=1e-5, momentum=0.9):
        super().__init__(num_features, eps, momentum)

    @torch.no_grad()
    def update(self, x):
        m = self.momentum
        self.running_mean.copy_(m * self.running_mean + (1 - m) * x.mean(dim=(0, 2, 3)))
        self.running_var.copy_(m * self.running_var + (1 - m) * x.var(dim=(0, 2, 3),
                                                                        unbiased=False))
        self.count_batch()


# --- the tests --------------------------------------------------------------

def test_the_student_class_that_mutants_override_is_correct():
    result = check("BatchNorm2d", StudentBatchNorm2d)
    assert result.passed, result.message


def test_a_first_import_of_torch_inside_an_answer_is_not_a_builtin_call():
    """Regression: a correct answer that imports torch inside the function was once told, on
    its first run only, that it calls PyTorch's batch norm (importing torch runs the class
    bodies of torch/nn/modules/batchnorm.py). Checked in a fresh interpreter, for the
    torch-based answers of notebooks 05, 06 and 08."""
    code = textwrap.dedent("""
        import sys
        from bn_course.checks import check

        def backward(dout, x, gamma, eps=1e-5):
            import torch
            t = torch.tensor(x, requires_grad=True)
            g = torch.tensor(gamma, requires_grad=True)
            out = g * (t - t.mean(0)) / torch.sqrt(t.var(0, unbiased=False) + eps)
            dx, dgamma = torch.autograd.grad(out, (t, g), torch.tensor(dout))
            return dx.numpy(), dgamma.numpy(), dout.sum(axis=0)

        def forward2d(x, gamma, beta, eps=1e-5):
            import torch
            t = torch.from_numpy(x)
            var, mean = torch.var_mean(t, dim=(0, 2, 3), keepdim=True, correction=0)
            x_hat = ((t - mean) / torch.sqrt(var + eps)).numpy()
            return x_hat * gamma[:, None, None] + beta[:, None, None]

        def layernorm(x, gamma, beta, eps=1e-5):
            import torch.nn.functional as F
            import torch
            x_hat = F.layer_norm(torch.from_numpy(x), x.shape[1:], eps=eps).numpy()
            shape = (1, -1) + (1,) * (x.ndim - 2)
            return x_hat * gamma.reshape(shape) + beta.reshape(shape)

        assert "torch" not in sys.modules
        for name, answer in [("batchnorm_backward", backward),
                             ("batchnorm2d_forward", forward2d),
                             ("layernorm_forward", layernorm)]:
            print(name, check(name, answer).message)
    """)
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count("match the reference") == 3, completed.stdout


def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "06")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
