"""Mutation suite for notebook 04 (train vs eval): each wrong implementation below must
be named with its catalogue id (see tests/mutation.py)."""

import numpy as np
import pytest

# Imported here, not inside the candidates: the checker gives each call of a candidate a
# time limit, and a first `import torch` would spend a good part of it.
import torch
import torch.nn.functional as F
from mutation import Mutants, as_tensor, assert_diagnosed, missing_mutants, student_x_hat

import bn_course.reference.numpy as course_answers
from bn_course.checks import check

MUTANTS = Mutants()


# --- update_running_stats ---------------------------------------------------

def unbiased_var(x):
    n = x.shape[0]
    return ((x - x.mean(axis=0)) ** 2).sum(axis=0) / (n - 1)


@MUTANTS.make("update_running_stats", "momentum-convention-flipped")
def update_keras_style_in_place(running_mean, running_var, x, momentum=0.1):
    running_mean *= momentum
    running_mean += (1 - momentum) * x.mean(axis=0)
    running_var *= momentum
    running_var += (1 - momentum) * unbiased_var(x)
    return running_mean, running_var


@MUTANTS.make("update_running_stats", "running-var-biased")
def update_with_torch_biased_var(running_mean, running_var, x, momentum=0.1):
    t = as_tensor(x)
    new_mean = torch.lerp(as_tensor(running_mean), t.mean(0), momentum)
    new_var = torch.lerp(as_tensor(running_var), t.var(0, correction=0), momentum)
    return new_mean.numpy(), new_var.numpy()


@MUTANTS.make("update_running_stats", "returns-batch-statistics")
def update_returns_batch_covariance_diagonal(running_mean, running_var, x, momentum=0.1):
    covariance = np.atleast_2d(np.cov(x, rowvar=False))
    return x.mean(axis=0), np.diagonal(covariance).copy()


@MUTANTS.make("update_running_stats", "running-var-from-std")
def update_blends_std(running_mean, running_var, x, momentum=0.1):
    new_mean = running_mean + momentum * (x.mean(axis=0) - running_mean)
    new_var = running_var + momentum * (np.sqrt(unbiased_var(x)) - running_var)
    return new_mean, new_var


@MUTANTS.make("update_running_stats", "forgot-running-var")
def update_mean_only(running_mean, running_var, x, momentum=0.1):
    new_mean = [(1 - momentum) * m + momentum * x[:, j].mean()
                for j, m in enumerate(running_mean)]
    return np.array(new_mean, dtype=running_mean.dtype), running_var.copy()


@MUTANTS.make("update_running_stats", "modifies-input")
def update_centres_x_in_place(running_mean, running_var, x, momentum=0.1):
    mean = x.mean(axis=0)
    x -= mean
    var = (x ** 2).sum(axis=0) / (len(x) - 1)
    return ((1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var)


# --- batchnorm_eval ---------------------------------------------------------

@MUTANTS.make("batchnorm_eval", "batch-stats-in-eval")
def eval_with_batch_statistics(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return gamma * student_x_hat(x, eps) + beta


@MUTANTS.make("batchnorm_eval", "eps-outside-sqrt")
def eval_eps_on_std(x, running_mean, running_var, gamma, beta, eps=1e-5):
    scale = gamma / (np.sqrt(running_var) + eps)
    return (x - running_mean) * scale + beta


@MUTANTS.make("batchnorm_eval", "gamma-beta-swapped")
def eval_swapped(x, running_mean, running_var, gamma, beta, eps=1e-5):
    x_hat = np.divide(x - running_mean[None, :], np.sqrt(running_var + eps)[None, :])
    return x_hat * beta[None, :] + gamma[None, :]


@MUTANTS.make("batchnorm_eval", "var-instead-of-std")
def eval_divides_by_variance(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return np.einsum("nd,d->nd", x - running_mean, gamma / (running_var + eps)) + beta


@MUTANTS.make("batchnorm_eval", "returns-normalized-not-scaled")
def eval_x_hat_only(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return (x - running_mean) * (running_var + eps) ** -0.5


@MUTANTS.make("batchnorm_eval", "modifies-input")
def eval_centres_x_in_place(x, running_mean, running_var, gamma, beta, eps=1e-5):
    x -= running_mean
    return gamma * x / np.sqrt(running_var + eps) + beta


@MUTANTS.make("batchnorm_eval", "uses-builtin-batchnorm")
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


@MUTANTS.make("BatchNorm1d", "updates-in-eval")
class UpdatesInEval(StudentBatchNorm1d):
    def forward_eval(self, x):
        out = super().forward_eval(x)
        self.update(x)
        return out


@MUTANTS.make("BatchNorm1d", "updates-in-eval")
class UpdatesBeforeCheckingTheMode(StudentBatchNorm1d):
    """The update sits at the top of __call__, so it also runs (first) in eval mode."""

    def __call__(self, x):
        if self.training:
            self.check_batch(x)
        statistics = self.batch_statistics(x)
        self.update(x)
        return self.scale_shift(x, *statistics) if self.training else self.forward_eval(x)


@MUTANTS.make("BatchNorm1d", "no-update-in-train")
class NeverUpdates(StudentBatchNorm1d):
    def update(self, x):
        pass


@MUTANTS.make("BatchNorm1d", "updates-before-normalizing")
class UpdatesFirst(StudentBatchNorm1d):
    def forward_train(self, x):
        self.check_batch(x)
        self.update(x)
        return self.forward_eval(x)


@MUTANTS.make("BatchNorm1d", "batch-stats-in-eval")
class BatchStatisticsInEval(StudentBatchNorm1d):
    def forward_eval(self, x):
        return self.scale_shift(x, *self.batch_statistics(x))


@MUTANTS.make("BatchNorm1d", "momentum-convention-flipped")
class KerasMomentum(StudentBatchNorm1d):
    def weight_of_new(self):
        return 1 - self.momentum


@MUTANTS.make("BatchNorm1d", "running-var-biased")
class BiasedRunningVar(StudentBatchNorm1d):
    def running_update_var(self, x):
        return self.batch_statistics(x)[1][0]


@MUTANTS.make("BatchNorm1d", "no-error-for-batch-of-one")
class AcceptsBatchOfOne(StudentBatchNorm1d):
    def check_batch(self, x):
        pass


@MUTANTS.make("BatchNorm1d", "running-var-starts-at-zero")
class RunningVarFromZero(StudentBatchNorm1d):
    def initial_running_var(self, num_features):
        return np.zeros(num_features)


@MUTANTS.make("BatchNorm1d", "modifies-input")
class CentresInPlace(StudentBatchNorm1d):
    def forward_train(self, x):
        self.check_batch(x)
        mean, var = self.batch_statistics(x)
        self.update(x)
        x -= mean
        return x / np.sqrt(var + self.eps) * self.gamma + self.beta


@MUTANTS.make("BatchNorm1d", "calls-course-reference")
class EvalByCourseAnswer(StudentBatchNorm1d):
    def forward_eval(self, x):
        return course_answers.batchnorm_eval(x, self.running_mean, self.running_var,
                                             self.gamma, self.beta, self.eps)


@MUTANTS.make("BatchNorm1d", "uses-builtin-batchnorm")
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

@MUTANTS.make("keras_to_torch_momentum", "keras-momentum-not-converted")
def keras_as_is(m):
    return float(m)


@MUTANTS.make("keras_to_torch_momentum", "keras-conversion-sign-flipped")
def keras_negated(m):
    return -(1 - m)


@MUTANTS.make("keras_to_torch_momentum", "calls-course-reference")
def keras_by_course_answer(m):
    return course_answers.keras_to_torch_momentum(m)


# --- the tests --------------------------------------------------------------

def test_the_student_class_that_mutants_override_is_correct():
    result = check("BatchNorm1d", StudentBatchNorm1d)
    assert result.passed, result.message


def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "04")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
