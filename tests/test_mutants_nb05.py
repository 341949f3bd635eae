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


# --- patterns seen in published backward passes ---------------------------------

# A staged backward whose cache kept `var` but not eps, so the backward pass
# recomputes the standard deviation as np.sqrt(var) (several CS231n repositories).
@MUTANTS.make("batchnorm_backward", "backward-ignores-eps")
def backward_std_recomputed_without_eps(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    xmu = x - x.mean(axis=0)
    var = (xmu ** 2).mean(axis=0)
    ivar = 1.0 / np.sqrt(var)
    x_hat = xmu * ivar
    dxhat = dout * gamma
    dvar = np.sum(dxhat * xmu, axis=0) * -0.5 * ivar ** 3
    dxmu = dxhat * ivar + dvar * 2 * xmu / n
    dx = dxmu - dxmu.mean(axis=0)
    return dx, np.sum(dout * x_hat, axis=0), np.sum(dout, axis=0)


# The closed form written with x.std(axis=0), which has no room for eps.
@MUTANTS.make("batchnorm_backward_compact", "backward-ignores-eps")
def compact_with_np_std(dout, x, gamma, eps=1e-5):
    x_hat = (x - x.mean(0)) / x.std(0)
    dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
    dx = gamma / x.std(0) * (dout - dout.mean(0) - x_hat * (dout * x_hat).mean(0))
    return dx, dgamma, dbeta


# The dbeta line copied for dgamma and the factor x_hat never added.
@MUTANTS.make("batchnorm_backward", "dgamma-without-xhat")
def backward_dgamma_copied_from_dbeta(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = staged_backward(dout, x, gamma, eps)
    return dx, np.sum(dout, axis=0), dbeta


@MUTANTS.make("batchnorm_backward_compact", "dgamma-without-xhat")
def compact_dgamma_equals_dbeta(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = autograd_backward(dout, x, gamma, eps)
    return dx, dbeta.copy(), dbeta


# A question on a CS231n repository's tracker asks whether dgamma and dbeta should be
# divided by the batch size (a mean over the batch, as in a loss).
@MUTANTS.make("batchnorm_backward", "param-grads-averaged")
def backward_param_grads_over_batch_size(dout, x, gamma, eps=1e-5):
    dx, dgamma, dbeta = staged_backward(dout, x, gamma, eps)
    batch_size = x.shape[0]
    return dx, dgamma / batch_size, dbeta / batch_size


@MUTANTS.make("batchnorm_backward_compact", "param-grads-averaged")
def compact_param_grads_with_np_mean(dout, x, gamma, eps=1e-5):
    x_hat = student_x_hat(x, eps)
    dx, _, _ = autograd_backward(dout, x, gamma, eps)
    return dx, np.mean(dout * x_hat, axis=0), np.mean(dout, axis=0)


# dgamma from the cached centred input `xmu` instead of `xhat` (staged backwards keep both).
@MUTANTS.make("batchnorm_backward", "dgamma-without-std")
def backward_dgamma_from_xmu(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = staged_backward(dout, x, gamma, eps)
    xmu = x - x.mean(axis=0)
    return dx, np.sum(dout * xmu, axis=0), dbeta


# np.sum without axis: a number where a vector belongs.
@MUTANTS.make("batchnorm_backward", "param-grads-summed-over-everything")
def backward_param_grads_without_axis(dout, x, gamma, eps=1e-5):
    dx, _, _ = staged_backward(dout, x, gamma, eps)
    return dx, np.sum(dout * student_x_hat(x, eps)), np.sum(dout)


# The return line written as `return dx, dbeta, dgamma`.
@MUTANTS.make("batchnorm_backward_compact", "dgamma-dbeta-swapped")
def compact_returns_dbeta_first(dout, x, gamma, eps=1e-5):
    dx, dgamma, dbeta = autograd_backward(dout, x, gamma, eps)
    return dx, dbeta, dgamma


@MUTANTS.make("batchnorm_backward", "dgamma-dbeta-swapped")
def backward_returns_dbeta_first(dout, x, gamma, eps=1e-5):
    dx, dgamma, dbeta = staged_backward(dout, x, gamma, eps)
    return dx, dbeta, dgamma


@MUTANTS.make("batchnorm_backward_compact", "dgamma-without-std")
def compact_dgamma_from_centred_einsum(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = autograd_backward(dout, x, gamma, eps)
    return dx, np.einsum("nd,nd->d", dout, x - x.mean(0)), dbeta


@MUTANTS.make("batchnorm_backward_compact", "param-grads-summed-over-everything")
def compact_param_grads_from_python_sum(dout, x, gamma, eps=1e-5):
    dx, _, _ = autograd_backward(dout, x, gamma, eps)
    return dx, float((dout * student_x_hat(x, eps)).sum()), float(dout.sum())


# The closed form with 1 / (var + eps): the square root lost when inv_std was inlined.
@MUTANTS.make("batchnorm_backward_compact", "dx-divides-by-variance")
def compact_divides_by_variance(dout, x, gamma, eps=1e-5):
    x_hat = student_x_hat(x, eps)
    dx = gamma / (x.var(0) + eps) * (dout - dout.mean(0) - x_hat * (dout * x_hat).mean(0))
    return dx, (dout * x_hat).sum(0), dout.sum(0)


@MUTANTS.make("batchnorm_backward", "dx-divides-by-variance")
def backward_inv_var_instead_of_inv_std(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    xmu = x - x.mean(0)
    var = (xmu ** 2).mean(0) + eps
    x_hat = xmu / np.sqrt(var)
    dx = gamma * (n * dout - dout.sum(0) - x_hat * (dout * x_hat).sum(0)) / (n * var)
    return dx, (dout * x_hat).sum(0), dout.sum(0)


# --- two mistakes at once -----------------------------------------------------------

# A blog's derivation for x_hat alone (gamma = 1, eps = 0) pasted as the layer's backward.
@MUTANTS.make("batchnorm_backward_compact", "dx-forgot-gamma+backward-ignores-eps")
def compact_from_a_derivation_without_gamma_and_eps(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    std = x.std(axis=0)
    x_hat = (x - x.mean(axis=0)) / std
    dx = (n * dout - dout.sum(0) - x_hat * (dout * x_hat).sum(0)) / (n * std)
    return dx, (dout * x_hat).sum(0), dout.sum(0)


# BN treated as an elementwise affine layer (no paths through the statistics), with
# gradients averaged as a loss would be.
@MUTANTS.make("batchnorm_backward", "param-grads-averaged+dx-missing-mean-terms")
def backward_like_an_affine_layer(dout, x, gamma, eps=1e-5):
    x_hat = student_x_hat(x, eps)
    inv_std = 1 / np.sqrt(x.var(0) + eps)
    return dout * gamma * inv_std, (dout * x_hat).mean(0), dout.mean(0)


# torch's x.std() (unbiased, no eps) in a NumPy port: N - 1 and no eps.
@MUTANTS.make("batchnorm_backward_compact", "backward-ignores-eps+unbiased-variance")
def compact_with_torch_default_std(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    std = as_tensor(x).std(dim=0).numpy()
    x_hat = (x - x.mean(0)) / std
    dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
    dx = gamma / (n * std) * (n * dout - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


# Gradients averaged and the return order swapped.
@MUTANTS.make("batchnorm_backward", "dgamma-dbeta-swapped+param-grads-averaged")
def backward_swapped_and_averaged(dout, x, gamma, eps=1e-5):
    dx, dgamma, dbeta = staged_backward(dout, x, gamma, eps)
    return dx, dbeta / len(x), dgamma / len(x)


# x instead of x_hat in dgamma, and no eps in dx (a cache of (x, mean, var) only).
@MUTANTS.make("batchnorm_backward", "dgamma-uses-x-not-xhat+backward-ignores-eps")
def backward_cache_without_x_hat(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    mean, var = x.mean(0), x.var(0)
    x_hat = (x - mean) / np.sqrt(var)
    dx = gamma / np.sqrt(var) * (dout - dout.mean(0) - x_hat * (dout * x_hat).sum(0) / n)
    return dx, (dout * x).sum(0), dout.sum(0)


# --- wrong answers that no entry fits: a probe describes them --------------------------

# A sign slip in the variance node: d(var^-1/2) taken as +0.5 * var^-3/2.
@MUTANTS.make("batchnorm_backward", "observation:dx-not-orthogonal-to-x-hat")
def backward_variance_node_sign_slip(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    xmu = x - x.mean(0)
    var = (xmu ** 2).mean(0)
    ivar = 1 / np.sqrt(var + eps)
    dxhat = dout * gamma
    dvar = np.sum(dxhat * xmu, axis=0) * 0.5 * ivar ** 3
    dxmu = dxhat * ivar + dvar * 2 * xmu / n
    dx = dxmu - dxmu.mean(0)
    return dx, np.sum(dout * xmu * ivar, axis=0), np.sum(dout, axis=0)


# The variance path divided by N twice (`dsq = dvar / N` and again `2 * xmu * dsq / N`).
@MUTANTS.make("batchnorm_backward", "observation:dx-not-orthogonal-to-x-hat")
def backward_variance_path_over_n_twice(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    xmu = x - x.mean(0)
    ivar = 1 / np.sqrt((xmu ** 2).mean(0) + eps)
    dxhat = dout * gamma
    dsq = np.sum(dxhat * xmu, axis=0) * -0.5 * ivar ** 3 / n
    dxmu = dxhat * ivar + 2 * xmu * dsq / n
    return dxmu - dxmu.mean(0), np.sum(dout * xmu * ivar, 0), np.sum(dout, 0)


# gamma multiplied into the first term of the closed form only.
@MUTANTS.make("batchnorm_backward_compact", "observation:dx-does-not-sum-to-zero")
def compact_gamma_on_first_term_only(dout, x, gamma, eps=1e-5):
    x_hat = student_x_hat(x, eps)
    inv_std = 1 / np.sqrt(x.var(0) + eps)
    dx = inv_std * (gamma * dout - dout.mean(0) - x_hat * (dout * x_hat).mean(0))
    return dx, (dout * x_hat).sum(0), dout.sum(0)


# The closed form's N * dout - sum(dout) - ... without the final division by N.
@MUTANTS.make("batchnorm_backward_compact", "observation:constant-factor")
def compact_without_final_division(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    x_hat = student_x_hat(x, eps)
    dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
    dx = gamma / np.sqrt(x.var(0) + eps) * (n * dout - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


# The variance path divides by N - 1 (`dsq = dvar / (N - 1)`) although the forward pass
# divided by N.
@MUTANTS.make("batchnorm_backward", "observation:dx-not-orthogonal-to-x-hat")
def backward_variance_path_over_n_minus_one(dout, x, gamma, eps=1e-5):
    n = len(x)
    xmu = x - x.mean(0)
    ivar = 1 / np.sqrt(x.var(0) + eps)
    dxhat = dout * gamma
    dvar = (dxhat * xmu).sum(0) * -0.5 * ivar ** 3
    dxmu = dxhat * ivar + dvar * 2 * xmu / (n - 1)
    return dxmu - dxmu.mean(0), (dout * xmu * ivar).sum(0), dout.sum(0)


# Keras' default eps=1e-3 in the signature.
@MUTANTS.make("batchnorm_backward_compact", "observation:wrong-default")
def compact_with_keras_default_eps(dout, x, gamma, eps=1e-3):
    return autograd_backward(dout, x, gamma, eps)


# x_hat centred in place: the caller's x is gone.
@MUTANTS.make("batchnorm_backward_compact", "modifies-input")
def compact_centres_x_in_place(dout, x, gamma, eps=1e-5):
    x -= x.mean(axis=0)
    inv_std = 1 / np.sqrt((x ** 2).mean(0) + eps)
    x_hat = x * inv_std
    dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
    return gamma * inv_std * (dout - dout.mean(0) - x_hat * dgamma / len(x)), dgamma, dbeta


# dbeta written as `dout.sum()`: the staged graph's last node summed without an axis, a
# 0-d result where (D,) belongs.
@MUTANTS.make("batchnorm_backward", "dbeta-summed-over-everything")
def backward_dbeta_without_axis(dout, x, gamma, eps=1e-5):
    dx, dgamma, _ = staged_backward(dout, x, gamma, eps)
    return dx, dgamma, dout.sum()


@MUTANTS.make("batchnorm_backward_compact", "dbeta-summed-over-everything")
def compact_dbeta_as_python_float(dout, x, gamma, eps=1e-5):
    dx, dgamma, _ = autograd_backward(dout, x, gamma, eps)
    return dx, dgamma, float(np.add.reduce(dout, axis=None))


# dgamma from torch autograd's x_hat, reduced with .sum() and no dim.
@MUTANTS.make("batchnorm_backward", "dgamma-summed-over-everything")
def backward_dgamma_summed_in_torch(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = staged_backward(dout, x, gamma, eps)
    t = as_tensor(x)
    x_hat = (t - t.mean(0)) / torch.sqrt(t.var(0, correction=0) + eps)
    return dx, (as_tensor(dout) * x_hat).sum().numpy(), dbeta


@MUTANTS.make("batchnorm_backward_compact", "dgamma-summed-over-everything")
def compact_dgamma_with_vdot(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = autograd_backward(dout, x, gamma, eps)
    return dx, np.vdot(dout, student_x_hat(x, eps)), dbeta


# Blind evaluation: dbeta summed from dx_hat = dout * gamma, the array at hand in a staged
# backward pass, instead of from dout.
@MUTANTS.make("batchnorm_backward", "dbeta-times-gamma")
def backward_dbeta_from_dx_hat(dout, x, gamma, eps=1e-5):
    dx, dgamma, _ = staged_backward(dout, x, gamma, eps)
    return dx, dgamma, np.sum(dout * gamma, axis=0)


# The same slip in the compact form, gamma pulled out of every gradient at once.
@MUTANTS.make("batchnorm_backward_compact", "dbeta-times-gamma")
def compact_dbeta_scaled_by_gamma(dout, x, gamma, eps=1e-5):
    x_hat = student_x_hat(x, eps)
    inv_std = 1 / np.sqrt(x.var(axis=0) + eps)
    dx_hat = gamma * dout
    dx = inv_std * (dx_hat - dx_hat.mean(0) - x_hat * (dx_hat * x_hat).mean(0))
    return dx, (dout * x_hat).sum(0), dx_hat.sum(0)


# --- the tests --------------------------------------------------------------

def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "05")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
