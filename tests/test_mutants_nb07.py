"""Mutation suite for notebook 07 (training comparisons): each wrong implementation below must
be named with its catalogue id (see tests/mutation.py)."""

from itertools import pairwise

import numpy as np
import pytest
from answers import solution
from mutation import Mutants, assert_diagnosed, missing_mutants
from torch import nn

from bn_course.checks import check

MUTANTS = Mutants()


# --- notebook 07: reading training histories ---------------------------------

@MUTANTS.make("steps_to_reach", "returns-index")
def steps_position(steps, accuracy, target):
    for t, value in enumerate(accuracy):
        if value >= target:
            return t
    raise ValueError("not reached")


@MUTANTS.make("steps_to_reach", "index-times-interval")
def steps_from_spacing(steps, accuracy, target):
    hits = [t for t, value in enumerate(accuracy) if value >= target]
    if not hits:
        raise ValueError("not reached")
    spacing = steps[1] - steps[0] if len(steps) > 1 else 0
    return hits[0] * spacing


@MUTANTS.make("steps_to_reach", "strict-inequality")
def steps_strictly_above(steps, accuracy, target):
    for step, value in zip(steps, accuracy):
        if value > target:
            return step
    raise ValueError("not reached")


@MUTANTS.make("steps_to_reach", "stays-above")
def steps_for_good(steps, accuracy, target):
    answer = None
    for step, value in zip(steps, accuracy):
        if value < target:
            answer = None
        elif answer is None:
            answer = step
    if answer is None:
        raise ValueError("not reached")
    return answer


@MUTANTS.make("steps_to_reach", "no-error-when-never-reached")
def steps_index_error(steps, accuracy, target):
    return np.asarray(steps)[np.asarray(accuracy) >= target][0]


@MUTANTS.make("percentile_trace", "axis-0-vs-1")
def percentiles_over_time(values, q):
    return np.stack([np.percentile(values[:, :], p, axis=0) for p in q], axis=1)


@MUTANTS.make("percentile_trace", "transposed-output")
def percentiles_one_row_per_q(values, q):
    return np.array([[np.percentile(row, p) for row in values] for p in q])


@MUTANTS.make("percentile_trace", "no-axis")
def percentiles_of_everything(values, q):
    return np.percentile(values.ravel(), q)


@MUTANTS.make("percentile_trace", "fraction-not-percent")
def percentiles_as_fractions(values, q):
    return np.quantile(values, np.asarray(q) / 10000, axis=1).T


@MUTANTS.make("percentile_trace", "rank-rounded-down")
def percentiles_rank_floor(values, q):
    ordered = np.sort(values, axis=1)
    ranks = np.floor(np.asarray(q) / 100 * (values.shape[1] - 1)).astype(int)
    return ordered[:, ranks]


@MUTANTS.make("percentile_trace", "rank-from-n")
def percentiles_rank_of_n(values, q):
    ordered = np.sort(values, axis=1)
    n = values.shape[1]
    return np.stack([ordered[:, min(int(p * n / 100), n - 1)] for p in q], axis=1)


@MUTANTS.make("percentile_trace", "modifies-input")
def percentiles_sorting_in_place(values, q):
    values.sort(axis=1)
    n = values.shape[1]
    positions = np.asarray(q) / 100 * (n - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, n - 1)
    weight = positions - low
    return values[:, low] * (1 - weight) + values[:, high] * weight


# --- notebook 07: the paper's network ----------------------------------------

def _layers(norm_layer, in_features, hidden, depth, num_classes, block):
    """Hidden blocks made by ``block(norm_layer, width, hidden)``, then the output layer:
    the skeleton most answers share; each mutant changes one thing."""
    layers, width = [], in_features
    for _ in range(depth):
        layers += block(norm_layer, width, hidden)
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


@MUTANTS.make("build_mlp", "bias-before-norm")
def mlp_default_bias(norm_layer, in_features, hidden, depth, num_classes):
    def block(norm_layer, width, hidden):  # nn.Linear's default, bias=True, everywhere
        norm = [norm_layer(hidden)] if norm_layer else []
        return [nn.Linear(width, hidden), *norm, nn.Sigmoid()]
    return _layers(norm_layer, in_features, hidden, depth, num_classes, block)


@MUTANTS.make("build_mlp", "norm-after-activation")
def mlp_normalizes_activations(norm_layer, in_features, hidden, depth, num_classes):
    model = nn.Sequential()
    sizes = [in_features] + [hidden] * depth
    for fan_in, fan_out in pairwise(sizes):
        model.append(nn.Linear(fan_in, fan_out, bias=norm_layer is None))
        model.append(nn.Sigmoid())
        if norm_layer is not None:
            model.append(norm_layer(fan_out))
    model.append(nn.Linear(sizes[-1], num_classes))
    return model


@MUTANTS.make("build_mlp", "norm-on-logits")
def mlp_normalized_logits(norm_layer, in_features, hidden, depth, num_classes):
    sizes = [in_features] + [hidden] * depth + [num_classes]
    layers = []
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        last = i == len(sizes) - 2
        layers.append(nn.Linear(fan_in, fan_out, bias=norm_layer is None or last))
        if norm_layer:  # every Linear gets its BN, the output layer too
            layers.append(norm_layer(fan_out))
        if not last:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


@MUTANTS.make("build_mlp", "one-norm-layer-shared")
def mlp_one_bn_object(norm_layer, in_features, hidden, depth, num_classes):
    bn = norm_layer(hidden) if norm_layer else None

    def block(norm_layer, width, hidden):
        return [nn.Linear(width, hidden, bias=bn is None), *([bn] if bn else []), nn.Sigmoid()]
    return _layers(norm_layer, in_features, hidden, depth, num_classes, block)


@MUTANTS.make("build_mlp", "no-bias-without-norm")
def mlp_never_a_bias(norm_layer, in_features, hidden, depth, num_classes):
    def block(norm_layer, width, hidden):
        norm = [norm_layer(hidden)] if norm_layer else []
        return [nn.Linear(width, hidden, bias=False), *norm, nn.Sigmoid()]
    return _layers(norm_layer, in_features, hidden, depth, num_classes, block)


@MUTANTS.make("build_mlp", "last-layer-without-bias")
def mlp_no_output_bias(norm_layer, in_features, hidden, depth, num_classes):
    use_bias = norm_layer is None
    layers, width = [], in_features
    for _ in range(depth):
        layers.append(nn.Linear(width, hidden, bias=use_bias))
        if norm_layer:
            layers.append(norm_layer(hidden))
        layers.append(nn.Sigmoid())
        width = hidden
    layers.append(nn.Linear(width, num_classes, bias=use_bias))
    return nn.Sequential(*layers)


@MUTANTS.make("build_mlp", "relu-not-sigmoid")
def mlp_relu(norm_layer, in_features, hidden, depth, num_classes):
    def block(norm_layer, width, hidden):
        norm = [norm_layer(hidden)] if norm_layer else []
        return [nn.Linear(width, hidden, bias=not norm), *norm, nn.ReLU()]
    return _layers(norm_layer, in_features, hidden, depth, num_classes, block)


@MUTANTS.make("build_mlp", "one-block-too-many")
def mlp_depth_plus_one(norm_layer, in_features, hidden, depth, num_classes):
    layers, width = [], in_features
    for _ in range(depth + 1):  # "depth layers of weights before the output"
        layers += [nn.Linear(width, hidden, bias=norm_layer is None),
                   *([norm_layer(hidden)] if norm_layer else []), nn.Sigmoid()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


@MUTANTS.make("build_mlp", "one-block-too-few")
def mlp_depth_counts_output(norm_layer, in_features, hidden, depth, num_classes):
    sizes = [in_features] + [hidden] * (depth - 1)  # depth Linear layers in all
    layers = []
    for fan_in, fan_out in pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out, bias=norm_layer is None),
                   *([norm_layer(fan_out)] if norm_layer else []), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], num_classes))


@MUTANTS.make("build_mlp", "uses-builtin-batchnorm")
def mlp_torch_batchnorm(norm_layer, in_features, hidden, depth, num_classes):
    def block(norm_layer, width, hidden):
        norm = [nn.BatchNorm1d(hidden)] if norm_layer else []
        return [nn.Linear(width, hidden, bias=not norm), *norm, nn.Sigmoid()]
    return _layers(norm_layer, in_features, hidden, depth, num_classes, block)


@MUTANTS.make("build_mlp", "bias-before-norm+relu-not-sigmoid")
def mlp_relu_default_bias(norm_layer, in_features, hidden, depth, num_classes):
    def block(norm_layer, width, hidden):
        norm = [norm_layer(hidden)] if norm_layer else []
        return [nn.Linear(width, hidden), *norm, nn.ReLU()]
    return _layers(norm_layer, in_features, hidden, depth, num_classes, block)


def test_build_mlp_that_returns_a_list_is_told_to_return_a_sequential():
    def as_list(norm_layer, in_features, hidden, depth, num_classes):
        return list(mlp_torch_batchnorm(None, in_features, hidden, depth, num_classes))

    result = check("build_mlp", as_list)
    assert not result.passed
    assert "should return a torch.nn.Sequential, got a value of type list" in result.message


def test_build_mlp_as_the_notebook_writes_it_passes():
    result = check("build_mlp", solution("07_training_comparisons", "build_mlp"))
    assert result.passed, result.message


# --- the tests --------------------------------------------------------------

def test_every_mistake_of_the_notebook_has_a_mutant():
    assert not missing_mutants(MUTANTS, "07")


@pytest.mark.parametrize("exercise, mistake_id, implementation", MUTANTS, ids=MUTANTS.ids())
def test_mutant_is_diagnosed(exercise, mistake_id, implementation):
    assert_diagnosed(exercise, mistake_id, implementation)
