"""Where the course's files live: nbgrader's source, the release, the configuration.

The repository is an nbgrader course directory, one assignment per notebook:
``solutions/NN_slug/NN_slug.ipynb`` is the nbgrader source and
``notebooks/NN_slug/NN_slug.ipynb`` the student release generated from it.
"""

from dataclasses import dataclass
from pathlib import Path

SOURCE_DIR = "solutions"
RELEASE_DIR = "notebooks"
SUBMITTED_DIR = "submitted"
AUTOGRADED_DIR = "autograded"
NBGRADER_CONFIG = "nbgrader_config.py"


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
    package = Path(__file__).resolve().parent.parent  # bn_course/
    course = Course(Path(root) if root is not None else package.parent)
    if not course.solutions.is_dir():
        raise CourseError(
            f"course files not found: no {SOURCE_DIR}/ folder in {course.root}. They live in "
            f"the repository, not in the installed package: clone it and install it with "
            f"`pip install -e '.[all]'`, then run bn-course from that install.")
    return course
