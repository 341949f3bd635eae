"""The real course: notebooks/ is a fresh build of solutions/, every solution runs, and
the release runs as a student meets it (blank) and as one who solved everything."""

import nbclient
import nbformat
import pytest

from bn_course.instructor import layout, release

COURSE = layout.find_course()
ASSIGNMENTS = COURSE.assignments()


@pytest.fixture(scope="module")
def stale():
    return release.release_differences(COURSE)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A fresh release of every assignment, generated from solutions/ as they are now."""
    root = tmp_path_factory.mktemp("release")
    release.copy_course(COURSE, root)
    release.generate(COURSE, root, ASSIGNMENTS)
    return layout.Course(root)


def grade_id(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id", "")


def is_test_cell(cell):
    return cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade", False)


def stderr_of(cell):
    return "".join(output.text for output in cell.outputs
                   if output.output_type == "stream" and output.name == "stderr")


def plain_text(cell):
    return "".join(output.get("data", {}).get("text/plain", "") + output.get("text", "")
                   for output in cell.outputs)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_is_in_sync_with_its_source(assignment, stale):
    assert assignment not in stale, (
        f"notebooks/{assignment} is stale ({'; '.join(stale.get(assignment, []))}): "
        f"run `bn-course build {assignment}`")


@pytest.mark.slow
def test_every_release_has_a_source(stale):
    orphans = sorted(set(stale) - set(ASSIGNMENTS))
    assert not orphans, "; ".join(stale[name][0] for name in orphans)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_runs_top_to_bottom_and_its_tests_are_silent(assignment):
    executed = release.execute_notebook(COURSE.source_notebook(assignment), timeout=300)
    for cell in filter(is_test_cell, executed.cells):
        assert stderr_of(cell) == "", f"{grade_id(cell)} writes to stderr: nbgrader gives it 0"


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solved_release_runs_and_every_self_check_passes(assignment, fresh):
    """The release with the reference answers pasted into its solution cells."""
    released = nbformat.read(str(fresh.release_notebook(assignment)), as_version=4)
    source = nbformat.read(str(COURSE.source_notebook(assignment)), as_version=4)
    executed = release.execute_notebook(release.with_solutions(released, source),
                                       cwd=fresh.release_notebook(assignment).parent, timeout=300)
    for cell in executed.cells:
        if grade_id(cell).startswith("check_"):
            assert plain_text(cell).startswith("PASS"), f"{grade_id(cell)}: {plain_text(cell)}"
        if is_test_cell(cell):
            assert stderr_of(cell) == "", f"{grade_id(cell)} writes to stderr"


def first_exercise(notebook):
    checks = [i for i, cell in enumerate(notebook.cells) if grade_id(cell).startswith("check_")]
    return checks[0] if checks else None


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_untouched_release_says_not_implemented_at_its_first_self_check(assignment, fresh):
    released = nbformat.read(str(fresh.release_notebook(assignment)), as_version=4)
    stop = first_exercise(released)
    if stop is None:
        pytest.skip(f"{assignment} has no exercise")
    client = nbclient.NotebookClient(released, timeout=300, resources={
        "metadata": {"path": str(fresh.release_notebook(assignment).parent)}})
    with client.setup_kernel():
        for index, cell in enumerate(released.cells[:stop + 1]):
            client.execute_cell(cell, index)  # raises on a traceback
    check = released.cells[stop]
    assert plain_text(check).startswith(f"FAIL {grade_id(check).removeprefix('check_')}: "
                                        f"Not implemented yet"), plain_text(check)
