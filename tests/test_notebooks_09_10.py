"""Notebooks 09 and 10 end to end: the nbgrader round trip (full marks for the solutions, 0
for the blank release, partial credit and the diagnosis in the feedback for one catalogued
mistake), and the blank release running top to bottom with only its graded cells failing."""

import copy
import html
import os
import subprocess
import sys

import nbformat
import pytest
from classroom import released_and_solved, submit
from nbclient import NotebookClient
from test_course import _edit, _points, cells_by_id

from bn_course.checks import EXERCISES
from bn_course.instructor import grading, layout

ASSIGNMENTS = ["09_in_practice", "10_across_devices"]
pytestmark = pytest.mark.slow

# One catalogued mistake per notebook, as a student would write it.
MISTAKES = {
    "09_in_practice": ("freeze_batchnorm", "eval-undone-by-train", '''
def freeze_batchnorm(model):
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model
'''),
    "10_across_devices": ("merge_batch_stats", "averages-variances", '''
def merge_batch_stats(counts, means, variances):
    weights = counts[:, None] / counts.sum()
    return (weights * means).sum(axis=0), (weights * variances).sum(axis=0)
'''),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade three students of both notebooks once: solved, blank, one mistake each."""
    real = layout.find_course()
    releases, solved = released_and_solved(real, tmp_path_factory.mktemp("release_09_10"),
                                           ASSIGNMENTS)
    mistaken = {a: _edit(copy.deepcopy(solved[a]), name, source)
                for a, (name, _, source) in MISTAKES.items()}
    submitted = tmp_path_factory.mktemp("submissions_09_10") / layout.SUBMITTED_DIR
    submit(submitted, {"blank": releases, "mistake": mistaken, "solved": solved})
    course_dir = tmp_path_factory.mktemp("grading_09_10")
    grades = grading.grade(real, submitted, course_dir=course_dir, timeout=120).grades
    return {(g.student, g.assignment): g.score for g in grades}, releases, course_dir


def test_scores_full_blank_and_partial(graded):
    scores, releases, _ = graded
    for assignment, (exercise, _, _) in MISTAKES.items():
        full = _points(releases[assignment])
        lost = _points(releases[assignment], exercise)
        assert 0 < lost < full
        assert scores[("solved", assignment)] == full
        assert scores[("blank", assignment)] == 0
        assert scores[("mistake", assignment)] == full - lost


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_feedback_names_the_mistake(graded, assignment):
    course_dir = graded[2]
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable),
                                                  os.environ["PATH"]])}
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_feedback", assignment,
                    "--student", "mistake"], cwd=course_dir, env=env, check=True,
                   capture_output=True)
    page = html.unescape(
        (course_dir / "feedback" / "mistake" / assignment / f"{assignment}.html").read_text())
    exercise, mistake_id, _ = MISTAKES[assignment]
    mistake = EXERCISES[exercise].mistake(mistake_id)
    assert mistake.diagnosis in page and mistake.hint in page
    assert f"[mistake: {mistake_id}]" in page


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_blank_release_runs_and_only_graded_cells_fail(assignment, not_grading, tmp_path):
    """A student who runs the release top to bottom before writing anything: every demo and
    self-check cell runs (the demos fall back to the course's answers, saying so), and the
    graded cells whose tests are visible fail (the release holds no hidden tests)."""
    path = layout.find_course().release_notebook(assignment)
    notebook = nbformat.read(str(path), as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    failed = {cell.metadata.get("nbgrader", {}).get("grade_id", f"cell {i}")
              for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
              and any(o.output_type == "error" for o in cell.outputs)}
    visible_tests = {grade_id for grade_id, cell in cells_by_id(notebook).items()
                     if cell.cell_type == "code" and "grade(" in cell.source}  # not hidden
    assert visible_tests and failed == visible_tests
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for o in cell.outputs)
    assert "does not pass its self-check yet" in text
