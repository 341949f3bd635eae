"""Simulated classes for the grading tests: a fresh release of some assignments, the
same notebooks with the course's solutions pasted in, and submissions written where
nbgrader looks for them (submitted/STUDENT/ASSIGNMENT/ASSIGNMENT.ipynb)."""

import nbformat

from bn_course.instructor import layout, release


def released_and_solved(course, root, assignments):
    """({assignment: released notebook}, {assignment: the same, solved}), after
    generating the release of ``assignments`` from ``course`` into ``root``."""
    release.copy_course(course, root)
    release.generate(course, root, assignments)
    released = {a: nbformat.read(str(layout.Course(root).release_notebook(a)), as_version=4)
                for a in assignments}
    solved = {a: release.with_solutions(released[a], nbformat.read(
        str(course.source_notebook(a)), as_version=4)) for a in assignments}
    return released, solved


def submit(submitted, students):
    """Write ``{student: {assignment: notebook}}`` under the ``submitted`` folder."""
    for student, notebooks in students.items():
        for assignment, notebook in notebooks.items():
            folder = submitted / student / assignment
            folder.mkdir(parents=True)
            nbformat.write(notebook, str(folder / f"{assignment}.ipynb"))
