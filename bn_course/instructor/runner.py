"""Running nbgrader quietly: the course's configuration, its converters, a progress bar.

The repository's ``nbgrader_config.py`` holds every nbgrader setting; the functions
here load it, so that ``bn-course`` and a plain ``nbgrader`` command behave alike.
"""

import contextlib
import logging
import os
import re
import sys
import warnings

from bn_course.instructor.layout import NBGRADER_CONFIG, CourseError

# nbgrader logs a lot at INFO level; the log of each step is captured and shown
# only when the step fails.
NBGRADER_LOG = logging.getLogger("bn_course.nbgrader")
NBGRADER_LOG.setLevel(logging.INFO)
NBGRADER_LOG.propagate = False
NBGRADER_LOG.addHandler(logging.NullHandler())


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
def nbgrader_environment():
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


def run_converter(converter_class, config, assignment, student="*"):
    """Run one nbgrader converter (what `nbgrader generate_assignment`/`autograde` run).

    Returns nbgrader's result dict: ``success`` and the captured ``log``/``error``.
    """
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import capture_log

    coursedir = CourseDirectory(config=config, assignment_id=assignment, student_id=student)
    converter = converter_class(coursedir=coursedir, config=config, log=NBGRADER_LOG)
    converter.force = True
    with nbgrader_environment():
        return capture_log(converter)


def failure_summary(result):
    """The line of nbgrader's log that says why a step failed."""
    lines = [line.strip() for line in
             (result.get("log", "") + "\n" + result.get("error", "")).splitlines()]
    exceptions = [line for line in lines if re.match(r"[\w.]+(Error|Exception): ", line)
                  and "NbGraderException" not in line]
    messages = [line.removeprefix("[ERROR] ") for line in lines if line.startswith("[ERROR]")
                and not line.endswith("Traceback (most recent call last):")
                and "There was an error processing" not in line and "Please see" not in line]
    return (exceptions[-1:] or messages[:1] or ["see nbgrader's log"])[0]


def progress_bar(items=None, desc="", enabled=True, unit="notebook", total=None):
    """A tqdm bar on stderr when ``enabled`` and stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, total=total, disable=None if enabled else True,
                file=sys.stderr, dynamic_ncols=True)
