"""The student's side of ``bn-course lab``: a working folder and JupyterLab settings.

``bn-course lab`` copies the release notebooks into a working folder and never
overwrites a notebook the student has edited.
"""

import hashlib
import json
import shutil
from pathlib import Path

from bn_course.instructor.layout import RELEASE_DIR, find_course

MANIFEST = ".bn-course-release.json"  # release notebook -> hash of the copy made from it


def release_folder():
    """The release notebooks: shipped inside the package (a wheel), or the repository's
    notebooks/ for an editable install."""
    packaged = Path(__file__).resolve().parent.parent / RELEASE_DIR
    if packaged.is_dir():
        return packaged
    return find_course().notebooks


def sync_working_folder(release, folder):
    """Copy the release notebooks into ``folder``; returns what it did, for the student.

    A notebook still as it was copied is replaced by a newer release; one the
    student has edited is never overwritten: the newer release goes beside it as
    ``NN_slug.new.ipynb``.
    """
    release, folder = Path(release), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST
    copied_from = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    messages, added = [], 0
    for source in sorted(release.glob("*/*.ipynb")):
        name = source.relative_to(release).as_posix()
        target, new = folder / name, _digest(source)
        if not target.exists():
            _copy(source, target)
            copied_from[name] = new
            added += 1
        elif _digest(target) == new:
            copied_from[name] = new
        elif copied_from.get(name) == new:
            pass  # the student's edits of the current release
        elif _digest(target) == copied_from.get(name):
            _copy(source, target)
            copied_from[name] = new
            messages.append(f"updated {name} to the new release (you had not edited it)")
        else:
            messages += _put_beside(source, target, name, new)
    manifest_path.write_text(json.dumps(copied_from, indent=1, sort_keys=True) + "\n")
    if added:
        messages.insert(0, f"copied {added} notebook{'s' * (added > 1)} into {folder}")
    return messages


def _put_beside(source, target, name, new):
    beside = target.with_suffix(".new.ipynb")
    if beside.exists() and _digest(beside) == new:
        return []
    _copy(source, beside)
    return [(f"{name} has your edits, so it was left as it is; the new release is "
             f"beside it: {beside.name}")]


def _copy(source, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# JupyterLab as a student needs it

LAB_CONFIG = ".bn-course-jupyter"  # in the working folder; JupyterLab hides dot folders
# What a student does not need: the news prompt, and nbgrader's instructor tools
# (formgrader, course list, Create Assignment, the exchange's assignment list and
# the Nbgrader menu that opens them). "Validate" stays: it helps a student.
HIDDEN_LAB_PLUGINS = (
    "@jupyterlab/apputils-extension:announcements",
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:course-list",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:assignment-list",
    "@jupyter/nbgrader:menu",
)
HIDDEN_SERVER_EXTENSIONS = (
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.course_list",
    "nbgrader.server_extensions.assignment_list",
)


def write_lab_config(folder):
    """A Jupyter configuration folder for the course's lab, inside ``folder``; returns it.

    `bn-course lab` puts it on JUPYTER_CONFIG_PATH for the server it starts, ahead of the
    installation's own configuration and behind the user's ~/.jupyter, so that nothing
    outside the working folder changes and a plain `jupyter lab` is as it was.
    """
    config = Path(folder) / LAB_CONFIG
    (config / "labconfig").mkdir(parents=True, exist_ok=True)
    page = {"disabledExtensions": {plugin: True for plugin in HIDDEN_LAB_PLUGINS}}
    server = {"ServerApp": {"jpserver_extensions": {
        extension: False for extension in HIDDEN_SERVER_EXTENSIONS}}}
    _write_json(config / "labconfig" / "page_config.json", page)
    _write_json(config / "jupyter_server_config.json", server)
    return config


def _write_json(path, data):
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
