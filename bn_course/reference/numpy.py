"""Batch normalization in plain NumPy: the course's answers, written to be read.

Shapes: ``x`` is ``(N, D)`` (a batch of N examples with D features) unless a
function says ``(N, C, H, W)``. Statistics are per feature (per channel for
images), taken over the batch axis. The conventions are PyTorch's:

* normalize with the *biased* batch variance (divide by N) and put ``eps``
  *inside* the square root;
* the running variance is updated with the *unbiased* variance (divide by N-1);
* ``momentum`` is the weight of the new value:
  ``running = (1 - momentum) * running + momentum * batch``.
"""

import math

import numpy as np

__all__ = [
    "batch_mean",
    "batch_var",
    "normalize",
    "batchnorm_forward",
    "update_running_stats",
    "batchnorm_eval",
    "BatchNorm1d",
    "keras_to_torch_momentum",
    "batchnorm_backward",
    "batchnorm_backward_compact",
    "batchnorm2d_forward",
    "layernorm_forward",
    "groupnorm_forward",
    "fold_batchnorm",
    "ghost_batchnorm_forward",
    "recompute_running_stats",
    "steps_to_reach",
    "percentile_trace",
    "merge_batch_stats",
    "batch_renorm_forward",
]


# --- input validation: clear messages instead of NumPy broadcasting errors ---

LAYOUTS = {2: "(N, D)", 3: "(N, C, L)", 4: "(N, C, H, W)"}


def _as_batch(x, ndim=(2,), name="x"):
    """x itself, once it is a NumPy array with one of the allowed numbers of axes."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.ndim not in ndim:
        layouts = " or ".join(f"{n}-D {LAYOUTS[n]}" for n in ndim)
        raise ValueError(f"{name} must be {layouts}, got shape {x.shape}")
    return x


def _same_shape(dout, x):
    if dout.shape != x.shape:
        raise ValueError(f"dout must have the shape of x {x.shape}, got {dout.shape}")
    return dout


def _as_per_feature(p, num_features, name):
    p = np.asarray(p)
    if p.size != num_features:
        raise ValueError(
            f"{name} must hold one value per feature ({num_features}), got shape {p.shape}")
    return p.reshape(num_features)


def _check_eps(eps):
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")


def _check_momentum(momentum):
    if not (math.isfinite(momentum) and 0 <= momentum <= 1):
        raise ValueError(f"momentum must be a finite number in [0, 1], got {momentum}")


def _require_two_examples(n):
    if n < 2:
        raise ValueError(
            "BatchNorm in training mode needs more than one value per feature "
            f"(got a batch of {n}): the batch variance of one example is 0")


# --- 01: batch statistics ---

def batch_mean(x):
    """Per-feature mean over the batch. x: (N, D) -> (D,)"""
    return _as_batch(x).mean(axis=0)


def batch_var(x):
    """Per-feature *biased* variance (divide by N). x: (N, D) -> (D,)

    Two passes (mean first, then squared deviations) so that a large offset
    such as 1e4 +- 1 does not cancel away the digits that matter.
    """
    x = _as_batch(x)
    centred = x - x.mean(axis=0)
    return np.einsum("nd,nd->d", centred, centred) / x.shape[0]


# --- 02: normalizing ---

def normalize(x, mean, var, eps=1e-5):
    """(x - mean) / sqrt(var + eps), per feature. x: (N, D) -> (N, D)"""
    x = _as_batch(x)
    d = x.shape[1]
    _check_eps(eps)
    mean = _as_per_feature(mean, d, "mean")
    var = _as_per_feature(var, d, "var")
    return (x - mean) / np.sqrt(var + eps)


# --- 03: scale and shift ---

def batchnorm_forward(x, gamma, beta, eps=1e-5):
    """Training-mode batch norm: gamma * x_hat + beta. x: (N, D) -> (N, D)"""
    x = _as_batch(x)
    d = x.shape[1]
    _check_eps(eps)
    _require_two_examples(x.shape[0])
    gamma = _as_per_feature(gamma, d, "gamma")
    beta = _as_per_feature(beta, d, "beta")
    centred = x - x.mean(axis=0)
    var = np.einsum("nd,nd->d", centred, centred) / x.shape[0]
    # What makes it fast: gamma folds into one per-feature scale, and `centred` is
    # our own fresh array, so scaling and shifting it in place allocates nothing
    # more (allocating (N, D) arrays costs as much as the arithmetic here).
    centred *= gamma / np.sqrt(var + eps)
    centred += beta
    return centred


# --- 04: train vs eval ---

def update_running_stats(running_mean, running_var, x, momentum=0.1):
    """One exponential-moving-average step of the running statistics.

    Returns (new_mean, new_var), each (D,). The running variance tracks the
    *unbiased* batch variance (divide by N - 1), as PyTorch does.
    """
    x = _as_batch(x)
    n, d = x.shape
    _check_momentum(momentum)
    _require_two_examples(n)
    running_mean = _as_per_feature(running_mean, d, "running_mean")
    running_var = _as_per_feature(running_var, d, "running_var")
    unbiased_var = x.var(axis=0, ddof=1)
    new_mean = (1 - momentum) * running_mean + momentum * x.mean(axis=0)
    new_var = (1 - momentum) * running_var + momentum * unbiased_var
    return new_mean, new_var


def batchnorm_eval(x, running_mean, running_var, gamma, beta, eps=1e-5):
    """Eval-mode batch norm: the running statistics stand in for the batch's."""
    x = _as_batch(x)
    d = x.shape[1]
    _check_eps(eps)
    running_mean = _as_per_feature(running_mean, d, "running_mean")
    running_var = _as_per_feature(running_var, d, "running_var")
    gamma = _as_per_feature(gamma, d, "gamma")
    beta = _as_per_feature(beta, d, "beta")
    return (x - running_mean) * (gamma / np.sqrt(running_var + eps)) + beta


class BatchNorm1d:
    """A NumPy batch-norm layer for (N, D) input with PyTorch's train/eval switch.

    Train mode (the start): normalize with the batch statistics and update the
    running ones. Eval mode: normalize with the running statistics, update nothing.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        _check_eps(eps)
        _check_momentum(momentum)
        self.eps = eps
        self.momentum = momentum
        self.gamma = np.ones(num_features)
        self.beta = np.zeros(num_features)
        self.running_mean = np.zeros(num_features)
        self.running_var = np.ones(num_features)
        self.training = True

    def train(self):
        self.training = True
        return self

    def eval(self):
        self.training = False
        return self

    def __call__(self, x):
        width = _as_batch(x).shape[1]
        if width != len(self.gamma):
            raise ValueError(f"this layer has {len(self.gamma)} features, x has {width}")
        if not self.training:
            return batchnorm_eval(x, self.running_mean, self.running_var,
                                  self.gamma, self.beta, self.eps)
        out = batchnorm_forward(x, self.gamma, self.beta, self.eps)
        self.running_mean, self.running_var = update_running_stats(
            self.running_mean, self.running_var, x, self.momentum)
        return out


def keras_to_torch_momentum(m):
    """Keras' momentum is the weight of the *old* value; PyTorch's is the new one's."""
    _check_momentum(m)
    return 1.0 - m


# --- 05: backward pass ---

def batchnorm_backward(dout, x, gamma, eps=1e-5):
    """Gradients of training-mode batch norm, one node of the graph at a time.

    dout, x: (N, D); gamma: (D,). Returns (dx (N, D), dgamma (D,), dbeta (D,)).
    """
    x = _as_batch(x)
    dout = _same_shape(_as_batch(dout, name="dout"), x)
    _check_eps(eps)
    n, d = x.shape
    gamma = _as_per_feature(gamma, d, "gamma")
    # forward, keeping every intermediate
    mu = x.mean(axis=0)
    xc = x - mu
    var = (xc ** 2).mean(axis=0)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = xc * inv_std
    # backward, in reverse order
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx_hat = dout * gamma
    dinv_std = (dx_hat * xc).sum(axis=0)
    dvar = dinv_std * -0.5 * (var + eps) ** -1.5
    dxc = dx_hat * inv_std + dvar * 2.0 * xc / n   # two paths reach xc
    dmu = -dxc.sum(axis=0)
    dx = dxc + dmu / n
    return dx, dgamma, dbeta


def batchnorm_backward_compact(dout, x, gamma, eps=1e-5):
    """The same gradients from the closed form

        dx = gamma / std * (dout - mean(dout) - x_hat * mean(dout * x_hat))
    """
    x = _as_batch(x)
    dout = _same_shape(_as_batch(dout, name="dout"), x)
    _check_eps(eps)
    gamma = _as_per_feature(gamma, x.shape[1], "gamma")
    xc = x - x.mean(axis=0)
    inv_std = 1.0 / np.sqrt((xc ** 2).mean(axis=0) + eps)
    x_hat = xc * inv_std
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    n = x.shape[0]
    dx = (gamma * inv_std) * (dout - dbeta / n - x_hat * (dgamma / n))
    return dx, dgamma, dbeta


# --- 06: images ---

def batchnorm2d_forward(x, gamma, beta, eps=1e-5):
    """Batch norm for (N, C, H, W): one mean and variance per channel, over N, H and W."""
    x = _as_batch(x, ndim=(4,))
    n, c, h, w = x.shape
    _check_eps(eps)
    _require_two_examples(n * h * w)
    gamma = _as_per_feature(gamma, c, "gamma").reshape(1, c, 1, 1)
    beta = _as_per_feature(beta, c, "beta").reshape(1, c, 1, 1)
    centred = x - x.mean(axis=(0, 2, 3), keepdims=True)
    var = np.einsum("nchw,nchw->c", centred, centred).reshape(1, c, 1, 1) / (n * h * w)
    centred *= gamma / np.sqrt(var + eps)  # in place, as in batchnorm_forward
    centred += beta
    return centred


# --- 08: other normalizations and folding ---

def _per_channel_shape(x):
    """Shape that broadcasts a per-feature / per-channel vector against x."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def layernorm_forward(x, gamma, beta, eps=1e-5):
    """Normalize each example over all of its features (and pixels).

    x: (N, D) or (N, C, H, W); gamma, beta: per feature / per channel.
    """
    return groupnorm_forward(_as_batch(x, ndim=(2, 4)), gamma, beta, num_groups=1, eps=eps)


def groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5):
    """Normalize each example over groups of consecutive channels (and all pixels).

    x: (N, C, ...) with C divisible by num_groups; gamma, beta: (C,).
    """
    x = _as_batch(x, ndim=(2, 3, 4))
    _check_eps(eps)
    n, c = x.shape[:2]
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"{c} channels cannot be split into {num_groups} equal groups")
    gamma = _as_per_feature(gamma, c, "gamma").reshape(_per_channel_shape(x))
    beta = _as_per_feature(beta, c, "beta").reshape(_per_channel_shape(x))
    groups = x.reshape(n, num_groups, -1)
    centred = groups - groups.mean(axis=2, keepdims=True)
    var = (centred ** 2).mean(axis=2, keepdims=True)
    x_hat = (centred / np.sqrt(var + eps)).reshape(x.shape)
    return x_hat * gamma + beta


def _numpy(value):
    """A NumPy copy of an array or a (possibly CUDA, possibly trainable) tensor."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.array(value, dtype=np.float64)


def fold_batchnorm(conv_weight, conv_bias, bn):
    """Fold an eval-mode batch norm into the convolution (or linear layer) before it.

    bn is anything with weight, bias, running_mean, running_var and eps
    (a torch.nn.BatchNorm2d works). Returns NumPy (weight, bias) such that
    conv(x, weight, bias) == bn(conv(x, conv_weight, conv_bias)) in eval mode.
    """
    weight = _numpy(conv_weight)
    out_channels = weight.shape[0]
    bias = np.zeros(out_channels) if conv_bias is None else _numpy(conv_bias)
    gamma = np.ones(out_channels) if bn.weight is None else _numpy(bn.weight)
    beta = np.zeros(out_channels) if bn.bias is None else _numpy(bn.bias)
    scale = gamma / np.sqrt(_numpy(bn.running_var) + bn.eps)
    folded_weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    folded_bias = (bias - _numpy(bn.running_mean)) * scale + beta
    return folded_weight, folded_bias


def ghost_batchnorm_forward(x, gamma, beta, virtual_batch_size, eps=1e-5):
    """Training-mode batch norm whose statistics come from virtual batches: consecutive
    slices of ``virtual_batch_size`` examples (the last one may be smaller), each
    normalized with its own mean and biased variance. x: (N, D) -> (N, D)"""
    x = _as_batch(x)
    if virtual_batch_size < 2:
        raise ValueError(f"virtual_batch_size must be at least 2, got {virtual_batch_size}")
    return np.concatenate([batchnorm_forward(x[start:start + virtual_batch_size],
                                             gamma, beta, eps)
                           for start in range(0, len(x), virtual_batch_size)])


def recompute_running_stats(batches):
    """Running statistics re-estimated after training (precise BN): the average of the
    batch means and of the *unbiased* batch variances, every batch counting once. This
    is what a torch BatchNorm with momentum=None holds after one train-mode pass.

    batches: iterable of (N_k, D) arrays, N_k >= 2. Returns (mean (D,), var (D,)).
    """
    means, variances = [], []
    for x in batches:
        x = _as_batch(x)
        _require_two_examples(len(x))
        means.append(x.mean(axis=0))
        variances.append(x.var(axis=0, ddof=1))
    if not means:
        raise ValueError("need at least one batch to average")
    return np.mean(means, axis=0), np.mean(variances, axis=0)


# --- 07: reading training histories ---

def steps_to_reach(steps, accuracy, target):
    """The first evaluation step at which a learning curve reaches ``target``.

    steps: (T,) increasing ints; accuracy: (T,), accuracy[t] measured at steps[t].
    Returns the first steps[t] with accuracy[t] >= target, as an int; raises ValueError
    when no accuracy reaches the target.
    """
    reached = np.flatnonzero(np.asarray(accuracy) >= target)
    if len(reached) == 0:
        raise ValueError(f"the accuracy never reaches the target {target}")
    return int(np.asarray(steps)[reached[0]])


def percentile_trace(values, q):
    """values: (T, N), one unit's values for N examples at T moments; q: k percentiles in
    [0, 100]. Returns (T, k): the percentiles of each row, interpolated linearly between
    the two nearest ranks (np.percentile's default)."""
    return np.percentile(values, q, axis=1).T


# --- 10: statistics across devices ---

def merge_batch_stats(counts, means, variances):
    """The mean and *biased* variance of a batch split into K parts, from each part's count,
    mean and biased variance: what synchronized BN computes from its workers.

    counts: (K,) positive; means, variances: (K, D). Returns (mean (D,), var (D,)).
    The whole batch's variance is the average of the parts' variances *plus* the spread of
    their means around the whole mean (the parallel variance formula, Chan et al. 1979):

        var = sum_k n_k * (var_k + (mean_k - mean) ** 2) / sum_k n_k

    Written with deviations from the whole mean, never as E[x^2] - E[x]^2, so that an
    offset such as 1e4 +- 1 keeps its digits.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or len(counts) == 0 or np.any(counts <= 0):
        raise ValueError(f"counts must be a non-empty (K,) array of positive counts, got {counts}")
    means = _as_batch(np.asarray(means), name="means")
    variances = _as_batch(np.asarray(variances), name="variances")
    if means.shape != variances.shape or len(means) != len(counts):
        raise ValueError(f"means {means.shape} and variances {variances.shape} must both be "
                         f"(K, D) with K = {len(counts)} parts")
    weights = (counts / counts.sum())[:, None]  # each part counts as many times as its size
    mean = (weights * means).sum(axis=0)
    var = (weights * (variances + (means - mean) ** 2)).sum(axis=0)
    return mean, var


def batch_renorm_forward(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    """Batch renormalization in training mode (Ioffe, 2017). x: (N, D) -> (N, D)

    Normalize with the batch's statistics as batch norm does, then correct the result
    toward what the running statistics would give, within limits:

        sigma_B = sqrt(batch_var + eps)            (biased batch variance, as BN)
        sigma   = sqrt(running_var + eps)
        r = clip(sigma_B / sigma, 1 / r_max, r_max)
        d = clip((mean_B - running_mean) / sigma, -d_max, d_max)
        out = gamma * ((x - mean_B) / sigma_B * r + d) + beta

    With r and d unclipped, out is exactly the eval-mode output (running statistics);
    with r_max = 1 and d_max = 0 it is batch norm. The paper keeps a running average of
    sigma itself; like TensorFlow and Chainer, this course keeps PyTorch's running
    *variance* and takes sigma = sqrt(running_var + eps). In training r and d are
    constants of the backward pass (stop_gradient in the paper); this forward pass does
    not update the running statistics (they are updated as in batch norm).
    """
    x = _as_batch(x)
    d = x.shape[1]
    _check_eps(eps)
    _require_two_examples(x.shape[0])
    if not (r_max >= 1 and d_max >= 0):
        raise ValueError(f"need r_max >= 1 and d_max >= 0, got r_max={r_max}, d_max={d_max}")
    running_mean = _as_per_feature(running_mean, d, "running_mean")
    running_var = _as_per_feature(running_var, d, "running_var")
    gamma = _as_per_feature(gamma, d, "gamma")
    beta = _as_per_feature(beta, d, "beta")
    batch_mean = x.mean(axis=0)
    centred = x - batch_mean
    batch_std = np.sqrt(np.einsum("nd,nd->d", centred, centred) / x.shape[0] + eps)
    running_std = np.sqrt(running_var + eps)
    r = np.clip(batch_std / running_std, 1 / r_max, r_max)
    shift = np.clip((batch_mean - running_mean) / running_std, -d_max, d_max)
    return (centred / batch_std * r + shift) * gamma + beta
