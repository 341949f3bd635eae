"""Mutation suite for notebook 03 (scale and shift): each wrong implementation below must
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
from mutation import Mutants, as_tensor, assert_diagnosed, missing_mutants, student_x_hat

import bn_course.reference.numpy as course_answers

MUTANTS = Mutants()


# --- batchnorm_forward ------------------------------------------------------

@MUTANTS.make("batchnorm_forward", "gamma-beta-swapped")
def forward_swapped(x, gamma, beta, eps=1e-5):
    return student_x_hat(x, eps) * beta[np.newaxis] + gamma[np.newaxis]


@MUTANTS.make("batchnorm_forward", "forgot-shift")
def forward_no_beta(x, gamma, beta, eps=1e-5):
    centred = x - x.mean(0)
    var = np.einsum("nd,nd->d", centred, centred) / len(x)
    return gamma * centred / np.sqrt(var + eps)


@MUTANTS.make("batchnorm_forward", "forgot-scale")
def forward_no_gamma(x, gamma, beta, eps=1e-5):
    return np.add(student_x_hat(x, eps), beta)


@MUTANTS.make("batchnorm_forward", "returns-normalized-not-scaled")
def forward_x_hat_only(x, gamma, beta, eps=1e-5):
    return student_x_hat(x, eps)


@MUTANTS.make("batchnorm_forward", "unbiased-variance")
def forward_ddof_one(x, gamma, beta, eps=1e-5):
    std = np.sqrt(np.std(x, axis=0, ddof=1) ** 2 + eps)
    return gamma * (x - x.mean(axis=0)) / std + beta


@MUTANTS.make("batchnorm_forward", "unbiased-variance")
def forward_with_torch_var(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    x_hat = (t - t.mean(0)) / torch.sqrt(t.var(0) + eps)
    return (x_hat * as_tensor(gamma) + as_tensor(beta)).numpy()


@MUTANTS.make("batchnorm_forward", "eps-outside-sqrt")
def forward_eps_on_std(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(axis=0)) / (x.std(axis=0) + eps) + beta


@MUTANTS.make("batchnorm_forward", "forgot-eps")
def forward_no_eps(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(axis=0)) / x.std(axis=0) + beta


@MUTANTS.make("batchnorm_forward", "axis-0-vs-1")
def forward_per_example_loop(x, gamma, beta, eps=1e-5):
    rows = [(row - row.mean()) / np.sqrt(row.var() + eps) for row in x]
    return np.stack(rows) * gamma + beta


@MUTANTS.make("batchnorm_forward", "var-instead-of-std")
def forward_divides_by_variance(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=0, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=0, keepdims=True)
    return gamma * (x - mean) / (var + eps) + beta


@MUTANTS.make("batchnorm_forward", "calls-course-reference")
def forward_imports_the_answer(x, gamma, beta, eps=1e-5):
    from bn_course.reference.numpy import batchnorm_forward as answer
    return answer(x, gamma, beta, eps)


@MUTANTS.make("batchnorm_forward", "calls-course-reference")
def forward_on_top_of_course_normalize(x, gamma, beta, eps=1e-5):
    return gamma * course_answers.normalize(x, x.mean(0), x.var(0), eps) + beta


@MUTANTS.make("batchnorm_forward", "uses-builtin-batchnorm")
def forward_with_functional_batch_norm(x, gamma, beta, eps=1e-5):
    out = F.batch_norm(as_tensor(x), None, None, weight=as_tensor(gamma), bias=as_tensor(beta),
                       training=True, eps=eps)
    return out.numpy()


@MUTANTS.make("batchnorm_forward", "uses-builtin-batchnorm")
def forward_with_torch_batch_norm(x, gamma, beta, eps=1e-5):
    out = torch.batch_norm(as_tensor(x), as_tensor(gamma), as_tensor(beta), None, None,
                           True, 0.1, eps, False)
    return out.numpy()


@MUTANTS.make("batchnorm_forward", "uses-builtin-batchnorm")
def forward_with_nn_module(x, gamma, beta, eps=1e-5):
    layer = torch.nn.BatchNorm1d(x.shape[1], eps=eps, dtype=torch.from_numpy(x).dtype)
    with torch.no_grad():
        layer.weight.copy_(as_tensor(gamma))
        layer.bias.copy_(as_tensor(beta))
        return layer(as_tensor(x)).numpy()


@MUTANTS.make("batchnorm_forward", "uses-builtin-batchnorm")
def forward_with_aten_overload(x, gamma, beta, eps=1e-5):
    # An aten batch-norm kernel called through its overload (torch.ops.aten.<op>.default).
    out, _, _ = torch.ops.aten.native_batch_norm.default(
        as_tensor(x), as_tensor(gamma), as_tensor(beta), None, None, True, 0.1, eps)
    return out.numpy()


@MUTANTS.make("batchnorm_forward", "uses-builtin-batchnorm")
def forward_with_aten_legit_no_stats(x, gamma, beta, eps=1e-5):
    out, _, _ = torch.ops.aten._native_batch_norm_legit.no_stats(
        as_tensor(x), as_tensor(gamma), as_tensor(beta), True, 0.1, eps)
    return out.numpy()


@MUTANTS.make("batchnorm_forward", "modifies-input")
def forward_normalizes_x_in_place(x, gamma, beta, eps=1e-5):
    x -= x.mean(axis=0)
    x /= np.sqrt((x ** 2).mean(axis=0) + eps)
    return gamma * x + beta


@MUTANTS.make("batchnorm_forward", "modifies-input")
def forward_folds_scale_into_gamma(x, gamma, beta, eps=1e-5):
    gamma /= np.sqrt(x.var(axis=0) + eps)
    return (x - x.mean(axis=0)) * gamma + beta


# Forum question ("slightly different from PyTorch"): torch.var's default (unbiased) AND
# eps added after dividing by the standard deviation.
@MUTANTS.make("batchnorm_forward", "unbiased-variance+eps-after-division")
def forward_unbiased_eps_last(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    x_hat = (t - t.mean(0, keepdim=True)) / torch.sqrt(t.var(0, keepdim=True)) + eps
    return (x_hat * as_tensor(gamma) + as_tensor(beta)).numpy()


# eps added to the normalized value, NumPy.
@MUTANTS.make("batchnorm_forward", "eps-after-division")
def forward_eps_last(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(axis=0)) / x.std(axis=0) + eps
    return gamma * x_hat + beta


# Forum question: torch.mean / torch.var with no dim, one statistic for the whole batch.
@MUTANTS.make("batchnorm_forward", "no-axis")
def forward_statistics_without_dim(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    x_hat = (t - torch.mean(t)) / torch.sqrt(torch.var(t, unbiased=False) + eps)
    return (x_hat * as_tensor(gamma) + as_tensor(beta)).numpy()


# The one-pass variance of many from-scratch layers: E[x^2] - E[x]^2.
@MUTANTS.make("batchnorm_forward", "one-pass-variance")
def forward_one_pass_variance(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=0)
    var = (x ** 2).mean(axis=0) - mean ** 2
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


# x.std() stored under the name "var", then sqrt(var + eps).
@MUTANTS.make("batchnorm_forward", "std-where-var-belongs")
def forward_std_named_var(x, gamma, beta, eps=1e-5):
    var = x.std(axis=0)
    return gamma * (x - x.mean(axis=0)) / np.sqrt(var + eps) + beta


# The centred array centred once more (a step-by-step CS231n layout, one line off).
@MUTANTS.make("batchnorm_forward", "mean-subtracted-twice")
def forward_centres_twice(x, gamma, beta, eps=1e-5):
    mu = np.sum(x, axis=0) / len(x)
    xmu = x - mu
    var = np.sum(xmu ** 2, axis=0) / len(x)
    return gamma * (xmu - mu) / np.sqrt(var + eps) + beta


# Synchronized-BatchNorm style: sqrt(max(var, eps)).
@MUTANTS.make("batchnorm_forward", "eps-as-floor")
def forward_clamped_variance(x, gamma, beta, eps=1e-5):
    var = np.maximum(x.var(axis=0), eps)
    return gamma * (x - x.mean(axis=0)) / np.sqrt(var) + beta


# LayerNorm by mistake with keepdims: statistics over axis=1 for each example.
@MUTANTS.make("batchnorm_forward", "axis-0-vs-1")
def forward_layernorm_keepdims(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(x.var(axis=1, keepdims=True) + eps) + beta


# Two at once: gamma and beta swapped AND the unbiased variance (np.var(..., ddof=1)).
@MUTANTS.make("batchnorm_forward", "gamma-beta-swapped+unbiased-variance")
def forward_swapped_unbiased(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(0)) / np.sqrt(np.var(x, axis=0, ddof=1) + eps)
    return beta * x_hat + gamma


# Two at once: no beta AND eps on the standard deviation.
@MUTANTS.make("batchnorm_forward", "forgot-shift+eps-outside-sqrt")
def forward_no_beta_eps_on_std(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(axis=0)) / (x.std(axis=0) + eps)


# Two at once: x_hat returned unscaled AND the unbiased variance.
@MUTANTS.make("batchnorm_forward", "returns-normalized-not-scaled+unbiased-variance")
def forward_x_hat_unbiased(x, gamma, beta, eps=1e-5):
    return student_x_hat(x, eps, ddof=1)


# Two at once: per-example statistics (LayerNorm) AND no eps, in a loop over examples.
@MUTANTS.make("batchnorm_forward", "forgot-eps+axis-0-vs-1")
def forward_per_example_no_eps(x, gamma, beta, eps=1e-5):
    rows = [(row - row.mean()) / row.std() for row in x]
    return gamma * np.array(rows) + beta


# Two at once: the sample standard deviation (ddof=1, R's and pandas' default) plus eps.
@MUTANTS.make("batchnorm_forward", "unbiased-variance+eps-outside-sqrt")
def forward_sample_std_plus_eps(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(axis=0)) / (x.std(axis=0, ddof=1) + eps) + beta


# CS231n's layers return (out, cache) for the backward pass.
@MUTANTS.make("batchnorm_forward", "returns-out-and-cache")
def forward_cs231n_out_and_cache(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    xmu = x - mu
    var = (xmu ** 2).mean(axis=0)
    ivar = 1 / np.sqrt(var + eps)
    x_hat = xmu * ivar
    return gamma * x_hat + beta, (x_hat, gamma, xmu, ivar, var, eps)


# torch.Tensor(x) turns float64 input into float32: the formula is right, the digits are not.
@MUTANTS.make("batchnorm_forward", "observation:loses-digits")
def forward_through_float32_tensors(x, gamma, beta, eps=1e-5):
    t = torch.Tensor(x)
    var, mean = torch.var_mean(t, dim=0, unbiased=False)
    return (torch.Tensor(gamma) * (t - mean) / torch.sqrt(var + eps) + torch.Tensor(beta)).numpy()


# Keras' default epsilon (1e-3) in the signature; otherwise right.
@MUTANTS.make("batchnorm_forward", "observation:wrong-default")
def forward_keras_default_eps(x, gamma, beta, eps=1e-3):
    return gamma * (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps) + beta


# Shift first, then scale: beta ends up multiplied by gamma.
@MUTANTS.make("batchnorm_forward", "shift-then-scale")
def forward_shift_then_scale(x, gamma, beta, eps=1e-5):
    return gamma * (student_x_hat(x, eps) + beta)


# One variance for the whole batch, around the per-feature means, from torch.
@MUTANTS.make("batchnorm_forward", "one-variance-for-all-features")
def forward_one_variance(x, gamma, beta, eps=1e-5):
    centred = x - x.mean(axis=0, keepdims=True)
    var = torch.mean(as_tensor(centred) ** 2).item()
    return gamma * centred / np.sqrt(var + eps) + beta


# eps as a relative tolerance: the variance scaled up by (1 + eps), not shifted by eps.
@MUTANTS.make("batchnorm_forward", "eps-multiplies-variance")
def forward_eps_as_relative(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=0)
    var = x.var(axis=0)
    return gamma * (x - mean) / np.sqrt(var + eps * var) + beta


# Blind evaluation: x is centred, but the variance is taken from the raw squares,
# np.mean(x**2), as if the mean were already zero.
@MUTANTS.make("batchnorm_forward", "variance-not-centred")
def forward_variance_of_raw_squares(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=0)
    var = np.mean(x ** 2, axis=0)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


# --- the tests --------------------------------------------------------------

def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "03")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)


def test_a_right_answer_importing_torch_for_the_first_time_passes():
    # The first `import torch` runs batchnorm.py's module code under the checker's watch
    # (and takes seconds of the time limit): neither may fail a right answer. A fresh
    # interpreter, because this file has imported torch already.
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from bn_course.checks import check

        def batchnorm_forward(x, gamma, beta, eps=1e-5):
            import torch
            t = torch.from_numpy(np.ascontiguousarray(x))
            var, mean = torch.var_mean(t, dim=0, correction=0)
            return ((t - mean) / torch.sqrt(var + eps) * torch.from_numpy(gamma)
                    + torch.from_numpy(beta)).numpy()

        assert "torch" not in sys.modules
        result = check("batchnorm_forward", batchnorm_forward)
        print(result.passed, result.message)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True"), done.stdout
