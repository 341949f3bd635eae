"""Mutation suite for notebook 05 (the backward pass): each wrong implementation below must
be named with its catalogue id (see tests/mutation.py)."""

import numpy as np
import pytest

# Imported here, not inside the candidates: the checker gives each call of a candidate a
# time limit, and a first `import torch` would spend a good part of it.
import torch
from mutation import Mutants, as_tensor, assert_diagnosed, missing_mutants, student_x_hat

import bn_course.reference.numpy as course_answers

MUTANTS = Mutants()


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


@MUTANTS.make("batchnorm_backward", "dbeta-sum-wrong-axis+dgamma-sum-wrong-axis")
def backward_sums_over_features(dout, x, gamma, eps=1e-5):
    return staged_backward(dout, x, gamma, eps, reduce_axis=1)


@MUTANTS.make("batchnorm_backward", "dbeta-sum-wrong-axis")
def backward_dbeta_over_features(dout, x, gamma, eps=1e-5):
    dx, dgamma, _ = staged_backward(dout, x, gamma, eps)
    return dx, dgamma, dout.sum(axis=1)


@MUTANTS.make("batchnorm_backward", "dgamma-sum-wrong-axis")
def backward_dgamma_over_features(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = staged_backward(dout, x, gamma, eps)
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return dx, np.einsum("nd,nd->n", dout, x_hat), dbeta


@MUTANTS.make("batchnorm_backward", "dgamma-uses-x-not-xhat")
def backward_dgamma_from_x(dout, x, gamma, eps=1e-5):
    return staged_backward(dout, x, gamma, eps, dgamma_factor="x")


@MUTANTS.make("batchnorm_backward", "dx-missing-mean-terms")
def backward_statistics_as_constants(dout, x, gamma, eps=1e-5):
    return staged_backward(dout, x, gamma, eps, paths=())


@MUTANTS.make("batchnorm_backward", "dx-only-right-for-ones-dout")
def backward_without_variance_path(dout, x, gamma, eps=1e-5):
    return staged_backward(dout, x, gamma, eps, paths=("mean",))


@MUTANTS.make("batchnorm_backward", "dx-forgot-gamma")
def backward_without_gamma(dout, x, gamma, eps=1e-5):
    return staged_backward(dout, x, gamma, eps, keep_gamma=False)


@MUTANTS.make("batchnorm_backward", "unbiased-variance")
def backward_unbiased_forward_pass(dout, x, gamma, eps=1e-5):
    # N - 1 in the forward statistics only; the variance path still divides by N.
    return staged_backward(dout, x, gamma, eps, ddof=1)


@MUTANTS.make("batchnorm_backward", "unbiased-variance")
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


@MUTANTS.make("batchnorm_backward_compact", "dgamma-sum-wrong-axis")
def compact_dgamma_over_features(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = autograd_backward(dout, x, gamma, eps)
    x_hat = student_x_hat(x, eps)
    return dx, (dout * x_hat).sum(axis=1), dbeta


@MUTANTS.make("batchnorm_backward_compact", "dbeta-sum-wrong-axis")
def compact_dbeta_over_features(dout, x, gamma, eps=1e-5):
    dx, dgamma, _ = autograd_backward(dout, x, gamma, eps)
    return dx, dgamma, np.add.reduce(dout, axis=1)


@MUTANTS.make("batchnorm_backward_compact", "dbeta-sum-wrong-axis+dgamma-sum-wrong-axis")
def compact_sums_over_features(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    x_hat = student_x_hat(x, eps)
    dx = gamma / np.sqrt(x.var(0) + eps) * (
        dout - dout.mean(0) - x_hat * np.einsum("nd,nd->d", dout, x_hat) / n)
    return dx, np.einsum("nd,nd->n", dout, x_hat), np.einsum("nd->n", dout)


@MUTANTS.make("batchnorm_backward_compact", "dgamma-uses-x-not-xhat")
def compact_dgamma_from_x(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = autograd_backward(dout, x, gamma, eps)
    return dx, np.einsum("nd,nd->d", dout, x), dbeta


@MUTANTS.make("batchnorm_backward_compact", "dx-missing-mean-terms")
def compact_autograd_detached_statistics(dout, x, gamma, eps=1e-5):
    return autograd_backward(dout, x, gamma, eps, detach_mean=True, detach_var=True)


@MUTANTS.make("batchnorm_backward_compact", "dx-only-right-for-ones-dout")
def compact_autograd_detached_variance(dout, x, gamma, eps=1e-5):
    return autograd_backward(dout, x, gamma, eps, detach_var=True)


@MUTANTS.make("batchnorm_backward_compact", "dx-forgot-gamma")
def compact_without_gamma(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    x_hat = student_x_hat(x, eps)
    dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
    dx = (n * dout - dbeta - x_hat * dgamma) / (n * np.sqrt(x.var(0) + eps))
    return dx, dgamma, dbeta


@MUTANTS.make("batchnorm_backward_compact", "unbiased-variance")
def compact_unbiased(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    x_hat = student_x_hat(x, eps, ddof=1)
    dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
    inv_std = 1 / np.sqrt(np.var(x, axis=0, ddof=1) + eps)
    return gamma * inv_std * (dout - dbeta / n - x_hat * dgamma / n), dgamma, dbeta


@MUTANTS.make("batchnorm_backward_compact", "calls-course-reference")
def compact_by_course_staged_answer(dout, x, gamma, eps=1e-5):
    return course_answers.batchnorm_backward(dout, x, gamma, eps)


@MUTANTS.make("batchnorm_backward", "modifies-input")
def backward_scales_dout_in_place(dout, x, gamma, eps=1e-5):
    x_hat = student_x_hat(x, eps)
    dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
    dout *= gamma  # dx_hat, written over dout
    dx = (dout - dout.mean(0) - x_hat * (dout * x_hat).mean(0)) / np.sqrt(x.var(0) + eps)
    return dx, dgamma, dbeta


# --- the tests --------------------------------------------------------------

def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "05")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
