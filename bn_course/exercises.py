"""The exercises the checkers know: their reference answer and their hidden cases.

A *case* runs a candidate (the student's function or class) on fresh copies of
seeded random inputs and returns its outputs as ``[(label, value), ...]``. The
checker plays the same case with the reference and with every catalogued
mistake, and compares. Cases come in groups so that nbgrader can give partial
credit: ``basic`` (ordinary batches), ``awkward`` (N=2, D=1, a constant
feature, offsets of 1e4, non-contiguous arrays, large D) and ``float32``.
"""

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from bn_course.reference import numpy as ref

GROUPS = ("basic", "awkward", "float32")


class InputModified(Exception):
    """The candidate changed an input array in place."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


@dataclass
class Case:
    description: str
    play: Callable  # play(candidate) -> [(label, output), ...]
    float32: bool = False

    @property
    def tolerance(self):
        return 1e-4 if self.float32 else 1e-6


@dataclass
class Exercise:
    name: str
    reference: Callable
    signature: str
    make_cases: Callable  # make_cases(group) -> [Case, ...]
    needs_torch: bool = False
    _cases: dict = field(default_factory=dict, repr=False)

    def cases(self, group):
        if group not in GROUPS:
            raise ValueError(f"unknown case group {group!r}; choose from {GROUPS}")
        if group not in self._cases:  # seeded, so computing them once per kernel is enough
            self._cases[group] = self.make_cases(group)
        return self._cases[group]


# --- inputs -----------------------------------------------------------------

def _batch(rng, n, d, *, offset=0.0, spread=1.0, constant_feature=False):
    """(N, D) data whose features have different means and scales, so that a
    statistic taken over the wrong axis, or not per feature, cannot pass."""
    means = offset + rng.uniform(-3, 3, size=d)
    scales = spread * rng.uniform(0.5, 2.0, size=d)
    x = means + scales * rng.standard_normal((n, d))
    if constant_feature:
        x[:, -1] = means[-1]
    return x


def _non_contiguous(x):
    """The same values as a column-major (Fortran-ordered) view."""
    return np.asfortranarray(x)


def _shapes(group):
    """(description, x) pairs for a group; every call builds the same arrays."""
    rng = np.random.default_rng({"basic": 101, "awkward": 202, "float32": 303}[group])
    if group == "basic":
        return [(f"a ({n}, {d}) batch", _batch(rng, n, d))
                for n, d in [(8, 3), (16, 5), (5, 7), (32, 4)]]
    if group == "awkward":
        x_strided = _batch(rng, 12, 10)[::2, ::3]
        return [
            ("a batch of two (2, 4)", _batch(rng, 2, 4)),
            ("a single feature (9, 1)", _batch(rng, 9, 1)),
            ("a (10, 3) batch whose last feature is constant",
             _batch(rng, 10, 3, constant_feature=True)),
            ("a (20, 3) batch with values near 1e4", _batch(rng, 20, 3, offset=1e4)),
            ("a non-contiguous (6, 4) view", x_strided),
            ("a column-major (7, 5) array", _non_contiguous(_batch(rng, 7, 5))),
            ("a wide (4, 300) batch", _batch(rng, 4, 300)),
        ]
    return [(f"a float32 ({n}, {d}) batch", _batch(rng, n, d).astype(np.float32))
            for n, d in [(8, 3), (16, 6), (3, 5)]]


def _per_feature(rng, d, low, high, dtype):
    return rng.uniform(low, high, size=d).astype(dtype)


# --- playing a case ---------------------------------------------------------

def call_unmodified(function, args, kwargs, may_modify=()):
    """Call function on copies of args; raise InputModified if it changed one.

    ``may_modify`` names the arguments that the API allows to be updated in
    place (the running statistics)."""
    names = list(args)
    copies = [np.array(a, copy=True, order="K") if isinstance(a, np.ndarray) else a
              for a in args.values()]
    result = function(*copies, **kwargs)
    for name, original, passed in zip(names, args.values(), copies):
        if (isinstance(original, np.ndarray) and name not in may_modify
                and not np.array_equal(original, passed, equal_nan=True)):
            raise InputModified(name)
    return result


def _function_case(description, args, kwargs=None, labels=("output",), float32=False,
                   may_modify=()):
    """A case that calls the candidate once and labels what it returns."""
    kwargs = kwargs or {}

    def play(candidate):
        result = call_unmodified(candidate, args, kwargs, may_modify)
        if len(labels) == 1:
            return [(labels[0], result)]
        return list(zip(labels, _unpack(result, len(labels))))

    return Case(description, play, float32)


class WrongArity(Exception):
    """The candidate returned a different number of values than asked for."""

    def __init__(self, expected, got):
        super().__init__(expected, got)
        self.expected, self.got = expected, got


def _unpack(result, count):
    if not isinstance(result, (tuple, list)) or len(result) != count:
        raise WrongArity(count, result)
    return result


def _eps_for(index):
    """Cycle through the default and larger eps values, so eps mistakes show."""
    return [None, 0.1, 1.0, 1e-3][index % 4]


def _with_eps(kwargs, eps):
    return kwargs if eps is None else {**kwargs, "eps": eps}


def _eps_text(eps):
    return "default eps" if eps is None else f"eps={eps}"


# --- 01-03 ----------------------------------------------------------------------

def _statistic_cases(group):
    return [_function_case(desc, {"x": x}, float32=x.dtype == np.float32)
            for desc, x in _shapes(group)]


def _normalize_cases(group):
    rng = np.random.default_rng(11)
    cases = []
    for i, (desc, x) in enumerate(_shapes(group)):
        # Statistics that are close to, but not, the batch's own: a candidate that
        # recomputes them from x instead of using its arguments fails.
        mean = (ref.batch_mean(x) + 0.1 * rng.standard_normal(x.shape[1])).astype(x.dtype)
        var = (ref.batch_var(x) * rng.uniform(0.8, 1.2, x.shape[1])).astype(x.dtype)
        eps = _eps_for(i)
        cases.append(_function_case(
            f"{desc}, {_eps_text(eps)}", {"x": x, "mean": mean, "var": var},
            _with_eps({}, eps), float32=x.dtype == np.float32))
    return cases


def _gamma_beta(rng, d, dtype):
    return _per_feature(rng, d, 0.5, 2.0, dtype), _per_feature(rng, d, -1.0, 1.0, dtype)


def _forward_cases(group):
    rng = np.random.default_rng(12)
    cases = []
    for i, (desc, x) in enumerate(_shapes(group)):
        gamma, beta = _gamma_beta(rng, x.shape[1], x.dtype)
        eps = _eps_for(i)
        cases.append(_function_case(
            f"{desc}, {_eps_text(eps)}", {"x": x, "gamma": gamma, "beta": beta},
            _with_eps({}, eps), float32=x.dtype == np.float32))
    return cases


# --- 04 -------------------------------------------------------------------------

def _momentum_for(index):
    return [None, 0.3, 0.05][index % 3]


def _running_stats(rng, x):
    """Running statistics that are neither the start values nor the batch's."""
    d = x.shape[1]
    mean = (ref.batch_mean(x) + rng.standard_normal(d)).astype(x.dtype)
    var = (ref.batch_var(x) * rng.uniform(0.3, 3.0, d)).astype(x.dtype)
    return mean, var


def _update_cases(group):
    rng = np.random.default_rng(13)
    cases = []
    for i, (desc, x) in enumerate(_shapes(group)):
        running_mean, running_var = _running_stats(rng, x)
        momentum = _momentum_for(i)
        kwargs = {} if momentum is None else {"momentum": momentum}
        text = "default momentum" if momentum is None else f"momentum={momentum}"
        cases.append(_function_case(
            f"{desc}, {text}",
            {"running_mean": running_mean, "running_var": running_var, "x": x}, kwargs,
            labels=("new running mean", "new running var"),
            float32=x.dtype == np.float32, may_modify=("running_mean", "running_var")))
    return cases


def _eval_cases(group):
    rng = np.random.default_rng(14)
    cases = []
    for i, (desc, x) in enumerate(_shapes(group)):
        running_mean, running_var = _running_stats(rng, x)
        gamma, beta = _gamma_beta(rng, x.shape[1], x.dtype)
        eps = _eps_for(i)
        args = {"x": x, "running_mean": running_mean, "running_var": running_var,
                "gamma": gamma, "beta": beta}
        cases.append(_function_case(f"{desc}, {_eps_text(eps)}", args, _with_eps({}, eps),
                                    float32=x.dtype == np.float32))
    return cases


def _layer_case(description, batches, gamma, beta, kwargs, float32):
    """Drive a BatchNorm1d class: three train steps, two eval calls, one more
    train step, then a batch of one in train mode (which must raise ValueError)."""

    def play(cls):
        layer = cls(batches[0].shape[1], **kwargs)
        # Snapshots: a layer may update its running arrays in place later on.
        outputs = [("training right after construction", bool(layer.training)),
                   ("running_mean at start", copy.deepcopy(layer.running_mean)),
                   ("running_var at start", copy.deepcopy(layer.running_var))]
        layer.gamma, layer.beta = gamma.copy(), beta.copy()
        modes = ["train", "train", "train", "eval", "eval", "train"]
        for step, (mode, x) in enumerate(zip(modes, batches), start=1):
            layer.train() if mode == "train" else layer.eval()
            out = call_unmodified(layer, {"x": x}, {})
            outputs += [
                (f"output of call {step} ({mode} mode)", out),
                (f"running_mean after call {step} ({mode} mode)",
                 copy.deepcopy(layer.running_mean)),
                (f"running_var after call {step} ({mode} mode)", copy.deepcopy(layer.running_var)),
            ]
        outputs.append(("a batch of one in train mode raises ValueError",
                        _raises_value_error(layer, batches[0][:1])))
        return outputs

    return Case(description, play, float32)


def _raises_value_error(layer, x):
    layer.train()
    try:
        layer(x.copy())
    except ValueError:
        return True
    return False


def _layer_cases(group):
    rng = np.random.default_rng(15)
    cases = []
    for i, (desc, x) in enumerate(_shapes(group)):
        n, d = x.shape
        # Each call sees a new batch with shifted statistics, as in training.
        batches = [x] + [(x + rng.standard_normal(d) + 0.5 * rng.standard_normal((n, d)))
                         .astype(x.dtype) for _ in range(5)]
        gamma, beta = _gamma_beta(rng, d, x.dtype)
        eps, momentum = _eps_for(i), _momentum_for(i)
        kwargs = _with_eps({} if momentum is None else {"momentum": momentum}, eps)
        text = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default eps and momentum"
        cases.append(_layer_case(f"{desc} ({text})", batches, gamma, beta, kwargs,
                                 float32=x.dtype == np.float32))
    return cases


def _keras_cases(group):
    values = {"basic": [0.99, 0.9], "awkward": [0.0, 1.0, 0.999], "float32": [np.float32(0.99)]}
    return [_function_case(f"Keras momentum {m}", {"m": m}, float32=group == "float32")
            for m in values[group]]


# --- 05 ---------------------------------------------------------------------

def _backward_cases(group):
    rng = np.random.default_rng(16)
    cases = []
    for i, (desc, x) in enumerate(_shapes(group)):
        # Always a random upstream gradient: with dout = ones, dx is zero and a
        # dx missing whole terms can still look right.
        dout = rng.standard_normal(x.shape).astype(x.dtype)
        gamma = _per_feature(rng, x.shape[1], 0.5, 2.0, x.dtype)
        eps = _eps_for(i)
        cases.append(_function_case(
            f"{desc}, random dout, {_eps_text(eps)}", {"dout": dout, "x": x, "gamma": gamma},
            _with_eps({}, eps), labels=("dx", "dgamma", "dbeta"),
            float32=x.dtype == np.float32))
    return cases


# --- 06 ---------------------------------------------------------------------

def _image_shapes(group):
    rng = np.random.default_rng({"basic": 104, "awkward": 204, "float32": 304}[group])

    def images(n, c, h, w, offset=0.0):
        means = offset + rng.uniform(-3, 3, size=(1, c, 1, 1))
        return means + rng.uniform(0.5, 2, size=(1, c, 1, 1)) * rng.standard_normal((n, c, h, w))

    if group == "basic":
        return [(f"a ({n}, {c}, {h}, {w}) batch", images(n, c, h, w))
                for n, c, h, w in [(4, 3, 5, 5), (8, 2, 3, 4), (3, 5, 2, 6)]]
    if group == "awkward":
        return [
            ("a batch of one image (1, 3, 4, 4)", images(1, 3, 4, 4)),
            ("1x1 images (6, 4, 1, 1)", images(6, 4, 1, 1)),
            ("a single channel (5, 1, 3, 3)", images(5, 1, 3, 3)),
            ("a (4, 3, 3, 3) batch with values near 1e4", images(4, 3, 3, 3, offset=1e4)),
            ("a channels-last (non-contiguous) (3, 4, 2, 5) batch",
             _channels_last(images(3, 4, 2, 5))),
        ]
    return [(f"a float32 ({n}, {c}, {h}, {w}) batch", images(n, c, h, w).astype(np.float32))
            for n, c, h, w in [(4, 3, 5, 5), (2, 6, 3, 3)]]


def _channels_last(x):
    """The same (N, C, H, W) values, stored as (N, H, W, C) in memory."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, 3)), 3, 1)


def _forward2d_cases(group):
    rng = np.random.default_rng(17)
    cases = []
    for i, (desc, x) in enumerate(_image_shapes(group)):
        gamma, beta = _gamma_beta(rng, x.shape[1], x.dtype)
        eps = _eps_for(i)
        cases.append(_function_case(
            f"{desc}, {_eps_text(eps)}", {"x": x, "gamma": gamma, "beta": beta},
            _with_eps({}, eps), float32=x.dtype == np.float32))
    return cases


# --- the registry -----------------------------------------------------------

EXERCISES = {e.name: e for e in [
    Exercise("batch_mean", ref.batch_mean, "batch_mean(x)", _statistic_cases),
    Exercise("batch_var", ref.batch_var, "batch_var(x)", _statistic_cases),
    Exercise("normalize", ref.normalize, "normalize(x, mean, var, eps=1e-5)", _normalize_cases),
    Exercise("batchnorm_forward", ref.batchnorm_forward,
             "batchnorm_forward(x, gamma, beta, eps=1e-5)", _forward_cases),
    Exercise("update_running_stats", ref.update_running_stats,
             "update_running_stats(running_mean, running_var, x, momentum=0.1)", _update_cases),
    Exercise("batchnorm_eval", ref.batchnorm_eval,
             "batchnorm_eval(x, running_mean, running_var, gamma, beta, eps=1e-5)", _eval_cases),
    Exercise("BatchNorm1d", ref.BatchNorm1d,
             "BatchNorm1d(num_features, eps=1e-5, momentum=0.1)", _layer_cases),
    Exercise("keras_to_torch_momentum", ref.keras_to_torch_momentum,
             "keras_to_torch_momentum(m)", _keras_cases),
    Exercise("batchnorm_backward", ref.batchnorm_backward,
             "batchnorm_backward(dout, x, gamma, eps=1e-5)", _backward_cases),
    Exercise("batchnorm_backward_compact", ref.batchnorm_backward_compact,
             "batchnorm_backward_compact(dout, x, gamma, eps=1e-5)", _backward_cases),
    Exercise("batchnorm2d_forward", ref.batchnorm2d_forward,
             "batchnorm2d_forward(x, gamma, beta, eps=1e-5)", _forward2d_cases),
]}
