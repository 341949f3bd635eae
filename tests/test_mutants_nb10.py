"""Mutation suite for notebook 10 (across devices): each wrong implementation below must be
named with its catalogue id (see tests/mutation.py), and the correct ones, written in other
ways, must pass."""

import numpy as np
import pytest

# Imported here, not inside the candidates: a first `import torch` inside a candidate would
# spend a good part of its time limit.
import torch
from mutation import Mutants, as_tensor, assert_diagnosed, missing_mutants

from bn_course.checks import check

MUTANTS = Mutants()
CORRECT = []


# --- merge_batch_stats ---------------------------------------------------------------------

@MUTANTS.make("merge_batch_stats", "averages-variances")
def merge_weighted_variances(counts, means, variances):
    return (np.average(means, axis=0, weights=counts),
            np.average(variances, axis=0, weights=counts))


@MUTANTS.make("merge_batch_stats", "unweighted-mean-of-means")
def merge_every_part_alike(counts, means, variances):
    # The formula is right but every device counts once: fine while the parts are equal.
    mean = means.mean(axis=0)
    return mean, (variances + (means - mean) ** 2).mean(axis=0)


@MUTANTS.make("merge_batch_stats", "variances-read-as-unbiased")
def merge_from_sums_of_squares_over_n_minus_one(counts, means, variances):
    n = counts.sum()
    mean = (counts[:, None] * means).sum(0) / n
    within = (variances * (counts[:, None] - 1)).sum(0)  # "var_k = ss_k / (n_k - 1)"
    between = (counts[:, None] * (means - mean) ** 2).sum(0)
    return mean, (within + between) / n


@MUTANTS.make("merge_batch_stats", "unbiased-variance")
def merge_in_torch_with_bessel(counts, means, variances):
    c = torch.as_tensor(counts, dtype=torch.float64)[:, None]
    m, v = as_tensor(means).double(), as_tensor(variances).double()
    n = c.sum()
    mean = (c * m).sum(0) / n
    total = (c * (v + (m - mean) ** 2)).sum(0)
    return mean.numpy(), (total / (n - 1)).numpy()


@MUTANTS.make("merge_batch_stats", "sum-of-squares-merge")
def merge_second_moments(counts, means, variances):
    n = np.sum(counts)
    mean = np.einsum("k,kd->d", counts, means) / n
    second_moment = np.einsum("k,kd->d", counts, variances + means * means) / n
    return mean, second_moment - mean * mean


# The spread of the means taken around means.mean(0), the centre of the parts, while the
# returned mean is weighted by the counts.
@MUTANTS.make("merge_batch_stats", "spread-around-plain-mean")
def merge_spread_around_centre_of_parts(counts, means, variances):
    w = counts / counts.sum()
    mean = w @ means
    return mean, w @ variances + w @ (means - means.mean(0)) ** 2


@MUTANTS.make("merge_batch_stats", "spread-around-plain-mean+unbiased-variance")
def merge_in_torch_around_plain_mean_with_bessel(counts, means, variances):
    n = torch.as_tensor(counts, dtype=torch.float64)[:, None]
    m, v = as_tensor(means).double(), as_tensor(variances).double()
    mean = (n * m).sum(0) / n.sum()
    squares = (n * (v + (m - m.mean(0)) ** 2)).sum(0)
    return mean.numpy(), (squares / (n.sum() - 1)).numpy()


# Within-part variances weighted by the counts, but the spread of the means averaged as if
# every part counted once.
@MUTANTS.make("merge_batch_stats", "spread-not-weighted")
def merge_spread_as_plain_average(counts, means, variances):
    n = counts.sum()
    mean = np.einsum("k,kd->d", counts, means) / n
    within = np.einsum("k,kd->d", counts, variances) / n
    between = sum((part_mean - mean) ** 2 for part_mean in means) / len(means)
    return mean, within + between


@CORRECT.append
def merge_with_a_loop(counts, means, variances):
    total, mean_sum = 0.0, 0.0
    for n, m in zip(counts, means):
        total, mean_sum = total + n, mean_sum + n * m
    mean = mean_sum / total
    var = sum(n * (v + (m - mean) ** 2) for n, m, v in zip(counts, means, variances)) / total
    return mean, var


@CORRECT.append
def merge_pairwise_like_welford(counts, means, variances):
    """Chan et al.'s pairwise update, one part at a time, with the sums of squares M2."""
    n, mean, m2 = float(counts[0]), means[0].astype(np.float64), variances[0] * counts[0]
    for count, part_mean, part_var in zip(counts[1:], means[1:], variances[1:]):
        delta = part_mean - mean
        total = n + count
        mean = mean + delta * count / total
        m2 = m2 + part_var * count + delta ** 2 * n * count / total
        n = total
    return mean, m2 / n


@CORRECT.append
def merge_in_torch(counts, means, variances):
    w = torch.as_tensor(counts, dtype=torch.float64)
    w = (w / w.sum())[:, None]
    m, v = as_tensor(means).double(), as_tensor(variances).double()
    mean = (w * m).sum(0)
    return mean.numpy(), (w * (v + (m - mean) ** 2)).sum(0).numpy()


# --- batch_renorm_forward ------------------------------------------------------------------

def renorm_parts(x, running_mean, running_var, eps):
    mu = x.mean(axis=0)
    sigma_b = np.sqrt(((x - mu) ** 2).mean(axis=0) + eps)
    return mu, sigma_b, np.sqrt(running_var + eps)


@MUTANTS.make("batch_renorm_forward", "renorm-unclipped")
def renorm_as_eval_mode(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta


@MUTANTS.make("batch_renorm_forward", "r-and-d-swapped")
def renorm_scale_by_d(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    mu, sigma_b, sigma = renorm_parts(x, running_mean, running_var, eps)
    r = np.minimum(np.maximum(sigma_b / sigma, 1 / r_max), r_max)
    d = np.minimum(np.maximum((mu - running_mean) / sigma, -d_max), d_max)
    return gamma * ((x - mu) * d / sigma_b + r) + beta


@MUTANTS.make("batch_renorm_forward", "r-inverted")
def renorm_r_upside_down(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    mu, sigma_b, sigma = renorm_parts(x, running_mean, running_var, eps)
    r = np.clip(sigma / sigma_b, 1 / r_max, r_max)
    d = np.clip((mu - running_mean) / sigma, -d_max, d_max)
    return gamma * (r * (x - mu) / sigma_b + d) + beta


@MUTANTS.make("batch_renorm_forward", "d-in-batch-std")
def renorm_d_over_sigma_b(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    mu, sigma_b, sigma = renorm_parts(x, running_mean, running_var, eps)
    r = np.clip(sigma_b / sigma, 1 / r_max, r_max)
    d = np.clip((mu - running_mean) / sigma_b, -d_max, d_max)
    return gamma * ((x - mu) / sigma_b * r + d) + beta


@MUTANTS.make("batch_renorm_forward", "r-clipped-symmetrically")
def renorm_symmetric_limits(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    t = as_tensor(x)
    mu, var = t.mean(0), t.var(0, correction=0)
    sigma_b = torch.sqrt(var + eps)
    sigma = torch.sqrt(as_tensor(running_var) + eps)
    r = torch.clamp(sigma_b / sigma, -r_max, r_max)
    d = torch.clamp((mu - as_tensor(running_mean)) / sigma, -d_max, d_max)
    return (as_tensor(gamma) * ((t - mu) / sigma_b * r + d) + as_tensor(beta)).numpy()


@MUTANTS.make("batch_renorm_forward", "eps-outside-sqrt")
def renorm_eps_on_std(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    mu = x.mean(0)
    sigma_b, sigma = x.std(0) + eps, np.sqrt(running_var) + eps
    r = np.clip(sigma_b / sigma, 1 / r_max, r_max)
    d = np.clip((mu - running_mean) / sigma, -d_max, d_max)
    return gamma * ((x - mu) / sigma_b * r + d) + beta


@MUTANTS.make("batch_renorm_forward", "forgot-eps")
def renorm_without_eps(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    mu, sigma_b, sigma = x.mean(0), x.std(0), np.sqrt(running_var)
    r = np.clip(sigma_b / sigma, 1 / r_max, r_max)
    d = np.clip((mu - running_mean) / sigma, -d_max, d_max)
    return gamma * ((x - mu) / sigma_b * r + d) + beta


@MUTANTS.make("batch_renorm_forward", "unbiased-variance")
def renorm_torch_default_var(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    t = as_tensor(x)
    sigma_b = torch.sqrt(t.var(0) + eps)  # torch's default: unbiased
    sigma = torch.sqrt(as_tensor(running_var) + eps)
    r = (sigma_b / sigma).clamp(1 / r_max, r_max)
    d = ((t.mean(0) - as_tensor(running_mean)) / sigma).clamp(-d_max, d_max)
    x_hat = (t - t.mean(0)) / sigma_b * r + d
    return (x_hat * as_tensor(gamma) + as_tensor(beta)).numpy()


# eps added where the batch's statistics are computed only: sigma = sqrt(running_var).
@MUTANTS.make("batch_renorm_forward", "running-sigma-without-eps")
def renorm_running_sigma_without_eps(x, running_mean, running_var, gamma, beta, r_max, d_max,
                                     eps=1e-5):
    mu, sigma_b, _ = renorm_parts(x, running_mean, running_var, eps)
    sigma = running_var ** 0.5
    r = np.clip(sigma_b / sigma, 1 / r_max, r_max)
    d = np.clip((mu - running_mean) / sigma, -d_max, d_max)
    return gamma * ((x - mu) / sigma_b * r + d) + beta


# r clipped to [0, r_max]: the lower limit of a positive ratio then never acts.
@MUTANTS.make("batch_renorm_forward", "r-clipped-symmetrically")
def renorm_r_floor_at_zero(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    mu, sigma_b, sigma = renorm_parts(x, running_mean, running_var, eps)
    r = np.clip(sigma_b / sigma, 0.0, r_max)
    d = np.clip((mu - running_mean) / sigma, -d_max, d_max)
    return gamma * (r * (x - mu) / sigma_b + d) + beta


@CORRECT.append
def renorm_folded_into_scale_and_shift(x, running_mean, running_var, gamma, beta, r_max, d_max,
                                       eps=1e-5):
    mu, sigma_b, sigma = renorm_parts(x, running_mean, running_var, eps)
    r = np.minimum(np.maximum(sigma_b / sigma, 1.0 / r_max), r_max)
    d = np.minimum(np.maximum((mu - running_mean) / sigma, -d_max), d_max)
    scale = gamma * r / sigma_b
    return x * scale + (beta + gamma * d - mu * scale)


@CORRECT.append
def renorm_in_torch(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    t = as_tensor(x)
    var, mean = torch.var_mean(t, dim=0, correction=0)
    sigma_b = (var + eps).sqrt()
    sigma = (as_tensor(running_var) + eps).sqrt()
    r = (sigma_b / sigma).clamp(1 / r_max, r_max)
    d = ((mean - as_tensor(running_mean)) / sigma).clamp(-d_max, d_max)
    return ((t - mean) / sigma_b * r + d).mul(as_tensor(gamma)).add(as_tensor(beta)).numpy()


# Blind evaluation: running_var used as if it were a running standard deviation,
# sigma = running_var, in both r and d.
@MUTANTS.make("batch_renorm_forward", "running-var-as-std")
def renorm_running_var_as_sigma(x, running_mean, running_var, gamma, beta, r_max, d_max,
                                eps=1e-5):
    mu, sigma_b, _ = renorm_parts(x, running_mean, running_var, eps)
    r = np.clip(sigma_b / running_var, 1 / r_max, r_max)
    d = np.clip((mu - running_mean) / running_var, -d_max, d_max)
    return gamma * ((x - mu) / sigma_b * r + d) + beta


# --- the tests -----------------------------------------------------------------------------

def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "10")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)


@pytest.mark.parametrize("implementation", CORRECT, ids=[f.__name__ for f in CORRECT])
def test_correct_answers_written_otherwise_pass(implementation):
    exercise = "merge_batch_stats" if implementation.__name__.startswith("merge") \
        else "batch_renorm_forward"
    result = check(exercise, implementation)
    assert result.passed, result.message
