"""Build, check and grade the course with nbgrader: the logic behind ``bn-course``.

The repository is an nbgrader course directory, one assignment per notebook:
``solutions/NN_slug/NN_slug.ipynb`` is the nbgrader source and
``notebooks/NN_slug/NN_slug.ipynb`` the student release generated from it. The
repository's ``nbgrader_config.py`` holds every nbgrader setting; the functions
here load it, so ``bn-course`` and a plain ``nbgrader`` command behave alike.

Importing this module is cheap: nbgrader, nbformat and nbclient take seconds to
import, so each function imports what it needs.
"""

import contextlib
import csv
import functools
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

SOURCE_DIR = "solutions"
RELEASE_DIR = "notebooks"
SUBMITTED_DIR = "submitted"
NBGRADER_CONFIG = "nbgrader_config.py"

# nbgrader logs a lot at INFO level; the log of each step is captured and shown
# only when the step fails.
_NBGRADER_LOG = logging.getLogger("bn_course.nbgrader")
_NBGRADER_LOG.setLevel(logging.INFO)
_NBGRADER_LOG.propagate = False
_NBGRADER_LOG.addHandler(logging.NullHandler())


class CourseError(Exception):
    """A problem with the course files or with a command's input, told to a person."""


@dataclass(frozen=True)
class Course:
    """Where the course's nbgrader source, release and configuration live."""

    root: Path

    @property
    def solutions(self):
        return self.root / SOURCE_DIR

    @property
    def notebooks(self):
        return self.root / RELEASE_DIR

    @property
    def config_file(self):
        return self.root / NBGRADER_CONFIG

    def assignments(self):
        """Names of the assignments: the folders of solutions/ holding a notebook of their name."""
        if not self.solutions.is_dir():
            return []
        return sorted(folder.name for folder in self.solutions.iterdir()
                      if (folder / f"{folder.name}.ipynb").is_file())

    def source_notebook(self, assignment):
        return self.solutions / assignment / f"{assignment}.ipynb"

    def release_notebook(self, assignment):
        return self.notebooks / assignment / f"{assignment}.ipynb"

    def select(self, names=()):
        """The named assignments (all of them when none is named); unknown names are an error."""
        known = self.assignments()
        unknown = [name for name in names if name not in known]
        if unknown:
            raise CourseError(f"unknown assignment {', '.join(map(repr, unknown))}; "
                              f"the course has: {', '.join(known) or 'none yet'}")
        return list(names) or known


def find_course(root=None):
    """The course next to this package (an editable install's repository), or at ``root``."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    course = Course(root)
    if not course.solutions.is_dir():
        raise CourseError(
            f"course files not found: no {SOURCE_DIR}/ folder in {root}. They live in the "
            f"repository, not in the installed package: clone it and install it with "
            f"`pip install -e '.[all]'`, then run bn-course from that install.")
    return course


# ---------------------------------------------------------------------------
# Running nbgrader

def nbgrader_config(course, root, **sections):
    """The course's nbgrader configuration, for a course directory at ``root``.

    Only the course's nbgrader_config.py is read (not ~/.jupyter's), so that every
    instructor gets the same release. ``sections`` override settings:
    ``Execute={"timeout": 5}``.
    """
    from traitlets.config import Config, PyFileConfigLoader

    if not course.config_file.is_file():
        raise CourseError(f"{course.config_file} is missing: nbgrader needs it")
    config = PyFileConfigLoader(NBGRADER_CONFIG, path=str(course.root)).load_config()
    config.merge(Config({"CourseDirectory": {"root": str(root)}, **sections}))
    return config


@contextlib.contextmanager
def _nbgrader_environment():
    """Let nbgrader find `alembic`, and keep library warnings out of the user's terminal.

    nbgrader runs `alembic` as a subprocess to create a gradebook; it lives next to
    this Python, which is not on PATH when the virtual environment is not activated.
    """
    old_path = os.environ.get("PATH")
    bin_dir = os.path.dirname(sys.executable)
    os.environ["PATH"] = os.pathsep.join([bin_dir, old_path]) if old_path else bin_dir
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if old_path is None:
            del os.environ["PATH"]
        else:
            os.environ["PATH"] = old_path


def _run_converter(converter_class, config, assignment, student="*"):
    """Run one nbgrader converter (what `nbgrader generate_assignment`/`autograde` run).

    Returns nbgrader's result dict: ``success`` and the captured ``log``/``error``.
    """
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import capture_log

    coursedir = CourseDirectory(config=config, assignment_id=assignment, student_id=student)
    converter = converter_class(coursedir=coursedir, config=config, log=_NBGRADER_LOG)
    converter.force = True
    with _nbgrader_environment():
        return capture_log(converter)


def _failure_summary(result):
    """The line of nbgrader's log that says why a step failed."""
    lines = [line.strip() for line in
             (result.get("log", "") + "\n" + result.get("error", "")).splitlines()]
    exceptions = [line for line in lines if re.match(r"[\w.]+(Error|Exception): ", line)
                  and "NbGraderException" not in line]
    messages = [line.removeprefix("[ERROR] ") for line in lines if line.startswith("[ERROR]")
                and not line.endswith("Traceback (most recent call last):")
                and "There was an error processing" not in line and "Please see" not in line]
    return (exceptions[-1:] or messages[:1] or ["see nbgrader's log"])[0]


def generate(course, root, assignments, *, database=False):
    """`nbgrader generate_assignment` for each assignment of the course directory ``root``.

    Without ``database`` nothing but the release is written (nbgrader's --no-db).
    """
    from nbgrader.converters import GenerateAssignment

    sections = {} if database else {"GenerateAssignment": {"no_database": True},
                                    "SaveCells": {"enabled": False}}
    config = nbgrader_config(course, root, **sections)
    for assignment in assignments:
        result = _run_converter(GenerateAssignment, config, assignment)
        if not result["success"]:
            raise CourseError(f"nbgrader could not generate {assignment}: "
                              f"{_failure_summary(result)}")


def copy_course(course, root):
    """Make ``root`` a course directory: a copy of the course's nbgrader source and
    configuration, so that plain `nbgrader` commands work there too."""
    if Path(root).resolve() != course.root.resolve():
        shutil.copytree(course.solutions, Path(root) / SOURCE_DIR, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        shutil.copy(course.config_file, root)


def _progress(items, desc, enabled, unit="notebook"):
    """A progress bar on stderr when ``enabled`` and stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, disable=None if enabled else True,
                file=sys.stderr)


# ---------------------------------------------------------------------------
# build and check

def build(course, assignments=(), progress=False):
    """Regenerate notebooks/ from solutions/ with nbgrader; returns the release notebooks.

    First the sources and the README get this build's Colab setup cell and
    Colab/Binder badges (bn_course/delivery.py), so that the release, plain
    nbgrader output, carries them and solutions/ and notebooks/ always agree.
    """
    from bn_course import delivery

    selected = course.select(assignments)
    repo = delivery.repository(course.root)
    if repo and course.assignments():
        delivery.update_readme(course, repo, course.assignments()[0])
    for assignment in _progress(selected, "build", progress):
        if repo:
            delivery.update_source(course, assignment, repo)
        generate(course, course.root, [assignment])
    return [course.release_notebook(assignment) for assignment in selected]


def notebook_differences(expected, actual, limit=3):
    """How notebook file ``actual`` differs from ``expected`` (at most ``limit`` lines)."""
    import nbformat

    want, got = (nbformat.read(str(path), as_version=4) for path in (expected, actual))
    differences = []
    if want.metadata != got.metadata:
        differences.append("the notebook metadata differs")
    if len(want.cells) != len(got.cells):
        differences.append(f"{len(got.cells)} cells instead of {len(want.cells)}")
    for index, (a, b) in enumerate(zip(want.cells, got.cells)):
        # Cell ids aside: they are random labels that no one reads.
        fields = sorted(key for key in (set(a) | set(b)) - {"id"} if a.get(key) != b.get(key))
        if fields:
            name = a.metadata.get("nbgrader", {}).get("grade_id", a.cell_type)
            differences.append(f"cell {index} ({name}): {', '.join(fields)} differ")
    return differences[:limit]


def release_differences(course, assignments=()):
    """Which committed release notebooks differ from a fresh build, and how.

    Returns ``{assignment: [difference, ...]}``, empty when notebooks/ is in sync;
    a source without this build's generated cells and a release folder without a
    source count as differences too.
    """
    from bn_course import delivery

    selected = course.select(assignments)
    stale = {}
    repo = delivery.repository(course.root)
    for assignment in selected:
        if repo and delivery.update_source(course, assignment, repo, write=False):
            stale[assignment] = [(f"{SOURCE_DIR}/{assignment}'s generated Colab/Binder cells "
                                  f"are missing or out of date")]
    with tempfile.TemporaryDirectory(prefix="bn-course-check-") as tmp:
        fresh = Course(Path(tmp))
        copy_course(course, tmp)
        generate(course, tmp, selected)
        for assignment in selected:
            committed = course.release_notebook(assignment)
            if not committed.is_file():
                stale.setdefault(assignment, []).append(
                    f"{committed.relative_to(course.root)} is missing")
                continue
            differences = notebook_differences(fresh.release_notebook(assignment), committed)
            if differences:
                stale.setdefault(assignment, []).extend(differences)
    if not assignments and course.notebooks.is_dir():
        for folder in sorted(course.notebooks.iterdir()):
            if folder.is_dir() and folder.name not in selected:
                stale[folder.name] = [
                    f"{RELEASE_DIR}/{folder.name}/ has no source in {SOURCE_DIR}/: remove it"]
    return stale


def with_solutions(release, source):
    """A copy of nbgrader release ``release`` with the answers of its ``source`` pasted in.

    Each solution cell of the release takes the source of the cell of ``source``
    (an nbgrader source notebook, with its solutions) that has the same grade_id:
    the notebook of a student who answered everything as the course does.
    """
    import copy

    answers = {cell.metadata["nbgrader"]["grade_id"]: cell.source for cell in source.cells
               if cell.metadata.get("nbgrader", {}).get("solution")}
    solved = copy.deepcopy(release)
    for cell in solved.cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        if nbgrader.get("solution"):
            cell.source = answers[nbgrader["grade_id"]]
    return solved


def execute_notebook(notebook, cwd=None, timeout=600, env=None):
    """Run a notebook top to bottom in a fresh kernel and return it, executed.

    ``notebook`` is a path (the kernel then starts in its folder) or an nbformat
    notebook (in ``cwd``, default the current folder). ``env`` adds environment
    variables for the kernel, e.g. ``{"NBGRADER_EXECUTION": "autograde"}``.
    Raises ``nbclient.exceptions.CellExecutionError`` at the first cell that fails.
    """
    import nbclient
    import nbformat

    if isinstance(notebook, (str, Path)):
        cwd = cwd or Path(notebook).parent
        notebook = nbformat.read(str(notebook), as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=timeout,
                                     resources={"metadata": {"path": str(cwd or os.getcwd())}})
    client.execute(env={**os.environ, **(env or {})})
    return notebook


@dataclass(frozen=True)
class RunResult:
    assignment: str
    seconds: float
    error: str | None  # None when every cell ran


def run_solutions(course, assignments=(), timeout=600, progress=False):
    """Run every solution notebook in a fresh kernel; returns a RunResult for each."""
    from nbclient.exceptions import CellExecutionError

    results = []
    for assignment in _progress(course.select(assignments), "run", progress):
        start = time.perf_counter()
        try:
            execute_notebook(course.source_notebook(assignment), timeout=timeout)
            error = None
        except CellExecutionError as exc:
            error = _first_line_of_error(exc)
        except Exception as exc:  # noqa: BLE001 -- a dead kernel, a timeout, a broken file
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        results.append(RunResult(assignment, time.perf_counter() - start, error))
    return results


def _first_line_of_error(exc):
    """nbclient's CellExecutionError carries the cell and the traceback; keep the gist."""
    ename = getattr(exc, "ename", "") or "error"
    evalue = (getattr(exc, "evalue", "") or "").splitlines()
    return f"{ename}: {evalue[0] if evalue else ''}".strip()


# ---------------------------------------------------------------------------
# grade

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


def find_submissions(path):
    """The submissions in nbgrader's ``submitted/<student>/<assignment>/`` layout.

    ``path`` is the submitted/ folder itself or a course folder that contains it.
    """
    path = Path(path)
    if not path.is_dir():
        raise CourseError(f"no such folder: {path}")
    submitted = path / SUBMITTED_DIR if (path / SUBMITTED_DIR).is_dir() else path
    submissions = [Submission(student.name, assignment.name, assignment)
                   for student in _subfolders(submitted)
                   for assignment in _subfolders(student)]
    if not submissions:
        raise CourseError(
            f"no submissions in {submitted}: expected nbgrader's layout, "
            f"{SUBMITTED_DIR}/<student>/<assignment>/<notebook>.ipynb")
    return submissions


def _subfolders(path):
    return sorted(entry for entry in path.iterdir()
                  if entry.is_dir() and not entry.name.startswith((".", "__")))


def _inspect_submission(submission, release):
    """(problem, notice) about a submission before grading it: a problem skips it."""
    import nbformat

    notebook = submission.folder / release.name
    if not notebook.is_file():
        found = ", ".join(sorted(p.name for p in submission.folder.glob("*.ipynb"))) or "none"
        return f"no {release.name} in the submission (notebooks found: {found})", None
    try:
        submitted = nbformat.read(str(notebook), as_version=4)
    except Exception as exc:  # noqa: BLE001 -- nbformat raises many kinds for a broken file
        return f"{notebook.name} is not a readable notebook ({type(exc).__name__}: {exc})", None
    if not _grade_ids(submitted) & _grade_ids(nbformat.read(str(release), as_version=4)):
        # Graded anyway: nbgrader puts the course's test cells back, so the
        # score stands for what the notebook does; the instructor is told.
        return None, (f"{submission.student}/{submission.assignment}: none of {notebook.name}'s "
                      f"cells carries this course's nbgrader metadata (another course's "
                      f"notebook, or an editor stripped it); graded anyway")
    return None, None


def _grade_ids(notebook):
    return {cell.metadata["nbgrader"]["grade_id"] for cell in notebook.cells
            if "grade_id" in cell.metadata.get("nbgrader", {})}


def grade(course, submissions_path, course_dir=None, timeout=None, progress=False):
    """Autograde every submission with nbgrader; returns (grades, notices).

    Grading happens in ``course_dir`` (nbgrader's course directory: gradebook.db,
    autograded/), a temporary one unless given. One broken submission never
    stops the others: its grades carry a ``problem`` instead of a score.
    """
    submissions = find_submissions(submissions_path)
    if course_dir is not None:
        Path(course_dir).mkdir(parents=True, exist_ok=True)
        return _grade_in(course, submissions, Path(course_dir), timeout, progress)
    with tempfile.TemporaryDirectory(prefix="bn-course-grade-") as tmp:
        return _grade_in(course, submissions, Path(tmp), timeout, progress)


def _grade_in(course, submissions, root, timeout, progress):
    known = set(course.assignments())
    notices = [f"{s.student}/{s.assignment}: not an assignment of this course "
               f"({', '.join(sorted(known))}), skipped"
               for s in submissions if s.assignment not in known]
    gradable = [s for s in submissions if s.assignment in known]
    if not gradable:
        return [], notices
    from nbgrader.converters import Autograde

    assignments = sorted({s.assignment for s in gradable})
    copy_course(course, root)
    _copy_submissions(gradable, root / SUBMITTED_DIR)
    generate(course, root, assignments, database=True)

    sections = {"Execute": {"timeout": timeout},
                "ExecutePreprocessor": {"timeout": timeout}} if timeout else {}
    config = nbgrader_config(course, root, **sections)
    problems = {}
    for submission in _progress(gradable, "autograde", progress, unit="submission"):
        release = Course(root).release_notebook(submission.assignment)
        problem, notice = _inspect_submission(submission, release)
        if notice:
            notices.append(notice)
        if problem is None:
            result = _run_converter(Autograde, config, submission.assignment, submission.student)
            if not result["success"]:
                problem = f"nbgrader failed: {_failure_summary(result)}"
        if problem:
            problems[submission] = problem
    return _read_grades(config, gradable, problems), notices


def _copy_submissions(submissions, submitted):
    for submission in submissions:
        destination = submitted / submission.student / submission.assignment
        if destination.resolve() != submission.folder.resolve():
            shutil.rmtree(destination, ignore_errors=True)
            shutil.copytree(submission.folder, destination)


def _read_grades(config, submissions, problems):
    """Scores from nbgrader's gradebook for these submissions, or the problem that stopped them."""
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.coursedir import CourseDirectory

    grades = []
    db_url = CourseDirectory(config=config).db_url
    with _nbgrader_environment(), Gradebook(db_url) as gradebook:
        for submission in submissions:
            for notebook in gradebook.find_assignment(submission.assignment).notebooks:
                names = (submission.student, submission.assignment, notebook.name)
                problem = problems.get(submission)
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
                     "(grade with --course-dir, then nbgrader's formgrader there)")
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


# ---------------------------------------------------------------------------
# nbgrader 0.9.6's OverwriteCells.add_missing_cells, made safe

def __getattr__(name):
    # PEP 562: nbgrader_config.py names "bn_course.course.RobustOverwriteCells";
    # the class is built on first use so that importing this module stays cheap.
    if name == "RobustOverwriteCells":
        return _robust_overwrite_cells()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _robust_overwrite_cells():
    from nbformat.notebooknode import NotebookNode
    from nbformat.v4.nbbase import random_cell_id
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import ClearHiddenTests, OverwriteCells

    class RobustOverwriteCells(OverwriteCells):
        """nbgrader's OverwriteCells, which survives what editors and students do to cells.

        With ``add_missing_cells``, nbgrader 0.9.6 crashes (KeyError) when a deleted
        grade cell came after a read-only cell, and when a duplicated or unknown cell
        keeps nbgrader metadata without a grade_id; a crash costs the student the
        whole notebook. This version re-inserts a missing grade cell after the
        nearest cell of the source that is still there, and first gives back their
        identity to read-only cells whose metadata an editor stripped (their source
        is still the released one), so their tests run where the student's code is.
        """

        def preprocess(self, nb, resources):
            info = resources["nbgrader"]
            with Gradebook(info["db_url"]) as gradebook:
                source = gradebook.find_notebook(info["notebook"], info["assignment"])
                self._reidentify_stripped_cells(nb, source)
            return super().preprocess(nb, resources)

        def _reidentify_stripped_cells(self, nb, source):
            points = {cell.name: cell.max_score for cell in source.grade_cells}
            present = _grade_ids(nb)
            released = {_released_source(cell): cell for cell in source.source_cells
                        if cell.locked and cell.name not in present}
            # From the end, as DeduplicateIds keeps the last copy of a duplicated cell.
            for cell in reversed(nb.cells):
                key = cell.source.strip()
                match = released.get(key)
                if "nbgrader" in cell.metadata or not match or match.cell_type != cell.cell_type:
                    continue
                del released[key]
                self.log.warning("Cell %s had lost its nbgrader metadata, restored", match.name)
                cell.metadata["nbgrader"] = {
                    "grade": match.name in points, "grade_id": match.name, "locked": True,
                    "solution": False, "schema_version": 3,
                    **({"points": points[match.name]} if match.name in points else {})}

        def add_missing_grade_cells(self, nb, resources):
            source = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
            points = {cell.name: cell.max_score for cell in source.grade_cells}
            solutions = {cell.name for cell in source.solution_cells}
            insert_at = 0
            # Rows come back in the order generate_assignment saved them: the
            # source notebook's order (upstream relies on it too).
            for source_cell in source.source_cells:
                index = _index_of(nb, source_cell.name)
                if index is not None:
                    insert_at = index + 1
                elif source_cell.name in points:
                    self.log.warning("Missing grade cell %s, adding it back", source_cell.name)
                    cell = self.missing_cell_transform(source_cell, points[source_cell.name],
                                                       is_solution=source_cell.name in solutions)
                    if nb.nbformat_minor >= 5:  # cell ids became required in nbformat 4.5
                        cell["id"] = random_cell_id()
                    nb.cells.insert(insert_at, cell)
                    insert_at += 1
            return nb, resources

        def add_missing_task_cells(self, nb, resources):
            # DeduplicateIds and an unknown grade_id leave {"nbgrader": {...}} without
            # a grade_id, which upstream's add_missing_task_cells indexes.
            for cell in nb.cells:
                nbgrader = cell.metadata.get("nbgrader")
                if nbgrader is not None and "grade_id" not in nbgrader:
                    del cell.metadata["nbgrader"]
            return super().add_missing_task_cells(nb, resources)

    def _released_source(source_cell):
        cell = NotebookNode(cell_type=source_cell.cell_type, source=source_cell.source,
                            metadata={})
        ClearHiddenTests(enforce_metadata=False).preprocess_cell(cell, {}, 0)
        return cell.source.strip()

    def _index_of(nb, grade_id):
        for index, cell in enumerate(nb.cells):
            if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
                return index
        return None

    return RobustOverwriteCells
