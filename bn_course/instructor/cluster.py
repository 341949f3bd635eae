"""Where grading's work runs: this process, a local Dask cluster, or a remote scheduler.

The grader hands each pool the same function and the same plain-data jobs;
``--jobs 1`` runs them here one after another, ``--jobs N`` on a Dask
``LocalCluster`` of N single-threaded worker processes, ``--scheduler ADDRESS`` on
an existing Dask cluster (``dask scheduler`` / ``dask worker``, dask-jobqueue,
Kubernetes). Only the futures differ.
"""

import contextlib
import logging


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
def open_pool(jobs=1, scheduler=None):
    """A pool for ``jobs`` local workers, or for the Dask scheduler at ``scheduler``."""
    if scheduler is None and jobs == 1:
        yield InProcessPool()
        return
    import dask
    from distributed import Client, LocalCluster

    _quiet_dask()
    # A worker that dies takes its job with it: the grader retries that job once
    # itself, so the local scheduler need not retry it too.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.worker.daemon": False}):
        if scheduler is not None:
            with Client(scheduler, timeout="30s") as client:
                yield DaskPool(client)
            return
        with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                          dashboard_address=None, memory_limit=0,
                          silence_logs=logging.CRITICAL) as local, Client(local) as client:
            yield DaskPool(client)


def _quiet_dask():
    """Dask logs to the terminal at INFO/WARNING level; the progress bar is all a user sees."""
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
