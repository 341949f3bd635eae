"""Checkers that say *what* is wrong.

    result = check("batch_var", batch_var)   # .passed, .message, .mistake
    grade("batch_var", batch_var, group="basic")   # nbgrader test cells

``check`` runs a candidate on every hidden case of an exercise (see
``bn_course.exercises``) and compares it with the reference. When it differs,
every catalogued mistake (``bn_course.mistakes``) is played on the same cases;
one whose outputs match the candidate's names the mistake. ``check`` never
raises because of the candidate: exceptions, wrong types and shapes, NaN,
modified inputs, endless loops and calls to a ready-made batch norm all
become a failed result with a message.
"""

import contextlib
import functools
import html
import importlib.util
import io
import os
import signal
import sys
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from bn_course.exercises import (
    EXERCISES,
    GROUPS,
    CandidateProblem,
    InputModified,
    WrongArity,
    describe,
)
from bn_course.mistakes import DETECTED, mistake_named, mistakes_for

__all__ = ["CheckResult", "check", "grade", "Progress", "relative_error", "NOTEBOOK_EXERCISES"]

REFERENCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference")

NOTEBOOK_EXERCISES = {
    "01": ("batch_mean", "batch_var"),
    "02": ("normalize",),
    "03": ("batchnorm_forward",),
    "04": ("update_running_stats", "batchnorm_eval", "BatchNorm1d", "keras_to_torch_momentum"),
    "05": ("batchnorm_backward", "batchnorm_backward_compact"),
    "06": ("batchnorm2d_forward", "BatchNorm2d"),
    "07": ("steps_to_reach", "percentile_trace"),
    "08": ("fold_batchnorm", "layernorm_forward", "groupnorm_forward",
           "ghost_batchnorm_forward", "recompute_running_stats", "diagnose_bn_bug"),
}


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    message: str
    mistake: str | None = None

    def __str__(self):
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.message}"

    __repr__ = __str__

    def _repr_html_(self):
        colour, mark = ("#1a7f37", "&#10004;") if self.passed else ("#cf222e", "&#10008;")
        body = html.escape(self.message).replace("\n", "<br>")
        return (f'<div style="border-left:4px solid {colour};padding:4px 10px">'
                f'<b style="color:{colour}">{mark} {html.escape(self.name)}</b><br>{body}</div>')


def relative_error(a, b):
    """max|a - b| / max(1e-8, max(|a| + |b|)): one number for a whole array."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b), initial=0.0)
                 / max(1e-8, float(np.max(np.abs(a) + np.abs(b), initial=0.0))))


# --- running a candidate safely ---------------------------------------------

class _TimeLimit(BaseException):
    """Raised inside a candidate that runs too long (BaseException, so that a
    student's `except Exception` cannot swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds):
    # SIGALRM interrupts a Python-level endless loop. It exists on Linux and
    # macOS (Colab, Binder, JupyterLab); elsewhere calls run without a limit.
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        if _importing(frame):
            # Interrupting an import (torch pulls in sympy on first autograd use)
            # would leave a half-initialized module in the student's kernel: give
            # the candidate a fresh allowance once the import is done instead.
            signal.setitimer(signal.ITIMER_REAL, seconds)
            return
        raise _TimeLimit

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _importing(frame):
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


class _ForbiddenCallWatch:
    """A sys.setprofile hook that notes calls to a ready-made batch norm: the
    course's reference, torch.nn.functional.batch_norm, nn.BatchNorm*, the C
    functions torch.batch_norm / torch.native_batch_norm, and aten operators
    called through torch.ops."""

    def __init__(self):
        self.mistake = None

    def __call__(self, frame, event, arg):
        if event == "call":
            filename, function = frame.f_code.co_filename, frame.f_code.co_name
            if filename.startswith(REFERENCE_DIR):
                self.mistake = "calls-course-reference"
            elif filename.startswith(_torch_dir()) and (
                    "batch_norm" in function or filename.endswith("batchnorm.py")
                    or (filename.endswith("_ops.py") and "batch_norm" in _op_name(frame))):
                self.mistake = "uses-builtin-batchnorm"
        elif event == "c_call" and "batch_norm" in getattr(arg, "__name__", ""):
            self.mistake = "uses-builtin-batchnorm"


@functools.cache
def _torch_dir():
    """Where torch is installed, found without importing it ("\0" when absent,
    which no filename starts with)."""
    spec = importlib.util.find_spec("torch")
    return spec.submodule_search_locations[0] if spec else "\0"


def _op_name(frame):
    """The aten operator behind a torch.ops call, read from the instance dict
    (never str() or getattr: they run torch code inside the profile hook)."""
    op = frame.f_locals.get("self")
    return str(getattr(op, "__dict__", {}).get("_name", ""))


@contextlib.contextmanager
def _watch_forbidden_calls():
    watch = _ForbiddenCallWatch()
    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        yield watch
    finally:
        # A C-level profiler such as cProfile cannot be handed back to setprofile.
        sys.setprofile(previous if callable(previous) else None)


@contextlib.contextmanager
def _quietly():
    """No warnings and nothing on stderr: nbgrader scores a cell that writes to
    stderr 0, and a NumPy warning from the student's code is not the verdict."""
    with warnings.catch_warnings(), np.errstate(all="ignore"), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class _Failed(Exception):
    def __init__(self, message, mistake=None):
        super().__init__(message)
        self.message, self.mistake = message, mistake


def _play_candidate(exercise, case, candidate):
    """The candidate's outputs on one case, or _Failed with a message for a person.

    A call to a ready-made batch norm is reported first: it explains whatever
    else went wrong."""
    with _quietly(), _watch_forbidden_calls() as watch:
        try:
            with _time_limit(exercise.time_limit_s):
                outputs = case.play(candidate)
            failure = None
        except (Exception, SystemExit, _TimeLimit) as error:
            failure = _failure(exercise, case, error)
    if watch.mistake:
        mistake = mistake_named(exercise.name, watch.mistake)
        raise _Failed(f"{mistake.diagnosis}\nHint: {mistake.hint}", mistake.id)
    if failure:
        raise failure
    return outputs


def _failure(exercise, case, error):
    """The _Failed that explains an error raised while playing a case."""
    if isinstance(error, NotImplementedError):
        return _Failed("Not implemented yet: replace `raise NotImplementedError()` with your code.")
    if isinstance(error, _TimeLimit):
        return _Failed(f"On {case.description}, your code ran for more than "
                       f"{exercise.time_limit_s:g} s. Is there an endless loop?")
    if isinstance(error, WrongArity):
        return _Failed(f"On {case.description}, expected a tuple of {error.expected} "
                       f"arrays, got {describe(error.got)}.")
    if isinstance(error, InputModified):
        mistake = mistake_named(exercise.name, "modifies-input")
        return _Failed(f"{mistake.diagnosis} (argument `{error.name}`, on {case.description})"
                       f"\nHint: {mistake.hint}", mistake.id)
    if isinstance(error, CandidateProblem) and error.mistake:
        mistake = mistake_named(exercise.name, error.mistake)
        return _Failed(f"{error.message}\n{mistake.diagnosis}\nHint: {mistake.hint}", mistake.id)
    if isinstance(error, CandidateProblem):
        return _Failed(f"On {case.description}: {error.message}")
    return _Failed(f"On {case.description}, your code raised {type(error).__name__}: "
                   f"{_printable(error)}")


def _printable(error):
    try:
        return str(error)
    except Exception:  # a student's exception class whose __str__ fails
        return "(its message could not be printed)"


def _trusted_outputs(case, implementation, may_fail=True):
    """Outputs of the reference or of a catalogued variant, memoized on the case;
    None where a variant itself fails on this case (the reference may not)."""
    memo = case.__dict__.setdefault("_memo", {})
    if implementation not in memo:
        with _quietly():
            try:
                memo[implementation] = case.play(implementation)
            except Exception:
                if not may_fail:
                    raise
                memo[implementation] = None
    return memo[implementation]


# --- comparing outputs ------------------------------------------------------

def _describe_candidate(candidate):
    if candidate is None:
        return "None: did the cell that defines it run?"
    return describe(candidate)


def _type_problem(expected, got):
    """Why got cannot stand for expected at all (no diagnosis can help), or None."""
    if isinstance(expected, (bool, np.bool_)):
        if isinstance(got, (bool, np.bool_)):
            return None
        return f"expected True/False, got {describe(got)}"
    if isinstance(expected, np.ndarray):
        if isinstance(got, (np.ndarray, np.number, float, int)) and not isinstance(got, bool):
            return None
        return f"expected a NumPy array, got {describe(got)}"
    if isinstance(got, (float, int, np.number, np.ndarray)) and np.ndim(got) == 0:
        return None
    return f"expected a number, got {describe(got)}"


def _aligned(expected, got):
    """got as an array shaped like expected where the API allows it: a per-feature
    statistic may come as (1, D) instead of (D,)."""
    got = np.asarray(got)
    if np.ndim(expected) == 1 and got.shape == (1,) + np.shape(expected):
        return got.reshape(np.shape(expected))
    return got


def _value_problem(expected, got, tolerance):
    """How got differs from expected, or None if it is close enough."""
    if isinstance(expected, (bool, np.bool_)):
        return None if bool(got) == bool(expected) else f"expected {expected}, got {got}"
    got = _aligned(expected, got)
    if got.shape != np.shape(expected):
        return f"has shape {got.shape}, expected {np.shape(expected)}"
    if not np.issubdtype(got.dtype, np.floating):
        return f"has dtype {got.dtype}, expected floating-point numbers"
    if not np.all(np.isfinite(got)):
        return "contains NaN or inf"
    error = relative_error(expected, got)
    if error > tolerance:
        return (f"is off by a relative error of {error:.1e} (allowed: {tolerance:.0e})\n"
                f"  expected {_preview(expected)}\n  got      {_preview(got)}")
    return None


def _preview(values):
    flat = np.ravel(np.asarray(values, dtype=np.float64))
    text = np.array2string(flat[:4], precision=4, separator=", ")
    return text[:-1] + ", ...]" if flat.size > 4 else text


def _same(a, b, tolerance):
    """Equal within tolerance, NaN matching NaN: used to match catalogued variants."""
    booleans = isinstance(a, (bool, np.bool_)), isinstance(b, (bool, np.bool_))
    if any(booleans):
        return all(booleans) and bool(a) == bool(b)
    a, b = _aligned(b, a), np.asarray(b)
    real = all(np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)
               for v in (a, b))
    if a.shape != b.shape or not real:
        return False
    a, b = a.astype(np.float64), b.astype(np.float64)
    finite = np.isfinite(a)
    if not (np.array_equal(finite, np.isfinite(b))
            and np.array_equal(a[~finite], b[~finite], equal_nan=True)):
        return False
    return relative_error(a[finite], b[finite]) <= tolerance


def _matches(outputs, variant_outputs, tolerance):
    return variant_outputs is not None and len(outputs) == len(variant_outputs) and all(
        label == v_label and _same(value, v_value, tolerance)
        for (label, value), (v_label, v_value) in zip(outputs, variant_outputs))


# --- the verdict ------------------------------------------------------------

def _verdict(exercise, candidate, groups):
    cases = [case for group in groups for case in exercise.cases(group)]
    played, first_problem, worst = [], None, 0.0
    for case in cases:
        # The reference first: its run pays for any first-use costs (torch's first
        # backward pass) outside the forbidden-call watch, which slows them down.
        expected = _trusted_outputs(case, exercise.reference, may_fail=False)
        outputs = _play_candidate(exercise, case, candidate)
        for (label, want), (_, got) in zip(expected, outputs):
            problem = _type_problem(want, got)
            if problem:
                raise _Failed(f"On {case.description}, {label}: {problem}.")
            problem = _value_problem(want, got, case.tolerance)
            if problem and first_problem is None:
                first_problem = f"On {case.description}, {label} {problem}"
            elif not problem and not isinstance(want, (bool, np.bool_)):
                worst = max(worst, relative_error(want, _aligned(want, got)))
        played.append((case, outputs))
    if first_problem is None:
        return CheckResult(exercise.name, True,
                           f"All {len(cases)} hidden cases match the reference "
                           f"(largest relative error {worst:.1e}).")
    matchable = [m for m in mistakes_for(exercise.name) if m.id not in DETECTED]
    for mistake in matchable:
        if all(_matches(outputs, _trusted_outputs(case, mistake.variant), case.tolerance)
               for case, outputs in played):
            return CheckResult(exercise.name, False,
                               f"{mistake.diagnosis}\nHint: {mistake.hint}", mistake.id)
    return CheckResult(exercise.name, False, first_problem)


def check(name, candidate, groups=GROUPS):
    """Check a candidate against every hidden case of an exercise; never raises
    because of the candidate. Returns a CheckResult (shown nicely in Jupyter)."""
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; known: {', '.join(EXERCISES)}")
    exercise = EXERCISES[name]
    if isinstance(groups, str):
        groups = (groups,)
    if not callable(candidate):
        return CheckResult(name, False, f"Expected your {exercise.signature}, got "
                                        f"{_describe_candidate(candidate)}.")
    try:
        return _verdict(exercise, candidate, groups)
    except _Failed as failure:
        return CheckResult(name, False, failure.message, failure.mistake)


def grade(name, candidate, group="basic"):
    """For nbgrader test cells: check one group of cases; AssertionError on failure.

    Returns None, so a test cell that ends with this call has no value (nbgrader
    then gives full credit when nothing raised)."""
    result = check(name, candidate, groups=(group,))
    if not result.passed:
        raise AssertionError(result.message)


class Progress:
    """A notebook's tally of self-checks: ``progress.check(...)`` in each
    self-check cell, ``progress.summary()`` at the end."""

    def __init__(self, notebook):
        if notebook not in NOTEBOOK_EXERCISES:
            raise ValueError(f"unknown notebook {notebook!r}; known: "
                             f"{', '.join(NOTEBOOK_EXERCISES)}")
        self.notebook = notebook
        self.results = {}

    def check(self, name, candidate):
        result = check(name, candidate)
        self.results[name] = result
        return result

    def summary(self):
        return _Summary(self.notebook, [
            self.results.get(name) or CheckResult(name, False, "not checked yet")
            for name in NOTEBOOK_EXERCISES[self.notebook]])


@dataclass(frozen=True)
class _Summary:
    notebook: str
    results: list

    @property
    def passed(self):
        return sum(result.passed for result in self.results)

    def __str__(self):
        lines = [f"Notebook {self.notebook}: {self.passed}/{len(self.results)} exercises pass"]
        lines += [f"  {'PASS' if r.passed else 'FAIL'} {r.name}" for r in self.results]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self):
        rows = "".join(
            f"<li>{'&#10004;' if r.passed else '&#10008;'} <code>{html.escape(r.name)}</code></li>"
            for r in self.results)
        return (f"<b>Notebook {self.notebook}: {self.passed}/{len(self.results)} exercises "
                f"pass</b><ul style='list-style:none'>{rows}</ul>")
