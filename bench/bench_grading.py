"""Time `bn-course grade` on a class: 20 students' submissions of notebooks 01-04.

    python bench/bench_grading.py [--students 20] [--seed 0] [--keep DIR]

Each student's notebook is the release with the course's answers pasted in
(most students), the blank release, or the answers with one catalogued mistake
in one exercise. Prints the wall time of the whole grading (one nbgrader
autograde, so one fresh kernel, per notebook), the time per notebook, and the
score table that `bn-course grade` prints.
"""

import argparse
import copy
import random
import tempfile
import time
from pathlib import Path

import nbformat

from bn_course import course

ASSIGNMENTS = ["01_batch_statistics", "02_normalizing", "03_scale_and_shift", "04_train_vs_eval"]

# One catalogued mistake per exercise, as a student would write it.
MISTAKES = {
    "01_batch_statistics": {
        "batch_mean": "def batch_mean(x):\n    return x.mean(axis=1)",
        "batch_var": "def batch_var(x):\n    return x.var(axis=0, ddof=1)",
    },
    "02_normalizing": {
        "normalize": "def normalize(x, mean, var, eps=1e-5):\n"
                     "    return (x - mean) / (np.sqrt(var) + eps)",
    },
    "03_scale_and_shift": {
        "batchnorm_forward": "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
                             "    x_hat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)\n"
                             "    return beta * x_hat + gamma",
    },
    "04_train_vs_eval": {
        "keras_to_torch_momentum": "def keras_to_torch_momentum(m):\n    return m",
    },
}


def submission(kind, release, solved, assignment, rng):
    if kind == "blank":
        return release
    if kind == "solved":
        return solved
    exercise, source = rng.choice(sorted(MISTAKES[assignment].items()))
    notebook = copy.deepcopy(solved)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == exercise:
            cell.source = source
    return notebook


def write_class(real, root, submitted, students, rng):
    course.copy_course(real, root)
    course.generate(real, root, ASSIGNMENTS)
    for assignment in ASSIGNMENTS:
        release = nbformat.read(str(course.Course(root).release_notebook(assignment)), 4)
        solved = course.with_solutions(
            release, nbformat.read(str(real.source_notebook(assignment)), 4))
        for student in range(1, students + 1):
            kind = rng.choices(["solved", "blank", "mistake"], weights=[6, 1, 3])[0]
            folder = submitted / f"student{student:02d}" / assignment
            folder.mkdir(parents=True)
            nbformat.write(submission(kind, release, solved, assignment, rng),
                           str(folder / f"{assignment}.ipynb"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="grade in this course directory and keep it")
    args = parser.parse_args()

    real = course.find_course()
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        submitted = Path(tmp) / "class" / course.SUBMITTED_DIR
        write_class(real, Path(tmp) / "release", submitted, args.students,
                    random.Random(args.seed))
        start = time.perf_counter()
        grades, notices = course.grade(real, submitted, course_dir=args.keep, progress=True)
        seconds = time.perf_counter() - start
    for notice in notices:
        print(f"note: {notice}")
    print(course.format_table(grades))
    count = args.students * len(ASSIGNMENTS)
    print(f"\ngraded {args.students} students x {len(ASSIGNMENTS)} notebooks in {seconds:.0f} s "
          f"({seconds / count:.1f} s per notebook)")


if __name__ == "__main__":
    main()
