"""Getting the course to students: the Colab setup cell, the badges, Binder, `bn-course lab`.

Colab and Binder cannot be reached from here: these tests check what can be
checked offline (the generated cells and links, the setup cell's logic with Colab
simulated, the Binder files, the wheel's content, the lab working folder).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import nbformat
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from conftest import http_get_when_up
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bn_course.instructor import colab, layout, workspace
from bn_course.instructor.release import build, release_differences

REPO = Path(__file__).resolve().parent.parent
COURSE = layout.find_course()
ASSIGNMENTS = COURSE.assignments()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
REPOSITORY_URL = PYPROJECT["project"]["urls"]["Repository"]
LINK = re.compile(r"\[!\[([^]]+)\]\(([^)]+)\)\]\(([^)]+)\)")  # [![alt](image)](target)


def read(path):
    return nbformat.read(str(path), as_version=4)


def expected_links(assignment):
    owner_repo = REPOSITORY_URL.removeprefix("https://github.com/")
    path = f"notebooks/{assignment}/{assignment}.ipynb"
    return {
        "Open In Colab": f"https://colab.research.google.com/github/{owner_repo}/blob/main/{path}",
        "Launch Binder": f"https://mybinder.org/v2/gh/{owner_repo}/main?urlpath=lab/tree/{path}",
    }


def links(markdown):
    return {alt: target for alt, _, target in LINK.findall(markdown)}


# ---------------------------------------------------------------------------
# The generated cells, in every notebook of the course

def _notebooks_of_the_course():
    for assignment in ASSIGNMENTS:
        yield pytest.param(COURSE.source_notebook(assignment), assignment,
                           id=f"solutions-{assignment}")
        release = COURSE.release_notebook(assignment)
        if release.is_file():
            yield pytest.param(release, assignment, id=f"notebooks-{assignment}")


@pytest.mark.parametrize("path, assignment", list(_notebooks_of_the_course()))
def test_notebook_starts_with_the_setup_cell_and_its_badges(path, assignment):
    cells = read(path).cells
    setup, badges = cells[:2]
    assert setup.cell_type == "code" and "def install_bn_course():" in setup.source, (
        f"{path.relative_to(REPO)} lacks the generated setup cell: run `bn-course build`")
    assert setup.source == colab.setup_cell_source(
        REPOSITORY_URL.removeprefix("https://github.com/"))
    assert f'"git+{REPOSITORY_URL}"' in setup.source
    assert badges.cell_type == "markdown"
    assert links(badges.source) == expected_links(assignment)
    for cell, grade_id in [(setup, "colab_setup"), (badges, "badges")]:
        assert cell.metadata["tags"] == [colab.GENERATED_TAG]
        nbgrader = cell.metadata["nbgrader"]
        assert (nbgrader["grade_id"], nbgrader["locked"], nbgrader["grade"],
                nbgrader["solution"]) == (grade_id, True, False, False)
    assert sum(colab.is_generated(cell) for cell in cells) == 2


def test_readme_has_one_badge_line_under_its_title():
    lines = (REPO / "README.md").read_text().splitlines()
    badge_lines = [i for i, line in enumerate(lines) if colab.README_MARK in line]
    assert len(badge_lines) == 1, "run `bn-course build` to add the README's badge line"
    assert badge_lines[0] <= 3 and lines[0].startswith("# ")
    assert links(lines[badge_lines[0]]) == expected_links(ASSIGNMENTS[0])


# ---------------------------------------------------------------------------
# The setup cell's logic, with Colab simulated

@pytest.fixture
def simulated(monkeypatch):
    """Run the setup cell with a stub pip: ``run(on_colab, installed)`` returns the pip
    commands it ran. ``installed`` is the set of importable modules; the stub pip
    "installs" what it is asked for (``pip_works=False``: it installs nothing)."""
    import importlib.util

    def run(on_colab, installed, pip_works=True):
        commands = []
        pip_names = {package: module for module, package in colab.LIGHT_DEPENDENCIES.items()}

        def fake_pip(command):
            commands.append(command)
            if pip_works:
                installed.update("bn_course" if arg.startswith("git+") else pip_names.get(arg, arg)
                                 for arg in command[4:] if not arg.startswith("-"))

        monkeypatch.setattr(subprocess, "check_call", fake_pip)
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, package=None: object() if name in installed else None)
        if on_colab:
            monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        else:
            monkeypatch.delitem(sys.modules, "google.colab", raising=False)
        exec(colab.setup_cell_source("someone/some-course"), {})  # noqa: S102 -- the cell
        return commands

    return run


PIP = [sys.executable, "-m", "pip", "install", "--quiet"]
EVERYTHING_BUT_THE_PACKAGE = {"torch", "numpy", "matplotlib", "ipywidgets", "tqdm", "sklearn",
                              "cloudpickle"}


def test_setup_cell_does_nothing_in_a_local_install(simulated, capsys):
    assert simulated(on_colab=False, installed=EVERYTHING_BUT_THE_PACKAGE | {"bn_course"}) == []
    assert simulated(on_colab=False, installed=set()) == []  # not Colab: never installs
    assert capsys.readouterr().out == ""


def test_setup_cell_does_nothing_on_colab_once_installed(simulated, capsys):
    assert simulated(on_colab=True, installed=EVERYTHING_BUT_THE_PACKAGE | {"bn_course"}) == []
    assert capsys.readouterr().out == ""


def test_setup_cell_on_colab_installs_the_package_alone(simulated, capsys):
    commands = simulated(on_colab=True, installed=set(EVERYTHING_BUT_THE_PACKAGE))
    assert commands == [PIP + ["--no-deps", "git+https://github.com/someone/some-course"]]
    assert "no runtime restart is needed" in capsys.readouterr().out


def test_setup_cell_on_colab_adds_only_the_missing_light_dependencies(simulated):
    commands = simulated(on_colab=True, installed={"torch", "numpy", "matplotlib", "ipywidgets",
                                                   "cloudpickle"})
    assert commands == [PIP + ["--no-deps", "git+https://github.com/someone/some-course"],
                        PIP + ["tqdm", "scikit-learn"]]


def test_setup_cell_never_installs_torch_numpy_or_matplotlib(simulated):
    commands = simulated(on_colab=True, installed=set())
    installed_args = {arg for command in commands for arg in command[len(PIP):]}
    assert not installed_args & set(colab.PREINSTALLED_ON_COLAB)


def test_setup_cell_says_when_a_restart_is_needed(simulated, capsys):
    simulated(on_colab=True, installed=set(EVERYTHING_BUT_THE_PACKAGE), pip_works=False)
    assert "restart it (Runtime > Restart session)" in capsys.readouterr().out


def dependency_names(python_version="3.12"):
    """The package's core dependencies on a Python like Colab's and Binder's (a
    backport such as tomli, needed only on older Pythons, does not count there)."""
    requirements = map(Requirement, PYPROJECT["project"]["dependencies"])
    return {canonicalize_name(r.name) for r in requirements
            if r.marker is None or r.marker.evaluate({"python_version": python_version})}


def test_setup_cell_knows_every_dependency_of_the_package():
    names = dependency_names()
    assert names == {*colab.PREINSTALLED_ON_COLAB, *map(canonicalize_name,
                                                           colab.LIGHT_DEPENDENCIES.values())}


# ---------------------------------------------------------------------------
# The one setting, and the build

def test_repository_reads_owner_and_name_from_pyproject(tmp_path):
    assert colab.repository(tmp_path) is None  # no pyproject.toml: no generated cells
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project.urls]\nRepository = "https://github.com/ada/bn.git"\n')
    assert colab.repository(tmp_path) == "ada/bn"
    pyproject.write_text('[project.urls]\nRepository = "https://gitlab.com/ada/bn"\n')
    with pytest.raises(layout.CourseError, match="not a GitHub URL"):
        colab.repository(tmp_path)


@pytest.fixture
def forked_course(tmp_path):
    """A copy of notebook 01's source in a course whose repository is someone's fork."""
    assignment = "01_batch_statistics"
    shutil.copytree(COURSE.source_notebook(assignment).parent,
                    tmp_path / layout.SOURCE_DIR / assignment)
    shutil.copy(REPO / layout.NBGRADER_CONFIG, tmp_path)
    (tmp_path / "README.md").write_text("# A course\n\nSome text.\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project.urls]\nRepository = "https://github.com/ada/fork"\n')
    return layout.Course(tmp_path), assignment


def built_files(the_course, assignment):
    return [the_course.source_notebook(assignment), the_course.release_notebook(assignment),
            the_course.root / "README.md"]


@pytest.mark.slow
def test_build_puts_the_generated_cells_once_and_twice_is_byte_identical(forked_course):
    the_course, assignment = forked_course
    build(the_course)
    first = [path.read_bytes() for path in built_files(the_course, assignment)]
    build(the_course)
    assert [path.read_bytes() for path in built_files(the_course, assignment)] == first
    release = read(the_course.release_notebook(assignment))
    assert sum(colab.is_generated(cell) for cell in release.cells) == 2
    assert "colab.research.google.com/github/ada/fork/blob/main/" in release.cells[1].source
    readme = (the_course.root / "README.md").read_text().splitlines()
    assert readme[0] == "# A course" and "ada/fork" in readme[2] and readme[4] == "Some text."


@pytest.mark.slow
def test_a_new_repository_url_replaces_the_generated_cells(forked_course):
    the_course, assignment = forked_course
    build(the_course)
    (the_course.root / "pyproject.toml").write_text(
        '[project.urls]\nRepository = "https://github.com/bob/other"\n')
    stale = release_differences(the_course)
    assert "generated Colab/Binder cells are missing or out of date" in stale[assignment][0]
    build(the_course)
    assert release_differences(the_course) == {}
    for path in built_files(the_course, assignment):
        text = path.read_text()
        assert "bob/other" in text and "ada/fork" not in text


# ---------------------------------------------------------------------------
# Binder

def binder_requirements():
    text = (REPO / "binder" / "requirements.txt").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    options = [line for line in lines if line.startswith("--")]
    requirements = [Requirement(line) for line in lines if not line.startswith(("#", "--"))]
    return options, requirements


def test_binder_installs_cpu_torch_and_every_dependency():
    options, requirements = binder_requirements()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in options
    by_name = {canonicalize_name(r.name): r for r in requirements}
    torch_pins = [spec.version for spec in by_name["torch"].specifier]
    assert torch_pins and all(version.endswith("+cpu") for version in torch_pins)
    assert dependency_names() <= set(by_name)
    assert "jupyterlab" in by_name


def test_binder_post_build_installs_the_package_itself(tmp_path):
    """Run postBuild as Binder does (from the repository root), with a stand-in python."""
    post_build = REPO / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    log = tmp_path / "python.log"
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$PWD $*" >> {log}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([str(post_build)], cwd=REPO, env=env, check=True)
    assert log.read_text().splitlines() == [f"{REPO} -m pip install --no-deps ."]


@pytest.mark.slow
def test_wheel_ships_the_release_notebooks(tmp_path):
    pytest.importorskip("hatchling", reason="building the wheel offline needs hatchling "
                                            "installed (pip install hatchling)")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "--quiet", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    [wheel] = tmp_path.glob("*.whl")
    releases = sorted(COURSE.notebooks.glob("*/*.ipynb"))
    assert releases
    with zipfile.ZipFile(wheel) as archive:
        for release in releases:
            name = f"bn_course/notebooks/{release.relative_to(COURSE.notebooks).as_posix()}"
            assert archive.read(name) == release.read_bytes()


# ---------------------------------------------------------------------------
# bn-course lab: the working folder

def make_release(folder, notebooks):
    for name, text in notebooks.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / f"{name}.ipynb").write_text(text)


@pytest.fixture
def release(tmp_path):
    folder = tmp_path / "release"
    make_release(folder, {"01_a": "release 1 of a", "02_b": "release 1 of b"})
    return folder


def test_first_use_copies_every_notebook(release, tmp_path):
    work = tmp_path / "work"
    assert workspace.sync_working_folder(release, work) == [f"copied 2 notebooks into {work}"]
    assert (work / "01_a" / "01_a.ipynb").read_text() == "release 1 of a"
    assert workspace.sync_working_folder(release, work) == []


def test_a_new_release_replaces_a_notebook_the_student_did_not_edit(release, tmp_path):
    work = tmp_path / "work"
    workspace.sync_working_folder(release, work)
    make_release(release, {"01_a": "release 2 of a"})
    messages = workspace.sync_working_folder(release, work)
    assert messages == ["updated 01_a/01_a.ipynb to the new release (you had not edited it)"]
    assert (work / "01_a" / "01_a.ipynb").read_text() == "release 2 of a"
    assert not (work / "01_a" / "01_a.new.ipynb").exists()


def test_a_new_release_goes_beside_an_edited_notebook(release, tmp_path):
    work = tmp_path / "work"
    workspace.sync_working_folder(release, work)
    (work / "01_a" / "01_a.ipynb").write_text("my answers")
    assert workspace.sync_working_folder(release, work) == []  # edits, no new release
    make_release(release, {"01_a": "release 2 of a"})
    [message] = workspace.sync_working_folder(release, work)
    assert "01_a.new.ipynb" in message and "has your edits" in message
    assert (work / "01_a" / "01_a.ipynb").read_text() == "my answers"
    assert (work / "01_a" / "01_a.new.ipynb").read_text() == "release 2 of a"
    assert workspace.sync_working_folder(release, work) == []  # said once


def test_a_folder_without_a_record_never_loses_a_notebook(release, tmp_path):
    work = tmp_path / "work"
    make_release(work, {"01_a": "a notebook from elsewhere"})
    messages = workspace.sync_working_folder(release, work)
    assert (work / "01_a" / "01_a.ipynb").read_text() == "a notebook from elsewhere"
    assert (work / "01_a" / "01_a.new.ipynb").read_text() == "release 1 of a"
    assert messages[0] == f"copied 1 notebook into {work}"


def test_an_editable_install_finds_the_release_in_the_repository():
    assert not (REPO / "bn_course" / "notebooks").exists()
    assert workspace.release_folder() == COURSE.notebooks


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_lab_serves_the_working_folder(tmp_path):
    """`bn-course lab --no-browser` copies the release, prints its URL and serves it
    (as root too: it passes --allow-root then)."""
    port, work = free_port(), tmp_path / "work"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    lab = subprocess.Popen([sys.executable, "-m", "bn_course", "lab", "--no-browser",
                            "--port", str(port), "--dir", str(work)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env=env, start_new_session=True)
    try:
        printed = "".join(lab.stdout.readline() for _ in range(3))
        assert printed.startswith("copied ")
        token = re.search(rf"http://localhost:{port}/lab\?token=(\w+)", printed).group(1)
        first = min(COURSE.notebooks.glob("*/*.ipynb")).relative_to(COURSE.notebooks)
        url = f"http://127.0.0.1:{port}/api/contents/{first.as_posix()}?content=0&token={token}"
        assert json.loads(http_get_when_up(url, lab))["path"] == first.as_posix()
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)


