"""Shared test setup: figures render off-screen, and fixtures that switch nbgrader's
grading mode (NBGRADER_EXECUTION) off or on for the demos and widgets."""

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture
def not_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


@pytest.fixture
def grading(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
