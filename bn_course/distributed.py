"""A real ``torch.distributed`` process group on this computer, for notebook 10.

    results = run_workers(task, world_size=2, args=(...,))   # [task's result on rank 0, 1, ...]

``run_workers`` starts ``world_size`` fresh Python processes (the interpreter that runs this
one, as multiprocessing's "spawn" does on macOS and Windows), joins them into one group with
the gloo backend over 127.0.0.1, and runs ``task(rank, world_size, *args)`` in each; the task
talks to the others with ``torch.distributed`` collectives (all_gather, all_reduce). The task
and its arguments travel by value (cloudpickle), so a function written in a notebook cell
works. Whatever happens, every process is stopped before ``run_workers`` returns or raises:

* a worker that raises: ``WorkerFailed``, with the worker's traceback in the message;
* a group that does not finish within ``timeout`` seconds: ``GroupTimeout``;
* a computer where processes or gloo are not available (some restricted notebook
  runtimes): ``GroupUnavailable`` before anything starts; ``unavailable_reason()`` says why.

Plain subprocesses rather than multiprocessing: a "spawn" start also starts
multiprocessing's resource tracker, a helper process that ignores SIGINT and SIGTERM and
lives as long as the kernel, and Jupyter then takes 2-3 s longer to shut the kernel down
while it waits for that process to give in.
"""

import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path

__all__ = ["GroupTimeout", "GroupUnavailable", "WorkerFailed", "run_workers",
           "unavailable_reason"]

HOST = "127.0.0.1"
TASK_FILE = "task.pkl"


class GroupUnavailable(RuntimeError):
    """This computer cannot start a process group (the message says why)."""


class WorkerFailed(RuntimeError):
    """A worker raised or died; the message holds its traceback or exit code."""


class GroupTimeout(TimeoutError):
    """The workers did not all finish in time."""


def unavailable_reason():
    """None when ``run_workers`` can run here, else a sentence saying what is missing."""
    try:
        import torch.distributed as dist
    except ImportError as error:
        return f"torch.distributed cannot be imported ({error})"
    if not dist.is_available():
        return "this build of PyTorch has no torch.distributed"
    if not dist.is_gloo_available():
        return "this build of PyTorch has no gloo backend"
    if not sys.executable:  # an embedded interpreter (e.g. in the browser) has none to start
        return "this runtime cannot start worker processes (no Python executable)"
    return None


def run_workers(task, world_size=2, args=(), timeout=60.0):
    """Run ``task(rank, world_size, *args)`` in ``world_size`` processes joined in one gloo
    group; return the list of their results, by rank (each must pickle)."""
    reason = unavailable_reason()
    if reason:
        raise GroupUnavailable(reason)
    import cloudpickle
    import torch.distributed as dist

    # The store that the workers meet at: port 0 lets the OS pick a free port, held open
    # by this process until the workers are done (no race with other programs for it).
    store = dist.TCPStore(HOST, 0, world_size + 1, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=timeout))
    workers = []
    with tempfile.TemporaryDirectory(prefix="bn-course-group-") as folder:
        # Pickled by value, so that functions defined in a notebook reach the workers; with
        # this process's sys.path, so that they import what it can (as "spawn" does).
        with open(Path(folder) / TASK_FILE, "wb") as file:
            pickle.dump(sys.path, file)
            cloudpickle.dump((task, args), file)
        try:
            for rank in range(world_size):
                workers.append(_start_worker(rank, world_size, store.port, timeout, folder))
            return _collect(workers, Path(folder), time.monotonic() + timeout, timeout)
        finally:
            _stop(workers)
            del store


def _start_worker(rank, world_size, port, timeout, folder):
    command = [sys.executable, "-c", "from bn_course.distributed import _worker; _worker()",
               str(rank), str(world_size), str(port), str(timeout), folder]
    try:
        return subprocess.Popen(command)
    except OSError as error:
        raise GroupUnavailable(f"this runtime cannot start worker processes "
                               f"({type(error).__name__}: {error})") from error


def _result_file(folder, rank):
    return Path(folder) / f"result-{rank}.pkl"


def _collect(workers, folder, deadline, timeout):
    by_rank = {}
    while len(by_rank) < len(workers):
        for rank, worker in enumerate(workers):
            if rank not in by_rank:
                by_rank.update(_result_of(rank, worker, folder))
        if len(by_rank) < len(workers):
            if time.monotonic() > deadline:
                waiting = sorted(set(range(len(workers))) - set(by_rank))
                raise GroupTimeout(
                    f"the process group did not finish within {timeout:g} s (still waiting for "
                    f"worker(s) {waiting}); all workers were stopped")
            time.sleep(0.05)
    return [by_rank[rank] for rank in range(len(workers))]


def _result_of(rank, worker, folder):
    """{rank: result} once the worker has reported, {} while it runs; raises if it failed."""
    exit_code = worker.poll()  # before looking for the file: a worker writes it, then exits
    path = _result_file(folder, rank)
    if path.exists():
        ok, value = pickle.loads(path.read_bytes())
        if not ok:
            raise WorkerFailed(f"worker {rank} failed; its traceback:\n{value}")
        return {rank: value}
    if exit_code is not None:
        raise WorkerFailed(f"worker {rank} died (exit code {exit_code}) without a result; "
                           "all workers were stopped")
    return {}


def _stop(workers, grace=2.0):
    """Wait briefly for each worker to exit, then terminate, then kill: none is left."""
    deadline = time.monotonic() + grace
    for worker in workers:
        _wait(worker, max(0.0, deadline - time.monotonic()))
    for signal_method in ("terminate", "kill"):
        alive = [w for w in workers if w.poll() is None]
        for worker in alive:
            getattr(worker, signal_method)()
        for worker in alive:
            _wait(worker, grace)


def _wait(worker, seconds):
    try:
        worker.wait(seconds)
    except subprocess.TimeoutExpired:
        pass


def _loopback_interface():
    """The name of the loopback network interface ("lo" on Linux, "lo0" on macOS), or None."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (AttributeError, OSError):  # no if_nameindex on this platform
        return None
    return next((name for name in names if name in ("lo", "lo0")), None)


def _worker():
    """One process of the group (``sys.argv``: rank, world size, the store's port, the
    timeout, the folder with the task): join the group, run the task, write the result to
    the folder, leave the group."""
    rank, world_size, port = (int(value) for value in sys.argv[1:4])
    timeout, folder = float(sys.argv[4]), sys.argv[5]
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # several workers share the cores
    # Every worker is on this computer: gloo talks over the loopback interface, even where
    # the host name resolves to an address other processes cannot reach (containers).
    loopback = _loopback_interface()
    if loopback and "GLOO_SOCKET_IFNAME" not in os.environ:
        os.environ["GLOO_SOCKET_IFNAME"] = loopback
    joined = False
    try:
        task, args = _load_task(folder)
        store = dist.TCPStore(HOST, port, world_size + 1, is_master=False,
                              timeout=timedelta(seconds=timeout))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout))
        joined = True
        report = (True, task(rank, world_size, *args))
    except BaseException:  # noqa: BLE001 -- whatever stops the task goes back to the parent
        report = (False, traceback.format_exc())
    finally:
        if joined:
            dist.destroy_process_group()
    _write_result(folder, rank, report)


def _load_task(folder):
    """(task, args), after adding the parent's sys.path to this one's: unpickling the task
    may import modules that only the parent's path finds."""
    with open(Path(folder) / TASK_FILE, "rb") as file:
        sys.path.extend(entry for entry in pickle.load(file) if entry not in sys.path)
        return pickle.load(file)


def _write_result(folder, rank, report):
    """Write, then rename: the parent never reads half a file."""
    try:
        data = pickle.dumps(report)
    except Exception:  # noqa: BLE001 -- a result that does not pickle is the task's failure
        data = pickle.dumps((False, traceback.format_exc()))
    partial = _result_file(folder, rank).with_suffix(".partial")
    partial.write_bytes(data)
    os.replace(partial, _result_file(folder, rank))
