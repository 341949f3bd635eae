"""Notebook 07, training comparisons: ``build_mlp``, the network of the paper's Figure 1
with the student's layer in the right places, then ``steps_to_reach`` and
``percentile_trace``, the two measurements behind the miniature of that figure."""

import numpy as np

from bn_course.checks import _cases, _probes
from bn_course.checks._core import (
    CandidateProblem,
    Case,
    Exercise,
    Mistake,
    describe,
    knob_mistake,
    variant_mistake,
)
from bn_course.reference import numpy as ref

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
            step = _cases.call_unmodified(candidate, args, {})
        except ValueError:
            return [(RAISED, True), ("the step returned", float("nan"))]
        return [(RAISED, False), ("the step returned", _as_step(step))]

    return Case(description, play, float32)


def _never_reached_case(description, steps, accuracy, target, float32=False):
    def play(candidate):
        args = {"steps": steps, "accuracy": accuracy, "target": target}
        try:
            _cases.call_unmodified(candidate, args, {})
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
        return [_cases.function_case(f"a ({t}, {n}) trace, q = {q}",
                               {"values": _unit_over_training(rng, t, n), "q": q})
                for (t, n), q in shapes_and_q]
    if group == "awkward":
        constant_row = _unit_over_training(rng, 6, 11)
        constant_row[2] = 0.7
        return [
            _cases.function_case("a (6, 1) trace: one example", {"values": _unit_over_training(
                rng, 6, 1), "q": (15, 50, 85)}),
            _cases.function_case("a (1, 40) trace: one moment", {"values": _unit_over_training(
                rng, 1, 40), "q": (15, 50, 85)}),
            _cases.function_case("a (7, 2) trace: two examples, so every percentile interpolates",
                           {"values": _unit_over_training(rng, 7, 2), "q": (15, 50, 85)}),
            _cases.function_case("q = (0, 100): the minimum and the maximum",
                           {"values": _unit_over_training(rng, 9, 25), "q": (0, 100)}),
            _cases.function_case("a single percentile, q = [50] (a list)",
                           {"values": _unit_over_training(rng, 10, 30), "q": [50]}),
            _cases.function_case("q as an array, (8, 8) values (as many moments as examples)",
                           {"values": _unit_over_training(rng, 8, 8),
                            "q": np.array([10.0, 50.0, 90.0])}),
            _cases.function_case("a (6, 11) trace with a constant row", {"values": constant_row,
                                                                   "q": (15, 50, 85)}),
            _cases.function_case("values near 1e4", {"values": _unit_over_training(
                rng, 10, 60, offset=1e4), "q": (15, 50, 85)}),
            _cases.function_case("a non-contiguous view (every other example)",
                           {"values": _unit_over_training(rng, 9, 40)[:, ::2],
                            "q": (15, 50, 85)}),
        ]
    return [_cases.function_case(f"a float32 ({t}, {n}) trace, q = (15, 50, 85)",
                           {"values": _unit_over_training(rng, t, n).astype(np.float32),
                            "q": (15, 50, 85)}, float32=True)
            for t, n in [(10, 30), (4, 7)]]


# --- the mistakes -----------------------------------------------------------------

def _reached(accuracy, target, strictly=False):
    accuracy = np.asarray(accuracy)
    reached = np.flatnonzero(accuracy > target if strictly else accuracy >= target)
    if len(reached) == 0:
        raise ValueError("never reached")
    return reached


def _returns_index(steps, accuracy, target):
    return int(_reached(accuracy, target)[0])


def _index_times_interval(steps, accuracy, target):
    steps = np.asarray(steps)
    interval = steps[1] - steps[0] if len(steps) > 1 else 0
    return int(_reached(accuracy, target)[0] * interval)


def _strict_inequality(steps, accuracy, target):
    return int(np.asarray(steps)[_reached(accuracy, target, strictly=True)[0]])


def _stays_above(steps, accuracy, target):
    """The step from which the curve never falls below the target again."""
    below = np.flatnonzero(np.asarray(accuracy) < target)
    first_for_good = below[-1] + 1 if len(below) else 0
    if first_for_good == len(accuracy):
        raise ValueError("never reached")
    return int(np.asarray(steps)[first_for_good])


def _none_when_never_reached(steps, accuracy, target):
    reached = np.flatnonzero(np.asarray(accuracy) >= target)
    return int(np.asarray(steps)[reached[0]]) if len(reached) else None


def _sorts_in_place(values, q):
    values.sort(axis=1)
    return np.percentile(values, q, axis=1).T


def _rank_from_n(values, q):
    """A hand-made percentile: the sorted value at rank floor(q / 100 * N)."""
    n = values.shape[1]
    ranks = np.minimum((np.asarray(q, dtype=np.float64) / 100 * n).astype(int), n - 1)
    return np.sort(values, axis=1)[:, ranks]


PERCENTILE_AXIS_HINT = ("values has shape (T, N): one row per moment of training. Take the "
                        "percentiles of each row, over the examples: axis=1.")
INTERPOLATION_HINT = ("np.percentile(values, q, axis=1) interpolates between the two nearest "
                      "ranks; a sorted value at a rounded rank is only close to it.")

STEPS_TO_REACH = Exercise(
    "steps_to_reach", ref.steps_to_reach, "steps_to_reach(steps, accuracy, target)",
    _steps_cases, hint="Return steps[t] for the first t with accuracy[t] >= target; raise "
                       "ValueError when there is none.",
    mistakes=[
    variant_mistake("returns-index", _returns_index,
            "You returned the position of the evaluation in the list, not its training step.",
            "Return steps[t], the step at which accuracy[t] was measured."),
    variant_mistake("index-times-interval", _index_times_interval,
            "You computed the step as position * (steps[1] - steps[0]). That is only right "
            "when evaluations start at step 0 and are evenly spaced; a run's last evaluation "
            "falls on its last step, wherever that is.",
            "Read the step from the list: steps[t]."),
    variant_mistake("strict-inequality", _strict_inequality,
            "You waited for the accuracy to exceed the target (>), so an accuracy exactly "
            "equal to it did not count.",
            "Reaching the target means accuracy >= target: the final accuracy of a run can "
            "equal one of its evaluations."),
    variant_mistake("stays-above", _stays_above,
            "You returned the step from which the accuracy stays at or above the target for "
            "good, not the first step at which it reaches it.",
            "Stop at the first evaluation with accuracy >= target, even if a later one dips "
            "below it again."),
    variant_mistake("no-error-when-never-reached", _none_when_never_reached,
            "When the accuracy never reaches the target, your function does not raise "
            "ValueError.",
            "After the loop, `raise ValueError(...)`: no step is the honest answer, and "
            "returning None, -1 or the last step would pass a wrong number on."),
    ])

PERCENTILE_TRACE = Exercise(
    "percentile_trace", ref.percentile_trace, "percentile_trace(values, q)", _percentile_cases,
    probes=(_probes.constant_factor,),
    hint="np.percentile(values, q, axis=1).T: shape (T, len(q)).",
    mistakes=[
    variant_mistake("axis-0-vs-1", lambda values, q: np.percentile(
                values, q, axis=0).T,
            "You took the percentiles of each example over time (axis=0) instead of each "
            "moment over the examples.", PERCENTILE_AXIS_HINT),
    variant_mistake("transposed-output", lambda values, q: np.percentile(
                values, q, axis=1),
            "Your values are right but your array has shape (len(q), T): np.percentile puts "
            "the percentiles first.",
            "Transpose the result (.T) to get one row per moment: shape (T, len(q))."),
    variant_mistake("no-axis", lambda values, q: np.percentile(values, q),
            "You took the percentiles of all the values at once, not of each moment.",
            PERCENTILE_AXIS_HINT),
    variant_mistake("fraction-not-percent",
            lambda values, q: np.percentile(values, np.asarray(q) / 100, axis=1).T,
            "You divided q by 100: np.percentile takes percentiles between 0 and 100 "
            "(it is np.quantile that takes fractions between 0 and 1).",
            "Pass q as given: np.percentile(values, q, axis=1)."),
    variant_mistake("rank-rounded-down",
            lambda values, q: np.percentile(values, q, axis=1, method="lower").T,
            "You took the sorted value at the rank q / 100 * (N - 1) rounded down, without "
            "interpolating.", INTERPOLATION_HINT),
    variant_mistake("rank-from-n", _rank_from_n,
            "You took the sorted value at the rank q / 100 * N rounded down: not the "
            "interpolated percentile (and off by one rank at the top).", INTERPOLATION_HINT),
    variant_mistake("modifies-input", _sorts_in_place,
            "Your function sorted `values` in place (values.sort()), which scrambles the "
            "caller's data: each column no longer belongs to one example.",
            "np.sort(values, axis=1) returns a sorted copy; np.percentile needs no sorting."),
    ])


# --- build_mlp ---------------------------------------------------------------------------

PLACEMENT_HINT = ("Each hidden block is Linear(bias=False) -> norm_layer(hidden) -> Sigmoid, "
                  "with a new norm_layer per block; the last Linear (to the logits) has a bias "
                  "and no normalization after it. Without a norm_layer: Linear -> Sigmoid.")


def _normalize_per_feature():
    """A stand-in for the student's layer, defined here (not in bn_course.reference and
    not PyTorch's, which the forbidden-call watch reports): per-feature batch
    normalization with a weight, so that where it sits changes the logits."""
    import torch
    from torch import nn

    class Normalize(nn.Module):
        def __init__(self, num_features):
            super().__init__()
            self.num_features = num_features
            self.weight = nn.Parameter(torch.linspace(0.5, 1.5, num_features))

        def forward(self, x):
            centred = x - x.mean(dim=0)
            return self.weight * centred / torch.sqrt((centred ** 2).mean(dim=0) + 1e-5)

    return Normalize


def _as_network(model):
    from torch import nn

    if not isinstance(model, nn.Sequential):
        raise CandidateProblem(f"build_mlp should return a torch.nn.Sequential, got "
                               f"{describe(model)}.")
    return model


def _network_case(description, norm, in_features, hidden, depth, num_classes, float32=False):
    """Build the network, give every Linear seeded weights and (non-zero) biases, and
    report its logits on a fixed batch, how many parameters it has, and how many
    distinct normalization layers."""
    import torch
    from torch import nn

    norm_layer = _normalize_per_feature() if norm else None
    dtype = torch.float32 if float32 else torch.float64
    x = torch.from_numpy(np.random.default_rng(in_features * 31 + depth).normal(
        1.0, 2.0, (8, in_features))).to(dtype)

    def play(candidate):
        args = (norm_layer, in_features, hidden, depth, num_classes)
        model = _as_network(candidate(*args)).to(dtype)
        generator = torch.Generator().manual_seed(depth)
        with torch.no_grad():
            for layer in model.modules():
                if isinstance(layer, nn.Linear):
                    layer.weight.normal_(0.0, 1.0 / in_features ** 0.5, generator=generator)
                    if layer.bias is not None:
                        layer.bias.uniform_(-1.0, 1.0, generator=generator)
            logits = model.train()(x)
        norms = {id(m) for m in model.modules() if norm_layer and isinstance(m, norm_layer)}
        return [("logits of a batch of 8", logits.double().numpy()),
                ("number of parameters", float(sum(p.numel() for p in model.parameters()))),
                ("number of normalization layers", float(len(norms)))]

    return Case(description, play, float32)


def network_cases(group):
    shapes = {"basic": [(True, 6, 5, 3, 4), (False, 6, 5, 3, 4), (True, 10, 7, 2, 3)],
              "awkward": [(True, 4, 3, 1, 2), (False, 9, 2, 1, 5), (True, 3, 8, 5, 2),
                          (False, 5, 4, 4, 3)],
              "float32": [(True, 6, 5, 3, 4)]}[group]
    return [_network_case(
        f"build_mlp({'norm_layer' if norm else 'None'}, in_features={i}, hidden={h}, "
        f"depth={d}, num_classes={c})", norm, i, h, d, c, float32=group == "float32")
        for norm, i, h, d, c in shapes]


def _build_mlp_with(bias_before_norm=False, norm_after_activation=False, norm_on_logits=False,
                    shared_norm=False, bias_without_norm=True, last_bias=True,
                    activation="sigmoid", blocks=0):
    """build_mlp with some mistakes; ``blocks`` is added to the number of hidden blocks."""
    from torch import nn

    def build_mlp(norm_layer, in_features, hidden, depth, num_classes):
        shared = norm_layer(hidden) if norm_layer and shared_norm else None
        layers, width = [], in_features
        for _ in range(depth + blocks):
            bias = bias_before_norm if norm_layer else bias_without_norm
            layers.append(nn.Linear(width, hidden, bias=bias))
            act = nn.Sigmoid() if activation == "sigmoid" else nn.ReLU()
            norm = [shared or norm_layer(hidden)] if norm_layer else []
            layers += [act, *norm] if norm_after_activation else [*norm, act]
            width = hidden
        # last_bias=False: the rule "no bias when a norm_layer is given" applied to the
        # output layer too, which no norm_layer follows.
        layers.append(nn.Linear(width, num_classes, bias=last_bias or norm_layer is None))
        if norm_layer and norm_on_logits:
            layers.append(norm_layer(num_classes))
        return nn.Sequential(*layers)

    return build_mlp


def _reference_build_mlp(norm_layer, in_features, hidden, depth, num_classes):
    from bn_course.reference.torch import build_mlp  # torch only when this exercise runs

    return build_mlp(norm_layer, in_features, hidden, depth, num_classes)


BUILD_MLP = Exercise(
    "build_mlp", _reference_build_mlp,
    "build_mlp(norm_layer, in_features, hidden, depth, num_classes)", network_cases,
    build=_build_mlp_with, hint=PLACEMENT_HINT, needs_torch=True,
    mistakes=[
        knob_mistake("bias-before-norm", "Your Linear layers keep their bias in front of "
                     "the normalization layer. It subtracts the batch mean, which cancels "
                     "any constant the bias adds: those parameters can never learn anything.",
                     "Build the Linear before a norm_layer with bias=False (beta does the "
                     "bias's job).", bias_before_norm=True),
        knob_mistake("norm-after-activation", "You put the normalization after the sigmoid: "
                     "Linear -> Sigmoid -> norm. The paper normalizes what the sigmoid "
                     "receives, so that it starts in its steep middle part.",
                     "Linear -> norm_layer -> Sigmoid.", norm_after_activation=True),
        knob_mistake("norm-on-logits", "You also normalized the logits, after the last "
                     "Linear: the class scores then always have batch mean 0 and variance 1.",
                     "Only the hidden blocks get a norm_layer; the last Linear feeds the loss "
                     "directly.", norm_on_logits=True),
        knob_mistake("one-norm-layer-shared", "Every block uses the same normalization layer "
                     "object (e.g. `[norm_layer(hidden)] * depth`), so they share one gamma, "
                     "one beta and one set of running statistics.",
                     "Call norm_layer(hidden) once per block.", shared_norm=True),
        knob_mistake("no-bias-without-norm", "Without a norm_layer your Linear layers have no "
                     "bias: the network without BN loses the parameters it needs.",
                     "bias=False only where a norm_layer follows the Linear.",
                     bias_without_norm=False),
        knob_mistake("last-layer-without-bias", "With a norm_layer, your last Linear (to the "
                     "logits) has no bias. No normalization follows it, so nothing else can "
                     "shift the class scores.",
                     "Keep bias=True on the output layer.", last_bias=False),
        knob_mistake("relu-not-sigmoid", "You used ReLU; the paper's network (and this "
                     "notebook's experiment) uses sigmoids.", "nn.Sigmoid() in every block.",
                     activation="relu"),
        knob_mistake("one-block-too-many", "Your network has depth + 1 hidden blocks.",
                     "depth counts the hidden blocks; the output Linear comes after them.",
                     blocks=1),
        knob_mistake("one-block-too-few", "Your network has depth - 1 hidden blocks (did the "
                     "output layer count as one?).", "depth counts the hidden blocks; the "
                     "output Linear comes after them.", blocks=-1),
        Mistake("uses-builtin-batchnorm", "Your build_mlp builds PyTorch's BatchNorm1d itself "
                "instead of the norm_layer it is given.", "Call norm_layer(hidden): the "
                "experiment passes your own layer there."),
    ])

EXERCISES = [BUILD_MLP, STEPS_TO_REACH, PERCENTILE_TRACE]
