"""Grading at scale: a real Dask cluster gives the sequential scores, a killed run resumes,
a dying worker is retried once, hostile submissions stay contained, and the class report
counts the mistakes the checkers named.

Small on purpose (the whole course for many students is bench/bench_grading.py): the
one-exercise toy course of test_course.py, and the real notebook 01 for the report.
"""

import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from classroom import released_and_solved, submit
from test_course import TOY, cells_by_id, make_course, toy_source

from bn_course.instructor import grading, layout, ledger, release, report, sandbox

pytestmark = pytest.mark.slow
DASK = Path(sys.executable).parent / "dask"
TIMEOUT = 5  # seconds a cell may run
SQUARE = "def square(x):\n    return x * x\n"
CLASS = {  # student -> source of their `square` cell (None: the course's answer)
    "ada": None,
    "bob": "def square(x):\n    return x * x + 1",  # fails every test cell
    "cyd": "def square(x):\n    return x * abs(x)",  # passes the visible test only
    "dee": "raise NotImplementedError()",  # blank
    "eve": None,
    "fay": "def square(x):\n    return x ** 2",
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    the_course = make_course(tmp_path_factory.mktemp("course"), {TOY: toy_source()})
    release.build(the_course)
    return the_course


def write_class(folder, answers):
    """submitted/<student>/99_toy/99_toy.ipynb for each student's `square` cell."""
    submitted = folder / layout.SUBMITTED_DIR
    for student, source in answers.items():
        notebook = toy_source()
        if source is not None:
            cells_by_id(notebook)["square"].source = source
        (submitted / student / TOY).mkdir(parents=True)
        nbformat.write(notebook, str(submitted / student / TOY / f"{TOY}.ipynb"))
    return submitted


def cell_scores(course_dir, students):
    """{student: {grade cell: score}} from the gradebook of ``course_dir``."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        return {student: {grade.name: grade.score for grade in gradebook.find_submission_notebook(
            TOY, TOY, student).grades} for student in students}


@pytest.fixture(scope="module")
def sequential(toy, tmp_path_factory):
    """The class graded one notebook after another, in this process (--jobs 1)."""
    root = tmp_path_factory.mktemp("sequential")
    submitted = write_class(root / "class", CLASS)
    run = grading.grade(toy, submitted, course_dir=root / "graded", timeout=TIMEOUT, jobs=1)
    assert not [g for g in run.grades if g.problem]
    return cell_scores(root / "graded", CLASS)


def test_the_sequential_scores_are_the_expected_ones(sequential):
    total = {student: sum(scores.values()) for student, scores in sequential.items()}
    assert total == {"ada": 3, "bob": 0, "cyd": 1, "dee": 0, "eve": 3, "fay": 3}


# ---------------------------------------------------------------------------
# A real Dask cluster: `dask scheduler` and two `dask worker` processes

def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process):
    """Stop a process started in a session of its own, and everything it started."""
    if process.poll() is None:
        with _gone():
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with _gone():
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
    with _gone():  # children that outlived their parent
        os.killpg(process.pid, signal.SIGKILL)


def _gone():
    import contextlib

    return contextlib.suppress(ProcessLookupError)


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler on 127.0.0.1 and two single-threaded workers, killed with their
    children whatever happens."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    commands = [[str(DASK), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":")[-1],
                 "--no-dashboard"]]
    commands += [[str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1",
                  "--no-dashboard", "--name", f"worker{i}"] for i in (1, 2)]
    processes = []
    try:
        with open(tmp_path / "dask.log", "w") as log:
            for command in commands:
                processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True))
                time.sleep(0.5 if len(processes) == 1 else 0)
            with Client(address, timeout="60s") as client:
                client.wait_for_workers(2, timeout=120)
            yield address
    finally:
        for process in reversed(processes):
            stop(process)


def test_a_dask_cluster_gives_the_sequential_scores(toy, sequential, dask_cluster, tmp_path):
    submitted = write_class(tmp_path / "class", CLASS)
    run = grading.grade(toy, submitted, course_dir=tmp_path / "graded", timeout=TIMEOUT,
                        scheduler=dask_cluster)
    assert cell_scores(tmp_path / "graded", CLASS) == sequential
    assert not [g for g in run.grades if g.problem]

    # The course directory is nbgrader's: export and feedback work in it.
    env = {**os.environ, "PATH": os.pathsep.join([str(DASK.parent), os.environ["PATH"]])}
    for command in (["export", "--to", "grades.csv"], ["generate_feedback", TOY]):
        subprocess.run([sys.executable, "-m", "nbgrader", *command], cwd=tmp_path / "graded",
                       env=env, check=True, capture_output=True)
    exported = (tmp_path / "graded" / "grades.csv").read_text().splitlines()
    assert len(exported) == 1 + len(CLASS)
    assert (tmp_path / "graded" / "feedback" / "cyd" / TOY / f"{TOY}.html").is_file()


# ---------------------------------------------------------------------------
# Keeping the workers busy

def runs_until_it_exists(path):
    """A job that runs until the test creates the file ``path`` (30 s at most)."""
    deadline = time.monotonic() + 30
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return path


def test_the_pool_hands_back_a_finished_job_while_another_still_runs(tmp_path):
    """The grader records a finished job and hands out the next one at once, instead of
    waiting for every job in flight (the workers would idle meanwhile)."""
    from distributed import Client, LocalCluster

    from bn_course.instructor.cluster import DaskPool

    signal_file = str(tmp_path / "go")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as local, Client(local) as client:
        pool = DaskPool(client)
        pool.submit(runs_until_it_exists, signal_file)
        pool.submit(str.upper, "quick")
        try:
            assert list(pool.finished(wait=True)) == [("quick", "QUICK")]
            assert pool.in_flight == 1
        finally:
            Path(signal_file).touch()
        assert list(pool.finished(wait=True)) == [(signal_file, signal_file)]


def test_submissions_are_handed_out_longest_first():
    """Each assignment once to learn its time, then the longest first, the shortest last."""
    order = grading._LongestFirst([grading.Submission(student, assignment, Path(student))
                                   for student in ("s1", "s2", "s3") for assignment in "abc"])
    assert [order.pop().assignment for _ in range(3)] == ["a", "b", "c"]
    for assignment, seconds in {"a": 1.0, "b": 3.0, "c": 2.0}.items():
        order.learn(assignment, seconds)
    rest = []
    while order:
        rest.append(order.pop())
    assert [(s.student, s.assignment) for s in rest] == [
        ("s2", "b"), ("s3", "b"), ("s2", "c"), ("s3", "c"), ("s2", "a"), ("s3", "a")]


# ---------------------------------------------------------------------------
# Resuming, retrying

GRADE_IN_A_PROCESS = """
import sys
from bn_course.instructor import grading, layout
course, submitted, course_dir = sys.argv[1:]
grading.grade(layout.Course(layout.Path(course)), submitted, course_dir=course_dir, timeout=5)
"""


def test_a_run_killed_halfway_resumes_and_ends_as_a_clean_run(toy, sequential, tmp_path):
    submitted = write_class(tmp_path / "class", CLASS)
    course_dir = tmp_path / "graded"
    first = subprocess.Popen([sys.executable, "-c", GRADE_IN_A_PROCESS, str(toy.root),
                              str(submitted), str(course_dir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        records = course_dir / ledger.LEDGER
        deadline = time.monotonic() + 120
        while not (records.is_file() and len(records.read_text().splitlines()) >= 2):
            assert first.poll() is None, "the first run ended before it could be killed"
            assert time.monotonic() < deadline, "the first run recorded nothing in 120 s"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)  # as a crash or a reboot would
        first.wait(timeout=20)
    finally:
        stop(first)
    finished_before = len(ledger.Ledger(course_dir).records)
    assert 2 <= finished_before < len(CLASS)

    run = grading.grade(toy, submitted, course_dir=course_dir, timeout=TIMEOUT, jobs=1)
    assert run.resumed == finished_before
    assert cell_scores(course_dir, CLASS) == sequential
    assert not [g for g in run.grades if g.problem]


def test_a_changed_submission_is_graded_again_and_force_grades_all(toy, tmp_path):
    submitted = write_class(tmp_path / "class", {"ada": "def square(x):\n    return 0"})
    course_dir = tmp_path / "graded"
    assert grading.grade(toy, submitted, course_dir=course_dir, timeout=TIMEOUT).grades[0].score == 0
    assert grading.grade(toy, submitted, course_dir=course_dir, timeout=TIMEOUT).resumed == 1
    shutil.rmtree(submitted / "ada")
    write_class(tmp_path / "class", {"ada": None})  # ada hands in again
    run = grading.grade(toy, submitted, course_dir=course_dir, timeout=TIMEOUT)
    assert (run.resumed, run.grades[0].score) == (0, 3)
    assert grading.grade(toy, submitted, course_dir=course_dir, timeout=TIMEOUT,
                         force=True).resumed == 0


def test_a_dying_worker_is_retried_once_then_reported(toy, tmp_path, monkeypatch):
    real = sandbox.execute_job
    deaths = {"ada": 1, "bob": 2}  # ada's worker dies once, bob's every time

    def dies_sometimes(job):
        if deaths.get(job.student, 0) > 0:
            deaths[job.student] -= 1
            raise RuntimeError("worker killed")  # what a lost worker's future raises
        return real(job)

    monkeypatch.setattr(sandbox, "execute_job", dies_sometimes)
    submitted = write_class(tmp_path / "class", {"ada": None, "bob": None})
    run = grading.grade(toy, submitted, course_dir=tmp_path / "graded", timeout=TIMEOUT)
    grades = {g.student: g for g in run.grades}
    assert grades["ada"].score == 3 and grades["ada"].problem is None
    assert grades["bob"].problem == "its worker failed twice (RuntimeError: worker killed)"
    # Not the student's doing: the next run tries bob again.
    run = grading.grade(toy, submitted, course_dir=tmp_path / "graded", timeout=TIMEOUT)
    assert run.resumed == 1 and {g.student: g.score for g in run.grades} == {"ada": 3, "bob": 3}


# ---------------------------------------------------------------------------
# Hostile submissions: each contained, no other grade changes

MARK = "3600.4242"  # the fork bomb's children sleep this long: found by it afterwards


def hostile_class(course_dir, submitted):
    """Each defines a correct `square`, then attacks."""
    attacks = {
        "h_memory": "import numpy\nhog = numpy.ones(20 * 2**30 // 8)",
        "h_fork_bomb": ("import os\nfor _ in range(40):  # bounded: the test machine survives\n"
                        "    if os.fork() == 0:\n"
                        # Leaving the process group: only a PID namespace catches those.
                        f"        {'os.setsid()' if sandbox.namespace_flags() else 'pass'}\n"
                        f"        os.execvp('sleep', ['sleep', '{MARK}'])"),
        "h_sleeper": ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                      "while True:\n    time.sleep(1)"),
        "h_slow": ("import time\n\ndef square(x):\n    time.sleep(4)  # each call within the "
                   "cell timeout\n    return x * x"),
        "h_deleter": ("import os, shutil\nfor path in (os.getcwd(), os.path.expanduser('~'), "
                      "'..'):\n    shutil.rmtree(path, ignore_errors=True)"),
        "h_exit": "import os\nos._exit(0)",
        # What killed notebook 10's kernel for real: `import torch` after the folder is gone.
        "h_deleted_then_died": ("import os, shutil\nshutil.rmtree(os.getcwd())\n"
                                "os._exit(2)"),
    }
    if sandbox.namespace_flags():  # what only a mount namespace contains
        attacks["h_escaper"] = (
            "import pathlib, shutil\n"
            f"for path in ({str(course_dir / 'gradebook.db')!r}, '../escaped.txt'):\n"
            "    try:\n        pathlib.Path(path).write_text('overwritten')\n"
            "    except OSError:\n        pass\n"
            f"shutil.rmtree({str(submitted)!r}, ignore_errors=True)")
    return {student: SQUARE + attack for student, attack in attacks.items()}


def test_hostile_submissions_are_contained_and_change_no_other_grade(toy, sequential, tmp_path):
    course_dir = tmp_path / "graded"
    submitted = tmp_path / "class" / layout.SUBMITTED_DIR
    hostile = hostile_class(course_dir, submitted)
    write_class(tmp_path / "class", {**CLASS, **hostile})
    before = {path: path.read_bytes() for path in submitted.rglob("*.ipynb")}
    limits = sandbox.Limits(memory_bytes=2 * sandbox.GIB, wall_seconds=10)
    run = grading.grade(toy, submitted, course_dir=course_dir, timeout=TIMEOUT, jobs=2,
                        limits=limits)

    grades = {g.student: g for g in run.grades}
    assert cell_scores(course_dir, CLASS) == sequential  # every other grade as before
    assert {path: path.read_bytes() for path in submitted.rglob("*.ipynb")} == before
    for student in ("h_memory", "h_fork_bomb", "h_deleter", "h_escaper"):
        if student in hostile:  # their correct answer earns its points all the same
            assert (grades[student].score, grades[student].problem) == (3, None), student
    assert "ignored the interrupt" in grades["h_sleeper"].problem
    assert "wall-time cap of 10 s" in grades["h_slow"].problem  # 3 calls of 4 s
    assert "the kernel died" in grades["h_exit"].problem
    assert "deleted its own folder" in grades["h_deleted_then_died"].problem
    assert "deleted its own folder" not in grades["h_exit"].problem
    survivors = subprocess.run(["pgrep", "-f", f"sleep {MARK}"], capture_output=True, text=True,
                               check=False)
    assert survivors.stdout == "", "the fork bomb's children outlived the grading"


def live_children():
    """The pids of this test process's live child processes (Linux)."""
    found = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
            found |= set(f.read().split())
    return {pid for pid in found if Path(f"/proc/{pid}").exists()
            and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"}  # Z: zombie


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_local_cluster_leaves_no_process_behind(toy, tmp_path):
    """Its workers, the forkserver they were forked from and multiprocessing's resource
    tracker are gone when grading ends."""
    before = live_children()
    submitted = write_class(tmp_path / "class", CLASS)
    run = grading.grade(toy, submitted, course_dir=tmp_path / "graded", timeout=TIMEOUT, jobs=2)
    assert all(g.problem is None for g in run.grades)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
            for pid in live_children() - before}
    assert left == {}


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no-namespaces"])
def test_the_kernel_sees_no_secret_of_the_grader(toy, tmp_path, monkeypatch, namespaces):
    """With the namespaces, and without them (where the OS refuses them)."""
    if namespaces and not sandbox.namespace_flags():
        pytest.skip("this machine gives no namespaces")
    if not namespaces:
        monkeypatch.setattr(sandbox, "namespace_flags", lambda: None)
    monkeypatch.setenv("BN_COURSE_TEST_TOKEN", "hunter2")
    answer = SQUARE + "import os\nprint(sorted(os.environ), os.environ.get('BN_COURSE_TEST_TOKEN'))"
    submitted = write_class(tmp_path / "class", {"ada": answer})
    run = grading.grade(toy, submitted, course_dir=tmp_path / "graded", timeout=TIMEOUT)
    assert (run.grades[0].score, run.grades[0].problem) == (3, None)
    autograded = nbformat.read(str(tmp_path / "graded" / "autograded" / "ada" / TOY
                                   / f"{TOY}.ipynb"), as_version=4)
    printed = "".join(output.get("text", "") for output in cells_by_id(autograded)["square"].outputs)
    assert "'HOME'" in printed  # the cell did print the environment's names
    assert "hunter2" not in printed and "BN_COURSE_TEST_TOKEN" not in printed


# ---------------------------------------------------------------------------
# The class report, on notebook 01 with a known mix of catalogued mistakes

REPORT_ASSIGNMENT = "01_batch_statistics"
MISTAKES = {  # exercise -> (answer with a catalogued mistake, its catalogue id)
    "batch_mean": ("def batch_mean(x):\n    return x.mean(axis=1)", "axis-0-vs-1"),
    "batch_var": ("def batch_var(x):\n    return x.var(axis=0, ddof=1)", "unbiased-variance"),
}
# The course's batch_var calls batch_mean: this one does not, so that each mistake shows
# in its own exercise only.
SELF_CONTAINED_BATCH_VAR = "def batch_var(x):\n    return x.var(axis=0)"
REPORT_CLASS = {  # student -> the exercises they got wrong with the catalogued mistake
    "s1": [], "s2": [], "s3": ["batch_var"], "s4": ["batch_var"], "s5": ["batch_mean"],
    "s6": ["batch_mean", "batch_var"], "s7": "blank",
}


def test_the_class_report_counts_the_simulated_mix_exactly(tmp_path):
    from bn_course.checks import EXERCISES

    for exercise, (_, mistake_id) in MISTAKES.items():  # the ids are the catalogue's
        assert EXERCISES[exercise].mistake(mistake_id).id == mistake_id
    real = layout.find_course()
    released, solved = released_and_solved(real, tmp_path / "release", [REPORT_ASSIGNMENT])
    released, solved = released[REPORT_ASSIGNMENT], solved[REPORT_ASSIGNMENT]
    submitted = tmp_path / "class" / layout.SUBMITTED_DIR
    notebooks = {}
    for student, wrong in REPORT_CLASS.items():
        notebook = released if wrong == "blank" else copy.deepcopy(solved)
        if wrong != "blank":
            cells_by_id(notebook)["batch_var"].source = SELF_CONTAINED_BATCH_VAR
        for exercise in [] if wrong == "blank" else wrong:
            cells_by_id(notebook)[exercise].source = MISTAKES[exercise][0]
        notebooks[student] = {REPORT_ASSIGNMENT: notebook}
    submit(submitted, notebooks)

    run = grading.grade(real, submitted, course_dir=tmp_path / "graded", jobs=2)
    summaries = {s.exercise: s for s in run.report}
    for exercise, (_, mistake_id) in MISTAKES.items():
        wrong = sorted(s for s, w in REPORT_CLASS.items() if w != "blank" and exercise in w)
        summary = summaries[exercise]
        assert (summary.graded, summary.passed) == (len(REPORT_CLASS),
                                                     len(REPORT_CLASS) - len(wrong) - 1), summary
        assert [(f.kind, f.name, list(f.students)) for f in summary.findings] == [
            ("mistake", mistake_id, wrong)]

    report.write_report_csv(run.report, tmp_path / "report.csv")
    rows = (tmp_path / "report.csv").read_text().splitlines()
    assert rows[0].split(",") == report.CSV_FIELDS
    assert f"{REPORT_ASSIGNMENT},batch_var,7,3,0.429,mistake,unbiased-variance,3,s3 s4 s6" in rows
    report.write_report_html(run.report, tmp_path / "report.html")
    assert "unbiased-variance" in (tmp_path / "report.html").read_text()
