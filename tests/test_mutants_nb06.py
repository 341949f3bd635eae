"""Mutation suite for notebook 06 (images and a PyTorch module): each wrong implementation below must
be named with its catalogue id (see tests/mutation.py)."""

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


# --- the tests --------------------------------------------------------------

def test_the_student_class_that_mutants_override_is_correct():
    result = check("BatchNorm2d", StudentBatchNorm2d)
    assert result.passed, result.message


def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "06")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
