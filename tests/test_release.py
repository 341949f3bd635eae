"""The real course: notebooks/ is a fresh build of solutions/, and every solution runs."""

import pytest

from bn_course import course

COURSE = course.find_course()
ASSIGNMENTS = COURSE.assignments()


@pytest.fixture(scope="module")
def stale():
    return course.release_differences(COURSE)


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
def test_solution_runs_top_to_bottom(assignment):
    course.execute_notebook(COURSE.source_notebook(assignment), timeout=300)
