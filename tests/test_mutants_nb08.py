"""Mutation suite for notebook 08 (beyond): each wrong implementation below must
be named with its catalogue id (see tests/mutation.py)."""

import numpy as np
import pytest

# Imported here, not inside the candidates: the checker gives each call of a candidate a
# time limit, and a first `import torch` would spend a good part of it.
import torch
from mutation import Mutants, as_tensor, assert_diagnosed, missing_mutants

import bn_course.reference.numpy as course_answers
from bn_course.checks.nb08_beyond import WRONG_DIAGNOSIS

MUTANTS = Mutants()


# --- layernorm_forward, groupnorm_forward, fold_batchnorm --------------------

def like_channels(v, x):
    """A per-feature / per-channel vector shaped to broadcast against x."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


@MUTANTS.make("layernorm_forward", "layernorm-over-batch-axis")
def layernorm_over_batch(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=0)
    var = np.mean((x - mu) ** 2, axis=0)
    return like_channels(gamma, x) * (x - mu) / np.sqrt(var + eps) + like_channels(beta, x)


@MUTANTS.make("layernorm_forward", "layernorm-over-channels-only")
def layernorm_over_axis_one(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


@MUTANTS.make("layernorm_forward", "unbiased-variance")
def layernorm_flattened_ddof_one(x, gamma, beta, eps=1e-5):
    flat = x.reshape(len(x), -1)
    mean = flat.mean(axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
    var = flat.var(axis=1, ddof=1).reshape((-1,) + (1,) * (x.ndim - 1))
    return like_channels(gamma, x) * (x - mean) / np.sqrt(var + eps) + like_channels(beta, x)


@MUTANTS.make("layernorm_forward", "eps-outside-sqrt")
def layernorm_eps_on_std(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    dims = tuple(range(1, x.ndim))
    x_hat = (t - t.mean(dims, keepdim=True)) / (t.std(dims, keepdim=True, correction=0) + eps)
    return (x_hat * as_tensor(like_channels(gamma, x)) + as_tensor(like_channels(beta, x))).numpy()


@MUTANTS.make("groupnorm_forward", "wrong-group-axis")
def groupnorm_every_gth_channel(x, gamma, beta, num_groups, eps=1e-5):
    n, c = x.shape[:2]
    interleaved = x.reshape(n, c // num_groups, num_groups, -1)
    mean = interleaved.mean(axis=(1, 3), keepdims=True)
    var = interleaved.var(axis=(1, 3), keepdims=True)
    x_hat = ((interleaved - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


@MUTANTS.make("groupnorm_forward", "groups-over-batch")
def groupnorm_blocks_over_whole_batch(x, gamma, beta, num_groups, eps=1e-5):
    size = x.shape[1] // num_groups
    out = np.empty_like(x)
    for g in range(num_groups):
        block = x[:, g * size:(g + 1) * size]
        out[:, g * size:(g + 1) * size] = (block - block.mean()) / np.sqrt(block.var() + eps)
    return out * like_channels(gamma, x) + like_channels(beta, x)


@MUTANTS.make("groupnorm_forward", "unbiased-variance")
def groupnorm_torch_default_var(x, gamma, beta, num_groups, eps=1e-5):
    t = as_tensor(x).reshape(x.shape[0], num_groups, -1)
    x_hat = ((t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, keepdim=True) + eps)).numpy()
    return x_hat.reshape(x.shape) * like_channels(gamma, x) + like_channels(beta, x)


@MUTANTS.make("layernorm_forward", "calls-course-reference")
def layernorm_as_one_course_group(x, gamma, beta, eps=1e-5):
    return course_answers.groupnorm_forward(x, gamma, beta, num_groups=1, eps=eps)


@MUTANTS.make("groupnorm_forward", "modifies-input")
def groupnorm_centres_a_view_of_x(x, gamma, beta, num_groups, eps=1e-5):
    groups = x.reshape(x.shape[0], num_groups, -1)  # a view: writing to it writes to x
    groups -= groups.mean(axis=-1, keepdims=True)
    x_hat = (groups / np.sqrt((groups ** 2).mean(axis=-1, keepdims=True) + eps)).reshape(x.shape)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


def fold_scaled_weight(conv_weight, scale):
    return np.einsum("o...,o->o...", conv_weight, scale)


@MUTANTS.make("fold_batchnorm", "fold-forgot-eps")
def fold_without_eps(conv_weight, conv_bias, bn):
    scale = bn.weight * bn.running_var ** -0.5
    bias = np.zeros_like(scale) if conv_bias is None else conv_bias
    return fold_scaled_weight(conv_weight, scale), scale * (bias - bn.running_mean) + bn.bias


@MUTANTS.make("fold_batchnorm", "fold-bias-without-mean-shift")
def fold_bias_scaled_only(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var + bn.eps)
    bias = 0.0 if conv_bias is None else conv_bias
    return fold_scaled_weight(conv_weight, scale), bn.bias + bias * scale


@MUTANTS.make("fold_batchnorm", "fold-ignores-conv-bias")
def fold_drops_conv_bias(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var + bn.eps)
    return fold_scaled_weight(conv_weight, scale), bn.bias - bn.running_mean * scale


@MUTANTS.make("fold_batchnorm", "fold-var-instead-of-std")
def fold_divides_by_variance(conv_weight, conv_bias, bn):
    scale = np.divide(bn.weight, bn.running_var + bn.eps)
    bias = 0.0 if conv_bias is None else conv_bias
    weight = conv_weight * scale[(slice(None),) + (np.newaxis,) * (conv_weight.ndim - 1)]
    return weight, (bias - bn.running_mean) * scale + bn.bias


# --- notebook 08: ghost batch norm, re-estimated statistics, diagnosis ---

@MUTANTS.make("ghost_batchnorm_forward", "ghost-stats-over-whole-batch")
def ghost_plain_batchnorm(x, gamma, beta, virtual_batch_size, eps=1e-5):
    return gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + beta


@MUTANTS.make("ghost_batchnorm_forward", "ghost-strided-virtual-batches")
def ghost_by_step_slicing(x, gamma, beta, virtual_batch_size, eps=1e-5):
    pieces = int(np.ceil(len(x) / virtual_batch_size))
    out = np.zeros_like(x)
    for j in range(pieces):
        chunk = x[j::pieces]
        out[j::pieces] = gamma * (chunk - chunk.mean(0)) / np.sqrt(chunk.var(0) + eps) + beta
    return out


@MUTANTS.make("ghost_batchnorm_forward", "ghost-size-read-as-count")
def ghost_array_split(x, gamma, beta, virtual_batch_size, eps=1e-5):
    chunks = np.array_split(x, virtual_batch_size)
    return np.concatenate([gamma * (c - c.mean(0)) / np.sqrt(c.var(0) + eps) + beta
                           for c in chunks if len(c)])


@MUTANTS.make("ghost_batchnorm_forward", "unbiased-variance")
def ghost_ddof_one(x, gamma, beta, virtual_batch_size, eps=1e-5):
    out = []
    for start in range(0, len(x), virtual_batch_size):
        c = x[start:start + virtual_batch_size]
        out.append(gamma * (c - c.mean(0)) / np.sqrt(c.std(0, ddof=1) ** 2 + eps) + beta)
    return np.vstack(out)


@MUTANTS.make("recompute_running_stats", "recompute-with-momentum")
def recompute_ema_loop(batches):
    mean, var = 0, 1
    for x in batches:
        mean = 0.9 * mean + 0.1 * np.mean(x, axis=0)
        var = 0.9 * var + 0.1 * np.var(x, axis=0, ddof=1)
    return mean, var


@MUTANTS.make("recompute_running_stats", "running-var-biased")
def recompute_biased(batches):
    stats = [(x.mean(0), ((x - x.mean(0)) ** 2).mean(0)) for x in batches]
    return sum(m for m, _ in stats) / len(stats), sum(v for _, v in stats) / len(stats)


@MUTANTS.make("recompute_running_stats", "counts-initial-values")
def recompute_cumulative_from_reset(batches):
    mean, var = 0.0, 1.0
    for k, x in enumerate(batches, start=2):  # the reset values count as batch 1
        mean += (x.mean(0) - mean) / k
        var += (x.var(0, ddof=1) - var) / k
    return mean, var


@MUTANTS.make("recompute_running_stats", "pools-all-examples")
def recompute_pooled(batches):
    x = np.vstack(batches)
    return x.mean(0), x.var(0, ddof=1)


@MUTANTS.make("recompute_running_stats", "last-batch-only")
def recompute_last(batches):
    for x in batches:
        mean, var = x.mean(0), x.var(0, ddof=1)
    return mean, var


@MUTANTS.make("recompute_running_stats", "modifies-input")
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


MUTANTS.extend([("diagnose_bn_bug", mistake_id, diagnose_blaming(answer))
                for answer, mistake_id in WRONG_DIAGNOSIS.items()])


# --- more patterns seen in published code -----------------------------------------

# A Transformer tutorial's LayerNorm: statistics over the last axis only.
@MUTANTS.make("layernorm_forward", "layernorm-over-last-axis")
def layernorm_last_axis(x, gamma, beta, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return like_channels(gamma, x) * (x - mean) / np.sqrt(var + eps) + like_channels(beta, x)


# The same tutorial's torch version: x.std(-1) (unbiased) and eps added to the std, here
# over the right axes.
@MUTANTS.make("layernorm_forward", "unbiased-variance+eps-outside-sqrt")
def layernorm_torch_std_plus_eps(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    dims = tuple(range(1, x.ndim))
    x_hat = (t - t.mean(dims, keepdim=True)) / (t.std(dims, keepdim=True) + eps)
    return (x_hat * as_tensor(like_channels(gamma, x)) + as_tensor(like_channels(beta, x))).numpy()


@MUTANTS.make("layernorm_forward", "layernorm-over-channels-only+unbiased-variance")
def layernorm_channels_torch_var(x, gamma, beta, eps=1e-5):
    t = as_tensor(x)
    x_hat = (t - t.mean(1, keepdim=True)) / torch.sqrt(t.var(1, keepdim=True) + eps)
    return x_hat.numpy() * like_channels(gamma, x) + like_channels(beta, x)


# Image axes typed as (1, 2) instead of (1, 2, 3): each column of pixels apart.
@MUTANTS.make("layernorm_forward", "observation:statistics-axes")
def layernorm_forgets_the_width(x, gamma, beta, eps=1e-5):
    axes = (1, 2) if x.ndim == 4 else (1,)
    x_hat = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


# Images flattened to (N, C*H*W) for a 1-D LayerNorm, then reshaped as (N, H, W, C) and
# moved back as if the channels had been last.
@MUTANTS.make("layernorm_forward", "observation:values-misplaced")
def layernorm_images_put_back_wrongly(x, gamma, beta, eps=1e-5):
    if x.ndim == 2:
        return layernorm_x_hat(x, eps) * gamma + beta
    n, c, h, w = x.shape
    flat = x.reshape(n, -1)
    x_hat = (flat - flat.mean(1, keepdims=True)) / np.sqrt(flat.var(1, keepdims=True) + eps)
    x_hat = np.moveaxis(x_hat.reshape(n, h, w, c), -1, 1)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


# A from-scratch LayerNorm without eps at all.
@MUTANTS.make("layernorm_forward", "observation:ignores-eps")
def layernorm_without_eps_unbiased(x, gamma, beta, eps=1e-5):
    flat = x.reshape(len(x), -1)
    x_hat = ((flat - flat.mean(1, keepdims=True)) / flat.std(1, ddof=1, keepdims=True))
    return x_hat.reshape(x.shape) * like_channels(gamma, x) + like_channels(beta, x)


def layernorm_x_hat(x, eps):
    axes = tuple(range(1, x.ndim))
    return (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)


@MUTANTS.make("layernorm_forward", "gamma-beta-swapped")
def layernorm_swapped_parameters(x, gamma, beta, eps=1e-5):
    return layernorm_x_hat(x, eps) * like_channels(beta, x) + like_channels(gamma, x)


@MUTANTS.make("layernorm_forward", "forgot-shift")
def layernorm_without_beta(x, gamma, beta, eps=1e-5):
    return layernorm_x_hat(x, eps) * like_channels(gamma, x)


@MUTANTS.make("layernorm_forward", "forgot-scale")
def layernorm_without_gamma(x, gamma, beta, eps=1e-5):
    return layernorm_x_hat(x, eps) + like_channels(beta, x)


# torch's F.layer_norm without weight and bias, its result returned as it is.
@MUTANTS.make("layernorm_forward", "returns-normalized-not-scaled")
def layernorm_functional_without_affine(x, gamma, beta, eps=1e-5):
    return torch.nn.functional.layer_norm(as_tensor(x), x.shape[1:], eps=eps).numpy()


# num_groups ignored: x.reshape(N, C, -1), each channel on its own (InstanceNorm).
@MUTANTS.make("groupnorm_forward", "groupnorm-per-channel")
def groupnorm_reshape_by_channel(x, gamma, beta, num_groups, eps=1e-5):
    per_channel = x.reshape(x.shape[0], x.shape[1], -1)
    mean = per_channel.mean(-1, keepdims=True)
    var = per_channel.var(-1, keepdims=True)
    x_hat = ((per_channel - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


@MUTANTS.make("groupnorm_forward", "groupnorm-one-group")
def groupnorm_whole_example(x, gamma, beta, num_groups, eps=1e-5):
    flat = x.reshape(x.shape[0], -1)
    x_hat = (flat - flat.mean(1)[:, None]) / np.sqrt(flat.var(1)[:, None] + eps)
    return x_hat.reshape(x.shape) * like_channels(gamma, x) + like_channels(beta, x)


# A "grouped channel norm" from a kernel benchmark: (N, G, C // G, H, W) reduced over the
# group's channels only (dim=2), with torch's unbiased default.
@MUTANTS.make("groupnorm_forward", "groups-without-pixels+unbiased-variance")
def groupnorm_over_group_channels_only(x, gamma, beta, num_groups, eps=1e-5):
    n, c = x.shape[:2]
    t = as_tensor(x).reshape(n, num_groups, c // num_groups, -1)
    x_hat = (t - t.mean(2, keepdim=True)) / torch.sqrt(t.var(2, keepdim=True) + eps)
    return x_hat.reshape(x.shape).numpy() * like_channels(gamma, x) + like_channels(beta, x)


@MUTANTS.make("groupnorm_forward", "groups-without-pixels")
def groupnorm_per_pixel_groups(x, gamma, beta, num_groups, eps=1e-5):
    n, c = x.shape[:2]
    grouped = x.reshape(n, num_groups, c // num_groups, -1)
    mean, var = grouped.mean(2, keepdims=True), grouped.var(2, keepdims=True)
    x_hat = ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return x_hat * like_channels(gamma, x) + like_channels(beta, x)


@MUTANTS.make("groupnorm_forward", "eps-outside-sqrt")
def groupnorm_eps_on_std(x, gamma, beta, num_groups, eps=1e-5):
    grouped = x.reshape(x.shape[0], num_groups, -1)
    x_hat = (grouped - grouped.mean(-1, keepdims=True)) / (grouped.std(-1, keepdims=True) + eps)
    return x_hat.reshape(x.shape) * like_channels(gamma, x) + like_channels(beta, x)


# torch.std (unbiased) plus eps on the std, as in several GroupNorm modules.
@MUTANTS.make("groupnorm_forward", "unbiased-variance+eps-outside-sqrt")
def groupnorm_torch_std_plus_eps(x, gamma, beta, num_groups, eps=1e-5):
    t = as_tensor(x).reshape(x.shape[0], num_groups, -1)
    x_hat = (t - t.mean(-1, keepdim=True)) / (t.std(-1, keepdim=True) + eps)
    return x_hat.reshape(x.shape).numpy() * like_channels(gamma, x) + like_channels(beta, x)


# A runtime's fusion pass added BN's shift to the conv bias without scaling it
# (`bias += shift`), fixed later to `bias = bias * scale + shift`.
@MUTANTS.make("fold_batchnorm", "fold-conv-bias-unscaled")
def fold_adds_conv_bias_as_is(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv_bias is not None:
        bias = bias + conv_bias
    return fold_scaled_weight(conv_weight, scale), bias


@MUTANTS.make("fold_batchnorm", "fold-eps-outside-sqrt")
def fold_eps_on_std(conv_weight, conv_bias, bn):
    scale = bn.weight / (np.sqrt(bn.running_var) + bn.eps)
    bias = np.zeros_like(scale) if conv_bias is None else conv_bias
    return fold_scaled_weight(conv_weight, scale), (bias - bn.running_mean) * scale + bn.bias


# A fusion written for bias-free convolutions (conv bias dropped) with eps forgotten.
@MUTANTS.make("fold_batchnorm", "fold-forgot-eps+fold-ignores-conv-bias")
def fold_for_bias_free_convs_without_eps(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var)
    return fold_scaled_weight(conv_weight, scale), bn.bias - bn.running_mean * scale


# A fusion done in place on the convolution's arrays (`W.mul_(A)`, `bias *= A`).
@MUTANTS.make("fold_batchnorm", "modifies-input")
def fold_scales_the_conv_weight_in_place(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var + bn.eps)
    conv_weight *= scale.reshape((-1,) + (1,) * (conv_weight.ndim - 1))
    bias = np.zeros_like(scale) if conv_bias is None else conv_bias
    return conv_weight, (bias - bn.running_mean) * scale + bn.bias


# torch.chunk(x, N // B): right when B divides N, too few pieces otherwise.
@MUTANTS.make("ghost_batchnorm_forward", "ghost-too-few-pieces")
def ghost_torch_chunk_floor(x, gamma, beta, virtual_batch_size, eps=1e-5):
    chunks = as_tensor(x).chunk(max(1, len(x) // virtual_batch_size))
    out = [(c - c.mean(0)) / torch.sqrt(c.var(0, unbiased=False) + eps) for c in chunks]
    return torch.cat(out).numpy() * gamma + beta


# torch.chunk(x, virtual_batch_size) with torch's unbiased default variance.
@MUTANTS.make("ghost_batchnorm_forward", "ghost-size-read-as-count+unbiased-variance")
def ghost_chunk_by_size_torch_var(x, gamma, beta, virtual_batch_size, eps=1e-5):
    chunks = as_tensor(x).tensor_split(virtual_batch_size)
    out = [(c - c.mean(0)) / torch.sqrt(c.var(0) + eps) for c in chunks if len(c)]
    return torch.cat(out).numpy() * gamma + beta


# A short last slice joined to the previous one, to avoid statistics of 2 examples.
@MUTANTS.make("ghost_batchnorm_forward", "ghost-short-slice-merged")
def ghost_merges_a_short_tail(x, gamma, beta, virtual_batch_size, eps=1e-5):
    starts = list(range(0, len(x), virtual_batch_size))
    if len(starts) > 1 and len(x) - starts[-1] < virtual_batch_size:
        starts.pop()
    bounds = starts[1:] + [len(x)]
    parts = [x[a:b] for a, b in zip(starts, bounds)]
    return np.vstack([gamma * (p - p.mean(0)) / np.sqrt(p.var(0) + eps) + beta for p in parts])


# Everything stacked and np.var's default (biased) taken: pooled, and divided by the count.
@MUTANTS.make("recompute_running_stats", "pools-all-examples")
def recompute_pooled_with_np_var_default(batches):
    everything = np.concatenate(batches)
    return np.mean(everything, axis=0), np.var(everything, axis=0)


# Each batch weighted by its size (a careful average that is not this specification).
@MUTANTS.make("recompute_running_stats", "weights-batches-by-size")
def recompute_weighted_by_examples(batches):
    total, mean_sum, var_sum = 0, 0.0, 0.0
    for x in batches:
        total += len(x)
        mean_sum = mean_sum + len(x) * x.mean(0)
        var_sum = var_sum + len(x) * x.var(0, ddof=1)
    return mean_sum / total, var_sum / total


# Keras' default epsilon=1e-3.
@MUTANTS.make("groupnorm_forward", "observation:wrong-default")
def groupnorm_keras_default_eps(x, gamma, beta, num_groups, eps=1e-3):
    grouped = x.reshape(x.shape[0], num_groups, -1)
    x_hat = (grouped - grouped.mean(-1, keepdims=True)) / np.sqrt(grouped.var(-1, keepdims=True) + eps)
    return x_hat.reshape(x.shape) * like_channels(gamma, x) + like_channels(beta, x)


# TabNet's ghost batch norm: x.chunk(ceil(N / B)), equal chunks of N / k examples.
@MUTANTS.make("ghost_batchnorm_forward", "ghost-equal-chunks")
def ghost_chunks_of_equal_size(x, gamma, beta, virtual_batch_size, eps=1e-5):
    chunks = as_tensor(x).chunk(int(np.ceil(len(x) / virtual_batch_size)), 0)
    out = [(c - c.mean(0)) / torch.sqrt(c.var(0, unbiased=False) + eps) for c in chunks]
    return torch.cat(out).numpy() * gamma + beta


@MUTANTS.make("ghost_batchnorm_forward", "ghost-equal-chunks")
def ghost_array_split_into_ceil_pieces(x, gamma, beta, virtual_batch_size, eps=1e-5):
    pieces = np.array_split(x, -(-len(x) // virtual_batch_size))
    return np.concatenate([(p - p.mean(0)) / np.sqrt(p.var(0) + eps) for p in pieces]) * gamma \
        + beta


# A loop over floor(N / B) full slices, written back into (a copy of) x: the short tail is
# left as it came in (a TabNet port does this in place).
@MUTANTS.make("ghost_batchnorm_forward", "ghost-short-slice-left-raw")
def ghost_full_slices_only(x, gamma, beta, virtual_batch_size, eps=1e-5):
    out = x.copy()
    for i in range(len(x) // virtual_batch_size):
        rows = slice(i * virtual_batch_size, (i + 1) * virtual_batch_size)
        chunk = x[rows]
        out[rows] = gamma * (chunk - chunk.mean(0)) / np.sqrt(chunk.var(0) + eps) + beta
    return out


# torch.split(x, N // B): slices of N // B examples, B read as the number of slices.
@MUTANTS.make("ghost_batchnorm_forward", "observation:ignores-eps")
def ghost_split_by_n_over_b_without_eps(x, gamma, beta, virtual_batch_size, eps=1e-5):
    parts = as_tensor(x).split(max(1, len(x) // virtual_batch_size))
    out = [(c - c.mean(0)) / c.std(0, unbiased=False) for c in parts]
    return torch.cat(out).numpy() * gamma + beta


@MUTANTS.make("ghost_batchnorm_forward", "observation:ignores-eps")
def ghost_without_eps_strided(x, gamma, beta, virtual_batch_size, eps=1e-5):
    pieces = -(-len(x) // virtual_batch_size)
    out = np.empty_like(x)
    for j in range(pieces):
        chunk = x[j::pieces]
        out[j::pieces] = (chunk - chunk.mean(0)) / chunk.std(0, ddof=1)
    return out * gamma + beta


# The group's channels taken as x[:, k * G:(k + 1) * G]: num_groups read as how many
# channels each group holds.
@MUTANTS.make("groupnorm_forward", "num-groups-read-as-group-size")
def groupnorm_slices_of_num_groups_channels(x, gamma, beta, num_groups, eps=1e-5):
    out = np.empty_like(x)
    for first in range(0, x.shape[1], num_groups):
        block = x[:, first:first + num_groups]
        axes = tuple(range(1, x.ndim))
        mean, var = block.mean(axes, keepdims=True), block.var(axes, keepdims=True)
        out[:, first:first + num_groups] = (block - mean) / np.sqrt(var + eps)
    return out * like_channels(gamma, x) + like_channels(beta, x)


@MUTANTS.make("groupnorm_forward", "num-groups-read-as-group-size+unbiased-variance")
def groupnorm_torch_view_by_group_size(x, gamma, beta, num_groups, eps=1e-5):
    t = as_tensor(x).reshape(len(x), -1, num_groups * int(np.prod(x.shape[2:])))
    x_hat = (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, keepdim=True) + eps)
    return x_hat.reshape(x.shape).numpy() * like_channels(gamma, x) + like_channels(beta, x)


# gamma and beta applied while x is still (N, G, C // G * H * W): only their first G entries
# fit, one per group.
@MUTANTS.make("groupnorm_forward", "affine-per-group")
def groupnorm_scales_the_groups(x, gamma, beta, num_groups, eps=1e-5):
    grouped = x.reshape(len(x), num_groups, -1)
    x_hat = (grouped - grouped.mean(2)[..., None]) / np.sqrt(grouped.var(2)[..., None] + eps)
    scaled = gamma[:num_groups, None] * x_hat + beta[:num_groups, None]
    return scaled.reshape(x.shape)


# The loop stops at the last full virtual batch: the short tail is lost and the output has
# fewer rows than x.
@MUTANTS.make("ghost_batchnorm_forward", "ghost-short-slice-dropped")
def ghost_full_slices_stacked(x, gamma, beta, virtual_batch_size, eps=1e-5):
    full = len(x) // virtual_batch_size
    blocks = x[:full * virtual_batch_size].reshape(full, virtual_batch_size, -1)
    x_hat = (blocks - blocks.mean(1, keepdims=True)) / np.sqrt(blocks.var(1, keepdims=True) + eps)
    return (x_hat * gamma + beta).reshape(-1, x.shape[1])


@MUTANTS.make("ghost_batchnorm_forward", "ghost-short-slice-dropped")
def ghost_list_of_full_slices(x, gamma, beta, virtual_batch_size, eps=1e-5):
    outs = []
    for i in range(len(x) // virtual_batch_size):
        chunk = x[i * virtual_batch_size:(i + 1) * virtual_batch_size]
        outs.append(gamma * (chunk - chunk.mean(0)) / np.sqrt(chunk.var(0) + eps) + beta)
    return np.concatenate(outs)  # raises for N < virtual_batch_size: nothing to concatenate


# The scale broadcast along axis 1 of the weight, the input channels: a broadcasting error
# unless C_in == C_out, and wrong values when it is.
@MUTANTS.make("fold_batchnorm", "fold-scales-input-channels")
def fold_scale_on_axis_one(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var + bn.eps)
    bias = 0.0 if conv_bias is None else conv_bias
    return conv_weight * like_channels(scale, conv_weight), (bias - bn.running_mean) * scale + bn.bias


@MUTANTS.make("fold_batchnorm", "fold-scales-input-channels")
def fold_einsum_on_input_channels(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var + bn.eps)
    bias = np.zeros(len(conv_weight)) if conv_bias is None else conv_bias
    return np.einsum("oi...,i->oi...", conv_weight, scale), scale * (bias - bn.running_mean) + bn.bias


# PyTorch's own fusion code pasted in: torch.sqrt on bn's NumPy arrays raises a TypeError.
@MUTANTS.make("fold_batchnorm", "torch-on-numpy-inputs")
def fold_pasted_from_torch_fusion(conv_weight, conv_bias, bn):
    bias = torch.zeros(len(conv_weight)) if conv_bias is None else conv_bias
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return conv_weight * scale.reshape([-1] + [1] * (conv_weight.ndim - 1)), \
        (bias - bn.running_mean) * scale + bn.bias


# Tensor methods on the inputs, as in the verification cell that passes torch layers.
@MUTANTS.make("fold_batchnorm", "torch-on-numpy-inputs")
def fold_detaches_every_input(conv_weight, conv_bias, bn):
    gamma, var = bn.weight.detach().numpy(), bn.running_var.detach().numpy()
    scale = gamma / np.sqrt(var + bn.eps)
    return fold_scaled_weight(conv_weight, scale), bn.bias - bn.running_mean * scale


# The fusion bug of a well-known YOLOv3 port: the folded bias is conv_bias + beta, with
# neither BN's scale nor its running mean.
@MUTANTS.make("fold_batchnorm", "fold-bias-conv-plus-beta")
def fold_bias_added_as_is(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var + bn.eps)
    bias = bn.bias if conv_bias is None else conv_bias + bn.bias
    return fold_scaled_weight(conv_weight, scale), bias


# Blind evaluation: the branch for a convolution without bias returns zeros, forgetting
# BN's own shift; the branch with a bias is right.
@MUTANTS.make("fold_batchnorm", "fold-zero-bias-without-conv-bias")
def fold_zero_bias_when_none(conv_weight, conv_bias, bn):
    scale = bn.weight / np.sqrt(bn.running_var + bn.eps)
    if conv_bias is None:
        bias = np.zeros_like(scale)
    else:
        bias = (conv_bias - bn.running_mean) * scale + bn.bias
    return fold_scaled_weight(conv_weight, scale), bias


# Blind evaluation: gamma and beta reshaped to (G, C // G) and averaged like the
# statistics, so each channel gets its group's mean scale and shift.
@MUTANTS.make("groupnorm_forward", "affine-averaged-per-group")
def groupnorm_affine_averaged(x, gamma, beta, num_groups, eps=1e-5):
    groups = x.reshape(len(x), num_groups, -1)
    centred = groups - groups.mean(-1, keepdims=True)
    x_hat = centred / np.sqrt(groups.var(-1, keepdims=True) + eps)
    g = gamma.reshape(num_groups, -1).mean(1)[None, :, None]
    b = beta.reshape(num_groups, -1).mean(1)[None, :, None]
    return (x_hat * g + b).reshape(x.shape)


# --- the tests --------------------------------------------------------------

def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "08")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
