"""Shared test setup: figures render off-screen; fixtures that switch nbgrader's grading
mode (NBGRADER_EXECUTION) off or on for the demos and widgets; waiting for a server."""

import time
import urllib.request

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture
def not_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


@pytest.fixture
def grading(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")


def http_get_when_up(url, process, seconds=60):
    """The body at ``url`` once the server started as ``process`` answers (JupyterLab
    takes a few seconds); fails at once if the process exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited; see its log"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"no answer from {url} in {seconds} s")
