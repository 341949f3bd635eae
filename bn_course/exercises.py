"""The exercises the checkers know: their reference answer and their hidden cases.

A *case* runs a candidate (the student's function or class) on fresh copies of
seeded random inputs and returns its outputs as ``[(label, value), ...]``. The
checker plays the same case with the reference and with every catalogued
mistake, and compares. Cases come in groups so that nbgrader can give partial
credit: ``basic`` (ordinary batches), ``awkward`` (N=2, D=1, a constant
feature, offsets of 1e4 and 1e6, non-contiguous arrays, large D) and ``float32``.
"""

import contextlib
import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bn_course.reference import numpy as ref

GROUPS = ("basic", "awkward", "float32")


def describe(value):
    """What a value is, in words for a student's message."""
    if value is None:
        return "None (is a `return` missing?)"
    if type(value).__module__.startswith("torch"):
        return "a torch.Tensor (convert it with .numpy())"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a value of type {type(value).__name__}"


class CandidateProblem(Exception):
    """Something about the candidate that a case can name directly (a module
    without buffers, a gradient that never arrives...), with a catalogue id
    when the mistake is a known one."""

    def __init__(self, message, mistake=None):
        super().__init__(message)
        self.message, self.mistake = message, mistake


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
    time_limit_s: float = 3.0  # per case; a correct answer needs milliseconds
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
            # Fails the one-pass formula mean(x**2) - mean(x)**2, which cancels digits.
            ("a (12, 3) batch with values near 1e6", _batch(rng, 12, 3, offset=1e6)),
        ]
    return [(f"a float32 ({n}, {d}) batch", _batch(rng, n, d).astype(np.float32))
            for n, d in [(8, 3), (16, 6), (3, 5)]]


def _per_feature(rng, d, low, high, dtype):
    return rng.uniform(low, high, size=d).astype(dtype)


# --- playing a case ---------------------------------------------------------

def _fresh_copy(value):
    """A copy the candidate may ruin. Arrays keep their memory layout: a strided
    view stays a strided view (non-contiguous input is one of the hidden cases)."""
    if not isinstance(value, np.ndarray):
        return copy.deepcopy(value)
    if value.flags.c_contiguous or value.flags.f_contiguous:
        return value.copy(order="K")
    buffer = np.empty(tuple(2 * size for size in value.shape), dtype=value.dtype)
    view = buffer[(slice(None, None, 2),) * value.ndim]
    view[...] = value
    return view


def _unchanged(original, passed):
    """Arrays equal; objects (such as fold_batchnorm's `bn`) with equal attributes."""
    if isinstance(original, np.ndarray):
        return np.array_equal(original, passed, equal_nan=True)
    if hasattr(original, "__dict__"):
        return all(_unchanged(value, getattr(passed, name, None))
                   for name, value in vars(original).items())
    return True


def call_unmodified(function, args, kwargs, may_modify=()):
    """Call function on copies of args; raise InputModified if it changed one.

    ``may_modify`` names the arguments that the API allows to be updated in
    place (the running statistics)."""
    copies = {name: _fresh_copy(value) for name, value in args.items()}
    result = function(*copies.values(), **kwargs)
    for name, original in args.items():
        if name not in may_modify and not _unchanged(original, copies[name]):
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


def _gamma_beta_cases(named_inputs, rng):
    """One case per (description, x): random per-feature (or per-channel) gamma and
    beta, and eps cycling through the default and larger values."""
    cases = []
    for i, (desc, x) in enumerate(named_inputs):
        gamma, beta = _gamma_beta(rng, x.shape[1], x.dtype)
        eps = _eps_for(i)
        cases.append(_function_case(
            f"{desc}, {_eps_text(eps)}", {"x": x, "gamma": gamma, "beta": beta},
            _with_eps({}, eps), float32=x.dtype == np.float32))
    return cases


def _forward_cases(group):
    return _gamma_beta_cases(_shapes(group), np.random.default_rng(12))


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
    return _gamma_beta_cases(_image_shapes(group), np.random.default_rng(17))


# --- 07 ---------------------------------------------------------------------

NEVER_REACHED = "raises ValueError when the accuracy never reaches the target"


def _as_step(value):
    """A returned step as a float (the checker compares floating-point numbers)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        raise CandidateProblem(f"steps_to_reach should return a step (an int taken from "
                               f"`steps`), got {describe(value)}.")
    return float(value)


RAISED = "raises ValueError (it should not: the target is reached)"


def _step_case(description, steps, accuracy, target, float32=False):
    """The step returned; a ValueError is an output too (NaN for the step), so that an
    answer which never counts an accuracy equal to the target can still be diagnosed."""

    def play(candidate):
        args = {"steps": steps, "accuracy": accuracy, "target": target}
        try:
            step = call_unmodified(candidate, args, {})
        except ValueError:
            return [(RAISED, True), ("the step returned", float("nan"))]
        return [(RAISED, False), ("the step returned", _as_step(step))]

    return Case(description, play, float32)


def _never_reached_case(description, steps, accuracy, target, float32=False):
    def play(candidate):
        args = {"steps": steps, "accuracy": accuracy, "target": target}
        try:
            call_unmodified(candidate, args, {})
        except ValueError:
            return [(NEVER_REACHED, True)]
        except NotImplementedError:
            raise
        except Exception as error:  # IndexError from [0] of an empty selection, ...
            raise CandidateProblem(
                f"On {description}, your code raised {type(error).__name__}: {error}",
                "no-error-when-never-reached") from error
        return [(NEVER_REACHED, False)]

    return Case(description, play, float32)


def _learning_curve(rng, num_evaluations, eval_every=50, examples=450, start_step=0):
    """Evaluation steps and a rising, noisy accuracy curve in multiples of 1/examples."""
    steps = start_step + eval_every * np.arange(num_evaluations)
    clean = 0.97 - 0.87 * np.exp(-(steps - start_step) / rng.uniform(100, 600))
    noisy = np.clip(clean + rng.normal(0, 0.012, num_evaluations), 0, 1)
    return steps, np.round(noisy * examples) / examples


def _equality_target(steps, accuracy):
    """A target equal to one of the accuracies, reached first with == (so that > and >=
    give different steps); the last accuracy if no such value exists."""
    for value in accuracy:
        if ref.steps_to_reach(steps, accuracy, value) != _strictly_above(steps, accuracy, value):
            return value
    return accuracy[-1]


def _strictly_above(steps, accuracy, target):
    """The first step whose accuracy exceeds the target, or None."""
    above = np.flatnonzero(np.asarray(accuracy) > target)
    return int(np.asarray(steps)[above[0]]) if len(above) else None


def _dip_target(accuracy):
    """A target that the curve reaches, then falls below again (first != last crossing)."""
    for t in range(1, len(accuracy) - 1):
        if accuracy[t] > accuracy[:t].max() and accuracy[t + 1:].min() < accuracy[t]:
            return accuracy[t]
    return accuracy.max()


def _steps_cases(group):
    rng = np.random.default_rng({"basic": 707, "awkward": 717, "float32": 727}[group])
    if group == "basic":
        cases = []
        for num in (21, 41, 61):
            steps, accuracy = _learning_curve(rng, num)
            final = accuracy[-5:].mean()  # the notebook's target: a final accuracy
            cases += [
                _step_case(f"a curve of {num} evaluations, target = the mean of its last "
                           f"five ({final:.4f})", steps, accuracy, final),
                _step_case(f"a curve of {num} evaluations, a target equal to one of its "
                           f"accuracies", steps, accuracy, _equality_target(steps, accuracy)),
                _step_case(f"a noisy curve of {num} evaluations that reaches the target, "
                           f"then dips below it", steps, accuracy, _dip_target(accuracy)),
            ]
        return cases
    if group == "awkward":
        steps, accuracy = _learning_curve(rng, 25)
        best_at_the_end = accuracy.copy()
        best_at_the_end[-1] = accuracy.max() + 1 / 450
        late_steps = list(range(100, 1100, 50)) + [1013]  # a slice of a run that ended at 1013
        _, late_accuracy = _learning_curve(rng, len(late_steps))
        return [
            _step_case("a target already met at the first evaluation (step 0)", steps,
                       accuracy, accuracy[0]),
            _step_case("a target met only at the last evaluation", steps, best_at_the_end,
                       best_at_the_end[-1]),
            _step_case("a single evaluation", [0], [0.5], 0.4),
            _step_case("Python lists, evaluations from step 100 to a last one at 1013",
                       late_steps, [float(a) for a in late_accuracy], late_accuracy[-1]),
            _step_case("uneven evaluation steps", [0, 10, 30, 70, 150, 310],
                       np.array([0.1, 0.4, 0.55, 0.8, 0.9, 0.95]), 0.8),
            _never_reached_case("a curve that never reaches the target 0.99", steps,
                                accuracy, 0.99),
        ]
    steps, accuracy = _learning_curve(rng, 31)
    accuracy32 = accuracy.astype(np.float32)
    return [
        _step_case("float32 accuracies, a float32 target between two of them", steps,
                   accuracy32, np.float32(0.9), float32=True),
        _step_case("float32 accuracies, a target equal to one of them", steps, accuracy32,
                   np.float32(_equality_target(steps, accuracy32)), float32=True),
    ]


# --- percentile_trace: cases --------------------------------------------------------------

def _unit_over_training(rng, t, n, offset=0.0):
    """(T, N): a skewed distribution whose location and spread drift over T moments, so
    that every percentile differs from row to row and from the others."""
    location = offset + np.cumsum(rng.normal(0, 0.3, size=(t, 1)), axis=0)
    spread = np.exp(rng.normal(0, 0.3, size=(t, 1)))
    return location + spread * rng.gamma(2.0, 1.0, size=(t, n))


def _percentile_cases(group):
    rng = np.random.default_rng({"basic": 708, "awkward": 718, "float32": 728}[group])
    if group == "basic":
        shapes_and_q = [((12, 50), (15, 50, 85)), ((30, 200), (15, 50, 85)),
                        ((5, 9), (25, 75)), ((8, 40), (5, 50, 95))]
        return [_function_case(f"a ({t}, {n}) trace, q = {q}",
                               {"values": _unit_over_training(rng, t, n), "q": q})
                for (t, n), q in shapes_and_q]
    if group == "awkward":
        constant_row = _unit_over_training(rng, 6, 11)
        constant_row[2] = 0.7
        return [
            _function_case("a (6, 1) trace: one example", {"values": _unit_over_training(
                rng, 6, 1), "q": (15, 50, 85)}),
            _function_case("a (1, 40) trace: one moment", {"values": _unit_over_training(
                rng, 1, 40), "q": (15, 50, 85)}),
            _function_case("a (7, 2) trace: two examples, so every percentile interpolates",
                           {"values": _unit_over_training(rng, 7, 2), "q": (15, 50, 85)}),
            _function_case("q = (0, 100): the minimum and the maximum",
                           {"values": _unit_over_training(rng, 9, 25), "q": (0, 100)}),
            _function_case("a single percentile, q = [50] (a list)",
                           {"values": _unit_over_training(rng, 10, 30), "q": [50]}),
            _function_case("q as an array, (8, 8) values (as many moments as examples)",
                           {"values": _unit_over_training(rng, 8, 8),
                            "q": np.array([10.0, 50.0, 90.0])}),
            _function_case("a (6, 11) trace with a constant row", {"values": constant_row,
                                                                   "q": (15, 50, 85)}),
            _function_case("values near 1e4", {"values": _unit_over_training(
                rng, 10, 60, offset=1e4), "q": (15, 50, 85)}),
            _function_case("a non-contiguous view (every other example)",
                           {"values": _unit_over_training(rng, 9, 40)[:, ::2],
                            "q": (15, 50, 85)}),
        ]
    return [_function_case(f"a float32 ({t}, {n}) trace, q = (15, 50, 85)",
                           {"values": _unit_over_training(rng, t, n).astype(np.float32),
                            "q": (15, 50, 85)}, float32=True)
            for t, n in [(10, 30), (4, 7)]]


# --- 08 ---------------------------------------------------------------------

def _layernorm_cases(group):
    rng = np.random.default_rng(19)
    image_shapes = {"basic": [(3, 4, 2, 2)], "awkward": [(1, 2, 3, 3)], "float32": [(2, 3, 2, 2)]}
    images = [(f"a ({', '.join(map(str, shape))}) batch of images",
               _batch(rng, shape[0], int(np.prod(shape[1:]))).reshape(shape))
              for shape in image_shapes[group]]
    shapes = [(d, x.astype(np.float32) if group == "float32" else x) for d, x in images]
    if group == "awkward":
        one_example = _batch(rng, 1, 5)
        constant_example = _batch(rng, 4, 6)
        constant_example[2] = 7.0
        shapes += [("a batch of one (1, 5)", one_example),
                   ("a (4, 6) batch whose third example is constant", constant_example)]
    # A single feature is left out: every example then normalizes to beta.
    inputs = [(desc, x) for desc, x in _shapes(group) + shapes
              if not (x.ndim == 2 and x.shape[1] < 2)]
    return _gamma_beta_cases(inputs, rng)


def _groupnorm_cases(group):
    rng = np.random.default_rng(20)
    layouts = {"basic": [((4, 6, 3, 3), 2), ((3, 6, 2, 2), 3), ((2, 4, 3, 2), 4)],
               "awkward": [((1, 6, 2, 2), 3), ((2, 4, 1, 1), 2), ((3, 8, 2, 2), 1)],
               "float32": [((4, 6, 3, 3), 2), ((2, 4, 2, 2), 2)]}[group]
    cases = []
    for i, (shape, groups) in enumerate(layouts):
        x = _batch(rng, shape[0], int(np.prod(shape[1:]))).reshape(shape)
        x = x.astype(np.float32) if group == "float32" else x
        gamma, beta = _gamma_beta(rng, shape[1], x.dtype)
        eps = _eps_for(i)
        cases.append(_function_case(
            f"a {shape} batch in {groups} groups, {_eps_text(eps)}",
            {"x": x, "gamma": gamma, "beta": beta, "num_groups": groups},
            _with_eps({}, eps), float32=group == "float32"))
    return cases


def _fold_cases(group):
    from types import SimpleNamespace
    rng = np.random.default_rng(21)
    weight_shapes = {"basic": [(4, 3, 3, 3), (6, 2, 1, 1), (5, 8)],
                     "awkward": [(1, 1, 3, 3), (3, 4, 5, 5)],
                     "float32": [(4, 3, 3, 3)]}[group]
    dtype = np.float32 if group == "float32" else np.float64
    cases = []
    for i, shape in enumerate(weight_shapes):
        out_channels = shape[0]
        weight = rng.standard_normal(shape).astype(dtype)
        bias = None if i % 2 else rng.standard_normal(out_channels).astype(dtype)
        gamma, beta = _gamma_beta(rng, out_channels, dtype)
        bn = SimpleNamespace(weight=gamma, bias=beta, eps=_eps_for(i) or 1e-5,
                             running_mean=rng.standard_normal(out_channels).astype(dtype),
                             running_var=rng.uniform(0.2, 3.0, out_channels).astype(dtype))
        cases.append(_function_case(
            f"a {shape} weight {'without' if bias is None else 'with'} bias, eps={bn.eps}",
            {"conv_weight": weight, "conv_bias": bias, "bn": bn},
            labels=("folded weight", "folded bias"), float32=group == "float32"))
    return cases


def _ghost_cases(group):
    rng = np.random.default_rng(22)
    # (description, x, virtual batch size). No N equal to B**2: splitting into B pieces
    # would then give the right virtual batches by accident.
    if group == "basic":
        layouts = [(f"a ({n}, {d}) batch in virtual batches of {b}", _batch(rng, n, d), b)
                   for n, d, b in [(12, 4, 3), (24, 5, 8), (32, 3, 4), (18, 4, 6)]]
    elif group == "awkward":
        layouts = [
            ("a (10, 3) batch in virtual batches of 4 (the last holds 2)", _batch(rng, 10, 3), 4),
            ("a (8, 4) batch in one virtual batch of 8", _batch(rng, 8, 4), 8),
            ("a (6, 3) batch, smaller than the virtual batch size 16", _batch(rng, 6, 3), 16),
            ("a single feature (12, 1) in virtual batches of 2", _batch(rng, 12, 1), 2),
            ("a (12, 3) batch with values near 1e4, virtual batches of 3",
             _batch(rng, 12, 3, offset=1e4), 3),
            ("a (15, 3) batch whose last feature is constant, virtual batches of 5",
             _batch(rng, 15, 3, constant_feature=True), 5),
            ("a non-contiguous (12, 4) view in virtual batches of 3",
             _batch(rng, 24, 8)[::2, ::2], 3),
            ("a column-major (20, 3) array in virtual batches of 5",
             _non_contiguous(_batch(rng, 20, 3)), 5),
        ]
    else:
        layouts = [(f"a float32 ({n}, {d}) batch in virtual batches of {b}",
                    _batch(rng, n, d).astype(np.float32), b)
                   for n, d, b in [(12, 4, 4), (16, 3, 8)]]
    cases = []
    for i, (description, x, size) in enumerate(layouts):
        gamma, beta = _gamma_beta(rng, x.shape[1], x.dtype)
        eps = _eps_for(i)
        cases.append(_function_case(
            f"{description}, {_eps_text(eps)}",
            {"x": x, "gamma": gamma, "beta": beta, "virtual_batch_size": size},
            _with_eps({}, eps), float32=x.dtype == np.float32))
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
        copies = [_fresh_copy(batch) for batch in batches]
        result = candidate(copies)
        if not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(batches, copies)):
            raise InputModified("batches")
        return list(zip(("running mean", "running var"), _unpack(result, 2)))

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
             [_non_contiguous(b) for b in _drifting_batches(rng, [7] * 3, 5)]),
        ]
    else:
        layouts = [(f"{len(sizes)} float32 batches of ({sizes[0]}, {d})",
                    [b.astype(np.float32) for b in _drifting_batches(rng, sizes, d)])
                   for sizes, d in [([16] * 4, 3), ([8] * 3, 6)]]
    return [_batches_case(description, batches) for description, batches in layouts]


CASE_FILES = {"basic": ("A", "B"), "awkward": ("C", "D"), "float32": ()}


def _diagnosis_case(case):
    def play(candidate):
        from bn_course.demos.beyond import BN_BUGS, planted_bug  # the answer key

        answer = candidate(case)
        if not isinstance(answer, str) or answer not in BN_BUGS:
            raise CandidateProblem(f"diagnose_bn_bug({case!r}) returned {answer!r}; return "
                                   f"one of {', '.join(map(repr, BN_BUGS))}.")
        if answer != planted_bug(case):
            raise CandidateProblem(f"Case file {case} is not {answer!r}.",
                                   WRONG_DIAGNOSIS[answer])
        return [(f"the diagnosis of case file {case}", True)]

    return Case(f"case file {case}", play)


def _diagnosis_cases(group):
    return [_diagnosis_case(case) for case in CASE_FILES[group]]


def _diagnose_bn_bug(case):
    """The reference answer: the bug planted in case file ``case`` of notebook 08."""
    from bn_course.demos.beyond import planted_bug

    return planted_bug(case)


# A wrong diagnosis -> the catalogue id that explains why it does not fit.
WRONG_DIAGNOSIS = {
    "eval-mode-forgotten": "wrongly-blames-eval-mode",
    "stats-frozen-while-fine-tuning": "wrongly-blames-frozen-statistics",
    "dropout-before-batchnorm": "wrongly-blames-dropout",
    "no-bug": "misses-the-bug",
}


def _torch_batchnorm2d(num_features, **kwargs):
    """The oracle for the module exercise: PyTorch's own layer."""
    import torch
    return torch.nn.BatchNorm2d(num_features, **kwargs)


STATE_KEYS = ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"]


def _numpy_of(tensor, what):
    if tensor is None:
        raise CandidateProblem(f"{what} is None: no gradient reached it. Is it an nn.Parameter, "
                               "and does the forward pass use only torch operations on it?")
    if not hasattr(tensor, "detach"):
        raise CandidateProblem(f"{what} should be a torch.Tensor, got {type(tensor).__name__}.")
    # A copy: for a float64 CPU tensor .numpy() is a view, and a snapshot of a
    # buffer must not follow the buffer's later in-place updates.
    return tensor.detach().cpu().double().numpy().copy()


def _module_case(description, batches, douts, weight, bias, loaded_state, kwargs, float32):
    """Drive a BatchNorm2d module the way training does: train steps with a
    backward pass, eval calls, then state_dict round trips with torch.nn.BatchNorm2d.
    Runs on CUDA when there is one."""

    def play(cls):
        from bn_course.train import one_thread  # these tensors are tiny: threads only cost time
        with one_thread():
            return play_on_one_thread(cls)

    def play_on_one_thread(cls):
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        like = {"device": device, "dtype": torch.float32 if float32 else torch.float64}

        def tensor(values):
            return torch.tensor(values, **like)

        channels = batches[0].shape[1]
        layer = cls(channels, **kwargs)
        if not isinstance(layer, torch.nn.Module):
            raise CandidateProblem(f"BatchNorm2d({channels}) should build a torch.nn.Module, "
                                   f"got {type(layer).__name__}.")
        _check_state_keys(sorted(layer.state_dict()))
        layer = layer.to(**like)
        with torch.no_grad():
            layer.weight.copy_(tensor(weight))
            layer.bias.copy_(tensor(bias))
        outputs = []
        modes = ["train", "train", "train", "eval", "eval", "train"]
        for step, (mode, x_values, dout) in enumerate(zip(modes, batches, douts), start=1):
            layer.train(mode == "train")
            x = tensor(x_values).requires_grad_(True)
            out = layer(x)
            where = f"call {step} ({mode} mode)"
            outputs.append((f"output of {where}", _output_of(out, x, where)))
            _backward(out, tensor(dout), where)
            outputs += [(f"{name} after {where}", _numpy_of(value, f"{name} after {where}"))
                        for name, value in [("x.grad", x.grad), ("weight.grad", layer.weight.grad),
                                            ("bias.grad", layer.bias.grad),
                                            ("running_mean", layer.running_mean),
                                            ("running_var", layer.running_var),
                                            ("num_batches_tracked", layer.num_batches_tracked)]]
            layer.zero_grad()
        return outputs + _state_dict_round_trips(layer, cls, kwargs, tensor(batches[0]),
                                                 loaded_state, like)

    return Case(description, play, float32)


@contextlib.contextmanager
def unwatched():
    """Run the checker's own use of torch.nn.BatchNorm2d (the oracle in a case)
    out of sight of the checker's watch for forbidden batch-norm calls, which
    is a sys.setprofile hook."""
    previous = sys.getprofile()
    sys.setprofile(None)
    try:
        yield
    finally:
        sys.setprofile(previous)


def _check_state_keys(keys):
    if keys == STATE_KEYS:
        return
    missing = [key for key in STATE_KEYS if key not in keys]
    extra = [key for key in keys if key not in STATE_KEYS]
    message = (f"Your module's state_dict differs from torch.nn.BatchNorm2d's: missing "
               f"{missing or 'nothing'}, unexpected {extra or 'nothing'}.")
    buffers = {"running_mean", "running_var", "num_batches_tracked"}
    all_buffers_missing = buffers <= set(missing) and not extra
    raise CandidateProblem(message, "buffers-not-registered" if all_buffers_missing else None)


def _output_of(out, x, where):
    if out is None:
        raise CandidateProblem(f"forward() returned None on {where}: is a `return` missing?")
    if not hasattr(out, "detach"):
        raise CandidateProblem(f"forward() returned a {type(out).__name__} on {where}; "
                               "it should return a torch.Tensor.")
    if tuple(out.shape) != tuple(x.shape):
        raise CandidateProblem(f"forward() returned shape {tuple(out.shape)} on {where}, "
                               f"expected the input's shape {tuple(x.shape)}.")
    return _numpy_of(out, f"the output of {where}")


def _backward(out, dout, where):
    """Backpropagate through the candidate's output, explaining why it can't."""
    if not out.requires_grad:
        raise CandidateProblem(f"The output of {where} is not connected to the input's graph: "
                               "does forward() detach, or go through NumPy?")
    try:
        out.backward(dout)
    except RuntimeError as error:
        raise CandidateProblem(f"Backpropagating through your module failed on {where}: "
                               f"{error}") from None


def _state_dict_round_trips(layer, cls, kwargs, x, loaded_state, like):
    """Eval outputs after loading the candidate's state into torch's layer, and
    a torch layer's state (``loaded_state``: NumPy values) into the candidate's."""
    import torch
    channels = x.shape[1]
    with unwatched(), torch.no_grad():
        native = torch.nn.BatchNorm2d(channels, **kwargs).to(**like)
        native.load_state_dict(layer.state_dict())
        native_output = native.eval()(x)
        theirs = torch.nn.BatchNorm2d(channels, **kwargs).to(**like)
        for name, values in loaded_state.items():
            getattr(theirs, name).copy_(torch.from_numpy(values))
    yours = cls(channels, **kwargs).to(**like)
    yours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        return [("torch.nn.BatchNorm2d loaded with your state_dict, eval output",
                 _numpy_of(native_output, "the eval output")),
                ("your module loaded with torch.nn.BatchNorm2d's state_dict, eval output",
                 _numpy_of(yours.eval()(x), "the eval output"))]


def _module_cases(group):
    rng = np.random.default_rng(18)
    cases = []
    for i, (desc, x) in enumerate(_image_shapes(group)):
        if x.shape[0] * x.shape[2] * x.shape[3] < 2:
            continue
        batches = [x] + [x + rng.standard_normal((1, x.shape[1], 1, 1))
                         + 0.5 * rng.standard_normal(x.shape) for _ in range(5)]
        douts = [rng.standard_normal(x.shape) for _ in batches]
        channels = x.shape[1]
        weight, bias = _gamma_beta(rng, channels, np.float64)
        # A state that is clearly not the start values, to load into the candidate.
        loaded_state = {"running_mean": rng.uniform(-1, 1, channels),
                        "running_var": rng.uniform(0.5, 2, channels),
                        "weight": rng.uniform(0.5, 2, channels)}
        eps, momentum = _eps_for(i), _momentum_for(i)
        kwargs = _with_eps({} if momentum is None else {"momentum": momentum}, eps)
        text = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default eps and momentum"
        cases.append(_module_case(f"{desc} ({text})", batches, douts, weight, bias,
                                  loaded_state, kwargs, float32=x.dtype == np.float32))
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
    Exercise("layernorm_forward", ref.layernorm_forward,
             "layernorm_forward(x, gamma, beta, eps=1e-5)", _layernorm_cases),
    Exercise("groupnorm_forward", ref.groupnorm_forward,
             "groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5)", _groupnorm_cases),
    Exercise("steps_to_reach", ref.steps_to_reach, "steps_to_reach(steps, accuracy, target)",
             _steps_cases),
    Exercise("percentile_trace", ref.percentile_trace, "percentile_trace(values, q)",
             _percentile_cases),
    Exercise("fold_batchnorm", ref.fold_batchnorm,
             "fold_batchnorm(conv_weight, conv_bias, bn)", _fold_cases),
    Exercise("ghost_batchnorm_forward", ref.ghost_batchnorm_forward,
             "ghost_batchnorm_forward(x, gamma, beta, virtual_batch_size, eps=1e-5)",
             _ghost_cases),
    Exercise("recompute_running_stats", ref.recompute_running_stats,
             "recompute_running_stats(batches)", _recompute_cases),
    Exercise("diagnose_bn_bug", _diagnose_bn_bug, "diagnose_bn_bug(case)", _diagnosis_cases),
    Exercise("BatchNorm2d", _torch_batchnorm2d,
             "BatchNorm2d(num_features, eps=1e-5, momentum=0.1), a torch.nn.Module",
             _module_cases, needs_torch=True, time_limit_s=30.0),
]}
