"""Grading at scale, measured: `bn-course grade` on a simulated class, the whole course.

    python bench/bench_grading.py [--students 4] [--jobs 2] [--keep DIR] [ASSIGNMENT ...]

(default: every assignment that has a release in notebooks/)

Students take turns being solved (the course's answers pasted into the release),
blank (the release as handed out), one catalogued mistake per notebook (where this
script knows one), and hostile (the answers, plus a cell that allocates 20 GB, forks
and deletes its folder). Prints:

1. where a graded notebook's time goes, executing each solved notebook plainly
   (nbclient, a fresh kernel, NBGRADER_EXECUTION set as under grading);
2. grading overhead: grading the solved student alone vs executing the same
   notebooks plainly (target <= 1.2x);
3. the class graded with --jobs 1 and with --jobs N: wall times, speed-up (target
   >= 1.7x with N = 2 on 2 cores), the same scores either way, seconds per student
   per notebook, and the grader's own serial work. The speed-up is given for grading
   itself and for the whole command: a local cluster starts while the course
   directory is set up, so part of its start counts only in the second;
4. a projection for 1,000 students: cores needed to finish within one hour.

On a machine shared with other work the speed-up says more about the neighbours than
about the grader: the share of time the workers spent executing is printed beside it.

Exits 1 when the two runs disagree on a score.
"""

import argparse
import copy
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from bn_course.instructor import grading, layout, release

# One catalogued mistake per notebook, as a student would write it (exercise: source).
MISTAKES = {
    "01_batch_statistics": {"batch_var": "def batch_var(x):\n    return x.var(axis=0, ddof=1)"},
    "02_normalizing": {"normalize": "def normalize(x, mean, var, eps=1e-5):\n"
                                    "    return (x - mean) / (np.sqrt(var) + eps)"},
    "03_scale_and_shift": {
        "batchnorm_forward": "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
                             "    x_hat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)\n"
                             "    return beta * x_hat + gamma"},
    "04_train_vs_eval": {"keras_to_torch_momentum": "def keras_to_torch_momentum(m):\n"
                                                    "    return m"},
}
HOSTILE = ("\nimport os, shutil\nimport numpy\ntry:\n    hog = numpy.ones(20 * 2**30 // 8)\n"
           "except MemoryError:\n    pass\nfor _ in range(20):\n    if os.fork() == 0:\n"
           "        os.execvp('sleep', ['sleep', '3600'])\n"
           "shutil.rmtree(os.getcwd(), ignore_errors=True)\n")
KINDS = ["solved", "blank", "mistake", "hostile"]
CLASS_SIZE = 1000
HOUR = 3600


def released_course(real, root, names):
    """The release of these assignments, generated afresh, and the same with the answers."""
    release.copy_course(real, root)
    release.generate(real, root, names)
    releases = {a: nbformat.read(str(layout.Course(root).release_notebook(a)), 4) for a in names}
    solved = {a: release.with_solutions(releases[a], nbformat.read(
        str(real.source_notebook(a)), 4)) for a in names}
    return releases, solved


def submission(kind, assignment, releases, solved):
    if kind == "blank":
        return releases[assignment]
    notebook = copy.deepcopy(solved[assignment])
    edits = {"mistake": MISTAKES.get(assignment, {}), "hostile": {}}.get(kind, {})
    solutions = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("solution")
                 and c.cell_type == "code"]
    if kind == "hostile":
        solutions[0].source += HOSTILE
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in edits:
            cell.source = edits[grade_id]
    return notebook


def write_class(folder, students, releases, solved):
    for index, kind in enumerate(students):
        for assignment in releases:
            path = folder / layout.SUBMITTED_DIR / f"s{index + 1:02d}_{kind}" / assignment
            path.mkdir(parents=True)
            nbformat.write(submission(kind, assignment, releases, solved),
                           str(path / f"{assignment}.ipynb"))
    return folder / layout.SUBMITTED_DIR


# ---------------------------------------------------------------------------
# 1. Where a notebook's time goes

def breakdown(notebook, cwd):
    """Seconds: kernel start, setup (cells before the first exercise), exercises and
    their checks, graded test cells, the rest (demos, figures, text)."""
    import nbclient
    from jupyter_client.manager import KernelManager

    # IPC sockets, as under grading: no TCP port to race other kernels for.
    manager = KernelManager(transport="ipc", ip=str(Path(cwd) / ".bench-kernel"))
    client = nbclient.NotebookClient(notebook, km=manager, timeout=600,
                                     resources={"metadata": {"path": str(cwd)}})
    start = time.time()
    try:
        client.execute(env={**os.environ, "NBGRADER_EXECUTION": "autograde"}, cwd=str(cwd),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        # nbclient leaves a kernel manager it was given running; stop the kernel at once,
        # as grading's sandbox does (a run ends with its kernel gone).
        manager.shutdown_kernel(now=True)
    total = time.time() - start
    parts = {"kernel start": 0.0, "setup": 0.0, "exercises": 0.0, "tests": 0.0, "rest": 0.0}
    first = None
    seen_exercise = False
    for cell in notebook.cells:
        timing = cell.metadata.get("execution", {})
        if "iopub.status.busy" not in timing:
            continue
        busy, idle = (_seconds(timing[k]) for k in ("iopub.status.busy", "iopub.status.idle"))
        first = busy if first is None else first
        meta = cell.metadata.get("nbgrader", {})
        seen_exercise = seen_exercise or meta.get("solution", False)
        if meta.get("grade") and not meta.get("solution"):
            part = "tests"
        elif meta.get("solution") or meta.get("grade_id", "").startswith("check_"):
            part = "exercises"
        else:
            part = "rest" if seen_exercise else "setup"
        parts[part] += idle - busy
    parts["kernel start"] = first - start if first else 0.0
    return total, parts


def _seconds(stamp):
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------

def cell_scores(course_dir, grades):
    from nbgrader.api import Gradebook

    scores = {}
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        for g in grades:
            if g.problem is None:
                for cell in gradebook.find_submission_notebook(
                        g.notebook, g.assignment, g.student).grades:
                    scores[g.student, g.notebook, cell.name] = cell.score
            else:
                scores[g.student, g.notebook] = g.problem
    return scores


def timed_grade(real, submitted, course_dir, jobs):
    start = time.perf_counter()
    run = grading.grade(real, submitted, course_dir=course_dir, jobs=jobs, progress=True)
    return run, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=4, help="class size (default 4)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", type=Path, help="leave the course directories here")
    parser.add_argument("assignments", nargs="*", metavar="ASSIGNMENT")
    args = parser.parse_args()
    real = layout.find_course()
    names = args.assignments or [a for a in real.assignments()
                                 if real.release_notebook(a).is_file()]
    students = [KINDS[i % len(KINDS)] for i in range(args.students)]
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; class: "
          f"{', '.join(students)}")

    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        work = args.keep or Path(tmp)
        releases, solved = released_course(real, work / "release", real.select(names))
        notebooks = list(releases)
        print("\n1. Where a graded notebook's time goes (solved, executed plainly), s")
        header = ["notebook", "total", "kernel start", "setup", "exercises", "tests", "rest"]
        print("  ".join(f"{h:>12}" for h in header))
        plain = 0.0
        for assignment in notebooks:
            total, parts = breakdown(copy.deepcopy(solved[assignment]),
                                     work / "release" / layout.RELEASE_DIR / assignment)
            plain += total
            print(f"{assignment[:12]:>12}  {total:12.2f}  "
                  + "  ".join(f"{parts[h]:12.2f}" for h in header[2:]))

        print("\n2. Grading overhead: the solved student alone, graded vs executed plainly")
        alone = write_class(work / "alone", ["solved"], releases, solved)
        run, _ = timed_grade(real, alone, work / "alone-graded", 1)
        print(f"   graded {run.seconds:.1f} s (the grader's own work {run.grader_seconds:.1f} s) "
              f"vs plainly {plain:.1f} s: {run.seconds / plain:.2f}x (target <= 1.2x)")
        grader_alone = run.grader_seconds / len(notebooks)  # with a core to itself, mostly

        print(f"\n3. The class of {args.students}, {len(notebooks)} notebooks each")
        submitted = write_class(work / "class", students, releases, solved)
        sequential, seq_wall = timed_grade(real, submitted, work / "sequential", 1)
        parallel, par_wall = timed_grade(real, submitted, work / f"jobs{args.jobs}", args.jobs)
        same = (cell_scores(work / "sequential", sequential.grades)
                == cell_scores(work / f"jobs{args.jobs}", parallel.grades))
        count = args.students * len(notebooks)
        speedup = sequential.seconds / parallel.seconds
        print(grading.format_table(parallel.grades))
        print(f"   --jobs 1: {sequential.seconds:6.1f} s grading ({seq_wall:.1f} s with setup), "
              f"{sequential.seconds / count:.2f} s per student per notebook")
        print(f"   --jobs {args.jobs}: {parallel.seconds:6.1f} s grading ({par_wall:.1f} s with "
              f"setup), {parallel.seconds / count:.2f} s per student per notebook")
        busy = parallel.worker_seconds / (parallel.seconds * args.jobs)
        print(f"   speed-up {speedup:.2f}x on {args.jobs} workers (target >= 1.7x), "
              f"{seq_wall / par_wall:.2f}x with setup; same scores: {'yes' if same else 'NO'}; "
              f"load average now {os.getloadavg()[0]:.1f}")
        print(f"   the workers were executing {busy:.0%} of the time (the rest: waiting for the "
              f"cluster or the grader, the last jobs); a notebook took "
              f"{sequential.worker_seconds / count:.2f} s to execute alone, "
              f"{parallel.worker_seconds / count:.2f} s beside another")
        grader_share = parallel.grader_seconds / count
        print(f"   the grader's own serial work: {grader_share:.3f} s per notebook beside the "
              f"workers, {grader_alone:.3f} s with no workers beside it (2.)")

        print(f"\n4. Projection: {CLASS_SIZE} students x {len(notebooks)} notebooks, each worker "
              f"on a core of its own, as busy as measured above ({busy:.0%})")
        per_student = sequential.seconds / args.students  # one core, one student
        print(f"   {per_student:.1f} core-seconds per student (the --jobs 1 run)")
        print(f"   {'cores':>6}  {'hours':>6}")
        for cores in (1, 8, 16, 32, 64, 128):
            print(f"   {cores:>6}  {CLASS_SIZE * per_student / (cores * busy) / HOUR:6.2f}")
        needed = math.ceil(CLASS_SIZE * per_student / HOUR / busy)
        print(f"   cores for one hour: {needed}; the grader (serial) caps a run at "
              f"{HOUR / grader_alone:,.0f} notebooks an hour on a core of its own, "
              f"{HOUR / grader_share:,.0f} sharing this machine's cores with its workers "
              f"({CLASS_SIZE * len(notebooks):,} needed)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
