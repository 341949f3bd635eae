"""``bn-course grade``: autograde a class into one nbgrader course directory, on any number
of workers.

nbgrader's ``autograde`` does three things per submission: it *sanitizes* the
notebook against the gradebook (nbgrader's ``sanitize_preprocessors``), *executes* it
(``Execute`` and the steps after it that need no gradebook) and *records* the
scores (``SaveAutoGrades`` and after). Here one process, the grader, sanitizes and
records, so that only it ever writes the gradebook (SQLite); the execution, which
takes nearly all the time, goes to workers (``cluster``) and runs contained
(``sandbox``). The course directory that results is the one `nbgrader autograde`
leaves: `nbgrader generate_feedback`, `nbgrader export` and the formgrader work in it.

Each finished submission goes into the ledger at once (``ledger``): running the same
command again grades only what is missing or changed.
"""

import collections
import contextlib
import csv
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.converters import Autograde
from nbgrader.converters.base import BaseConverter
from nbgrader.preprocessors import SaveAutoGrades
from traitlets.utils.importstring import import_item

from bn_course.instructor import report, sandbox
from bn_course.instructor.cluster import start_pool
from bn_course.instructor.layout import (
    AUTOGRADED_DIR,
    NBGRADER_CONFIG,
    SUBMITTED_DIR,
    Course,
    CourseError,
)
from bn_course.instructor.ledger import Ledger, checksum, fingerprint
from bn_course.instructor.preprocessors import grade_ids
from bn_course.instructor.release import copy_course, generate
from bn_course.instructor.runner import (
    failure_summary,
    nbgrader_config,
    nbgrader_environment,
    progress_bar,
    run_converter,
)


@dataclass(frozen=True)
class Submission:
    student: str
    assignment: str
    folder: Path


@dataclass(frozen=True)
class NotebookGrade:
    """One student's score on one notebook; ``problem`` says why there is none."""

    student: str
    assignment: str
    notebook: str
    score: float | None
    max_score: float | None
    needs_manual_grade: bool
    problem: str | None = None


@dataclass
class GradingRun:
    """What ``grade`` did: the grades, notes for the instructor, the class report."""

    grades: list
    notices: list
    report: list = field(default_factory=list)
    course_dir: Path | None = None
    resumed: int = 0  # submissions already graded by an earlier run, left as they were
    seconds: float = 0.0  # grading itself, the course directory's setup aside
    grader_seconds: float = 0.0  # of which the grader's own work (sanitize, record): serial
    worker_seconds: float = 0.0  # the workers' executing, summed over the workers


class SanitizeSubmission(Autograde):
    """nbgrader's autograde up to execution: the student, the submission and its
    timestamp in the gradebook, the course's files and cells put back; the
    sanitized notebook is left in autograded/ for a worker to execute."""

    def convert_single_notebook(self, notebook_filename):
        self._sanitizing = True
        self._init_preprocessors()
        BaseConverter.convert_single_notebook(self, notebook_filename)


# ---------------------------------------------------------------------------
# Finding the submissions

def find_submissions(path):
    """The submissions in nbgrader's ``submitted/<student>/<assignment>/`` layout.

    ``path`` is the submitted/ folder itself or a course folder that contains it.
    """
    submitted = submitted_folder(path)
    submissions = [Submission(student.name, assignment.name, assignment)
                   for student in _subfolders(submitted)
                   for assignment in _subfolders(student)]
    if not submissions:
        raise CourseError(
            f"no submissions in {submitted}: expected nbgrader's layout, "
            f"{SUBMITTED_DIR}/<student>/<assignment>/<notebook>.ipynb")
    return submissions


def submitted_folder(path):
    path = Path(path)
    if not path.is_dir():
        raise CourseError(f"no such folder: {path}")
    return path / SUBMITTED_DIR if (path / SUBMITTED_DIR).is_dir() else path


def _subfolders(path):
    return sorted(entry for entry in path.iterdir()
                  if entry.is_dir() and not entry.name.startswith((".", "__")))


def _inspect_submission(submission, release, release_ids):
    """(problem, notice) about a submission before grading it: a problem skips it.
    ``release_ids``: the grade_ids of the release notebook at path ``release``."""
    import nbformat

    notebook = submission.folder / release.name
    if not notebook.is_file():
        found = ", ".join(sorted(p.name for p in submission.folder.glob("*.ipynb"))) or "none"
        return f"no {release.name} in the submission (notebooks found: {found})", None
    try:
        submitted = nbformat.read(str(notebook), as_version=4)
    except Exception as exc:  # noqa: BLE001 -- nbformat raises many kinds for a broken file
        return f"{notebook.name} is not a readable notebook ({type(exc).__name__}: {exc})", None
    if not grade_ids(submitted) & release_ids:
        # Graded anyway: nbgrader puts the course's test cells back, so the
        # score stands for what the notebook does; the instructor is told.
        return None, (f"{submission.student}/{submission.assignment}: none of {notebook.name}'s "
                      f"cells carries this course's nbgrader metadata (another course's "
                      f"notebook, or an editor stripped it); graded anyway")
    return None, None


# ---------------------------------------------------------------------------
# Grading

def grade(course, submissions_path, course_dir=None, *, timeout=None, jobs=1, scheduler=None,
          force=False, limits=None, progress=False):
    """Autograde every submission; returns a GradingRun.

    Grading happens in ``course_dir`` (nbgrader's course directory: gradebook.db,
    autograded/), by default the folder that holds submitted/. ``jobs`` local workers, or
    the Dask scheduler at ``scheduler``, execute the notebooks; ``limits``
    (sandbox.Limits) contain each one. Finished submissions are skipped unless
    ``force``. One broken submission never stops the others: its grades carry a
    ``problem`` instead of a score.
    """
    submissions = find_submissions(submissions_path)
    root = Path(course_dir) if course_dir else submitted_folder(submissions_path).parent
    known = set(course.assignments())
    notices = [f"{s.student}/{s.assignment}: not an assignment of this course "
               f"({', '.join(sorted(known))}), skipped"
               for s in submissions if s.assignment not in known]
    gradable = [s for s in submissions if s.assignment in known]
    if not gradable:
        return GradingRun([], notices, course_dir=root)
    root.mkdir(parents=True, exist_ok=True)
    _refuse_another_config(course, root)
    sections = {"Execute": {"timeout": timeout},
                "ExecutePreprocessor": {"timeout": timeout}} if timeout else {}
    config = nbgrader_config(course, root, **sections)
    limits = limits or sandbox.Limits()
    ledger = Ledger(root)
    digests = _checksums(course, config, limits, gradable)
    todo = [s for s in gradable if force
            or not ledger.is_done(s.student, s.assignment, digests[s.student, s.assignment])]
    jobs = max(1, min(jobs, len(todo)))  # a cluster for one late submission is only a wait
    threads = 1 if scheduler else max(1, (os.cpu_count() or 1) // jobs)
    limits = sandbox.Limits(limits.memory_bytes, limits.wall_seconds, threads,
                            hide=(str(root), str(submitted_folder(submissions_path)),
                                  str(course.solutions)))
    grader = _Grader(root, config, limits, ledger, digests)
    # A cluster takes seconds to start: it starts while the course directory is set up.
    with start_pool(jobs, scheduler) if todo else contextlib.nullcontext() as pool:
        copy_course(course, root)
        _copy_submissions(gradable, root / SUBMITTED_DIR)
        generate(course, root, sorted({s.assignment for s in gradable}), database=True)
        start = time.perf_counter()
        grader.run(todo, pool, progress, notices)
    seconds = time.perf_counter() - start  # the wait for the cluster and its closing included
    grades = _read_grades(config, gradable, ledger)
    summaries = report.class_report(root, grades)
    return GradingRun(grades, notices, summaries, root, len(gradable) - len(todo), seconds,
                      grader.own_seconds, grader.worker_seconds)


def _refuse_another_config(course, root):
    """Never overwrite the nbgrader_config.py of another course's directory."""
    theirs = root / NBGRADER_CONFIG
    if theirs.is_file() and theirs.resolve() != course.config_file.resolve() \
            and theirs.read_bytes() != course.config_file.read_bytes():
        raise CourseError(f"{root} has an nbgrader_config.py of its own: grade in another "
                          f"folder with --course-dir DIR")


def _checksums(course, config, limits, submissions):
    """{(student, assignment): the checksum of the submission's files and of what else
    its grade depends on}."""
    settings = repr(_plain(config).get("Execute"))
    course_prints = {assignment: fingerprint(course.source_notebook(assignment),
                                             course.config_file, settings,
                                             limits.memory_bytes, limits.wall_seconds)
                     for assignment in {s.assignment for s in submissions}}
    return {(s.student, s.assignment): checksum(s.folder, course_prints[s.assignment])
            for s in submissions}


def _copy_submissions(submissions, submitted):
    for submission in submissions:
        destination = submitted / submission.student / submission.assignment
        if destination.resolve() != submission.folder.resolve():
            shutil.rmtree(destination, ignore_errors=True)
            shutil.copytree(submission.folder, destination)


class _Grader:
    """The one process that talks to the gradebook: sanitizes, hands out, records.

    ``digests``: each submission's checksum, for the ledger."""

    def __init__(self, root, config, limits, ledger, digests):
        self.root, self.config, self.limits = root, config, limits
        self.ledger, self.digests = ledger, digests
        self.worker_steps, self.record_steps = _split_autograde_steps(config)
        self.plain_config = _plain(config)
        self.retried = set()
        self.release_ids = {}
        self.failures = 0
        self.bar = None
        self.order = None
        self.own_seconds = 0.0
        self.worker_seconds = 0.0

    def run(self, todo, starting_pool, progress, notices):
        """Grade ``todo`` on the pool that the Future ``starting_pool`` gives."""
        if not todo:
            return
        self.order = _LongestFirst(todo)
        pool = starting_pool.result()
        with progress_bar(desc="grade", enabled=progress, unit="submission",
                          total=len(todo)) as self.bar:
            while self.order:
                job = self._prepare(self.order.pop(), notices)
                if job is not None:
                    pool.submit(sandbox.execute_job, job)
                while pool.in_flight >= 2 * pool.workers + 2:  # keep the scheduler's queue short
                    self._collect(pool, wait=True)
                self._collect(pool, wait=False)
            while pool.in_flight:
                self._collect(pool, wait=True)

    def _prepare(self, submission, notices):
        """The job that executes ``submission``, or None when it cannot be graded."""
        start = time.perf_counter()
        try:
            return self._sanitize(submission, notices)
        finally:
            self.own_seconds += time.perf_counter() - start

    def _sanitize(self, submission, notices):
        release = Course(self.root).release_notebook(submission.assignment)
        problem, notice = _inspect_submission(submission, release,
                                              self._release_ids(submission.assignment))
        if notice:
            notices.append(notice)
        if problem is None:
            result = run_converter(SanitizeSubmission, self.config, submission.assignment,
                                   submission.student)
            if result["success"]:
                return self._job(submission)
            problem = f"nbgrader failed: {failure_summary(result)}"
        self._finish(submission, problem)
        return None

    def _release_ids(self, assignment):
        """The release's grade_ids, read once per assignment."""
        import nbformat

        if assignment not in self.release_ids:
            release = Course(self.root).release_notebook(assignment)
            self.release_ids[assignment] = grade_ids(nbformat.read(str(release), as_version=4))
        return self.release_ids[assignment]

    def _job(self, submission):
        folder = self._autograded(submission.student, submission.assignment)
        notebooks = {path.stem: path.read_text(encoding="utf-8")
                     for path in sorted(folder.glob("*.ipynb"))}
        files = {path.relative_to(folder).as_posix(): path.read_bytes()
                 for path in sorted(folder.rglob("*")) if path.is_file()
                 and path.suffix != ".ipynb"}
        return sandbox.Job(submission.student, submission.assignment, notebooks, files,
                           self.worker_steps, self.plain_config, self.limits)

    def _autograded(self, student, assignment):
        return self.root / AUTOGRADED_DIR / student / assignment

    def _collect(self, pool, wait):
        for job, outcome in list(pool.finished(wait)):
            submission = Submission(job.student, job.assignment,
                                    self.root / SUBMITTED_DIR / job.student / job.assignment)
            if isinstance(outcome, Exception):
                self._retry_once(pool, job, submission, outcome)
                continue
            self.worker_seconds += outcome.seconds
            self.order.learn(job.assignment, outcome.seconds)
            if outcome.problem:
                shutil.rmtree(self._autograded(job.student, job.assignment), ignore_errors=True)
                self._finish(submission, outcome.problem)
            else:
                start = time.perf_counter()
                self._record(job, outcome)
                self.own_seconds += time.perf_counter() - start
                self._finish(submission, None)

    def _retry_once(self, pool, job, submission, error):
        """A worker died under the job (or lost its connection): once more, then give up
        for this run (not final: the next run tries again)."""
        if submission not in self.retried:
            self.retried.add(submission)
            pool.submit(sandbox.execute_job, job)
        else:
            self._finish(submission, f"its worker failed twice ({type(error).__name__}: "
                                     f"{error})", final=False)

    def _record(self, job, outcome):
        """nbgrader's autograde steps from SaveAutoGrades on, in this process only."""
        import nbformat

        db_url = f"sqlite:///{self.root / 'gradebook.db'}"
        steps = [step(config=self.config) for step in self.record_steps]
        with nbgrader_environment():
            for name, text in outcome.notebooks.items():
                notebook = nbformat.reads(text, as_version=4)
                resources = {"unique_key": name, "output_files_dir": f"{name}_files",
                             "nbgrader": {"student": job.student, "assignment": job.assignment,
                                          "notebook": name, "db_url": db_url}}
                for step in steps:
                    notebook, resources = step(notebook, resources)
                path = self._autograded(job.student, job.assignment) / f"{name}.ipynb"
                nbformat.write(notebook, str(path))

    def _finish(self, submission, problem, final=True):
        names = (submission.student, submission.assignment)
        self.ledger.record(*names, self.digests[names], problem, final)
        if problem:
            self.failures += 1
            self.bar.set_postfix_str(f"not graded: {self.failures}", refresh=False)
        self.bar.update()


class _LongestFirst:
    """The submissions still to hand out, those expected to take longest first: the
    last to run are then short ones, and no worker waits long for another at the end.

    A submission is expected to take as long as its assignment's did so far in this
    run (until one is back, as long as the others' on average); an assignment not
    handed out yet comes first, to learn its time early.
    """

    def __init__(self, submissions):
        self.waiting = {}  # assignment -> its submissions still to hand out, in order
        for submission in submissions:
            self.waiting.setdefault(submission.assignment, collections.deque()).append(submission)
        self.handed_out = set()
        self.seconds = collections.defaultdict(float)  # assignment -> seconds, summed
        self.graded = collections.Counter()  # assignment -> submissions back

    def __bool__(self):
        return bool(self.waiting)

    def pop(self):
        assignment = max(self.waiting, key=self._expected)  # the first of equals
        waiting = self.waiting[assignment]
        if len(waiting) == 1:
            del self.waiting[assignment]
        self.handed_out.add(assignment)
        return waiting.popleft()

    def learn(self, assignment, seconds):
        self.seconds[assignment] += seconds
        self.graded[assignment] += 1

    def _expected(self, assignment):
        if assignment not in self.handed_out:
            return math.inf
        if self.graded[assignment]:
            return self.seconds[assignment] / self.graded[assignment]
        return sum(self.seconds.values()) / max(1, self.graded.total())


def _split_autograde_steps(config):
    """nbgrader's autograde steps, cut before the first that writes the gradebook:
    (import names of those a worker runs, classes of those the grader runs)."""
    configured = Autograde(config=config).autograde_preprocessors
    steps = [import_item(step) if isinstance(step, str) else step for step in configured]
    cut = next(i for i, step in enumerate(steps) if issubclass(step, SaveAutoGrades))
    return tuple(f"{step.__module__}.{step.__name__}" for step in steps[:cut]), steps[cut:]


def _plain(config):
    """A traitlets Config as plain dicts, for a worker on another machine."""
    return {key: _plain(value) if isinstance(value, dict) else value
            for key, value in config.items()}


def _read_grades(config, submissions, ledger):
    """Scores from nbgrader's gradebook for these submissions, or the problem that stopped them."""
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.coursedir import CourseDirectory

    grades = []
    db_url = CourseDirectory(config=config).db_url
    with nbgrader_environment(), Gradebook(db_url) as gradebook:
        for submission in submissions:
            for notebook in gradebook.find_assignment(submission.assignment).notebooks:
                names = (submission.student, submission.assignment, notebook.name)
                problem = ledger.problem(submission.student, submission.assignment)
                if problem is None:
                    try:
                        graded = gradebook.find_submission_notebook(
                            notebook.name, submission.assignment, submission.student)
                    except MissingEntry:
                        problem = "nbgrader recorded no grade"
                if problem:
                    grades.append(NotebookGrade(*names, None, notebook.max_score, False, problem))
                else:
                    grades.append(NotebookGrade(*names, graded.score, graded.max_score,
                                                graded.needs_manual_grade))
    return grades


# ---------------------------------------------------------------------------
# The score table

def format_table(grades):
    """A per-student, per-notebook score table, for a terminal."""
    max_scores = {g.notebook: g.max_score for g in grades}
    notebooks = sorted(max_scores)
    possible = sum(max_scores.values())  # a notebook not handed in counts as 0
    cells = {(g.student, g.notebook): _format_score(g) for g in grades}
    header = ["student", *notebooks, "total"]
    rows = [header]
    for student in sorted({g.student for g in grades}):
        total = sum(g.score for g in grades if g.student == student and g.score is not None)
        rows.append([student, *(cells.get((student, nb), "-") for nb in notebooks),
                     f"{total:g}/{possible:g}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip()
             for row in rows]
    if any(g.needs_manual_grade for g in grades):
        lines.append("* free-response answers await manual grading "
                     "(nbgrader's formgrader, in the course directory)")
    return "\n".join(lines)


def _format_score(grade):
    if grade.problem:
        return "not graded"
    return f"{grade.score:g}/{grade.max_score:g}" + ("*" if grade.needs_manual_grade else "")


def write_csv(grades, path):
    """One row per student and notebook."""
    fields = ["student", "assignment", "notebook", "score", "max_score",
              "needs_manual_grade", "problem"]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(fields)
        for grade in grades:
            values = (getattr(grade, field) for field in fields)
            writer.writerow(["" if value is None else value for value in values])
