"""bn_course.distributed: a real gloo group of worker processes that starts, reports and
stops cleanly, fails with a clear message, and is never left running."""

import os
import time

import numpy as np
import pytest

from bn_course import distributed
from bn_course.distributed import GroupTimeout, GroupUnavailable, WorkerFailed, run_workers

pytestmark = pytest.mark.skipif(distributed.unavailable_reason() is not None,
                                reason=f"no process group here: {distributed.unavailable_reason()}")


def gather_ranks(rank, world_size, offset):
    import torch
    import torch.distributed as dist

    everyone = [torch.zeros(1) for _ in range(world_size)]
    dist.all_gather(everyone, torch.tensor([rank + offset]))
    return os.getpid(), [t.item() for t in everyone]


def fail_on_rank_one(rank, world_size):
    if rank == 1:
        raise ValueError("a deliberate failure in worker 1")
    return rank


def hang_on_rank_one(rank, world_size):
    if rank == 1:
        time.sleep(600)
    return rank


def die_on_rank_zero(rank, world_size):
    if rank == 0:
        os._exit(3)  # no exception, no result: the process is simply gone
    return rank


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def children():
    """The pids of this test process's live child processes (Linux)."""
    found = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
            found |= {int(pid) for pid in f.read().split()}
    return {pid for pid in found if alive(pid)}


@pytest.fixture
def no_leftover_children():
    before = children()
    yield
    deadline = time.monotonic() + 5
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not children() - before, "worker processes were left running"


@pytest.mark.parametrize("world_size", [2, 3])
def test_workers_form_one_group_and_return_by_rank(world_size, no_leftover_children):
    results = run_workers(gather_ranks, world_size, args=(10.0,), timeout=60)
    pids = [pid for pid, _ in results]
    assert len(set(pids)) == world_size and os.getpid() not in pids
    assert all(values == [10.0 + r for r in range(world_size)] for _, values in results)
    assert not any(alive(pid) for pid in pids)


def test_a_function_defined_at_run_time_reaches_the_workers(no_leftover_children):
    scale = np.float64(2.5)
    local = lambda rank, world_size: rank * scale  # not importable by name
    assert run_workers(local, 2, timeout=60) == [0.0, 2.5]


def test_a_failing_worker_gives_its_traceback(no_leftover_children):
    with pytest.raises(WorkerFailed, match="worker 1 failed") as error:
        run_workers(fail_on_rank_one, 2, timeout=60)
    assert "ValueError: a deliberate failure in worker 1" in str(error.value)


def test_a_worker_that_dies_is_reported(no_leftover_children):
    with pytest.raises(WorkerFailed, match=r"worker 0 died \(exit code 3\)"):
        run_workers(die_on_rank_zero, 2, timeout=60)


def test_a_hanging_group_times_out_and_is_stopped(no_leftover_children):
    start = time.monotonic()
    with pytest.raises(GroupTimeout, match=r"within 8 s .*worker\(s\) \[1\]"):
        run_workers(hang_on_rank_one, 2, timeout=8)
    assert time.monotonic() - start < 30


def test_unavailable_runtime_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(distributed, "unavailable_reason", lambda: "no semaphores here")
    with pytest.raises(GroupUnavailable, match="no semaphores here"):
        run_workers(gather_ranks, 2, args=(0.0,))


def test_unavailable_reason_names_a_runtime_without_an_interpreter_to_start(monkeypatch):
    import sys

    monkeypatch.setattr(sys, "executable", "")  # as in an interpreter embedded in a browser
    assert "cannot start worker processes" in distributed.unavailable_reason()


def test_a_runtime_that_forbids_new_processes_is_refused_with_the_reason(monkeypatch,
                                                                        no_leftover_children):
    import subprocess

    def forbidden(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    with pytest.raises(GroupUnavailable, match="cannot start worker processes.*not permitted"):
        run_workers(gather_ranks, 2, args=(0.0,))


LINGERING_SCRIPT = """
import os
from bn_course.distributed import run_workers

def rank_only(rank, world_size):
    return rank

if __name__ == "__main__":
    assert run_workers(rank_only, 2, timeout=60) == [0, 1]
    me = os.getpid()
    children = set()
    for task in os.listdir(f"/proc/{me}/task"):
        with open(f"/proc/{me}/task/{task}/children") as f:
            children |= set(f.read().split())
    print("children:", len(children))
"""


def test_nothing_lingers_after_the_group_not_even_a_helper_process(tmp_path):
    """A helper left running (multiprocessing's resource tracker, which ignores SIGINT and
    SIGTERM) made Jupyter wait seconds to shut notebook 10's kernel down."""
    import subprocess
    import sys

    script = tmp_path / "lingering.py"
    script.write_text(LINGERING_SCRIPT)
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "children: 0" in finished.stdout


INTERRUPTED_SCRIPT = """
import os, sys, time
from bn_course.distributed import run_workers

def wait_forever(rank, world_size, folder):
    open(os.path.join(folder, str(os.getpid())), "w").close()
    time.sleep(600)

if __name__ == "__main__":
    try:
        run_workers(wait_forever, 2, args=(sys.argv[1],), timeout=300)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def test_an_interrupted_run_stops_its_workers(tmp_path):
    """Interrupting the kernel (Ctrl-C, the stop button) while the group runs."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED_SCRIPT)
    folder = tmp_path / "pids"
    folder.mkdir()
    process = subprocess.Popen([sys.executable, str(script), str(folder)],
                               stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(path.name) for path in folder.iterdir()]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "interrupted" in process.stdout.read()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in (int(path.name) for path in folder.iterdir()):
            if alive(pid):
                os.kill(pid, 9)
