"""The build/check/grade machinery, on a small synthetic nbgrader course, then on the real one.

The synthetic course has one assignment, 99_toy: a solution cell, a self-check, a
graded test cell, a graded cell of hidden tests and a manually graded free-response
cell, with the repository's own nbgrader_config.py. The last section grades four
students of the real notebooks 01 and 04 end to end, feedback included.
"""

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from classroom import released_and_solved, submit
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from bn_course.instructor import grading, layout, release, runner

REPO = Path(__file__).resolve().parent.parent
TOY = "99_toy"
TEST_CELLS = {"test_square_basic": 1, "test_square_hidden": 2}
SOLUTION = "    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION"
HIDDEN_TEST = "assert square(-3) == 9"


def _nbgrader(grade_id, grade=False, solution=False, locked=False, points=None):
    meta = {"grade": grade, "solution": solution, "locked": locked, "grade_id": grade_id,
            "schema_version": 3}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def toy_source():
    cells = [
        new_markdown_cell("# 99 · Squares\nWrite `square(x)`."),
        new_code_cell("import math", metadata=_nbgrader("setup", locked=True)),
        new_code_cell(f'def square(x):\n    """Return x squared."""\n{SOLUTION}',
                      metadata=_nbgrader("square", solution=True)),
        new_code_cell("print(square(3))", metadata=_nbgrader("check_square", locked=True)),
        new_code_cell('"""Check square on small integers"""\nassert square(2) == 4',
                      metadata=_nbgrader("test_square_basic", grade=True, locked=True,
                                         points=TEST_CELLS["test_square_basic"])),
        new_code_cell('"""Check square on negative numbers"""\n### BEGIN HIDDEN TESTS\n'
                      f'{HIDDEN_TEST}\n### END HIDDEN TESTS',
                      metadata=_nbgrader("test_square_hidden", grade=True, locked=True,
                                         points=TEST_CELLS["test_square_hidden"])),
        new_markdown_cell("Why is a square never negative?"),
        new_markdown_cell("A negative times a negative is positive.",
                          metadata=_nbgrader("free_response_1", grade=True, solution=True,
                                             points=2)),
    ]
    return new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})


def make_course(root, sources):
    """A course directory with the repository's nbgrader_config.py and these sources."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / layout.NBGRADER_CONFIG, root)
    for name, notebook in sources.items():
        (root / layout.SOURCE_DIR / name).mkdir(parents=True)
        nbformat.write(notebook, str(root / layout.SOURCE_DIR / name / f"{name}.ipynb"))
    return layout.Course(root)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy course, built once."""
    the_course = make_course(tmp_path_factory.mktemp("course"), {TOY: toy_source()})
    release.build(the_course)
    return the_course


def cells_by_id(notebook):
    return {cell.metadata["nbgrader"]["grade_id"]: cell for cell in notebook.cells
            if "nbgrader" in cell.metadata}


# ---------------------------------------------------------------------------
# locating the course, configuration

def test_find_course_is_the_repository():
    assert layout.find_course().root == REPO


def test_find_course_without_solutions_says_where_it_looked(tmp_path):
    with pytest.raises(layout.CourseError, match=re.escape(str(tmp_path))):
        layout.find_course(tmp_path)


def test_select_rejects_an_unknown_assignment(tmp_path):
    the_course = make_course(tmp_path, {TOY: toy_source()})
    assert the_course.select() == [TOY]
    with pytest.raises(layout.CourseError, match="unknown assignment '42_nope'"):
        the_course.select(["42_nope"])


def test_repository_config_matches_the_layout_the_code_uses():
    config = runner.nbgrader_config(layout.find_course(), REPO)
    assert config.CourseDirectory.source_directory == layout.SOURCE_DIR
    assert config.CourseDirectory.release_directory == layout.RELEASE_DIR
    assert config.Execute.timeout == config.ExecutePreprocessor.timeout
    assert config.IgnorePattern.enabled and config.OverwriteCells.add_missing_cells


@pytest.mark.parametrize("stderr, ignored", [
    ("/x/y.py:12: UserWarning: The given NumPy array is not writable\n  t = f(x)\n", True),
    ("<ipython-input-3>:2: DeprecationWarning: use something else\n", True),
    ("[W NNPACK.cpp:53] Could not initialize NNPACK! Reason: Unsupported hardware.\n", True),
    ("Matplotlib is building the font cache; this may take a moment.\n", True),
    ("my debugging output\n", False),
    ("Warnings are for people who read them\n", False),
])
def test_ignore_pattern_drops_library_warnings_only(stderr, ignored):
    pattern = runner.nbgrader_config(layout.find_course(), REPO).IgnorePattern.pattern
    assert bool(re.search(pattern, stderr)) == ignored


def test_nbgrader_environment_puts_this_python_first_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with runner.nbgrader_environment():
        assert os.environ["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert os.environ["PATH"] == "/usr/bin:/bin"


# ---------------------------------------------------------------------------
# build

def test_release_strips_solutions_and_hidden_tests(toy):
    released = cells_by_id(nbformat.read(str(toy.release_notebook(TOY)), as_version=4))
    assert "return x * x" not in released["square"].source
    assert "raise NotImplementedError()" in released["square"].source
    assert HIDDEN_TEST not in released["test_square_hidden"].source
    assert "Check square on negative numbers" in released["test_square_hidden"].source
    assert "negative times a negative" not in released["free_response_1"].source
    assert released["test_square_basic"].source == cells_by_id(toy_source())[
        "test_square_basic"].source


@pytest.fixture(scope="module")
def executed(toy):
    return release.execute_notebook(toy.source_notebook(TOY))


@pytest.mark.slow
def test_release_has_no_outputs(executed, tmp_path):
    source_with_outputs = make_course(tmp_path, {TOY: executed})
    release.build(source_with_outputs)
    released = nbformat.read(str(source_with_outputs.release_notebook(TOY)), as_version=4)
    code = [cell for cell in released.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)


def test_build_is_deterministic_and_leaves_no_gradebook(toy):
    first = toy.release_notebook(TOY).read_bytes()
    release.build(toy)
    assert toy.release_notebook(TOY).read_bytes() == first
    assert sorted(p.name for p in toy.root.iterdir()) == sorted(
        [layout.NBGRADER_CONFIG, layout.SOURCE_DIR, layout.RELEASE_DIR])


@pytest.mark.slow
def test_plain_nbgrader_command_makes_the_same_release(toy, tmp_path):
    """`nbgrader generate_assignment`, as its docs describe, reads the same config."""
    shutil.copytree(toy.root / layout.SOURCE_DIR, tmp_path / layout.SOURCE_DIR)
    shutil.copy(toy.config_file, tmp_path)
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", TOY, "--no-db"],
                   cwd=tmp_path, check=True, capture_output=True)
    assert (layout.Course(tmp_path).release_notebook(TOY).read_bytes()
            == toy.release_notebook(TOY).read_bytes())


def test_release_differences_reports_a_stale_notebook(toy):
    assert release.release_differences(toy) == {}
    released_file = toy.release_notebook(TOY)
    committed = released_file.read_bytes()
    notebook = nbformat.read(str(released_file), as_version=4)
    cells_by_id(notebook)["test_square_basic"].source += "\nassert square(0) == 0"
    nbformat.write(notebook, str(released_file))
    try:
        stale = release.release_differences(toy)
    finally:
        released_file.write_bytes(committed)
    assert list(stale) == [TOY]
    assert "test_square_basic" in stale[TOY][0]


def test_release_differences_reports_missing_and_orphan_releases(tmp_path):
    the_course = make_course(tmp_path, {TOY: toy_source()})
    (the_course.notebooks / "98_removed").mkdir(parents=True)
    stale = release.release_differences(the_course)
    assert "is missing" in stale[TOY][0]
    assert "has no source" in stale["98_removed"][0]


# ---------------------------------------------------------------------------
# running notebooks

@pytest.mark.slow
def test_run_solutions_reports_time_and_the_failing_cell(tmp_path):
    broken = toy_source()
    broken.cells[1].source = "1 / 0"
    the_course = make_course(tmp_path, {TOY: toy_source(), "98_broken": broken})
    results = {r.assignment: r for r in release.run_solutions(the_course)}
    assert results[TOY].error is None and results[TOY].seconds > 0
    assert results["98_broken"].error.startswith("ZeroDivisionError")


@pytest.mark.slow
def test_execute_notebook_returns_the_outputs(executed):
    check = cells_by_id(executed)["check_square"]
    assert check.outputs[0].text == "9\n"


# ---------------------------------------------------------------------------
# grade: one round trip for many kinds of submission

def _solved(edit=None):
    notebook = toy_source()
    if edit:
        edit(notebook)
    return notebook


def _released(toy):
    return nbformat.read(str(toy.release_notebook(TOY)), as_version=4)


def _wrong_answer_and_tests_disabled(notebook):
    cells = cells_by_id(notebook)
    cells["square"].source = "def square(x):\n    return x + 1"
    for grade_id in TEST_CELLS:
        cells[grade_id].source = "pass"


def _endless_loop(notebook):
    cells_by_id(notebook)["square"].source = "while True:\n    pass"


def _test_cell_deleted(notebook):
    notebook.cells.remove(cells_by_id(notebook)["test_square_basic"])


def _test_cell_duplicated(notebook):
    # As JupyterLab's copy and paste does: a new cell id, the same metadata.
    cell = cells_by_id(notebook)["test_square_hidden"]
    duplicate = new_code_cell(cell.source, metadata=copy.deepcopy(cell.metadata))
    notebook.cells.insert(notebook.cells.index(cell), duplicate)


def _metadata_stripped(notebook):
    for cell in notebook.cells:
        cell.metadata = {}


def _from_another_course(notebook):
    for index, cell in enumerate(notebook.cells):
        if "nbgrader" in cell.metadata:
            cell.metadata["nbgrader"]["grade_id"] = f"other_{index}"


@pytest.fixture(scope="module")
def graded(toy, tmp_path_factory):
    """Grade every kind of submission once, without the venv's bin on PATH."""
    submitted = tmp_path_factory.mktemp("submissions") / layout.SUBMITTED_DIR
    released = _released(toy)
    # Sorted by name, so the endless loop is graded first and blocks no one.
    submissions = {
        "a_endless_loop": _solved(_endless_loop),
        "blank": released,
        "deleted_test_cell": _solved(_test_cell_deleted),
        "duplicated_test_cell": _solved(_test_cell_duplicated),
        "edited_tests": _solved(_wrong_answer_and_tests_disabled),
        "foreign": _solved(_from_another_course),
        "metadata_stripped": _solved(_metadata_stripped),
        "solved": _solved(),
    }
    for student, notebook in submissions.items():
        (submitted / student / TOY).mkdir(parents=True)
        nbformat.write(notebook, str(submitted / student / TOY / f"{TOY}.ipynb"))
    (submitted / "not_json" / TOY).mkdir(parents=True)
    (submitted / "not_json" / TOY / f"{TOY}.ipynb").write_text("{this is not json")
    (submitted / "solved" / "42_other_course").mkdir()
    course_dir = tmp_path_factory.mktemp("grading")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", "/usr/bin:/bin")
        run = grading.grade(toy, submitted.parent, course_dir=course_dir, timeout=3)
    grades, notices = run.grades, run.notices
    return {g.student: g for g in grades}, notices, course_dir


@pytest.mark.slow
def test_scores(graded):
    from nbgrader.api import Gradebook

    grades, _, course_dir = graded
    expected = {"solved": 3, "blank": 0, "edited_tests": 0, "a_endless_loop": 0,
                "deleted_test_cell": 3, "duplicated_test_cell": 3, "metadata_stripped": 3,
                "foreign": 0}
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        scores = {student: sum(gradebook.find_grade(cell, TOY, TOY, student).score
                               for cell in TEST_CELLS)
                  for student in expected}
    assert scores == expected
    assert {student: grades[student].score for student in expected} == expected


@pytest.mark.slow
def test_solved_notebook_gets_full_marks_and_awaits_manual_grading(graded):
    from nbgrader.api import Gradebook

    grades, _, course_dir = graded
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        free_response = gradebook.find_grade("free_response_1", TOY, TOY, "solved")
        assert free_response.needs_manual_grade
        blank = gradebook.find_grade("free_response_1", TOY, TOY, "blank")
        assert not blank.needs_manual_grade and blank.score == 0
    assert grades["solved"].needs_manual_grade
    assert grades["solved"].max_score == sum(TEST_CELLS.values()) + 2


@pytest.mark.slow
def test_endless_loop_is_stopped_by_the_timeout(graded):
    course_dir = graded[2]
    autograded = nbformat.read(
        str(course_dir / "autograded" / "a_endless_loop" / TOY / f"{TOY}.ipynb"), as_version=4)
    errors = [output.ename for output in cells_by_id(autograded)["square"].outputs
              if output.output_type == "error"]
    assert "CellTimeoutError" in errors


@pytest.mark.slow
def test_bad_submissions_are_reported_and_others_graded(graded):
    grades, notices, _ = graded
    assert grades["not_json"].score is None
    assert "not a readable notebook" in grades["not_json"].problem
    assert any("solved/42_other_course" in notice for notice in notices)
    assert any(notice.startswith("foreign/") for notice in notices)
    assert grades["solved"].problem is None


@pytest.mark.slow
def test_table_and_csv(graded, tmp_path):
    grades = list(graded[0].values())
    table = grading.format_table(grades).splitlines()
    assert table[0].split() == ["student", TOY, "total"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:] if not line.startswith("*")}
    assert rows["solved"] == ["3/5*", "3/5"]
    assert rows["not_json"][:2] == ["not", "graded"]
    grading.write_csv(grades, tmp_path / "scores.csv")
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0] == "student,assignment,notebook,score,max_score,needs_manual_grade,problem"
    assert f"solved,{TOY},{TOY},3.0,5.0,True," in lines


def test_find_submissions_accepts_the_course_folder_or_submitted(tmp_path):
    (tmp_path / layout.SUBMITTED_DIR / "ada" / TOY).mkdir(parents=True)
    for path in (tmp_path, tmp_path / layout.SUBMITTED_DIR):
        assert [(s.student, s.assignment) for s in grading.find_submissions(path)] == [
            ("ada", TOY)]


def test_find_submissions_explains_bad_input(tmp_path):
    with pytest.raises(layout.CourseError, match="no such folder"):
        grading.find_submissions(tmp_path / "missing")
    with pytest.raises(layout.CourseError, match="submitted/<student>/<assignment>"):
        grading.find_submissions(tmp_path)


# ---------------------------------------------------------------------------
# grade: the real course, end to end (notebooks 01 and 04)

REAL = ["01_batch_statistics", "04_train_vs_eval"]
BIASED_VAR_MISTAKE = "def batch_var(x):\n    return x.var(axis=0, ddof=1)"


def _points(notebook, exercise=None):
    """Points of the release's test cells (of one exercise, or all of them)."""
    prefix = f"test_{exercise}_" if exercise else "test_"
    return sum(cell.metadata["nbgrader"].get("points", 0) for cell in notebook.cells
               if cell.metadata.get("nbgrader", {}).get("grade_id", "").startswith(prefix))


def _edit(notebook, grade_id, source):
    cells_by_id(notebook)[grade_id].source = source
    return notebook


def _real_submissions(releases, solved):
    """{student: {assignment: notebook}}: four students of notebooks 01 and 04."""
    rogue_01 = _edit(copy.deepcopy(solved["01_batch_statistics"]), "batch_var",
                     "def batch_var(x):\n    return x[0] * 0")
    for grade_id in cells_by_id(rogue_01):  # tries to switch off batch_var's (hidden) tests
        if grade_id.startswith("test_batch_var_"):
            _edit(rogue_01, grade_id, "pass")
    return {
        # Graded first: an endless loop and edited tests must not harm the others.
        "a_rogue": {"01_batch_statistics": rogue_01,
                    "04_train_vs_eval": _edit(copy.deepcopy(solved["04_train_vs_eval"]),
                                              "keras_to_torch_momentum", "while True:\n    pass")},
        "blank": releases,
        "mistake": {"01_batch_statistics": _edit(copy.deepcopy(solved["01_batch_statistics"]),
                                                 "batch_var", BIASED_VAR_MISTAKE),
                    "04_train_vs_eval": solved["04_train_vs_eval"]},
        "solved": solved,
    }


@pytest.fixture(scope="module")
def real_graded(tmp_path_factory):
    """Grade the four students once, keeping the course directory for feedback."""
    real = layout.find_course()
    releases, solved = released_and_solved(real, tmp_path_factory.mktemp("real_release"), REAL)
    submitted = tmp_path_factory.mktemp("real_submissions") / layout.SUBMITTED_DIR
    submit(submitted, _real_submissions(releases, solved))
    course_dir = tmp_path_factory.mktemp("real_grading")
    grades = grading.grade(real, submitted, course_dir=course_dir, timeout=10).grades
    scores = {(g.student, g.assignment): g.score for g in grades}
    return scores, releases, course_dir


@pytest.mark.slow
def test_real_course_scores(real_graded):
    scores, releases, _ = real_graded
    full = {a: _points(releases[a]) for a in REAL}
    batch_mean = _points(releases["01_batch_statistics"], "batch_mean")
    keras = _points(releases["04_train_vs_eval"], "keras_to_torch_momentum")
    assert 0 < batch_mean < full["01_batch_statistics"] and 0 < keras
    assert scores == {
        ("solved", "01_batch_statistics"): full["01_batch_statistics"],
        ("solved", "04_train_vs_eval"): full["04_train_vs_eval"],
        ("blank", "01_batch_statistics"): 0,
        ("blank", "04_train_vs_eval"): 0,
        ("mistake", "01_batch_statistics"): batch_mean,
        ("mistake", "04_train_vs_eval"): full["04_train_vs_eval"],
        ("a_rogue", "01_batch_statistics"): batch_mean,
        ("a_rogue", "04_train_vs_eval"): full["04_train_vs_eval"] - keras,
    }


@pytest.mark.slow
def test_real_course_feedback_names_the_mistake(real_graded):
    """`nbgrader generate_feedback`, run as the instructor guide says, in the kept course dir."""
    import html

    from bn_course.checks import EXERCISES

    course_dir = real_graded[2]
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable),
                                                  os.environ["PATH"]])}
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_feedback",
                    "01_batch_statistics", "--student", "mistake"],
                   cwd=course_dir, env=env, check=True, capture_output=True)
    feedback = course_dir / "feedback" / "mistake" / "01_batch_statistics"
    page = html.unescape((feedback / "01_batch_statistics.html").read_text())
    mistake = EXERCISES["batch_var"].mistake("unbiased-variance")
    assert mistake.diagnosis in page and mistake.hint in page
