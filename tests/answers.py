"""The solution notebooks' answers, run as a student's code would be.

They are correct answers that the checkers accept; the course's reference answers are not
(a candidate that calls bn_course.reference is refused), so a test that needs "a student
whose answer passes" takes it from here:

    from answers import solution
    batchnorm_backward = solution("05_backward", "batchnorm_backward")
"""

import functools
import json
from pathlib import Path

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"


@functools.cache
def namespace(notebook):
    """The names that running the setup cell and every solution cell of ``notebook``
    (e.g. "05_backward") defines, as a fresh kernel would have them."""
    cells = json.loads((SOLUTIONS / notebook / f"{notebook}.ipynb").read_text())["cells"]
    names = {}
    for cell in cells:
        grader = cell["metadata"].get("nbgrader", {})
        if cell["cell_type"] == "code" and (grader.get("solution")
                                            or grader.get("grade_id") == "setup"):
            source = "".join(cell["source"])
            exec(compile(source, f"<{notebook}: {grader['grade_id']}>", "exec"), names)  # noqa: S102
    return names


def solution(notebook, name):
    """The student's answer ``name`` as the solution notebook ``notebook`` writes it."""
    return namespace(notebook)[name]
