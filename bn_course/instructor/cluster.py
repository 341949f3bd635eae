"""Where grading's work runs: this process, a local Dask cluster, or a remote scheduler.

The grader hands each pool the same function and the same plain-data jobs;
``--jobs 1`` runs them here one after another, ``--jobs N`` on a Dask
``LocalCluster`` of N single-threaded worker processes, ``--scheduler ADDRESS`` on
an existing Dask cluster (``dask scheduler`` / ``dask worker``, dask-jobqueue,
Kubernetes). Only the futures differ.

A local cluster takes seconds to start, mostly importing what a worker needs: its
workers are forked from one server process that imports it once, and ``start_pool``
starts it in the background while the grader does other work.
"""

import contextlib
import logging
import multiprocessing
from concurrent import futures

# What a worker imports for its first job: seconds of CPU (nbformat's jsonschema alone
# takes one), paid once in the forkserver instead of once per worker.
WORKER_IMPORTS = ["distributed", "bn_course.instructor.sandbox", "nbclient",
                  "nbgrader.preprocessors"]


class InProcessPool:
    """Runs each job when it is submitted, in this process."""

    workers = 1

    def __init__(self):
        self._finished = []

    def submit(self, function, job):
        try:
            self._finished.append((job, function(job)))
        except Exception as error:  # noqa: BLE001 -- reported like a worker's failure
            self._finished.append((job, error))

    @property
    def in_flight(self):
        return len(self._finished)

    def finished(self, wait=True):
        """(job, result or the exception that stopped it), as they finish."""
        while self._finished:
            yield self._finished.pop(0)


class DaskPool:
    """Submits each job to a Dask distributed cluster through ``client``."""

    def __init__(self, client):
        from distributed import as_completed

        self.client = client
        self._futures = as_completed()
        self._jobs = {}

    @property
    def workers(self):
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def submit(self, function, job):
        future = self.client.submit(function, job, pure=False)
        self._jobs[future.key] = job
        self._futures.add(future)

    @property
    def in_flight(self):
        return self._futures.count()

    def finished(self, wait=True):
        """(job, result or the exception that stopped it) for the jobs finished so far;
        with ``wait``, first waits until one is (not until all are: the grader records
        it and hands out the next job while the others run)."""
        if self._futures.is_empty() or not (wait or self._futures.has_ready()):
            return
        for future in self._futures.next_batch(block=True):
            job = self._jobs.pop(future.key)
            try:
                yield job, future.result()
            except Exception as error:  # noqa: BLE001 -- a dead worker, a lost connection
                yield job, error
            finally:
                future.release()


@contextlib.contextmanager
def start_pool(jobs=1, scheduler=None):
    """``open_pool`` in a thread of its own: yields at once a Future of the pool, so
    that the caller can get other work done while a cluster starts.

    The pool is closed on exit. An error in opening it is raised by the Future's
    ``result()``; a caller that never asks for the pool never sees it.
    """
    with futures.ThreadPoolExecutor(1, thread_name_prefix="bn-course-pool") as starter, \
            contextlib.ExitStack() as opened:
        pool = starter.submit(opened.enter_context, open_pool(jobs, scheduler))
        try:
            yield pool
        finally:
            futures.wait([pool])  # started (or failed) before it is closed


@contextlib.contextmanager
def open_pool(jobs=1, scheduler=None):
    """A pool for ``jobs`` local workers, or for the Dask scheduler at ``scheduler``."""
    if scheduler is None and jobs <= 1:
        yield InProcessPool()
        return
    import dask
    from distributed import Client, LocalCluster

    _quiet_dask()
    # A worker that dies takes its job with it: the grader retries that job once
    # itself, so the local scheduler need not retry it too.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.worker.daemon": False,
                          "distributed.worker.multiprocessing-method": _start_method()}):
        # Clients are closed, not used in a `with`: that would make the client the
        # current one of the thread that opened it, and start_pool opens the pool in
        # a thread of its own and closes it from the caller's.
        if scheduler is not None:
            with contextlib.closing(Client(scheduler, timeout="30s")) as client:
                yield DaskPool(client)
            return
        _preload_workers()
        with _stopping_helper_processes(), \
                LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                             dashboard_address=None, memory_limit=0,
                             silence_logs=logging.CRITICAL) as local, \
                contextlib.closing(Client(local)) as client:
            yield DaskPool(client)


def _start_method():
    """forkserver where the OS has it: a worker is a fork of a server process that
    has imported WORKER_IMPORTS (the server is stopped with the cluster)."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _preload_workers():
    """Have the forkserver import WORKER_IMPORTS before it forks the first worker."""
    from distributed.utils import get_mp_context

    context = get_mp_context()  # Dask gives the forkserver a list of its own when first asked
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(WORKER_IMPORTS)


@contextlib.contextmanager
def _stopping_helper_processes():
    """Starting workers also starts multiprocessing's forkserver and resource tracker,
    which would outlive the cluster: stop those that were not running before, so that
    grading leaves no process behind. (``_stop`` is what multiprocessing's own tests
    use; a later cluster starts them again.)"""
    from multiprocessing import forkserver, resource_tracker

    server, tracker = forkserver._forkserver, resource_tracker._resource_tracker
    server_was_running, tracker_was_running = (server._forkserver_pid is not None,
                                               tracker._pid is not None)
    try:
        yield
    finally:
        if not server_was_running:
            server._stop()
        if not tracker_was_running:  # after the server, which holds a link to it
            tracker._stop()


def _quiet_dask():
    """Dask logs to the terminal at INFO/WARNING level; the progress bar is all a user sees."""
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
