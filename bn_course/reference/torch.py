"""Batch normalization in PyTorch, from scratch: an autograd Function and two nn.Modules.

Read this after notebook 06. Nothing here calls PyTorch's own batch norm (no
``F.batch_norm``, no ``nn.BatchNorm*``, no aten ``*batch_norm*`` kernel): the forward
and backward passes are written out with reductions and elementwise ops.

Shapes: ``x`` is ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``. Statistics are per
channel, over every other axis; ``M`` is the number of values per channel (N, N*L or
N*H*W). The conventions are PyTorch's: normalize with the biased variance, ``eps``
inside the square root, update the running variance with the unbiased one, and
``momentum`` is the weight of the new value.

What makes it fast (forward+backward within 2x of PyTorch's fused C++ kernels on CPU;
``bench/bench_reference.py`` measures it):

* few passes over memory: the forward pass centres ``x`` once and reuses that tensor
  for the variance, for the output and (saved) for the backward pass;
* gamma and 1/std fold into one per-channel ``scale``, so the output is a single
  ``x_centred * scale + beta`` (``torch.addcmul``), and no ``x_hat`` is stored;
* the backward pass needs only two per-channel sums, sum(dout) and sum(dout * x_hat),
  after which ``dx = dout * a + x_centred * b + c`` with per-channel a, b, c;
* few fresh full-size tensors: on CPU a new large tensor costs about as much as a pass
  over it (the OS hands out its pages one fault at a time), so each scratch buffer
  is reused for a result (``out=``): three new tensors per step, where PyTorch needs two.

Two passes (mean, then squared deviations) rather than ``torch.var_mean``: Welford's
one-pass algorithm would be as exact at large offsets such as 1e4 +- 1, but its CPU
kernel over non-last axes is about 30x slower than a sum (torch 2.13).
"""

import types

import torch
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNormFunction", "BatchRenorm", "batch_norm",
           "batch_renorm", "build_mlp", "freeze_batchnorm", "param_groups", "zero_init_last_bn"]


def _reduce_dims(x):
    """Every axis but the channel axis 1: (0,) for (N, C), (0, 2, 3) for (N, C, H, W)."""
    return (0, *range(2, x.ndim))


def _per_channel(v, x):
    """A (C,) vector reshaped to broadcast against x: (1, C) or (1, C, 1, 1)."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def _compute_dtype(x):
    # Sums of many half-precision numbers lose their digits: compute in float32 then.
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


class BatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm with a hand-written backward pass.

    ``BatchNormFunction.apply(x, weight, bias, eps) -> (out, mean, var)``
    x: (N, C, *); weight, bias: (C,) or None; out: like x; mean, var: (C,) batch mean
    and *biased* variance, returned for the running statistics (not differentiable).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        values_per_channel = x.numel() // x.shape[1]
        if values_per_channel < 2:
            raise ValueError(
                "Expected more than 1 value per channel when training, got input size "
                f"{tuple(x.shape)}: the batch variance of a single value is 0")
        dims = _reduce_dims(x)
        ctx.input_dtype = x.dtype
        x = x.to(_compute_dtype(x))
        mean = x.mean(dims)
        x_centred = x - _per_channel(mean, x)
        out = torch.mul(x_centred, x_centred)  # the squares; their memory is reused below
        var = out.sum(dims) / values_per_channel
        inv_std = torch.rsqrt(var + eps)
        scale = _per_channel(inv_std if weight is None else weight * inv_std, x)
        if bias is None:
            torch.mul(x_centred, scale, out=out)
        else:
            torch.addcmul(_per_channel(bias, x), x_centred, scale, out=out)
        ctx.save_for_backward(x_centred, inv_std, weight)
        ctx.mark_non_differentiable(mean, var)
        return out.to(ctx.input_dtype), mean, var

    @staticmethod
    @once_differentiable  # mean and inv_std were saved as constants: no double backward
    def backward(ctx, dout, _dmean, _dvar):
        x_centred, inv_std, weight = ctx.saved_tensors
        dims = _reduce_dims(x_centred)
        values_per_channel = x_centred.numel() // x_centred.shape[1]
        dout = dout.to(x_centred.dtype)
        dbias = dout.sum(dims)
        scratch = torch.mul(dout, x_centred)  # its memory becomes dx below
        dweight = scratch.sum(dims) * inv_std  # sum(dout * x_hat)
        needs_dx, needs_dweight, needs_dbias, _ = ctx.needs_input_grad
        dx = None
        if needs_dx:
            # dx = gamma/std * (dout - mean(dout) - x_hat * mean(dout * x_hat)), as
            # dout * a + c in one pass, then + x_centred * b in a second one.
            a = inv_std if weight is None else weight * inv_std
            b = -a * inv_std * dweight / values_per_channel
            c = -a * dbias / values_per_channel
            dx = torch.addcmul(_per_channel(c, dout), dout, _per_channel(a, dout), out=scratch)
            dx = dx.addcmul_(x_centred, _per_channel(b, dout)).to(ctx.input_dtype)
        return dx, dweight if needs_dweight else None, dbias if needs_dbias else None, None


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch norm with the signature of ``torch.nn.functional.batch_norm``.

    x: (N, C, *); running_mean, running_var, weight, bias: (C,) or None. Returns a
    tensor like x. In training, normalizes with the batch statistics and updates the
    running ones in place (when given); otherwise uses the running statistics.
    """
    if not training:
        return _normalize_with(x, running_mean, running_var, weight, bias, eps)
    out, mean, var = BatchNormFunction.apply(x, weight, bias, eps)
    if running_mean is not None:
        values_per_channel = x.numel() // x.shape[1]
        unbiased_var = var * (values_per_channel / (values_per_channel - 1))
        with torch.no_grad():  # running = (1 - momentum) * running + momentum * batch
            running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
            running_var.mul_(1 - momentum).add_(momentum * unbiased_var.to(running_var.dtype))
    return out


def _normalize_with(x, mean, var, weight, bias, eps):
    """Eval mode: x * scale + shift with per-channel constants; autograd does backward."""
    compute_dtype = _compute_dtype(x)
    scale = torch.rsqrt(var.to(compute_dtype) + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    out = torch.addcmul(_per_channel(shift, x), x.to(compute_dtype), _per_channel(scale, x))
    return out.to(x.dtype)


class _BatchNorm(nn.Module):
    """What BatchNorm1d and BatchNorm2d share: everything but the input check.

    Same constructor, parameters (``weight``, ``bias``) and buffers (``running_mean``,
    ``running_var``, ``num_batches_tracked``) as ``torch.nn.BatchNorm2d``, so that
    state_dicts load both ways. ``momentum=None`` gives the cumulative average;
    ``bias=False`` (keyword only, as in recent torch) learns a scale but no shift.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        like = {"device": device, "dtype": dtype}
        self.register_parameter(
            "weight", nn.Parameter(torch.ones(num_features, **like)) if affine else None)
        self.register_parameter(
            "bias", nn.Parameter(torch.zeros(num_features, **like)) if affine and bias else None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **like))
            self.register_buffer("running_var", torch.ones(num_features, **like))
            self.register_buffer("num_batches_tracked",
                                 torch.tensor(0, dtype=torch.long, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self):
        """Back to mean 0, variance 1, no batches seen (e.g. to re-estimate them)."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def forward(self, x):
        self._check_input_dim(x)
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative average: batch k gets weight 1/k
                momentum = 1.0 / self.num_batches_tracked.item()
        # As torch: in training the running statistics are updated only when tracked;
        # without any (track_running_stats=False) eval mode uses the batch's too.
        use_running = not self.training or self.track_running_stats
        return batch_norm(
            x,
            self.running_mean if use_running else None,
            self.running_var if use_running else None,
            self.weight, self.bias,
            training=self.training or self.running_mean is None,
            momentum=momentum, eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L): one mean and variance per channel C."""

    def _check_input_dim(self, x):
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W): one mean and variance per channel, over N, H, W."""

    def _check_input_dim(self, x):
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")


# --- 09: batch norm in practice ---------------------------------------------------------

def _stay_in_eval(bn, mode=True):
    """Takes the place of ``train()`` on a frozen BN layer: whatever mode is asked for, the
    layer stays in eval mode (its children too: it has none)."""
    return nn.Module.train(bn, False)


def freeze_batchnorm(model):
    """Freeze every batch-norm layer of ``model`` for fine-tuning; returns the model.

    A frozen layer normalizes with its running statistics and never updates them (eval
    mode), and its gamma and beta get no gradients. Its ``train`` method is replaced on the
    instance, so a later ``model.train()``, which every training loop calls, leaves it in
    eval mode. Nothing else changes: other layers still train, gradients still flow through
    the frozen layers, and the state_dict is that of the original architecture.
    """
    from bn_course.blocks import batchnorm_layers

    for bn in batchnorm_layers(model):
        bn.eval()
        bn.train = types.MethodType(_stay_in_eval, bn)  # a bound method survives deepcopy
        for parameter in bn.parameters():
            parameter.requires_grad_(False)
    return model


def zero_init_last_bn(model):
    """Set gamma to 0 in the last batch norm of each residual block's branch (Goyal et al.,
    2017; torchvision's ``zero_init_residual``); returns the model.

    Each ``bn_course.blocks.ResidualBlock`` then starts as ``relu(shortcut(x))``: the
    identity for an identity shortcut, so a deep network starts as a shallow one. The
    shortcut's own batch norm (a projection) keeps gamma = 1, or nothing would pass at all.
    """
    from bn_course.blocks import ResidualBlock, batchnorm_layers

    for block in model.modules():
        if isinstance(block, ResidualBlock):
            last = batchnorm_layers(block.branch)[-1]
            with torch.no_grad():
                last.weight.zero_()
    return model


def param_groups(model, weight_decay):
    """Optimizer parameter groups: every parameter of ``model`` exactly once, batch norm's
    gamma and beta and every bias without weight decay, the other parameters with it.

    Returns ``[{"params": [...], "weight_decay": weight_decay},
    {"params": [...], "weight_decay": 0.0}]``, for ``torch.optim.SGD(groups, lr=...)``.
    Decay on gamma pulls the scale of a normalized layer toward 0 for no gain; a bias
    (beta is one) sets an offset that decay has no reason to shrink.
    """
    from bn_course.blocks import is_batchnorm

    decay, no_decay, seen = [], [], set()
    for module in model.modules():  # each module once, its own parameters (recurse=False)
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) in seen:  # tied weights: one tensor in two modules
                continue
            seen.add(id(parameter))
            exempt = is_batchnorm(module) or name == "bias"
            (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


# --- 10: batch renormalization ------------------------------------------------------------

def batch_renorm(x, running_mean, running_var, weight, bias, r_max, d_max, training,
                 momentum=0.1, eps=1e-5):
    """Batch renormalization (Ioffe, 2017) for x (N, C, *); see
    ``bn_course.reference.numpy.batch_renorm_forward`` for the formulas.

    In training, r and d are computed without autograd (constants of the backward pass,
    the paper's stop_gradient) and the running statistics are updated as in batch norm;
    otherwise the running statistics normalize, as in eval-mode batch norm.
    """
    if not training:
        return _normalize_with(x, running_mean, running_var, weight, bias, eps)
    dims = _reduce_dims(x)
    mean = x.mean(dims)
    var = x.var(dims, unbiased=False)
    batch_std = torch.sqrt(var + eps)
    with torch.no_grad():
        running_std = torch.sqrt(running_var + eps)
        r = (batch_std / running_std).clamp(1 / r_max, r_max)
        d = ((mean - running_mean) / running_std).clamp(-d_max, d_max)
        values_per_channel = x.numel() // x.shape[1]
        unbiased_var = var * (values_per_channel / (values_per_channel - 1))
        running_mean.mul_(1 - momentum).add_(momentum * mean)
        running_var.mul_(1 - momentum).add_(momentum * unbiased_var)
    x_hat = (x - _per_channel(mean, x)) / _per_channel(batch_std, x) * _per_channel(r, x)
    x_hat = x_hat + _per_channel(d, x)
    if weight is not None:
        x_hat = x_hat * _per_channel(weight, x)
    return x_hat if bias is None else x_hat + _per_channel(bias, x)


class BatchRenorm(_BatchNorm):
    """Batch renormalization for (N, C, *), with BatchNorm's parameters, buffers and
    state_dict. ``r_max`` and ``d_max`` are attributes: the paper starts at 1 and 0 (plain
    batch norm) and raises them during training, once the running statistics are usable."""

    def __init__(self, num_features, r_max=3.0, d_max=5.0, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.r_max = r_max
        self.d_max = d_max

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected (N, C, *) input (got {x.dim()}D input)")

    def forward(self, x):
        self._check_input_dim(x)
        if self.training:
            self.num_batches_tracked.add_(1)
        return batch_renorm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.r_max, self.d_max, self.training, self.momentum, self.eps)

    def extra_repr(self):
        return f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}"


def build_mlp(norm_layer, in_features, hidden, depth, num_classes):
    """The fully connected network of the paper's Figure 1 (notebook 07), with or without BN.

    ``depth`` blocks of Linear -> norm_layer -> Sigmoid, then a Linear to the logits.
    ``norm_layer`` is a class built as ``norm_layer(hidden)`` (one new layer per block);
    None builds the network without normalization: Linear -> Sigmoid. A Linear right
    before a normalization layer has no bias: the layer subtracts the batch mean, which
    cancels any bias, and its beta does the bias's job. The last Linear keeps its bias.
    """
    layers, width = [], in_features
    for _ in range(depth):
        layers.append(nn.Linear(width, hidden, bias=norm_layer is None))
        if norm_layer is not None:
            layers.append(norm_layer(hidden))
        layers.append(nn.Sigmoid())
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
