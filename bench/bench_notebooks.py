"""Wall time of every solution notebook, headless, one fresh kernel each (start-up
included), against the course's time budgets (COURSE.md):

    python bench/bench_notebooks.py [--repeat N]

Prints the median of N runs per notebook and the sums per budget group; exits 1 if a
notebook fails to run. Times on a busy machine are inflated: the load average is shown.
"""

import argparse
import os
import statistics
import sys

from bn_course.instructor.layout import find_course
from bn_course.instructor.release import run_solutions

BUDGETS = [  # (notebooks, seconds) from COURSE.md
    (("01_batch_statistics", "02_normalizing", "03_scale_and_shift", "04_train_vs_eval"), 20),
    (("05_backward", "06_pytorch_module"), 15),
    (("07_training_comparisons",), 35),
    (("08_beyond",), 20),
    (("09_in_practice",), 15),
    (("10_across_devices",), 20),
]
ALL_TEN = 60  # COURSE.md: "all ten together <= 60 s" (and the whole course <= 90 s)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per notebook (median)")
    args = parser.parse_args()
    course = find_course()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    seconds, failed = {}, False
    for _ in range(args.repeat):
        for result in run_solutions(course):
            seconds.setdefault(result.assignment, []).append(result.seconds)
            if result.error:
                failed = True
                print(f"{result.assignment}: FAILED ({result.error})")
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    for name, median in medians.items():
        print(f"{name:28s} {median:6.1f} s")
    for names, budget in BUDGETS:
        total = sum(medians.get(name, 0.0) for name in names)
        verdict = "within" if total <= budget else "OVER"
        print(f"{' + '.join(n[:2] for n in names):16s} {total:6.1f} s  ({verdict} {budget} s)")
    total = sum(medians.values())
    verdict = "within" if total <= ALL_TEN else "OVER"
    print(f"{'whole course':16s} {total:6.1f} s  ({verdict} {ALL_TEN} s, all ten together)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
