"""A real ``torch.distributed`` process group on this computer, for notebook 10.

    results = run_workers(task, world_size=2, args=(...,))   # [task's result on rank 0, 1, ...]

``run_workers`` starts ``world_size`` fresh Python processes (the "spawn" start method, as on
macOS and Windows, and safe next to a Jupyter kernel's threads), joins them into one group
with the gloo backend over 127.0.0.1, and runs ``task(rank, world_size, *args)`` in each; the
task talks to the others with ``torch.distributed`` collectives (all_gather, all_reduce). The
task and its arguments travel by value (cloudpickle), so a function written in a notebook cell
works. Whatever happens, every process is stopped before ``run_workers`` returns or raises:

* a worker that raises: ``WorkerFailed``, with the worker's traceback in the message;
* a group that does not finish within ``timeout`` seconds: ``GroupTimeout``;
* a computer where processes or gloo are not available (some restricted notebook
  runtimes): ``GroupUnavailable`` before anything starts; ``unavailable_reason()`` says why.
"""

import multiprocessing
import os
import pickle
import queue
import socket
import time
import traceback
from datetime import timedelta

__all__ = ["GroupTimeout", "GroupUnavailable", "WorkerFailed", "run_workers",
           "unavailable_reason"]

HOST = "127.0.0.1"


class GroupUnavailable(RuntimeError):
    """This computer cannot start a process group (the message says why)."""


class WorkerFailed(RuntimeError):
    """A worker raised or died; the message holds its traceback or exit code."""


class GroupTimeout(TimeoutError):
    """The workers did not all finish in time."""


def _dumps(value):
    """Pickle by value, so that functions defined in a notebook reach the workers."""
    import cloudpickle

    return cloudpickle.dumps(value)


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
    try:
        # A queue needs OS semaphores and shared memory, which some sandboxes forbid.
        multiprocessing.get_context("spawn").Queue().close()
    except (OSError, ImportError, NotImplementedError) as error:
        return f"this runtime cannot start worker processes ({type(error).__name__}: {error})"
    return None


def run_workers(task, world_size=2, args=(), timeout=60.0):
    """Run ``task(rank, world_size, *args)`` in ``world_size`` processes joined in one gloo
    group; return the list of their results, by rank (each must pickle)."""
    reason = unavailable_reason()
    if reason:
        raise GroupUnavailable(reason)
    import torch.distributed as dist

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    # The store that the workers meet at: port 0 lets the OS pick a free port, held open
    # by this process until the workers are done (no race with other programs for it).
    store = dist.TCPStore(HOST, 0, world_size + 1, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=timeout))
    payload = _dumps((task, args))
    workers = [context.Process(target=_worker, name=f"bn-course worker {rank}", daemon=True,
                               args=(rank, world_size, store.port, payload, timeout, results))
               for rank in range(world_size)]
    try:
        for worker in workers:
            worker.start()
        return _collect(workers, results, time.monotonic() + timeout, timeout)
    finally:
        _stop(workers)
        results.close()
        del store


def _collect(workers, results, deadline, timeout):
    by_rank = {}
    while len(by_rank) < len(workers):
        try:
            rank, ok, value = results.get(timeout=0.05)
        except queue.Empty:
            _check_alive(workers, by_rank)
            if time.monotonic() > deadline:
                waiting = sorted(set(range(len(workers))) - set(by_rank))
                raise GroupTimeout(
                    f"the process group did not finish within {timeout:g} s (still waiting for "
                    f"worker(s) {waiting}); all workers were stopped") from None
            continue
        if not ok:
            raise WorkerFailed(f"worker {rank} failed; its traceback:\n{value}")
        by_rank[rank] = pickle.loads(value)
    return [by_rank[rank] for rank in range(len(workers))]


def _check_alive(workers, by_rank):
    for rank, worker in enumerate(workers):
        if rank not in by_rank and worker.exitcode not in (None, 0):
            raise WorkerFailed(f"worker {rank} died (exit code {worker.exitcode}) without a "
                               "result; all workers were stopped")


def _stop(workers, grace=2.0):
    """Wait briefly for each worker to exit, then terminate, then kill: none is left."""
    deadline = time.monotonic() + grace
    for worker in workers:
        if worker.pid is not None:
            worker.join(max(0.0, deadline - time.monotonic()))
    for signal_method in ("terminate", "kill"):
        alive = [w for w in workers if w.pid is not None and w.is_alive()]
        for worker in alive:
            getattr(worker, signal_method)()
        for worker in alive:
            worker.join(grace)


def _loopback_interface():
    """The name of the loopback network interface ("lo" on Linux, "lo0" on macOS), or None."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (AttributeError, OSError):  # no if_nameindex on this platform
        return None
    return next((name for name in names if name in ("lo", "lo0")), None)


def _worker(rank, world_size, port, payload, timeout, results):
    """One process of the group: join it, run the task, report, leave it."""
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
        task, args = pickle.loads(payload)
        store = dist.TCPStore(HOST, port, world_size + 1, is_master=False,
                              timeout=timedelta(seconds=timeout))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout))
        joined = True
        results.put((rank, True, pickle.dumps(task(rank, world_size, *args))))
    except BaseException:  # noqa: BLE001 -- whatever stops the task goes back to the parent
        results.put((rank, False, traceback.format_exc()))
    finally:
        if joined:
            dist.destroy_process_group()
