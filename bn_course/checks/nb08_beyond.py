"""Notebook 08, beyond: folding BN into a convolution, LayerNorm, GroupNorm, ghost
batch norm, re-estimating the running statistics, and diagnosing a planted bug."""

import sys
from types import SimpleNamespace

import numpy as np

from bn_course.checks import _cases, _probes, _steps
from bn_course.checks._core import (
    CandidateProblem,
    Case,
    Exercise,
    InputModified,
    Mistake,
    explain_error,
    knob_mistake,
    variant_mistake,
)
from bn_course.checks.nb02_normalizing import EPS_HINT
from bn_course.checks.nb03_scale_and_shift import affine_mistakes
from bn_course.reference import numpy as ref
from bn_course.reference.case_files import BN_BUGS, planted_bug

BIASED_HINT = ("Normalize with the biased variance: divide by the number of values averaged, "
               "as np.var does by default (ddof=0).")

def _layernorm_cases(group):
    rng = np.random.default_rng(19)
    image_shapes = {"basic": [(3, 4, 2, 2)], "awkward": [(1, 2, 3, 3)], "float32": [(2, 3, 2, 2)]}
    kind = "float32 " if group == "float32" else ""
    images = [(f"a {kind}({', '.join(map(str, shape))}) batch of images",
               _cases.batch(rng, shape[0], int(np.prod(shape[1:]))).reshape(shape))
              for shape in image_shapes[group]]
    shapes = [(d, x.astype(np.float32) if group == "float32" else x) for d, x in images]
    if group == "awkward":
        one_example = _cases.batch(rng, 1, 5)
        constant_example = _cases.batch(rng, 4, 6)
        constant_example[2] = 7.0
        shapes += [("a batch of one (1, 5)", one_example),
                   ("a (4, 6) batch whose third example is constant", constant_example)]
    # A single feature is left out: every example then normalizes to beta.
    inputs = [(desc, x) for desc, x in _cases.shapes(group) + shapes
              if not (x.ndim == 2 and x.shape[1] < 2)]
    return _cases.gamma_beta_cases(inputs, rng)


def _groupnorm_cases(group):
    rng = np.random.default_rng(20)
    layouts = {"basic": [((4, 6, 3, 3), 2), ((3, 6, 2, 2), 3), ((2, 4, 3, 2), 4)],
               "awkward": [((1, 6, 2, 2), 3), ((2, 4, 1, 1), 2), ((3, 8, 2, 2), 1)],
               "float32": [((4, 6, 3, 3), 2), ((2, 4, 2, 2), 2)]}[group]
    cases = []
    for i, (shape, groups) in enumerate(layouts):
        x = _cases.batch(rng, shape[0], int(np.prod(shape[1:]))).reshape(shape)
        x = x.astype(np.float32) if group == "float32" else x
        gamma, beta = _cases.gamma_beta(rng, shape[1], x.dtype)
        eps = _cases.eps_for(i)
        cases.append(_cases.function_case(
            f"a {'float32 ' if group == 'float32' else ''}{shape} batch in {groups} groups, "
            f"{_cases.eps_text(eps)}",
            {"x": x, "gamma": gamma, "beta": beta, "num_groups": groups},
            _cases.with_eps({}, eps), float32=group == "float32"))
    return cases


def _fold_cases(group):
    rng = np.random.default_rng(21)
    # Each group has a weight with as many input as output channels (more than one): a
    # scale along the input axis then computes wrong values instead of failing to broadcast.
    weight_shapes = {"basic": [(4, 3, 3, 3), (6, 2, 1, 1), (5, 8), (3, 3, 3, 3)],
                     "awkward": [(1, 1, 3, 3), (3, 4, 5, 5), (4, 4)],
                     "float32": [(4, 3, 3, 3), (2, 2, 1, 1)]}[group]
    dtype = np.float32 if group == "float32" else np.float64
    cases = []
    for i, shape in enumerate(weight_shapes):
        out_channels = shape[0]
        weight = rng.standard_normal(shape).astype(dtype)
        bias = None if i % 2 else rng.standard_normal(out_channels).astype(dtype)
        gamma, beta = _cases.gamma_beta(rng, out_channels, dtype)
        bn = SimpleNamespace(weight=gamma, bias=beta, eps=_cases.eps_for(i) or 1e-5,
                             running_mean=rng.standard_normal(out_channels).astype(dtype),
                             running_var=rng.uniform(0.2, 3.0, out_channels).astype(dtype))
        cases.append(_explaining_torch_on_numpy(_cases.function_case(
            f"a {'float32 ' if group == 'float32' else ''}{shape} weight "
            f"{'without' if bias is None else 'with'} bias, eps={bn.eps}",
            {"conv_weight": weight, "conv_bias": bias, "bn": bn},
            labels=("folded weight", "folded bias"), float32=group == "float32")))
    return cases


def _explaining_torch_on_numpy(case):
    """The case, where a torch function refusing the NumPy inputs (torch.sqrt(bn.running_var
    + bn.eps), pasted from PyTorch's own fusion code) is named rather than shown as a bare
    TypeError. Probes rerun the case as it is."""
    rerun = case.rerun

    def play(candidate):
        try:
            return rerun(candidate)
        except (TypeError, AttributeError) as error:
            if not _torch_refused_numpy(error):
                raise
            raise CandidateProblem(f"On {case.description}, your code raised "
                                   f"{explain_error(error)}", "torch-on-numpy-inputs") from None

    case.play = play
    return case


def _torch_refused_numpy(error):
    """A torch function given a NumPy value ("must be Tensor, not numpy.ndarray"), or a
    torch.Tensor method asked of one ('numpy.ndarray' object has no attribute 'detach')."""
    if isinstance(error, TypeError):
        return "must be Tensor, not numpy." in str(error)
    torch = sys.modules.get("torch")  # a student who calls tensor methods has imported it
    return (isinstance(getattr(error, "obj", None), np.ndarray) and torch is not None
            and hasattr(torch.Tensor, error.name or ""))


def _ghost_cases(group):
    rng = np.random.default_rng(22)
    # (description, x, virtual batch size). No N equal to B**2: splitting into B pieces
    # would then give the right virtual batches by accident.
    if group == "basic":
        layouts = [(f"a ({n}, {d}) batch in virtual batches of {b}", _cases.batch(rng, n, d), b)
                   for n, d, b in [(12, 4, 3), (24, 5, 8), (32, 3, 4), (18, 4, 6), (14, 4, 6)]]
    elif group == "awkward":
        layouts = [
            ("a (10, 3) batch in virtual batches of 4 (the last holds 2)", _cases.batch(rng, 10, 3), 4),
            # ceil(12 / 5) = 3 equal chunks would hold 4 examples each, not 5, 5 and 2.
            ("a (12, 3) batch in virtual batches of 5 (the last holds 2)", _cases.batch(rng, 12, 3), 5),
            ("a (8, 4) batch in one virtual batch of 8", _cases.batch(rng, 8, 4), 8),
            ("a (6, 3) batch, smaller than the virtual batch size 16", _cases.batch(rng, 6, 3), 16),
            ("a single feature (12, 1) in virtual batches of 2", _cases.batch(rng, 12, 1), 2),
            ("a (12, 3) batch with values near 1e4, virtual batches of 3",
             _cases.batch(rng, 12, 3, offset=1e4), 3),
            ("a (15, 3) batch whose last feature is constant, virtual batches of 5",
             _cases.batch(rng, 15, 3, constant_feature=True), 5),
            ("a non-contiguous (12, 4) view in virtual batches of 3",
             _cases.batch(rng, 24, 8)[::2, ::2], 3),
            ("a column-major (20, 3) array in virtual batches of 5",
             _cases.column_major(_cases.batch(rng, 20, 3)), 5),
        ]
    else:
        layouts = [(f"a float32 ({n}, {d}) batch in virtual batches of {b}",
                    _cases.batch(rng, n, d).astype(np.float32), b)
                   for n, d, b in [(12, 4, 4), (16, 3, 8)]]
    cases = []
    for i, (description, x, size) in enumerate(layouts):
        gamma, beta = _cases.gamma_beta(rng, x.shape[1], x.dtype)
        eps = _cases.eps_for(i)
        cases.append(_cases.function_case(
            f"{description}, {_cases.eps_text(eps)}",
            {"x": x, "gamma": gamma, "beta": beta, "virtual_batch_size": size},
            _cases.with_eps({}, eps), float32=x.dtype == np.float32))
    return cases


def _drifting_batches(rng, sizes, d, offset=0.0, constant_feature=False):
    """One batch per size; the mean moves from batch to batch, so that an average that
    weighs the batches unequally, or a single batch, cannot pass."""
    centre = offset + rng.uniform(-3, 3, size=d)
    step = rng.uniform(-1, 1, size=d)
    scales = rng.uniform(0.5, 2.0, size=d)
    batches = [centre + k * step + scales * rng.standard_normal((n, d))
               for k, n in enumerate(sizes)]
    if constant_feature:
        for batch in batches:
            batch[:, -1] = centre[-1]
    return batches


def _batches_case(description, batches):
    """Call the candidate on copies of the batches (the list may be consumed, the arrays
    must stay as they were: the same arrays serve every later call)."""

    def play(candidate):
        copies = [_cases.fresh_copy(batch) for batch in batches]
        result = candidate(copies)
        if not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(batches, copies)):
            raise InputModified("batches")
        return list(zip(("running mean", "running var"), _cases.unpack(result, 2)))

    return Case(description, play, float32=batches[0].dtype == np.float32)


def _recompute_cases(group):
    rng = np.random.default_rng(23)
    if group == "basic":
        layouts = [(f"{len(sizes)} batches of ({sizes[0]}, {d})",
                    _drifting_batches(rng, sizes, d))
                   for sizes, d in [([16] * 4, 3), ([8] * 6, 5), ([32] * 3, 4), ([12] * 5, 2)]]
    elif group == "awkward":
        layouts = [
            ("batches of 16, 16, 16 and a last one of 5 examples (3 features)",
             _drifting_batches(rng, [16, 16, 16, 5], 3)),
            ("a single (10, 3) batch", _drifting_batches(rng, [10], 3)),
            ("8 batches of two examples (2, 4)", _drifting_batches(rng, [2] * 8, 4)),
            ("5 batches of (9, 1), a single feature", _drifting_batches(rng, [9] * 5, 1)),
            ("4 batches of (12, 3) with values near 1e4",
             _drifting_batches(rng, [12] * 4, 3, offset=1e4)),
            ("4 batches of (10, 3) whose last feature is constant",
             _drifting_batches(rng, [10] * 4, 3, constant_feature=True)),
            ("3 column-major batches of (7, 5)",
             [_cases.column_major(b) for b in _drifting_batches(rng, [7] * 3, 5)]),
        ]
    else:
        layouts = [(f"{len(sizes)} float32 batches of ({sizes[0]}, {d})",
                    [b.astype(np.float32) for b in _drifting_batches(rng, sizes, d)])
                   for sizes, d in [([16] * 4, 3), ([8] * 3, 6)]]
    return [_batches_case(description, batches) for description, batches in layouts]


CASE_FILES = {"basic": ("A", "B"), "awkward": ("C", "D"), "float32": ()}


def _diagnosis_case(case):
    truth = planted_bug(case)  # read here, outside the watch for calls to the answers

    def play(candidate):
        answer = candidate(case)
        if not isinstance(answer, str) or answer not in BN_BUGS:
            raise CandidateProblem(f"diagnose_bn_bug({case!r}) returned {answer!r}; return "
                                   f"one of {', '.join(map(repr, BN_BUGS))}.")
        if answer != truth:
            raise CandidateProblem(f"Case file {case} is not {answer!r}.",
                                   WRONG_DIAGNOSIS[answer])
        return [(f"the diagnosis of case file {case}", True)]

    return Case(f"case file {case}", play)


def _diagnosis_cases(group):
    return [_diagnosis_case(case) for case in CASE_FILES[group]]


# A wrong diagnosis -> the catalogue id that explains why it does not fit.
WRONG_DIAGNOSIS = {
    "eval-mode-forgotten": "wrongly-blames-eval-mode",
    "stats-frozen-while-fine-tuning": "wrongly-blames-frozen-statistics",
    "dropout-before-batchnorm": "wrongly-blames-dropout",
    "no-bug": "misses-the-bug",
}




# --- the mistakes ---

def _groupnorm_with(layout="consecutive", over_batch=False, ddof=0, groups="given",
                    pixels=True, eps_outside=False, affine="per-channel"):
    """groupnorm_forward with one knob per classic mistake. layout "strided" puts channel c
    in group c % G instead of c // (C / G); groups "per-channel" (G = C, InstanceNorm) or
    "one" (G = 1, LayerNorm) ignores num_groups, "size" reads it as the number of channels
    per group; pixels=False takes each group's statistics at every pixel separately (over
    its channels only); affine "per-group" scales and shifts group k with gamma[k] and
    beta[k] (the first G entries, applied before the groups are reshaped back),
    "group-average" gives every channel of a group the mean of the group's gamma and beta."""

    def groupnorm(x, gamma, beta, num_groups, eps=1e-5):
        n, c = x.shape[:2]
        g = {"given": num_groups, "per-channel": c, "one": 1, "size": c // num_groups}[groups]
        if layout == "strided":
            grouped = x.reshape(n, c // g, g, -1).swapaxes(1, 2)
        else:
            grouped = x.reshape(n, g, c // g, -1)
        axes = (2, 3) if pixels else (2,)
        axes = (0,) + axes if over_batch else axes
        std_or_var = grouped.var(axis=axes, ddof=ddof, keepdims=True)
        std = np.sqrt(std_or_var) + eps if eps_outside else np.sqrt(std_or_var + eps)
        x_hat = (grouped - grouped.mean(axis=axes, keepdims=True)) / std
        if layout == "strided":
            x_hat = x_hat.swapaxes(1, 2)
        if affine == "per-group":  # channel j gets the entry of its group, j // (C / G)
            gamma, beta = (np.repeat(v[:num_groups], c // num_groups) for v in (gamma, beta))
        if affine == "group-average":
            gamma, beta = (np.repeat(v.reshape(num_groups, -1).mean(axis=1), c // num_groups)
                           for v in (gamma, beta))
        shape = (1, c) + (1,) * (x.ndim - 2)
        return x_hat.reshape(x.shape) * gamma.reshape(shape) + beta.reshape(shape)

    return groupnorm


def _layernorm_with(axes="all-but-batch", ddof=0, eps_outside=False, affine="right"):
    """layernorm_forward with knobs; axes: "all-but-batch" (right), 0 (the batch: that is
    BatchNorm), 1 (the channels of each pixel) or -1 (the last axis only); affine: a
    slip in the scale and shift (see _steps.scaled)."""

    def layernorm(x, gamma, beta, eps=1e-5):
        over = tuple(range(1, x.ndim)) if axes == "all-but-batch" else axes
        centred = x - x.mean(axis=over, keepdims=True)
        var = x.var(axis=over, ddof=ddof, keepdims=True)
        std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        return _steps.scaled(centred / std, gamma.reshape(shape), beta.reshape(shape), affine)
    return layernorm


def _fold_with(forgot_eps=False, eps_outside=False, var_not_std=False, bias="folded",
               scaled_axis=0):
    """fold_batchnorm with knobs; bias: "folded" (right), "ignored" (the conv bias
    dropped), "unscaled" (the conv bias added after BN's scale), "no-mean-shift" (the
    running mean left out), "conv-bias-plus-beta" (conv_bias + beta: neither scale nor
    running mean), "zero-without-conv-bias" (zeros when conv_bias is None); scaled_axis
    1 scales the weight's input channels (which only broadcasts when there are as many as
    output channels)."""

    def fold(conv_weight, conv_bias, bn):
        conv_b = np.zeros(len(conv_weight)) if conv_bias is None or bias == "ignored" \
            else conv_bias
        var = bn.running_var + (0.0 if forgot_eps or eps_outside else bn.eps)
        std = var if var_not_std else np.sqrt(var)
        scale = bn.weight / (std + bn.eps if eps_outside else std)
        shift = bn.bias - bn.running_mean * scale  # BN's own shift in eval mode
        folded_bias = {"unscaled": conv_b + shift,  # "ignored" has conv_b = 0 already
                       "no-mean-shift": conv_b * scale + bn.bias,
                       "conv-bias-plus-beta": conv_b + bn.bias}.get(bias, conv_b * scale + shift)
        if bias == "zero-without-conv-bias" and conv_bias is None:
            folded_bias = np.zeros(len(conv_weight))
        shape = [1] * conv_weight.ndim
        shape[scaled_axis] = -1
        return conv_weight * scale.reshape(shape), folded_bias

    return fold


def _ghost_with(split="consecutive", ddof=0):
    """ghost_batchnorm_forward with one knob per mistake. split: "consecutive" (right),
    "whole" (one batch), "strided" (every k-th example), "count" (B pieces, not size B),
    "floor" (N // B pieces: too few when B does not divide N), "merge-last" (a short last
    slice joined to the one before), "torch-chunk" and "array-split" (ceil(N / B) equal
    pieces), "full-slices-only" (a short last slice left as it is), "drop-short" (a
    short last slice dropped from the output)."""

    def ghost(x, gamma, beta, virtual_batch_size, eps=1e-5):
        n, size = len(x), virtual_batch_size
        pieces = -(-n // size)  # how many virtual batches, rounding up
        full_slices = [np.arange(start, start + size) for start in range(0, n - size + 1, size)]
        groups = {
            "consecutive": lambda: [np.arange(start, min(start + size, n))
                                    for start in range(0, n, size)],
            "whole": lambda: [np.arange(n)],
            "strided": lambda: [np.arange(first, n, pieces) for first in range(pieces)],
            "count": lambda: [p for p in np.array_split(np.arange(n), size) if len(p)],
            "floor": lambda: np.array_split(np.arange(n), max(1, n // size)),
            "merge-last": lambda: [np.arange(start, n if start + 2 * size > n else start + size)
                                   for start in range(0, max(1, n - size + 1), size)],
            # torch.chunk(x, ceil(N / B)): slices of ceil(N / k) examples, k = ceil(N / B)
            "torch-chunk": lambda: [np.arange(start, min(start + -(-n // pieces), n))
                                    for start in range(0, n, -(-n // pieces))],
            "array-split": lambda: np.array_split(np.arange(n), pieces),
            "full-slices-only": lambda: full_slices,
            "drop-short": lambda: full_slices,
        }[split]()
        out = np.empty(x.shape, dtype=x.dtype)
        for index in groups:
            chunk = x[index]
            out[index] = (chunk - chunk.mean(axis=0)) / np.sqrt(
                chunk.var(axis=0, ddof=ddof) + eps) * gamma + beta
        done = sum(len(index) for index in groups)
        if split == "full-slices-only":  # the rest is returned as it came in
            out[done:] = x[done:]
        if split == "drop-short":
            return out[:done]
        return out

    return ghost


def _ema_of_batches(batches, momentum=0.1):
    mean, var = 0.0, 1.0  # PyTorch's starting values
    for x in batches:
        mean = (1 - momentum) * mean + momentum * x.mean(axis=0)
        var = (1 - momentum) * var + momentum * x.var(axis=0, ddof=1)
    return mean, var


def _average_of_batches(batches, ddof=1):
    means = [x.mean(axis=0) for x in batches]
    variances = [x.var(axis=0, ddof=ddof) for x in batches]
    return np.mean(means, axis=0), np.mean(variances, axis=0)


def _counting_reset_values(batches):
    """The average with the reset values (mean 0, variance 1) counted as one more batch."""
    mean, var = _average_of_batches(batches)
    k = len(batches)
    return k * mean / (k + 1), (k * var + 1.0) / (k + 1)


def _pooled(batches, ddof=1):
    everything = np.concatenate(list(batches))
    return everything.mean(axis=0), everything.var(axis=0, ddof=ddof)


def _weighted_by_size(batches):
    batches = list(batches)
    sizes = np.array([len(x) for x in batches], dtype=np.float64)
    means = np.array([x.mean(axis=0) for x in batches])
    variances = np.array([x.var(axis=0, ddof=1) for x in batches])
    return sizes @ means / sizes.sum(), sizes @ variances / sizes.sum()


def _last_batch(batches):
    x = list(batches)[-1]
    return x.mean(axis=0), x.var(axis=0, ddof=1)


def _always(answer):
    def diagnose(case):
        return answer

    return diagnose



LAYERNORM_HINT = ("LayerNorm normalizes each example on its own: statistics over every axis "
                  "but the batch axis, axis=tuple(range(1, x.ndim)).")

GROUP_AFFINE_HINT = ("Reshape x_hat back to (N, C, H, W) first, then apply "
                     "gamma.reshape(1, C, 1, 1) and beta.reshape(1, C, 1, 1).")
GROUP_HINT = ("Reshape to (N, num_groups, C // num_groups, H * W): consecutive channels form a "
              "group, as in torch.nn.functional.group_norm; then reduce over axes (2, 3).")

FOLD_HINT = ("In eval mode BN is y = scale * (z - running_mean) + beta with scale = "
             "gamma / sqrt(running_var + eps): scale each output channel's weights, and fold "
             "the bias as (b - running_mean) * scale + beta.")

GHOST_HINT = ("Cut x into consecutive slices x[start:start + virtual_batch_size] (the last one "
              "may be shorter) and normalize each slice with its own mean and variance.")

RECOMPUTE_HINT = ("Give every batch the same weight: average the batch means, and average the "
                  "unbiased batch variances (PyTorch's momentum=None gives batch k weight 1/k).")

CHECKLIST_HINT = ("Go through the checklist in order: does the deployed accuracy depend on the "
                  "batch size? Then, from the first BN layer on, do the inputs' mean and variance "
                  "agree with the running ones?")


UNBIASED = "You normalized with the unbiased variance (divide by the count minus 1)."
EPS_OUTSIDE = "You added eps to the standard deviation, outside the square root."

LAYERNORM_FORWARD_MISTAKES = [
    knob_mistake("layernorm-over-batch-axis", "You normalized each feature over the batch: "
                 "that is BatchNorm, not LayerNorm.", LAYERNORM_HINT, axes=0),
    knob_mistake("layernorm-over-channels-only", "For images you normalized each pixel over "
                 "its channels only. That is a different, common convention (ConvNeXt "
                 "normalizes each pixel over its channels; Transformers each token over its "
                 "features), not this exercise's LayerNorm, which takes every channel and "
                 "pixel of an example.", LAYERNORM_HINT, axes=1),
    knob_mistake("layernorm-over-last-axis", "You normalized over the last axis only "
                 "(axis=-1, the Transformer habit): right for (N, D) input, but for images "
                 "that normalizes each row of pixels on its own.", LAYERNORM_HINT, axes=-1),
    knob_mistake("unbiased-variance", UNBIASED, BIASED_HINT, ddof=1),
    knob_mistake("eps-outside-sqrt", EPS_OUTSIDE, EPS_HINT, eps_outside=True),
] + affine_mistakes()

GROUPNORM_FORWARD_MISTAKES = [
    knob_mistake("wrong-group-axis", "Your groups take every G-th channel (reshape to "
                 "(N, C // G, G, ...)) instead of consecutive channels.", GROUP_HINT,
                 layout="strided"),
    knob_mistake("groups-over-batch", "Your group statistics also average over the batch "
                 "axis, so examples are mixed again, as in BatchNorm.", GROUP_HINT,
                 over_batch=True),
    knob_mistake("groupnorm-per-channel", "You normalized each channel of each example on "
                 "its own, as if num_groups were C: that is InstanceNorm.", GROUP_HINT,
                 groups="per-channel"),
    knob_mistake("groupnorm-one-group", "You put all channels in one group, as if "
                 "num_groups were 1: that is LayerNorm.", GROUP_HINT, groups="one"),
    knob_mistake("num-groups-read-as-group-size", "You read num_groups as the number of "
                 "channels per group: your groups hold num_groups consecutive channels each, "
                 "C // num_groups groups in all.", GROUP_HINT, groups="size"),
    knob_mistake("affine-per-group", "You scaled and shifted each group with gamma[k] and "
                 "beta[k], the first num_groups entries: gamma and beta have one entry per "
                 "channel, C in all, as in BatchNorm.", GROUP_AFFINE_HINT,
                 affine="per-group"),
    knob_mistake("affine-averaged-per-group", "You gave every channel of a group the group's "
                 "average gamma and beta: gamma and beta have one entry per channel and are "
                 "applied channel by channel.", GROUP_AFFINE_HINT,
                 affine="group-average"),
    knob_mistake("groups-without-pixels", "Your group statistics are taken over the group's "
                 "channels at each pixel separately, not over its channels and all pixels.",
                 GROUP_HINT, pixels=False),
    knob_mistake("unbiased-variance", UNBIASED, BIASED_HINT, ddof=1),
    knob_mistake("eps-outside-sqrt", EPS_OUTSIDE, EPS_HINT, eps_outside=True),
]

FOLD_BATCHNORM_MISTAKES = [
    knob_mistake("fold-forgot-eps", "Your folded scale is gamma / sqrt(running_var), without "
                 "eps.", FOLD_HINT, forgot_eps=True),
    knob_mistake("fold-eps-outside-sqrt", "Your folded scale is gamma / (sqrt(running_var) + "
                 "eps): eps belongs inside the square root.", FOLD_HINT, eps_outside=True),
    knob_mistake("fold-bias-without-mean-shift", "Your folded bias leaves out the running "
                 "mean: BN subtracts it before scaling.", FOLD_HINT, bias="no-mean-shift"),
    knob_mistake("fold-ignores-conv-bias", "Your folded bias ignores the convolution's own "
                 "bias.", FOLD_HINT, bias="ignored"),
    knob_mistake("fold-conv-bias-unscaled", "Your folded bias adds the convolution's bias "
                 "as it is, but BN scales it like everything else the convolution outputs.",
                 FOLD_HINT, bias="unscaled"),
    knob_mistake("fold-bias-conv-plus-beta", "Your folded bias is conv_bias + beta: BN's "
                 "scale and its running mean are both missing from it.", FOLD_HINT,
                 bias="conv-bias-plus-beta"),
    knob_mistake("fold-zero-bias-without-conv-bias", "When the convolution has no bias your "
                 "folded bias is zero: BN's own shift, beta - running_mean * scale, is still "
                 "there.", FOLD_HINT, bias="zero-without-conv-bias"),
    knob_mistake("fold-scales-input-channels", "You scaled the weight along its input-channel "
                 "axis (axis 1): BN scales each output channel, so conv_weight[c] (axis 0) is "
                 "multiplied by s_c.", FOLD_HINT, scaled_axis=1),
    Mistake("torch-on-numpy-inputs", "The checker passes NumPy arrays (conv_weight, and bn's "
            "weight, bias, running_mean and running_var), and your code uses torch on them.",
            "Convert every input with the notebook's to_numpy() and compute with NumPy "
            "(np.sqrt, not torch.sqrt): then tensors and arrays both work."),
    knob_mistake("fold-var-instead-of-std", "Your folded scale divides by the running "
                 "variance instead of its square root.", FOLD_HINT, var_not_std=True),
]

EQUAL_CHUNKS = ("You cut x into k = ceil(N / virtual_batch_size) equal chunks (torch.chunk or "
                "np.array_split): each holds about N / k examples, which in general is not "
                "virtual_batch_size (12 examples in slices of 5 give 4, 4 and 4 instead of 5, "
                "5 and 2).")

GHOST_BATCHNORM_FORWARD_MISTAKES = [
    knob_mistake("ghost-stats-over-whole-batch", "You normalized with the statistics of the "
                 "whole batch: that is plain batch norm, and virtual_batch_size changes "
                 "nothing.", GHOST_HINT, split="whole"),
    knob_mistake("ghost-strided-virtual-batches", "Your virtual batches take every k-th "
                 "example (x[j::k]) instead of consecutive examples.", GHOST_HINT,
                 split="strided"),
    knob_mistake("ghost-size-read-as-count", "You cut x into virtual_batch_size pieces "
                 "(np.array_split(x, virtual_batch_size)): virtual_batch_size is the number "
                 "of examples per virtual batch, not the number of virtual batches.",
                 GHOST_HINT, split="count"),
    knob_mistake("ghost-too-few-pieces", "You cut x into N // virtual_batch_size pieces "
                 "(np.array_split or torch.chunk): when virtual_batch_size does not divide N, "
                 "the pieces come out larger than virtual_batch_size.", GHOST_HINT,
                 split="floor"),
    knob_mistake("ghost-equal-chunks", EQUAL_CHUNKS, GHOST_HINT, split="torch-chunk"),
    knob_mistake("ghost-equal-chunks", EQUAL_CHUNKS, GHOST_HINT, split="array-split"),
    knob_mistake("ghost-short-slice-left-raw", "You normalized only the full slices of "
                 "virtual_batch_size examples and returned the rest of x as it came in.",
                 GHOST_HINT, split="full-slices-only"),
    knob_mistake("ghost-short-slice-dropped", "You dropped the short last slice: your output "
                 "has only the rows of the full virtual batches, not one row per example of "
                 "x.", GHOST_HINT, split="drop-short"),
    knob_mistake("ghost-short-slice-merged", "You joined the short last slice to the one "
                 "before it, so one virtual batch holds more than virtual_batch_size "
                 "examples.", GHOST_HINT, split="merge-last"),
    knob_mistake("unbiased-variance", UNBIASED, BIASED_HINT, ddof=1),
]

POOLED = ("You pooled all examples into one big batch. That is a sound estimate (Wu & Johnson "
          "recommend it for small batches; fvcore's precise BN does it), but it does not match "
          "this exercise's specification: PyTorch's momentum=None, the equal-weight average of "
          "the batch means and of the unbiased batch variances, which is the original paper's "
          "inference procedure (Algorithm 2).")

RECOMPUTE_RUNNING_STATS_MISTAKES = [
    variant_mistake("recompute-with-momentum", _ema_of_batches,
            "You blended the batches with an exponential moving average (momentum 0.1), as "
            "training does: the result leans toward the last batches and still remembers the "
            "starting values 0 and 1.", RECOMPUTE_HINT),
    variant_mistake("running-var-biased", lambda batches: _average_of_batches(batches, ddof=0),
            "You averaged the biased batch variances (divide by N).",
            "Running statistics use the unbiased batch variance, np.var(x, axis=0, ddof=1), "
            "as in training."),
    variant_mistake("counts-initial-values", _counting_reset_values,
            "Your average counts the reset values (mean 0, variance 1) as if they were a batch.",
            "Average only the batches you are given."),
    variant_mistake("pools-all-examples", _pooled, POOLED, RECOMPUTE_HINT),
    variant_mistake("pools-all-examples", lambda batches: _pooled(batches, ddof=0), POOLED,
                    RECOMPUTE_HINT),
    variant_mistake("weights-batches-by-size", _weighted_by_size,
            "You weighted each batch by its number of examples. That is a sound estimate, but "
            "not this exercise's specification: PyTorch's momentum=None gives every batch the "
            "same weight, however many examples it holds.", RECOMPUTE_HINT),
    variant_mistake("last-batch-only", _last_batch,
            "You returned the statistics of the last batch only.", RECOMPUTE_HINT),
]

DIAGNOSE_BN_BUG_MISTAKES = [
    variant_mistake("wrongly-blames-eval-mode", _always("eval-mode-forgotten"),
            "A forgotten model.eval() makes each prediction depend on the rest of its batch, "
            "so the deployed accuracy would change with the batch size. Here it does not.",
            CHECKLIST_HINT),
    variant_mistake("wrongly-blames-frozen-statistics", _always("stats-frozen-while-fine-tuning"),
            "Stale running statistics show at the first BN layer as inputs whose mean sits far "
            "from the running mean (a large |mean - running mean| / running std). In this case "
            "file the first BN layer's means agree.",
            CHECKLIST_HINT),
    variant_mistake("wrongly-blames-dropout", _always("dropout-before-batchnorm"),
            "Dropout feeding a BN layer inflates only the variance that layer sees in training: "
            "in eval mode its inputs' variance is well below the running variance while their "
            "mean still agrees. This case file does not show that pattern.", CHECKLIST_HINT),
    variant_mistake("misses-the-bug", _always("no-bug"),
            "This model has a symptom that a healthy one does not.", CHECKLIST_HINT),
]


LAYERNORM_FORWARD = Exercise(
    "layernorm_forward", ref.layernorm_forward, "layernorm_forward(x, gamma, beta, eps=1e-5)",
    _layernorm_cases, build=_layernorm_with, mistakes=LAYERNORM_FORWARD_MISTAKES,
    probes=(_probes.wrong_defaults, _probes.ignores_eps, _probes.values_misplaced,
            _probes.statistics_axes, _probes.constant_factor),
    hint=LAYERNORM_HINT)
GROUPNORM_FORWARD = Exercise(
    "groupnorm_forward", ref.groupnorm_forward,
    "groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5)", _groupnorm_cases,
    build=_groupnorm_with, mistakes=GROUPNORM_FORWARD_MISTAKES,
    probes=(_probes.wrong_defaults, _probes.ignores_eps, _probes.values_misplaced,
            _probes.constant_factor),
    hint=GROUP_HINT)
FOLD_BATCHNORM = Exercise(
    "fold_batchnorm", ref.fold_batchnorm, "fold_batchnorm(conv_weight, conv_bias, bn)",
    _fold_cases, build=_fold_with, mistakes=FOLD_BATCHNORM_MISTAKES,
    probes=(_probes.constant_factor,),
    hint=FOLD_HINT)
GHOST_BATCHNORM_FORWARD = Exercise(
    "ghost_batchnorm_forward", ref.ghost_batchnorm_forward,
    "ghost_batchnorm_forward(x, gamma, beta, virtual_batch_size, eps=1e-5)", _ghost_cases,
    build=_ghost_with, mistakes=GHOST_BATCHNORM_FORWARD_MISTAKES,
    probes=(_probes.wrong_defaults, _probes.ignores_eps),
    hint=GHOST_HINT)
RECOMPUTE_RUNNING_STATS = Exercise(
    "recompute_running_stats", ref.recompute_running_stats, "recompute_running_stats(batches)",
    _recompute_cases, mistakes=RECOMPUTE_RUNNING_STATS_MISTAKES, hint=RECOMPUTE_HINT)
DIAGNOSE_BN_BUG = Exercise(
    "diagnose_bn_bug", planted_bug, "diagnose_bn_bug(case)", _diagnosis_cases,
    mistakes=DIAGNOSE_BN_BUG_MISTAKES, hint=CHECKLIST_HINT)

EXERCISES = [FOLD_BATCHNORM, LAYERNORM_FORWARD, GROUPNORM_FORWARD, GHOST_BATCHNORM_FORWARD,
             RECOMPUTE_RUNNING_STATS, DIAGNOSE_BN_BUG]
