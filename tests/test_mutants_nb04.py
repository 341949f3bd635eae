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


# CS231n's assignment (and d2l before 2022, Keras): momentum weighs the OLD value and the
# running variance is the biased batch variance, written the way the assignment's docstring
# spells it.
@MUTANTS.make("update_running_stats", "old-value-momentum-and-biased-running-var")
def update_cs231n_docstring(running_mean, running_var, x, momentum=0.1):
    sample_mean, sample_var = np.mean(x, axis=0), np.var(x, axis=0)
    running_mean = momentum * running_mean + (1 - momentum) * sample_mean
    running_var = momentum * running_var + (1 - momentum) * sample_var
    return running_mean, running_var


# The same convention, new value first, as in interview-prep notes.
@MUTANTS.make("update_running_stats", "old-value-momentum-and-biased-running-var")
def update_keras_order(running_mean, running_var, x, momentum=0.1):
    return ((1 - momentum) * x.mean(axis=0) + momentum * running_mean,
            (1 - momentum) * x.var(axis=0) + momentum * running_var)


# The same convention in torch (d2l before 2022), with a first-time import inside.
@MUTANTS.make("update_running_stats", "old-value-momentum-and-biased-running-var")
def update_d2l_before_2022(running_mean, running_var, x, momentum=0.1):
    import torch
    X = torch.from_numpy(x)
    mean = X.mean(dim=0)
    var = ((X - mean) ** 2).mean(dim=0)
    moving_mean = momentum * torch.from_numpy(running_mean) + (1.0 - momentum) * mean
    moving_var = momentum * torch.from_numpy(running_var) + (1.0 - momentum) * var
    return moving_mean.numpy(), moving_var.numpy()


# d2l after its 2022 fix: PyTorch's momentum, but still the biased variance.
@MUTANTS.make("update_running_stats", "running-var-biased")
def update_d2l_after_2022(running_mean, running_var, x, momentum=0.1):
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).mean(axis=0)
    return ((1.0 - momentum) * running_mean + momentum * mean,
            (1.0 - momentum) * running_var + momentum * var)


# A CS231n variant that keeps a running STANDARD DEVIATION (biased) with momentum on the
# old value: the convention plus the std.
@MUTANTS.make("update_running_stats",
              "old-value-momentum-and-biased-running-var+running-var-from-std")
def update_running_std_cs231n(running_mean, running_var, x, momentum=0.1):
    return (momentum * running_mean + (1 - momentum) * x.mean(axis=0),
            momentum * running_var + (1 - momentum) * x.std(axis=0))


# Keras-core's bug report: the moving variance is never updated in training; in place.
@MUTANTS.make("update_running_stats", "forgot-running-var")
def update_mean_in_place_only(running_mean, running_var, x, momentum=0.1):
    running_mean += momentum * (x.mean(axis=0) - running_mean)
    return running_mean, running_var


# Two at once: Keras' momentum AND the running variance forgotten.
@MUTANTS.make("update_running_stats", "momentum-convention-flipped+forgot-running-var")
def update_keras_mean_only(running_mean, running_var, x, momentum=0.1):
    return momentum * running_mean + (1 - momentum) * x.mean(axis=0), running_var


# torch.var_mean, the batch's statistics returned as the new running ones.
@MUTANTS.make("update_running_stats", "returns-batch-statistics")
def update_returns_torch_var_mean(running_mean, running_var, x, momentum=0.1):
    var, mean = torch.var_mean(as_tensor(x), dim=0)
    return mean.numpy(), var.numpy()


# Keras' momentum with np.average's weights.
@MUTANTS.make("update_running_stats", "momentum-convention-flipped")
def update_keras_np_average(running_mean, running_var, x, momentum=0.1):
    weights = [momentum, 1 - momentum]
    return (np.average([running_mean, x.mean(axis=0)], axis=0, weights=weights),
            np.average([running_var, x.var(axis=0, ddof=1)], axis=0, weights=weights))


# The momentum argument never used: 0.1 written into the formula.
@MUTANTS.make("update_running_stats", "ignores-momentum")
def update_hard_coded_momentum(running_mean, running_var, x, momentum=0.1):
    return (0.9 * running_mean + 0.1 * x.mean(axis=0),
            0.9 * running_var + 0.1 * x.var(axis=0, ddof=1))


# Keras' default decay written into the formula: the batch always weighs 0.01.
@MUTANTS.make("update_running_stats", "observation:momentum-weight")
def update_hard_coded_keras_decay(running_mean, running_var, x, momentum=0.1):
    return (0.99 * running_mean + 0.01 * x.mean(axis=0),
            0.99 * running_var + 0.01 * x.var(axis=0, ddof=1))


# (var, mean) instead of (mean, var), with torch.var_mean's order in mind.
@MUTANTS.make("update_running_stats", "outputs-swapped")
def update_in_var_mean_order(running_mean, running_var, x, momentum=0.1):
    var, mean = torch.var_mean(as_tensor(x), dim=0)
    return (torch.lerp(as_tensor(running_var), var, momentum).numpy(),
            torch.lerp(as_tensor(running_mean), mean, momentum).numpy())


# Two at once: Keras' momentum AND the order (var, mean).
@MUTANTS.make("update_running_stats", "momentum-convention-flipped+outputs-swapped")
def update_keras_var_first(running_mean, running_var, x, momentum=0.1):
    return (momentum * running_var + (1 - momentum) * x.var(axis=0, ddof=1),
            momentum * running_mean + (1 - momentum) * x.mean(axis=0))


# x cast to float32 first "to save memory".
@MUTANTS.make("update_running_stats", "observation:loses-digits")
def update_in_float32(running_mean, running_var, x, momentum=0.1):
    x = x.astype(np.float32)
    return ((1 - momentum) * running_mean + momentum * x.mean(axis=0),
            (1 - momentum) * running_var + momentum * x.var(axis=0, ddof=1))


# CS231n's default momentum (0.9) in the signature, with PyTorch's formula.
@MUTANTS.make("update_running_stats", "observation:wrong-default")
def update_cs231n_default_momentum(running_mean, running_var, x, momentum=0.9):
    return ((1 - momentum) * running_mean + momentum * x.mean(axis=0),
            (1 - momentum) * running_var + momentum * x.var(axis=0, ddof=1))


# The blend written as an accumulation: the old value is never decayed.
@MUTANTS.make("update_running_stats", "old-value-not-decayed")
def update_accumulates(running_mean, running_var, x, momentum=0.1):
    new_mean = running_mean.copy()
    new_mean += momentum * x.mean(axis=0)
    new_var = running_var + momentum * np.var(x, axis=0, ddof=1)
    return new_mean, new_var


# The running mean updated first, then reused as "the mean" for the batch variance.
@MUTANTS.make("update_running_stats", "var-around-new-running-mean")
def update_var_around_updated_mean(running_mean, running_var, x, momentum=0.1):
    running_mean = (1 - momentum) * running_mean + momentum * x.mean(axis=0)
    batch_var = np.sum((x - running_mean) ** 2, axis=0) / (x.shape[0] - 1)
    return running_mean, (1 - momentum) * running_var + momentum * batch_var


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


# "eps missing in eval": the training path had it, the inference path does not.
@MUTANTS.make("batchnorm_eval", "forgot-eps")
def eval_without_eps(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var) + beta


# "beta missing in eval".
@MUTANTS.make("batchnorm_eval", "forgot-shift")
def eval_without_beta(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var + eps)


@MUTANTS.make("batchnorm_eval", "forgot-scale")
def eval_without_gamma(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return (x - running_mean) / np.sqrt(running_var + eps) + beta


@MUTANTS.make("batchnorm_eval", "eps-after-division")
def eval_eps_last(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return gamma * ((x - running_mean) / np.sqrt(running_var) + eps) + beta


@MUTANTS.make("batchnorm_eval", "eps-as-floor")
def eval_clamped_running_var(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(np.maximum(running_var, eps)) + beta


# A from-scratch library that stores the running std and divides by it directly: with a
# running VARIANCE that divides by the variance.
@MUTANTS.make("batchnorm_eval", "var-instead-of-std")
def eval_divides_by_running_var_torch(x, running_mean, running_var, gamma, beta, eps=1e-5):
    x_hat = (as_tensor(x) - as_tensor(running_mean)) / (as_tensor(running_var) + eps)
    return (as_tensor(gamma) * x_hat + as_tensor(beta)).numpy()


# Two at once: the batch's statistics AND eps on the std.
@MUTANTS.make("batchnorm_eval", "eps-outside-sqrt+batch-stats-in-eval")
def eval_batch_statistics_eps_on_std(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(axis=0)) / (x.std(axis=0) + eps) + beta


# Two at once: gamma and beta swapped AND no eps.
@MUTANTS.make("batchnorm_eval", "gamma-beta-swapped+forgot-eps")
def eval_swapped_without_eps(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return beta * (x - running_mean) / np.sqrt(running_var) + gamma


# One function for both modes, CS231n-style, still returning (out, cache) in eval.
@MUTANTS.make("batchnorm_eval", "returns-out-and-cache")
def eval_cs231n_out_and_cache(x, running_mean, running_var, gamma, beta, eps=1e-5):
    out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
    return out, None


# A folded scale and shift computed in float32.
@MUTANTS.make("batchnorm_eval", "observation:loses-digits")
def eval_folded_in_float32(x, running_mean, running_var, gamma, beta, eps=1e-5):
    scale = (gamma / np.sqrt(running_var + eps)).astype(np.float32)
    shift = (beta - running_mean * gamma / np.sqrt(running_var + eps)).astype(np.float32)
    return x.astype(np.float32) * scale + shift


# Keras' default epsilon in the signature; otherwise right.
@MUTANTS.make("batchnorm_eval", "observation:wrong-default")
def eval_keras_default_eps(x, running_mean, running_var, gamma, beta, eps=1e-3):
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta


# Shift then scale on the inference path too.
@MUTANTS.make("batchnorm_eval", "shift-then-scale")
def eval_shift_then_scale(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return ((x - running_mean) / np.sqrt(running_var + eps) + beta) * gamma


# eps multiplied into the running variance.
@MUTANTS.make("batchnorm_eval", "eps-multiplies-variance")
def eval_eps_multiplied(x, running_mean, running_var, gamma, beta, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var * (1 + eps)) + beta


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


# CS231n's / Keras' convention in a layer: momentum on the old value, biased running var.
@MUTANTS.make("BatchNorm1d", "old-value-momentum-and-biased-running-var")
class Cs231nConvention(StudentBatchNorm1d):
    def weight_of_new(self):
        return 1 - self.momentum

    def running_update_var(self, x):
        return x.var(axis=0)


# A "simple" train step seen in blog code: the running statistics are updated first (with
# CS231n's convention) and the batch is normalized with them.
@MUTANTS.make("BatchNorm1d",
              "old-value-momentum-and-biased-running-var+updates-before-normalizing")
class Cs231nUpdatesFirst(Cs231nConvention):
    def forward_train(self, x):
        self.check_batch(x)
        self.update(x)
        return self.forward_eval(x)


# A from-scratch layer that starts with zero moving variance and uses Keras' convention.
@MUTANTS.make("BatchNorm1d",
              "old-value-momentum-and-biased-running-var+running-var-starts-at-zero")
class KerasConventionFromZero(Cs231nConvention):
    def initial_running_var(self, num_features):
        return np.zeros(num_features)


@MUTANTS.make("BatchNorm1d", "gamma-starts-at-zero")
class GammaFromZero(StudentBatchNorm1d):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        self.gamma = np.zeros(num_features)


# One array assigned to two names.
@MUTANTS.make("BatchNorm1d", "aliased-arrays")
class GammaIsRunningVar(StudentBatchNorm1d):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        self.gamma = self.running_var = np.ones(num_features)


# Interview-prep notes: the running statistics start as the numbers 0 and 1.
@MUTANTS.make("BatchNorm1d", "not-per-feature-arrays")
class ScalarRunningStatistics(StudentBatchNorm1d):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        self.running_mean, self.running_var = 0.0, 1.0


# From-scratch libraries that create the running statistics lazily at the first call.
@MUTANTS.make("BatchNorm1d", "not-per-feature-arrays")
class LazyRunningStatistics(StudentBatchNorm1d):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        self.running_mean = self.running_var = None

    def update(self, x):
        if self.running_mean is None:
            self.running_mean, self.running_var = np.zeros(x.shape[1]), np.ones(x.shape[1])
        super().update(x)


# d2l-style `assert` for the batch size instead of a ValueError.
@MUTANTS.make("BatchNorm1d", "batch-of-one-wrong-error")
class AssertsTheBatchSize(StudentBatchNorm1d):
    def check_batch(self, x):
        assert len(x) > 1, "batch too small"


@MUTANTS.make("BatchNorm1d", "forgot-running-var")
class RunningVarNeverUpdated(StudentBatchNorm1d):
    def update(self, x):
        weight = self.weight_of_new()
        self.running_mean = (1 - weight) * self.running_mean + weight * x.mean(axis=0)


# A running standard deviation kept under the name running_var.
@MUTANTS.make("BatchNorm1d", "running-var-from-std")
class RunningStd(StudentBatchNorm1d):
    def running_update_var(self, x):
        return x.std(axis=0, ddof=1)


# torch.var's default (unbiased) for the batch statistics in train mode, with a
# first-time import inside.
@MUTANTS.make("BatchNorm1d", "unbiased-variance")
class TorchDefaultVariance(StudentBatchNorm1d):
    def batch_statistics(self, x):
        import torch
        var, mean = torch.var_mean(torch.from_numpy(x), dim=0, keepdim=True)
        return mean.numpy(), var.numpy()


@MUTANTS.make("BatchNorm1d", "eps-outside-sqrt")
class EpsOnStd(StudentBatchNorm1d):
    def scale_shift(self, x, mean, var):
        return (x - mean) / (np.sqrt(var) + self.eps) * self.gamma + self.beta


@MUTANTS.make("BatchNorm1d", "gamma-beta-swapped")
class SwappedAffine(StudentBatchNorm1d):
    def scale_shift(self, x, mean, var):
        return (x - mean) / np.sqrt(var + self.eps) * self.beta + self.gamma


@MUTANTS.make("BatchNorm1d", "eps-after-division")
class EpsAfterDividing(StudentBatchNorm1d):
    def scale_shift(self, x, mean, var):
        return ((x - mean) / np.sqrt(var) + self.eps) * self.gamma + self.beta


@MUTANTS.make("BatchNorm1d", "eps-as-floor")
class ClampedVariance(StudentBatchNorm1d):
    def scale_shift(self, x, mean, var):
        return (x - mean) / np.sqrt(np.maximum(var, self.eps)) * self.gamma + self.beta


@MUTANTS.make("BatchNorm1d", "forgot-eps")
class NoEps(StudentBatchNorm1d):
    def scale_shift(self, x, mean, var):
        return self.gamma * (x - mean) / np.sqrt(var) + self.beta


@MUTANTS.make("BatchNorm1d", "forgot-scale")
class NoGamma(StudentBatchNorm1d):
    def scale_shift(self, x, mean, var):
        return (x - mean) / np.sqrt(var + self.eps) + self.beta


@MUTANTS.make("BatchNorm1d", "forgot-shift")
class NoBeta(StudentBatchNorm1d):
    def scale_shift(self, x, mean, var):
        return self.gamma * (x - mean) / np.sqrt(var + self.eps)


@MUTANTS.make("BatchNorm1d", "returns-normalized-not-scaled")
class NoAffine(StudentBatchNorm1d):
    def scale_shift(self, x, mean, var):
        return (x - mean) / np.sqrt(var + self.eps)


# __call__ never looks at the mode: eval mode normalizes with the batch and updates too.
@MUTANTS.make("BatchNorm1d", "updates-in-eval+batch-stats-in-eval")
class IgnoresTheMode(StudentBatchNorm1d):
    def forward_eval(self, x):
        out = self.scale_shift(x, *self.batch_statistics(x))
        self.update(x)
        return out


# The momentum and eps arguments stored but never used: the formula hard-codes them.
@MUTANTS.make("BatchNorm1d", "ignores-momentum")
class HardCodedMomentum(StudentBatchNorm1d):
    def weight_of_new(self):
        return 0.1


@MUTANTS.make("BatchNorm1d", "ignores-eps")
class HardCodedEps(StudentBatchNorm1d):
    def scale_shift(self, x, mean, var):
        return (x - mean) / np.sqrt(var + 1e-5) * self.gamma + self.beta


# Two at once: both hard-coded.
@MUTANTS.make("BatchNorm1d", "ignores-momentum+ignores-eps")
class HardCodesBoth(HardCodedEps):
    def weight_of_new(self):
        return 0.1


# A torch forum layer (and an old Chainer bug): the variance is stored with eps already
# added, and eval mode adds eps again.
@MUTANTS.make("BatchNorm1d", "eps-in-running-var")
class EpsStoredInRunningVar(StudentBatchNorm1d):
    def running_update_var(self, x):
        return np.var(x, axis=0, ddof=1) + self.eps


# A momentum batch norm seen in research code: the first batch resets the statistics.
@MUTANTS.make("BatchNorm1d", "running-stats-start-from-first-batch")
class FirstBatchResets(StudentBatchNorm1d):
    def update(self, x):
        if getattr(self, "steps", 0) == 0:
            self.running_mean = x.mean(axis=0)
            self.running_var = x.var(axis=0, ddof=1)
        else:
            super().update(x)
        self.steps = getattr(self, "steps", 0) + 1


# Two at once: CS231n's convention AND the first batch resetting the statistics.
@MUTANTS.make("BatchNorm1d",
              "old-value-momentum-and-biased-running-var+running-stats-start-from-first-batch")
class Cs231nFirstBatchResets(Cs231nConvention):
    def update(self, x):
        if getattr(self, "steps", 0) == 0:
            self.running_mean, self.running_var = x.mean(axis=0), x.var(axis=0)
        else:
            super().update(x)
        self.steps = getattr(self, "steps", 0) + 1


# Two at once: Keras' momentum AND a running variance that never moves (Keras-core's bug).
@MUTANTS.make("BatchNorm1d", "momentum-convention-flipped+forgot-running-var")
class KerasMeanOnly(RunningVarNeverUpdated):
    def weight_of_new(self):
        return 1 - self.momentum


# Two at once: torch.var's unbiased default when normalizing AND eps on the std.
@MUTANTS.make("BatchNorm1d", "unbiased-variance+eps-outside-sqrt")
class SampleStdPlusEps(StudentBatchNorm1d):
    def batch_statistics(self, x):
        mean = x.mean(axis=0, keepdims=True)
        return mean, x.var(axis=0, ddof=1, keepdims=True)

    def scale_shift(self, x, mean, var):
        return (x - mean) / (np.sqrt(var) + self.eps) * self.gamma + self.beta


# Two at once: the update at the top of __call__ (also in eval) AND no batch-of-one check.
@MUTANTS.make("BatchNorm1d", "updates-in-eval+no-error-for-batch-of-one")
class UpdatesAlwaysNoCheck(UpdatesBeforeCheckingTheMode):
    def check_batch(self, x):
        pass


# The PyTorch habit: forward() written, layer(x) expected to call it.
@MUTANTS.make("BatchNorm1d", "forward-without-call")
class ForwardOnly:
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.layer = StudentBatchNorm1d(num_features, eps, momentum)
        self.training = True
        self.gamma, self.beta = self.layer.gamma, self.layer.beta
        self.running_mean, self.running_var = self.layer.running_mean, self.layer.running_var

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def forward(self, x):
        self.layer.training = self.training
        return self.layer(x)


# From-scratch libraries that call the mode flag something else (is_training, train_mode).
@MUTANTS.make("BatchNorm1d", "no-training-attribute")
class IsTrainingFlag(StudentBatchNorm1d):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        del self.training
        self.is_training = True

    def train(self):
        self.is_training = True

    def eval(self):
        self.is_training = False

    def __call__(self, x):
        return self.forward_train(x) if self.is_training else self.forward_eval(x)


# Eval mode returns x_hat: gamma and beta forgotten on the inference path.
@MUTANTS.make("BatchNorm1d", "eval-forgets-scale-and-shift")
class EvalWithoutAffine(StudentBatchNorm1d):
    def forward_eval(self, x):
        return (x - self.running_mean) / np.sqrt(self.running_var + self.eps)


# CS231n's default momentum (0.9) in the constructor, with PyTorch's formula.
@MUTANTS.make("BatchNorm1d", "observation:wrong-default")
class Cs231nDefaultMomentum(StudentBatchNorm1d):
    def __init__(self, num_features, eps=1e-5, momentum=0.9):
        super().__init__(num_features, eps, momentum)


# gamma and beta drawn at random (a from-scratch library's "parameters" list).
@MUTANTS.make("BatchNorm1d", "observation:wrong-start-values")
class RandomAffineStart(StudentBatchNorm1d):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        rng = np.random.default_rng(0)
        self.gamma, self.beta = rng.standard_normal(num_features), rng.standard_normal(num_features)


# Both modes shift before scaling: one scale_shift helper, written wrong once.
@MUTANTS.make("BatchNorm1d", "shift-then-scale")
class ShiftThenScale(StudentBatchNorm1d):
    def scale_shift(self, x, mean, var):
        return ((x - mean) / np.sqrt(var + self.eps) + self.beta) * self.gamma


# eps as a relative tolerance in the one scale_shift helper.
@MUTANTS.make("BatchNorm1d", "eps-multiplies-variance")
class EpsMultipliesVariance(StudentBatchNorm1d):
    def scale_shift(self, x, mean, var):
        return (x - mean) / np.sqrt(var * (1 + self.eps)) * self.gamma + self.beta


# The eval path written again by hand, without eps (the train path is right).
@MUTANTS.make("BatchNorm1d", "forgot-eps")
class EvalWithoutEps(StudentBatchNorm1d):
    def forward_eval(self, x):
        return (x - self.running_mean) / np.sqrt(self.running_var) * self.gamma + self.beta


# The eval path with eps on the standard deviation.
@MUTANTS.make("BatchNorm1d", "eps-outside-sqrt")
class EvalEpsOnStd(StudentBatchNorm1d):
    def forward_eval(self, x):
        std = np.sqrt(self.running_var) + self.eps
        return self.gamma * (x - self.running_mean) / std + self.beta


# The eval path with gamma and beta swapped (the train path is right).
@MUTANTS.make("BatchNorm1d", "gamma-beta-swapped")
class EvalGammaBetaSwapped(StudentBatchNorm1d):
    def forward_eval(self, x):
        x_hat = (x - self.running_mean) / np.sqrt(self.running_var + self.eps)
        return self.beta * x_hat + self.gamma


# The eval path forgets beta only.
@MUTANTS.make("BatchNorm1d", "forgot-shift")
class EvalWithoutShift(StudentBatchNorm1d):
    def forward_eval(self, x):
        return self.gamma * (x - self.running_mean) / np.sqrt(self.running_var + self.eps)


# The train path calls a batchnorm_forward that forgets beta; the eval path is right.
@MUTANTS.make("BatchNorm1d", "forgot-shift")
class TrainWithoutShift(StudentBatchNorm1d):
    def forward_train(self, x):
        self.check_batch(x)
        mean, var = self.batch_statistics(x)
        self.update(x)
        return self.gamma * (x - mean) / np.sqrt(var + self.eps)


# The train path with eps added to the standard deviation; the eval path is right.
@MUTANTS.make("BatchNorm1d", "eps-outside-sqrt")
class TrainEpsOnStd(StudentBatchNorm1d):
    def forward_train(self, x):
        self.check_batch(x)
        out = self.gamma * (x - x.mean(axis=0)) / (x.std(axis=0) + self.eps) + self.beta
        self.update(x)
        return out


# --- keras_to_torch_momentum ------------------------------------------------

@MUTANTS.make("keras_to_torch_momentum", "keras-momentum-not-converted")
def keras_as_is(m):
    return float(m)


@MUTANTS.make("keras_to_torch_momentum", "keras-conversion-sign-flipped")
def keras_negated(m):
    return -(1 - m)


@MUTANTS.make("keras_to_torch_momentum", "keras-conversion-sign-flipped")
def keras_minus_one(m):
    return np.subtract(m, 1.0)


# Returned unchanged, as a NumPy float32.
@MUTANTS.make("keras_to_torch_momentum", "keras-momentum-not-converted")
def keras_as_float32(m):
    return np.float32(m)


@MUTANTS.make("keras_to_torch_momentum", "calls-course-reference")
def keras_by_course_answer(m):
    return course_answers.keras_to_torch_momentum(m)


# Blind evaluation: eval mode rescales x with the running variance but never subtracts
# running_mean: gamma * x / sqrt(running_var + eps) + beta.
@MUTANTS.make("batchnorm_eval", "forgot-running-mean")
def eval_without_running_mean(x, running_mean, running_var, gamma, beta, eps=1e-5):
    inv_std = 1.0 / np.sqrt(running_var + eps)
    return gamma * x * inv_std + beta


# --- the tests --------------------------------------------------------------

def test_the_student_class_that_mutants_override_is_correct():
    result = check("BatchNorm1d", StudentBatchNorm1d)
    assert result.passed, result.message


def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "04")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
