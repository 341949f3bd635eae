"""The ``bn-course`` command: open, build, check and grade the course.

Importing this module is cheap on purpose (``bn-course --help`` must be instant):
torch, nbgrader and jupyter load only inside the command that needs them.
"""

import argparse
import os
import secrets
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

from bn_course import __version__
from bn_course.instructor.layout import CourseError, find_course

# Exit statuses: 0 all is well, 1 the work found a problem, 2 a bad command line.
FAILED, USAGE = 1, 2

LAB_FOLDER = "bn-course-notebooks"
DOCTOR_PACKAGES = ["numpy", "torch", "matplotlib", "ipywidgets", "nbgrader", "jupyterlab"]


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE
    try:
        return args.run(args)
    except CourseError as error:
        print(f"bn-course {args.command}: error: {error}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print(f"bn-course {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser():
    parser = argparse.ArgumentParser(
        prog="bn-course",
        description="Batch Normalization from first principles: open, build, check and "
                    "grade the course's notebooks.")
    parser.add_argument("--version", action="version", version=f"bn-course {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    lab = commands.add_parser(
        "lab", help="open the course in JupyterLab",
        description="Copy the course's notebooks into a working folder (first use; later, "
                    "a newer release never overwrites a notebook you edited: it goes beside "
                    "it as NN_slug.new.ipynb), start JupyterLab there and print its URL.")
    lab.add_argument("--dir", type=Path, default=Path(LAB_FOLDER), metavar="DIR",
                     help=f"your working folder (default ./{LAB_FOLDER})")
    lab.add_argument("--no-browser", action="store_true", help="print the URL, open no browser")
    lab.add_argument("--port", type=_port, default=8888, help="port to serve on (default 8888)")
    lab.set_defaults(run=run_lab, parser=lab)

    build = commands.add_parser(
        "build", help="regenerate notebooks/ from solutions/ with nbgrader",
        description="Generate the student release notebooks/NN_slug/ from the nbgrader "
                    "source solutions/NN_slug/ (nbgrader generate_assignment).")
    build.add_argument("assignments", nargs="*", metavar="ASSIGNMENT",
                       help="e.g. 01_batch_statistics (default: all)")
    build.set_defaults(run=run_build, parser=build)

    check = commands.add_parser(
        "check", help="verify the release is in sync and every notebook runs",
        description="Fail if notebooks/ differs from a fresh build, or if a solution "
                    "notebook does not run top to bottom in a fresh kernel.")
    check.add_argument("assignments", nargs="*", metavar="ASSIGNMENT",
                       help="e.g. 01_batch_statistics (default: all)")
    check.add_argument("--no-run", action="store_true", help="only check that the release is in sync")
    check.add_argument("--timeout", type=_seconds, default=600,
                       help="seconds a cell may run (default 600)")
    check.set_defaults(run=run_check, parser=check)

    grade = commands.add_parser(
        "grade", help="autograde a folder of submissions and print a score table",
        description="Autograde submissions laid out as nbgrader's "
                    "submitted/<student>/<assignment>/<notebook>.ipynb, on several "
                    "workers, into one nbgrader course directory; print each student's "
                    "score per notebook and what the class got wrong. Running it again "
                    "grades only what is new or changed.")
    grade.add_argument("submissions", type=Path, metavar="SUBMISSIONS_DIR",
                       help="the submitted/ folder, or a course folder that contains it")
    grade.add_argument("--csv", type=Path, metavar="PATH", help="also write the scores to this CSV file")
    grade.add_argument("--report", type=Path, metavar="PATH",
                       help="write the class report (per exercise: share passed, named "
                            "mistakes) to this CSV file, and as a page beside it (.html)")
    grade.add_argument("--course-dir", type=Path, metavar="DIR",
                       help="nbgrader course directory to grade in and keep (gradebook.db, "
                            "autograded/; `nbgrader generate_feedback` works there after); "
                            "default: the folder that holds submitted/")
    grade.add_argument("--jobs", type=_count, default=os.cpu_count() or 1, metavar="N",
                       help="notebooks executed at once on this machine (default: its "
                            f"{os.cpu_count()} cores)")
    grade.add_argument("--scheduler", metavar="ADDRESS",
                       help="execute on the Dask cluster of this scheduler instead "
                            "(e.g. tcp://10.0.0.5:8786); see docs/instructors.md")
    grade.add_argument("--force", action="store_true",
                       help="grade every submission again, not only new or changed ones")
    grade.add_argument("--timeout", type=_seconds, default=None,
                       help="seconds a cell may run (default: nbgrader_config.py's)")
    grade.add_argument("--wall-time", type=_seconds, default=900, metavar="SECONDS",
                       help="seconds a whole notebook may run before it is stopped (default 900)")
    grade.add_argument("--memory", type=_count, default=4, metavar="GIB",
                       help="memory cap of each notebook's kernel, GiB (default 4)")
    grade.set_defaults(run=run_grade, parser=grade)

    doctor = commands.add_parser("doctor", help="report versions, devices and course files",
                                 description="Report what is installed and where the course is.")
    doctor.set_defaults(run=run_doctor, parser=doctor)
    return parser


def _port(text):
    port = _integer(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (1-65535)")
    return port


def _count(text):
    count = _integer(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return count


def _seconds(text):
    seconds = _integer(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return seconds


def _integer(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _selected(args, the_course):
    """The assignments named on the command line; an unknown name is a usage error."""
    try:
        return the_course.select(args.assignments)
    except CourseError as error:
        args.parser.error(str(error))


# ---------------------------------------------------------------------------

def run_lab(args):
    if find_spec("jupyterlab") is None:
        raise CourseError("JupyterLab is not installed: pip install 'bn-course[lab]'")
    from bn_course.instructor import workspace

    release = workspace.release_folder()
    if not release.is_dir():
        raise CourseError(f"{release} does not exist yet: run `bn-course build`")
    if args.dir.exists() and not args.dir.is_dir():
        args.parser.error(f"--dir {args.dir} is a file, not a folder")
    for message in workspace.sync_working_folder(release, args.dir):
        print(message)
    folder = args.dir.resolve()
    lab_config = workspace.write_lab_config(folder)
    token = secrets.token_hex(24)
    print(f"JupyterLab on {folder}\n"
          f"    http://localhost:{args.port}/lab?token={token}\n"
          f"Ctrl-C stops it.", flush=True)
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}",
               f"--ServerApp.port={args.port}", "--ServerApp.port_retries=0"]
    if args.no_browser:
        command.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # JupyterLab refuses to run as root without it
    # The token travels in the environment, not on a command line others can list.
    # The course's lab settings come before the installation's (not the user's own).
    config_path = os.pathsep.join(filter(None, [str(lab_config),
                                                os.environ.get("JUPYTER_CONFIG_PATH")]))
    env = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTER_CONFIG_PATH": config_path}
    if os.name == "posix":
        # Become JupyterLab, so that Ctrl-C and kill reach the server itself.
        os.execve(sys.executable, command, env)
    return subprocess.call(command, env=env)


def run_build(args):
    from bn_course.instructor import release

    the_course = find_course()
    built = release.build(the_course, _selected(args, the_course), progress=True)
    for path in built:
        print(f"wrote {path.relative_to(the_course.root)}")
    return 0


def run_check(args):
    from bn_course.instructor import release

    the_course = find_course()
    names = _selected(args, the_course)
    if not names:
        raise CourseError(f"no notebooks in {the_course.solutions}")
    stale = release.release_differences(the_course, args.assignments)
    for assignment, differences in stale.items():
        print(f"STALE  {assignment}: " + "; ".join(differences))
    if not stale:
        print(f"ok     notebooks/ is in sync with solutions/ ({len(names)} notebooks)")
    failed = bool(stale)
    if not args.no_run:
        results = release.run_solutions(the_course, names, timeout=args.timeout, progress=True)
        for result in results:
            status = f"FAILED {result.error}" if result.error else "ran"
            print(f"{result.seconds:6.1f} s  {result.assignment}  {status}")
        print(f"{sum(r.seconds for r in results):6.1f} s  in all")
        failed = failed or any(result.error for result in results)
    if stale:
        print("run `bn-course build` to regenerate notebooks/", file=sys.stderr)
    return FAILED if failed else 0


def run_grade(args):
    if not args.submissions.is_dir():
        args.parser.error(f"SUBMISSIONS_DIR {args.submissions} is not a folder")
    for option, path in (("--csv", args.csv), ("--report", args.report)):
        if path and not path.parent.is_dir():  # before grading, not after hours of it
            args.parser.error(f"{option}: folder {path.parent} does not exist")
    from bn_course.instructor import grading, report, sandbox

    limits = sandbox.Limits(memory_bytes=args.memory * sandbox.GIB, wall_seconds=args.wall_time)
    run = grading.grade(find_course(), args.submissions, course_dir=args.course_dir,
                        timeout=args.timeout, jobs=args.jobs, scheduler=args.scheduler,
                        force=args.force, limits=limits, progress=True)
    for notice in run.notices:
        print(f"note: {notice}", file=sys.stderr)
    if run.resumed:
        print(f"note: {run.resumed} submissions were graded by an earlier run and have not "
              f"changed: kept (--force grades them again)", file=sys.stderr)
    problems = sorted({(g.student, g.assignment, g.problem) for g in run.grades if g.problem})
    for student, assignment, problem in problems:
        print(f"not graded: {student}/{assignment}: {problem}", file=sys.stderr)
    if not run.grades:
        print("nothing was graded", file=sys.stderr)
        return FAILED
    print(grading.format_table(run.grades))
    print()
    print(report.format_report(run.report))
    if args.csv:
        grading.write_csv(run.grades, args.csv)
        print(f"wrote {args.csv}")
    if args.report:
        report.write_report_csv(run.report, args.report)
        report.write_report_html(run.report, args.report.with_suffix(".html"))
        print(f"wrote {args.report} and {args.report.with_suffix('.html')}")
    print(f"nbgrader course directory: {run.course_dir}")
    return FAILED if problems else 0


def run_doctor(args):
    rows = [("bn-course", __version__),
            ("Python", f"{sys.version.split()[0]} ({sys.executable})")]
    rows += [(name, _installed_version(name)) for name in DOCTOR_PACKAGES]
    rows += [("devices", _devices()), ("course", _course_files())]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return 0


def _installed_version(distribution):
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "missing"


def _devices():
    try:
        import torch
    except Exception as error:  # noqa: BLE001 -- missing or broken, doctor must still report
        return f"unknown (torch does not import: {type(error).__name__})"
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    found = [f"CUDA ({torch.cuda.get_device_name(0)})" if cuda else None, "MPS" if mps else None]
    return "CPU, " + (", ".join(d for d in found if d) or "no CUDA or MPS")


def _course_files():
    try:
        the_course = find_course()
    except CourseError as error:
        return str(error)
    sources = len(the_course.assignments())
    releases = len(list(the_course.notebooks.glob("*/*.ipynb")))
    return (f"{the_course.root} (solutions/: {sources} notebooks, "
            f"notebooks/: {releases} notebooks)")
