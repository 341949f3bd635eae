"""The `bn-course` command line, run as a user runs it: a subprocess."""

import subprocess
import sys
from importlib.metadata import version

import pytest

COMMANDS = ["lab", "build", "check", "grade", "doctor"]


def bn_course(*args):
    return subprocess.run([sys.executable, "-m", "bn_course", *args],
                          check=False, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = bn_course(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: bn-course {command}")


def test_no_command_prints_the_commands_and_fails():
    result = bn_course()
    assert result.returncode == 2
    assert all(command in result.stderr for command in COMMANDS)


def test_unknown_command_fails_and_lists_the_commands():
    result = bn_course("grdae")
    assert result.returncode == 2
    assert "invalid choice: 'grdae'" in result.stderr
    assert all(command in result.stderr for command in COMMANDS)


@pytest.mark.parametrize("args, message", [
    (["lab", "--port", "eighty"], "'eighty' is not a whole number"),
    (["check", "--timeout", "0"], "0 is not a positive number of seconds"),
    (["build", "42_no_such_notebook"], "unknown assignment '42_no_such_notebook'"),
    (["grade", ".", "--jobs", "0"], "0 is not a positive whole number"),
    (["grade", ".", "--memory", "-1"], "-1 is not a positive whole number"),
])
def test_bad_argument_fails_with_a_message(args, message):
    result = bn_course(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_grade_a_missing_folder_fails_with_a_message(tmp_path):
    missing = tmp_path / "no_such_folder"
    result = bn_course("grade", str(missing))
    assert result.returncode == 2
    assert f"{missing} is not a folder" in result.stderr


def test_doctor_reports_versions_devices_and_course():
    result = bn_course("doctor")
    assert result.returncode == 0, result.stderr
    report = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert report["numpy"] == version("numpy")
    assert report["nbgrader"] == version("nbgrader")
    assert set(report) >= {"Python", "torch", "matplotlib", "ipywidgets", "jupyterlab",
                           "devices", "course"}
    assert "CUDA" in report["devices"]
    assert "solutions/" in report["course"]


def test_importing_the_cli_loads_no_heavy_library():
    heavy = ["torch", "numpy", "nbgrader", "nbformat", "nbclient", "matplotlib"]
    code = f"import sys, bn_course.cli; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_grade_skips_another_courses_assignment_and_says_so(tmp_path):
    (tmp_path / "submitted" / "ada" / "07_linear_regression").mkdir(parents=True)
    result = bn_course("grade", str(tmp_path))
    assert result.returncode == 1
    assert "ada/07_linear_regression: not an assignment of this course" in result.stderr
    assert "nothing was graded" in result.stderr


def test_lab_refuses_a_file_as_its_folder(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    result = bn_course("lab", "--dir", str(a_file), "--no-browser")
    assert result.returncode == 2
    assert f"--dir {a_file} is a file, not a folder" in result.stderr


@pytest.mark.slow
def test_grade_on_two_workers_shows_the_bar_the_table_and_the_report_only(tmp_path):
    """Two students' notebook 01 with a catalogued mistake, graded by `bn-course grade
    --jobs 2`: nothing on the terminal but what bn-course prints (no kernel, nbgrader or
    Dask log lines), and the class report names the mistake."""
    from classroom import released_and_solved, submit

    from bn_course.instructor import layout

    real = layout.find_course()
    assignment = "01_batch_statistics"
    _, solved = released_and_solved(real, tmp_path / "release", [assignment])
    notebook = solved[assignment]
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "batch_var":
            cell.source = "def batch_var(x):\n    return x.var(axis=0, ddof=1)"
    # two students, or a single worker would do
    submit(tmp_path / "class" / "submitted", {student: {assignment: notebook}
                                              for student in ("ada", "bo")})

    result = bn_course("grade", str(tmp_path / "class"), "--jobs", "2",
                       "--report", str(tmp_path / "report.csv"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no tty: not even a progress bar
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["student", assignment]
    assert any("batch_var: 0/2 passed" in line for line in lines)
    assert any("mistake unbiased-variance (ada, bo)" in line for line in lines)
    assert (tmp_path / "report.html").is_file()
    assert (tmp_path / "class" / "gradebook.db").is_file()  # the default course directory
