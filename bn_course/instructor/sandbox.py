"""Run one submission's notebooks in a contained kernel: the work of a grading worker.

``execute_job`` takes plain data (notebook JSON, files, settings) and returns plain
data, so that the same function runs in this process, in a local worker process or
on a Dask worker on another machine; it never touches the gradebook.

Each submission runs in a scratch folder of its own holding only its files, with a
kernel that:

- gets a scrubbed environment (no variable of the instructor's but PATH and
  PYTHONPATH): HOME and TMPDIR point into the scratch folder;
- has a memory cap (RLIMIT_AS: an allocation over it raises MemoryError in the
  student's cell) and a wall-time cap for the whole notebook (the kernel is killed);
- talks to the grader over IPC sockets, not TCP;
- runs, where the OS allows it (root, or unprivileged user namespaces), in new
  network, mount and PID namespaces: no network, the course directory, the
  submissions and the instructor's solutions replaced by empty read-only folders,
  and every process it started killed with it;
- is killed with its whole process group at the end in any case.
docs/instructors.md says what this does not contain.
"""

import contextlib
import ctypes
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

GIB = 2**30
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Loaded here, not in the forked child: a child of a threaded worker must not take locks.
LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
KERNEL_LOG = "kernel.log"
# Inside the new namespaces, before the kernel starts: hide each folder named
# before "--" under an empty read-only tmpfs, then become the kernel.
HIDE_AND_EXEC = ('while [ "$1" != -- ]; do mount -t tmpfs -o ro,size=4k,mode=755 '
                 'bn-course-hidden "$1" || exit 97; shift; done; shift; exec "$@"')
NAMESPACES = ["--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]


@dataclass(frozen=True)
class Limits:
    """What one submission may use. ``hide``: folders its kernel must not see."""

    memory_bytes: int | None = 4 * GIB
    wall_seconds: float | None = 900
    threads: int = 1
    hide: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """One submission, sanitized by nbgrader, ready to execute."""

    student: str
    assignment: str
    notebooks: dict  # notebook name -> notebook JSON text
    files: dict = field(default_factory=dict)  # relative path -> bytes: its other files
    preprocessors: tuple[str, ...] = ()  # nbgrader's autograde steps that run here, by import name
    config: dict = field(default_factory=dict)  # the course's nbgrader configuration
    limits: Limits = Limits()


@dataclass(frozen=True)
class Outcome:
    """The executed notebooks (JSON text), or why the submission could not be executed."""

    notebooks: dict
    problem: str | None
    seconds: float


def execute_job(job):
    """Execute every notebook of ``job`` in a fresh, contained kernel; returns an Outcome."""
    import nbformat

    start = time.perf_counter()
    executed = {}
    with tempfile.TemporaryDirectory(prefix="bn-grade-") as scratch:
        work = Path(scratch) / "work"
        _write_files(work, job)
        for name, text in job.notebooks.items():
            notebook = nbformat.reads(text, as_version=4)
            problem = _run_steps(notebook, name, work, Path(scratch), job)
            if problem:
                return Outcome({}, f"{name}: {problem}", time.perf_counter() - start)
            executed[name] = nbformat.writes(notebook)
    return Outcome(executed, None, time.perf_counter() - start)


def _write_files(work, job):
    work.mkdir()
    for relative, content in job.files.items():
        path = work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    for name, text in job.notebooks.items():
        (work / f"{name}.ipynb").write_text(text, encoding="utf-8")


def _run_steps(notebook, name, work, scratch, job):
    """nbgrader's autograde steps up to the gradebook, Execute in a contained kernel."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from traitlets.config import Config
    from traitlets.utils.importstring import import_item

    resources = {"metadata": {"path": str(work)}, "unique_key": name,
                 "output_files_dir": f"{name}_files",
                 "nbgrader": {"student": job.student, "assignment": job.assignment,
                              "notebook": name}}
    config = Config(job.config)
    for import_name in job.preprocessors:
        step = import_item(import_name)(config=config)
        if not getattr(step, "enabled", True):
            continue
        if not hasattr(step, "kernel_manager_class"):  # not the one that runs a kernel
            notebook, resources = step.preprocess(notebook, resources)
            continue
        with contained_kernel(work, scratch, job.limits, config) as kernel:
            try:
                notebook, resources = step.preprocess(notebook, resources, km=kernel.manager)
            except DeadKernelError:
                return kernel.why_it_died()
            except CellTimeoutError:  # nbgrader interrupted the cell; it would not stop
                return kernel.why_it_died() if kernel.out_of_time.is_set() else (
                    f"a cell ran past the {step.timeout} s timeout and ignored the interrupt")
            except RuntimeError as error:  # the kernel did not start: not the student's doing
                raise RuntimeError(f"{error}; the kernel's log: {kernel.log_tail()}") from error
            finally:
                if getattr(step, "kc", None) is not None:
                    step.kc.stop_channels()
    return None


# ---------------------------------------------------------------------------
# The contained kernel

class _Kernel:
    """A kernel manager and what the watchdog saw."""

    def __init__(self, manager, log, limits, work):
        self.manager = manager
        self.log = log
        self.limits = limits
        self.work = work  # the submission's folder, the kernel's working directory
        self.out_of_time = threading.Event()

    def kill(self):
        """SIGKILL to the kernel's process group (with namespaces: all that it started)."""
        process = getattr(self.manager.provisioner, "process", None)
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def time_is_up(self):
        self.out_of_time.set()
        self.kill()

    def log_tail(self, lines=3):
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return " | ".join(text.strip().splitlines()[-lines:]) or "empty"

    def why_it_died(self):
        if self.out_of_time.is_set():
            return (f"the notebook ran past the wall-time cap of {self.limits.wall_seconds:g} s "
                    f"and was stopped")
        lines = [line for line in self.log.read_text(errors="replace").splitlines()
                 if line.strip()] if self.log.is_file() else []
        if any("MemoryError" in line or "Cannot allocate" in line for line in lines):
            return f"the kernel died: it ran out of memory (cap {_size(self.limits)})"
        if not self.work.is_dir():
            # e.g. torch, imported after that, exits the process: it cannot load its library.
            return ("the kernel died after the notebook deleted its own folder (its working "
                    "directory): what it loaded next could not be found")
        return ("the kernel died (the code exited the process, e.g. os._exit or sys.exit in "
                "a thread, or crashed)")


def _size(limits):
    return f"{limits.memory_bytes / GIB:g} GiB" if limits.memory_bytes else "none"


@contextlib.contextmanager
def contained_kernel(work, scratch, limits, config):
    """A kernel manager whose kernel runs contained in ``work``; killed on exit."""
    runtime = scratch / "rt"
    home = scratch / "home"
    for folder in (runtime, home / "tmp"):
        folder.mkdir(parents=True, exist_ok=True)
    _seed_matplotlib_cache(home)
    log = runtime / KERNEL_LOG
    log_file = open(log, "ab")  # noqa: SIM115 -- the kernel writes to it until the end
    manager = ContainedKernelManager(
        config=config, transport="ipc", ip=str(runtime / "k"),
        connection_file=str(runtime / "kernel.json"))
    manager.containment = {"env": scrubbed_environment(home, limits.threads), "work": work,
                           "log": log_file, "limits": limits,
                           "prefix": namespace_prefix(_hideable(limits.hide, scratch))}
    kernel = _Kernel(manager, log, limits, Path(work))
    timer = None
    if limits.wall_seconds:
        timer = threading.Timer(limits.wall_seconds, kernel.time_is_up)
        timer.daemon = True
        timer.start()
    try:
        yield kernel
    finally:
        if timer is not None:
            timer.cancel()
        _shut_down(manager)
        kernel.kill()
        log_file.close()


def _shut_down(manager):
    from jupyter_core.utils import run_sync

    with contextlib.suppress(Exception):  # a dead or killed kernel: nothing left to stop
        if manager.has_kernel:
            run_sync(manager.shutdown_kernel)(now=True)


class ContainedKernelManager(AsyncKernelManager):
    """nbclient's kernel manager, launching its kernel with the containment above."""

    containment = None  # set by contained_kernel: env, work, log, limits, prefix

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        settings = self.containment
        inherited = {key: value for key, value in kw.get("env", {}).items()
                     if key.startswith("JPY_")}
        kw.update(env={**settings["env"], **inherited}, cwd=str(settings["work"]),
                  stdin=subprocess.DEVNULL,
                  preexec_fn=functools.partial(_apply_limits, settings["limits"]))
        # The kernel's output (its warnings included) goes to a log, never the terminal.
        kw.update(stdout=settings["log"], stderr=settings["log"])
        await super()._async_launch_kernel(settings["prefix"] + kernel_cmd, **kw)


def _apply_limits(limits):
    """In the kernel's process, before it starts (it inherits them, and its children too)."""
    if LIBC is not None:  # a worker that dies takes its kernel with it
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))


def scrubbed_environment(home, threads):
    """The kernel's environment: nothing of the instructor's but where programs are."""
    bin_dir = os.path.dirname(sys.executable)
    env = {"PATH": os.pathsep.join([bin_dir, "/usr/local/bin", "/usr/bin", "/bin"]),
           "HOME": str(home), "TMPDIR": str(home / "tmp"), "LANG": "C.UTF-8",
           "MPLCONFIGDIR": str(home / "matplotlib"), "NBGRADER_EXECUTION": "autograde",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    if "PYTHONPATH" in os.environ:  # where the course's package may live
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _seed_matplotlib_cache(home):
    """Copy the grader's matplotlib font list, so that no kernel rebuilds it (seconds)."""
    cache = Path(os.environ.get("MPLCONFIGDIR") or Path.home() / ".cache" / "matplotlib")
    target = home / "matplotlib"
    target.mkdir(parents=True, exist_ok=True)
    for font_list in cache.glob("fontlist-*.json"):
        shutil.copy(font_list, target)


def _hideable(folders, scratch):
    """The folders that can be hidden: existing, holding neither Python nor the scratch,
    and not inside another one (hidden with it, and no longer there to mount on)."""
    needed = [Path(sys.prefix).resolve(), Path(__file__).resolve(), scratch.resolve()]
    paths = {Path(folder).resolve() for folder in folders}
    return [str(path) for path in sorted(paths) if path.is_dir()
            and not any(p == path or path in p.parents for p in needed)
            and not any(other in path.parents for other in paths)]


def namespace_prefix(hide=()):
    """The command that starts a kernel in new namespaces, or [] where the OS refuses them."""
    flags = namespace_flags()
    if flags is None:
        return []
    return ["unshare", *flags, "sh", "-c", HIDE_AND_EXEC, "sh", *hide, "--"]


@functools.cache
def namespace_flags():
    """unshare's flags for new network, mount and PID namespaces, None if unavailable."""
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return None
    flags = NAMESPACES if os.geteuid() == 0 else ["--map-root-user", *NAMESPACES]
    try:
        trial = subprocess.run(["unshare", *flags, "true"], capture_output=True, timeout=10,
                               check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return flags if trial.returncode == 0 else None
