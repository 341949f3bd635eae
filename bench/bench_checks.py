"""Time the checkers: `check(name, candidate)` per exercise, and print a table.

    python bench/bench_checks.py [--repeats 9]

Three candidates per exercise:

* correct: the course's own answer, compiled from its source under another file name
  (the checker fails a candidate that calls into bn_course.reference, by file name);
* diagnosed: the last catalogued mistake of the exercise that is recognised from its
  outputs, so the diagnosis plays every variant listed before it;
* unrecognised: the correct answer with every output scaled by 1.5, which matches no
  variant, so every variant of the exercise is played (the slowest path).

"first" is the first call in this process (it builds the hidden cases and plays the
reference and the variants, which are then memoized); "median" is the median of
--repeats further calls, what a student sees on re-running a self-check cell. The
budget for a self-check of a correct answer is 0.1 s for a NumPy exercise and 0.3 s
for the torch module, on 2 cores.

torch is not imported up front: notebooks 01-05 run without it, so the NumPy rows are
timed as a student's kernel sees them. BatchNorm2d, a torch module, comes last.
"""

import argparse
import importlib
import inspect
import statistics
import time
import types

from bn_course.checks import EXERCISES, check
from bn_course.checks._core import DETECTED, CandidateProblem

BUDGET_S = {"numpy": 0.1, "module": 0.3}  # a correct answer's self-check, median
SCALE = 1.5


def unflagged_copy(module_name):
    """A module's code compiled under another file name, outside bn_course/reference/ and
    torch's folder, so that the checker does not flag it as a call to a ready answer."""
    module = importlib.import_module(module_name)
    copy = types.ModuleType("bench_copy")
    code = compile(inspect.getsource(module), "<bench copy of the course's answers>", "exec")
    exec(code, copy.__dict__)  # noqa: S102 -- the course's own source
    return copy


def correct_answer(name):
    """The course's answer, from an unflagged copy of the module that defines it."""
    for module in ("bn_course.reference.numpy", "bn_course.reference.torch"):
        if hasattr(importlib.import_module(module), name):
            return getattr(unflagged_copy(module), name)
    reference = EXERCISES[name].reference  # an answer key, e.g. diagnose_bn_bug's
    return getattr(unflagged_copy(reference.__module__), reference.__name__)


def scaled(value):
    if isinstance(value, (tuple, list)):
        return tuple(scaled(v) for v in value)
    return value * SCALE


def unrecognised(answer):
    """The answer with every output scaled: wrong, and no catalogued mistake."""
    if not isinstance(answer, type):
        return lambda *args, **kwargs: scaled(answer(*args, **kwargs))
    if hasattr(answer, "forward"):  # a torch module
        forward = answer.forward
        return type("Scaled", (answer,), {"forward": lambda self, x: scaled(forward(self, x))})
    return type("Scaled", (answer,), {"__call__": lambda self, x: scaled(answer.__call__(self, x))})


def diagnosed(name):
    """The last catalogued mistake of the exercise that is matched by its outputs
    (not one that a case names before comparing anything)."""
    exercise = EXERCISES[name]
    first_case = exercise.cases("basic")[0]
    for mistake in reversed(exercise.mistakes):
        if mistake.id in DETECTED or (mistake.variant is None and not mistake.knobs):
            continue
        try:
            first_case.play(exercise.implementation_of(mistake))
        except CandidateProblem:
            continue
        return mistake
    raise LookupError(f"no matched mistake for {name}")


def timed(name, candidate, expect_mistake=None, expect_pass=False):
    start = time.perf_counter()
    result = check(name, candidate)
    elapsed = time.perf_counter() - start
    if result.passed != expect_pass or (expect_mistake and result.mistake != expect_mistake):
        raise RuntimeError(f"unexpected verdict for {name}: {result}")
    return elapsed, result


def first_and_median(name, candidate, repeats, **expect):
    first, _ = timed(name, candidate, **expect)
    rest = [timed(name, candidate, **expect)[0] for _ in range(repeats)]
    return first, statistics.median(rest)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    header = (f"{'exercise':<28}{'correct':>17}{'diagnosed':>17}{'unrecognised':>17}"
              f"   diagnosed mistake")
    print("seconds per check(), first call / median of the next "
          f"{args.repeats} (budget for a correct answer: {BUDGET_S['numpy']} s, "
          f"{BUDGET_S['module']} s for a torch module)")
    print(header)
    print("-" * len(header))
    over_budget = []
    for name in EXERCISES:
        answer = correct_answer(name)
        good = first_and_median(name, answer, args.repeats, expect_pass=True)
        mistake = diagnosed(name)
        bad = first_and_median(name, EXERCISES[name].implementation_of(mistake), args.repeats,
                               expect_mistake=mistake.id)
        timings = [good, bad]
        if name != "diagnose_bn_bug":  # every wrong diagnosis is a catalogued one
            timings.append(first_and_median(name, unrecognised(answer), args.repeats))
        cells = "".join(f"{first:>8.3f} /{median:>6.3f}" for first, median in timings)
        print(f"{name:<28}{cells}   {mistake.id}")
        if good[1] > BUDGET_S["module" if EXERCISES[name].needs_torch else "numpy"]:
            over_budget.append(name)
    print(f"\ncorrect answers over their budget (median): {over_budget or 'none'}")


if __name__ == "__main__":
    main()
