"""How well the checkers name mistakes: play every mutant of the mutation suites
(tests/test_mutants_nbNN.py) and every correct answer of tests/test_checks.py, and
print a tally per notebook.

    python bench/bench_diagnosis.py

A mutant is *named* when the checker gives its catalogue id (both ids for two mistakes
at once), *observed* when it expects a probe's observation and gets it, *wrong* when
the checker names something else, *unnamed* when it only reports numbers, and a
*false accept* when it passes. A correct answer that fails is a *false reject*.
"""

import collections
import importlib
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def outcome(result, expected):
    if result.passed:
        return "false accept"
    if expected.startswith("observation:"):
        return "observed" if result.observation == expected.split(":", 1)[1] else (
            "wrong" if result.mistake else "unnamed")
    if result.mistake == expected:
        return "named"
    return "wrong" if result.mistake else ("observed" if result.observation else "unnamed")


def main():
    sys.path.insert(0, str(TESTS))
    from bn_course.checks import check

    tally = collections.defaultdict(collections.Counter)
    problems = []
    for path in sorted(TESTS.glob("test_mutants_nb*.py")):
        notebook = path.stem[-2:]
        for exercise, expected, implementation in importlib.import_module(path.stem).MUTANTS:
            kind = outcome(check(exercise, implementation), expected)
            tally[notebook][kind] += 1
            if kind in ("false accept", "wrong", "unnamed"):
                problems.append(f"  nb{notebook} {exercise} {implementation.__name__}: {kind} "
                                f"(expected {expected})")
    correct = importlib.import_module("test_checks").CORRECT
    rejects = [f"  {name} {impl.__name__}" for name, impl in correct
               if not check(name, impl).passed]

    kinds = ["named", "observed", "unnamed", "wrong", "false accept"]
    print(f"{'notebook':<10}{'mutants':>8}" + "".join(f"{k:>14}" for k in kinds))
    total = collections.Counter()
    for notebook, counts in sorted(tally.items()):
        total.update(counts)
        print(f"{notebook:<10}{sum(counts.values()):>8}" + "".join(f"{counts[k]:>14}" for k in kinds))
    n = sum(total.values())
    print(f"{'all':<10}{n:>8}" + "".join(f"{total[k]:>14}" for k in kinds))
    print(f"\nnamed or observed: {(total['named'] + total['observed']) / max(n, 1):.1%} of {n}")
    print(f"correct answers: {len(correct)}, false rejects: {len(rejects)}")
    for line in problems + rejects:
        print(line)


if __name__ == "__main__":
    main()
