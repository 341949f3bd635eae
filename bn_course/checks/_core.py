"""The checker's engine: play a candidate safely, compare it with the reference,
and, when it differs, say why.

An *exercise* (see ``Exercise``) has a reference answer, seeded hidden *cases*
and a catalogue of *mistakes*. A case runs a candidate (the student's function
or class) on fresh copies of its inputs and returns ``[(label, value), ...]``.
When the candidate differs from the reference, the engine plays every
catalogued mistake on the same cases, alone and in pairs, and names the one
whose outputs match. When none matches, the exercise's *probes* make true
observations ("your output does not depend on eps"). The verdict never raises
because of the candidate.
"""

import contextlib
import functools
import html
import importlib.util
import io
import itertools
import linecache
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bn_course.numerics import relative_error

GROUPS = ("basic", "awkward", "float32")
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_DIR = os.path.join(_PACKAGE_DIR, "reference")


# --- what a case can say about a candidate ------------------------------------

class CandidateProblem(Exception):
    """Something about the candidate that a case can name directly (a module
    without buffers, a gradient that never arrives...), with a catalogue id
    when the mistake is a known one."""

    def __init__(self, message, mistake=None):
        super().__init__(message)
        self.message, self.mistake = message, mistake


class InputModified(Exception):
    """The candidate changed an input array in place."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


class WrongArity(Exception):
    """The candidate returned a different number of values than asked for."""

    def __init__(self, expected, got):
        super().__init__(expected, got)
        self.expected, self.got = expected, got


def describe(value, returned=True):
    """What a value is, in words for a student's message. ``returned``: the value
    came back from a call, where None usually means a missing `return`."""
    if value is None:
        return "None (is a `return` missing?)" if returned else "None"
    if type(value).__module__.startswith("torch"):
        return "a torch.Tensor (convert it with .numpy())"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a value of type {type(value).__name__}"


# --- the pieces an exercise module declares ------------------------------------

@dataclass
class Case:
    description: str
    play: Callable  # play(candidate) -> [(label, output), ...]
    float32: bool = False
    # For probes, a function case remembers its call: rerun(candidate, **changes).
    rerun: Callable | None = field(default=None, repr=False)
    args: dict = field(default_factory=dict, repr=False)
    kwargs: dict = field(default_factory=dict, repr=False)

    @property
    def tolerance(self):
        return 1e-4 if self.float32 else 1e-6


@dataclass(frozen=True)
class Mistake:
    """One known mistake: either a ready ``variant`` (an implementation that makes
    it), or ``knobs`` for the exercise's ``build(**knobs)``. Knob mistakes are
    also tried two at a time; a named convention is one entry with several knobs."""

    id: str
    diagnosis: str
    hint: str
    variant: Callable | None = None
    knobs: tuple = ()  # ((knob, value), ...): hashable, so variants can be memoized
    pairs: bool = True  # tried together with other knob mistakes
    # A loss of precision (a one-pass variance...) gives different rounding errors in
    # every spelling: such a mistake matches by where it goes wrong, not by its values.
    precision: bool = False


def knob_mistake(mistake_id, diagnosis, hint, pairs=True, precision=False, **knobs):
    return Mistake(mistake_id, diagnosis, hint, knobs=tuple(sorted(knobs.items())),
                   pairs=pairs and not precision, precision=precision)


def variant_mistake(mistake_id, variant, diagnosis, hint):
    return Mistake(mistake_id, diagnosis, hint, variant=variant)


@dataclass(frozen=True)
class Observation:
    id: str
    sentence: str


@dataclass
class Exercise:
    name: str
    reference: Callable
    signature: str
    make_cases: Callable  # make_cases(group) -> [Case, ...]
    mistakes: list = field(default_factory=list)
    build: Callable | None = None  # build(**knobs) -> an implementation with those mistakes
    probes: tuple = ()  # probe(exercise, candidate, played) -> [Observation, ...]
    hint: str = ""  # the exercise's general hint, for a failure that nothing names
    needs_torch: bool = False
    time_limit_s: float = 3.0  # per case; a correct answer needs milliseconds
    _cases: dict = field(default_factory=dict, repr=False)
    _variants: dict = field(default_factory=dict, repr=False)

    def cases(self, group):
        if group not in GROUPS:
            raise ValueError(f"unknown case group {group!r}; choose from {GROUPS}")
        if group not in self._cases:  # seeded, so computing them once per kernel is enough
            self._cases[group] = self.make_cases(group)
        return self._cases[group]

    def variant(self, knobs):
        """The implementation with these mistakes (memoized: its outputs are memoized
        per case under it)."""
        if knobs not in self._variants:
            self._variants[knobs] = self.build(**dict(knobs))
        return self._variants[knobs]

    def implementation_of(self, mistake):
        return mistake.variant if mistake.variant is not None else self.variant(mistake.knobs)

    def mistake(self, mistake_id):
        """The exercise's own entry for a mistake, else the generic detected one."""
        own = [m for m in self.mistakes if m.id == mistake_id]
        return own[0] if own else DETECTED[mistake_id]


# Mistakes found by watching the candidate rather than by its outputs.
DETECTED = {m.id: m for m in [
    Mistake("modifies-input",
            "Your function changed an input array in place (e.g. `x -= mean`), so the "
            "caller's data is gone.",
            "Build a new array instead: `centred = x - mean` leaves x untouched."),
    Mistake("calls-course-reference",
            "Your code calls the course's own answer in bn_course.reference.",
            "Write it yourself: the exercise is the implementation."),
    Mistake("uses-builtin-batchnorm",
            "Your code calls PyTorch's batch norm (F.batch_norm, torch.batch_norm or the "
            "forward of nn.BatchNorm*).",
            "Write it yourself from the formula: that is the whole exercise."),
]}


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    message: str
    mistake: str | None = None  # a catalogue id, or ids joined by "+" for two mistakes
    observation: str | None = None  # the id of the first observation, when nothing matched

    def __str__(self):
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.message}"

    __repr__ = __str__

    def _repr_html_(self):
        colour, mark = ("#1a7f37", "&#10004;") if self.passed else ("#cf222e", "&#10008;")
        body = html.escape(self.message).replace("\n", "<br>")
        return (f'<div style="border-left:4px solid {colour};padding:4px 10px">'
                f'<b style="color:{colour}">{mark} {html.escape(self.name)}</b><br>{body}</div>')


# --- running a candidate safely -------------------------------------------------

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
    course's reference, torch.nn.functional.batch_norm, the forward of
    nn.BatchNorm*, the C functions torch.batch_norm / torch.native_batch_norm,
    and aten operators called through torch.ops.

    Building an nn.BatchNorm* (its __init__, a subclass's super().__init__) is
    not a call to batch norm, and neither is importing torch: its module code
    runs batchnorm.py's class bodies."""

    def __init__(self):
        self.mistake = None

    def __call__(self, frame, event, arg):
        if event == "call":
            mistake = self._mistake_of(frame)
            if mistake and not _importing(frame):
                self.mistake = mistake
        elif event == "c_call" and "batch_norm" in getattr(arg, "__name__", ""):
            self.mistake = "uses-builtin-batchnorm"

    @staticmethod
    def _mistake_of(frame):
        filename, function = frame.f_code.co_filename, frame.f_code.co_name
        if filename.startswith(REFERENCE_DIR):
            return "calls-course-reference"
        if not filename.startswith(_torch_dir()):
            return None
        if "batch_norm" in function and function != "<module>":
            return "uses-builtin-batchnorm"
        if filename.endswith("batchnorm.py") and function == "forward":
            return "uses-builtin-batchnorm"
        if filename.endswith("_ops.py") and "batch_norm" in _op_name(frame):
            return "uses-builtin-batchnorm"
        return None


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
def unwatched():
    """Run the checker's own use of torch's batch norm (an oracle inside a case)
    out of sight of the forbidden-call watch."""
    previous = sys.getprofile()
    sys.setprofile(None)
    try:
        yield
    finally:
        sys.setprofile(previous)


@contextlib.contextmanager
def _quietly():
    """No warnings and nothing on stderr: nbgrader scores a cell that writes to
    stderr 0, and a NumPy warning from the student's code is not the verdict."""
    with warnings.catch_warnings(), np.errstate(all="ignore"), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class _Failed(Exception):
    """A failure while playing a case. ``final``: it settles the verdict (not
    implemented, a time limit, a detected mistake); otherwise the candidate's
    error on one case, and the other cases are still played."""

    def __init__(self, message, mistake=None, final=True):
        super().__init__(message)
        self.message, self.mistake, self.final = message, mistake, final


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
        mistake = exercise.mistake(watch.mistake)
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
        mistake = exercise.mistake("modifies-input")
        return _Failed(f"{mistake.diagnosis} (argument `{error.name}`, on {case.description})"
                       f"\nHint: {mistake.hint}", mistake.id)
    if isinstance(error, CandidateProblem) and error.mistake:
        mistake = exercise.mistake(error.mistake)
        return _Failed(f"{error.message}\n{mistake.diagnosis}\nHint: {mistake.hint}", mistake.id)
    if isinstance(error, CandidateProblem):
        return _Failed(f"On {case.description}: {error.message}", final=False)
    return _Failed(f"On {case.description}, your code raised {explain_error(error)}",
                   final=False)


def explain_error(error):
    """'TypeError: its message (in `the student's line`)', for a person."""
    return f"{type(error).__name__}: {_printable(error)}{_where(error)}"


def _where(error):
    """' (in `<line>`)': the student's line that raised (the last frame of the
    traceback that is neither the course's nor a library's), when there is one."""
    theirs = [f for f in _traceback_frames(error) if not _library_file(f.f_code.co_filename)]
    if not theirs:
        return ""
    line = linecache.getline(theirs[-1].f_code.co_filename, theirs[-1].f_lineno).strip()
    return f" (in `{line}`)" if line else ""


def _library_file(filename):
    return (filename.startswith(_PACKAGE_DIR) or "-packages" + os.sep in filename
            or filename.startswith((sys.base_prefix, "<frozen")))


def _traceback_frames(error):
    frames, tb = [], error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


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


# --- comparing outputs ------------------------------------------------------------

def _type_problem(label, expected, got):
    """Why got cannot stand for expected at all (no diagnosis can help), or None."""
    # An attribute read after a call (running_mean after call 2) is not a return value.
    what = describe(got, returned=not (" after " in label or label.endswith(" at start")))
    if isinstance(expected, (bool, np.bool_)):
        if isinstance(got, (bool, np.bool_)):
            return None
        return f"expected True/False, got {what}"
    if isinstance(expected, np.ndarray):
        if isinstance(got, (np.ndarray, np.number, float, int)) and not isinstance(got, bool):
            return None
        return f"expected a NumPy array, got {what}"
    if isinstance(got, (float, int, np.number, np.ndarray)) and np.ndim(got) == 0:
        return None
    return f"expected a number, got {what}"


def aligned(expected, got):
    """got as an array shaped like expected where the API allows it: a per-feature
    statistic may come as (1, D) instead of (D,)."""
    got = np.asarray(got)
    if np.ndim(expected) == 1 and got.shape == (1,) + np.shape(expected):
        return got.reshape(np.shape(expected))
    return got


def _value_problem(expected, got, tolerance):
    """How got differs from expected in kind (shape, dtype, NaN), or None."""
    if isinstance(expected, (bool, np.bool_)):
        return None if bool(got) == bool(expected) else f"expected {expected}, got {got}"
    got = aligned(expected, got)
    if got.shape != np.shape(expected):
        return f"has shape {got.shape}, expected {np.shape(expected)}"
    if not np.issubdtype(got.dtype, np.floating):
        return f"has dtype {got.dtype}, expected floating-point numbers"
    if not np.all(np.isfinite(got)) and np.all(np.isfinite(expected)):
        return "contains NaN or inf"
    if relative_error(expected, got) > tolerance:
        return "differs"
    return None


def _same(a, b, tolerance):
    """Equal within tolerance, NaN matching NaN: used to match catalogued variants."""
    booleans = isinstance(a, (bool, np.bool_)), isinstance(b, (bool, np.bool_))
    if any(booleans):
        return all(booleans) and bool(a) == bool(b)
    a, b = aligned(b, a), np.asarray(b)
    if a.shape != b.shape and np.squeeze(a).shape == np.squeeze(b).shape:
        # The same numbers kept as a column or row ((N, 1) for (N,)): the mistake is
        # in the numbers, so it is still named (the shape is reported as well).
        a, b = np.squeeze(a), np.squeeze(b)
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


# --- what was played -----------------------------------------------------------------

@dataclass
class Played:
    """One case as the candidate played it: its outputs, or the failure it raised."""
    case: Case
    expected: list
    outputs: list | None = None
    failure: _Failed | None = None
    _differences: list | None = field(default=None, repr=False, compare=False)

    def differences(self):
        """(label, expected, got, problem) for every output that is wrong. Computed once:
        the diagnosis asks for every catalogued mistake it tries."""
        if self._differences is None:
            self._differences = [] if self.outputs is None else [
                (label, want, got, problem)
                for (label, want), (_, got) in zip(self.expected, self.outputs)
                if (problem := _value_problem(want, got, self.case.tolerance))]
        return self._differences

    def worst_error(self):
        """How far off the candidate is on this case (inf for a shape or NaN problem)."""
        errors = [relative_error(want, aligned(want, got)) if problem == "differs" else math.inf
                  for _, want, got, problem in self.differences()
                  if not isinstance(want, (bool, np.bool_))]
        return max(errors, default=0.0)


def _play_all(exercise, candidate, cases):
    """Every case played; stops early only where going on cannot help (not
    implemented, a time limit, a forbidden call, a type that cannot be compared)."""
    played = []
    for case in cases:
        # The reference first: its run pays for any first-use costs (torch's first
        # backward pass) outside the forbidden-call watch, which slows them down.
        expected = _trusted_outputs(case, exercise.reference, may_fail=False)
        try:
            outputs = _play_candidate(exercise, case, candidate)
        except _Failed as failure:
            if failure.final:
                raise
            played.append(Played(case, expected, failure=failure))
            continue
        for (label, want), (_, got) in zip(expected, outputs):
            problem = _type_problem(label, want, got)
            if problem:
                raise _Failed(f"On {case.description}, {label}: {problem}.")
        played.append(Played(case, expected, outputs))
    return played


# --- naming the mistake --------------------------------------------------------------

def _candidates_for_diagnosis(exercise):
    """(ids, mistakes) to try: each catalogued mistake alone, then pairs of knob
    mistakes that touch different knobs."""
    matchable = [m for m in exercise.mistakes
                 if m.id not in DETECTED and (m.variant is not None or m.knobs)]
    for mistake in matchable:
        yield (mistake,)
    pairable = [m for m in matchable if m.knobs and m.pairs]
    pairs = [(first, second) for first, second in itertools.combinations(pairable, 2)
             if first.id != second.id
             and not {k for k, _ in first.knobs} & {k for k, _ in second.knobs}]
    # The simplest explanation first: a convention (two knobs) paired with a mistake that
    # hides half of it (a running variance never updated) must not win over the half.
    yield from sorted(pairs, key=lambda pair: len(pair[0].knobs) + len(pair[1].knobs))


def _implementation(exercise, mistakes):
    if len(mistakes) == 1:
        return exercise.implementation_of(mistakes[0])
    return exercise.variant(tuple(sorted(mistakes[0].knobs + mistakes[1].knobs)))


def _diagnose(exercise, played):
    """The mistake (or two) whose variant reproduces every output the candidate gave."""
    compared = [p for p in played if p.outputs is not None]
    for mistakes in _candidates_for_diagnosis(exercise):
        implementation = _implementation(exercise, mistakes)
        fits = _fails_alike if mistakes[0].precision else _matches_every_case
        if fits(compared, implementation):
            return mistakes
    return None


def _matches_every_case(compared, implementation):
    """Equal on every case, except cases where both blow up (inf and NaN follow the
    spelling: inf - inf is NaN, a blend of infs is inf); at least one case must be equal."""
    matched = False
    for p in compared:
        variant_outputs = _trusted_outputs(p.case, implementation)
        if _matches(p.outputs, variant_outputs, p.case.tolerance):
            matched = True
        elif not (variant_outputs is not None and _blows_up(variant_outputs, p.expected)
                  and _blows_up(p.outputs, p.expected)):
            return False
    return matched


def _blows_up(outputs, expected):
    """Some output is inf or NaN where the reference's is finite."""
    for (_, got), (_, want) in zip(outputs, expected):
        if isinstance(want, (bool, np.bool_)) or not isinstance(want, np.ndarray):
            continue
        got = np.asarray(got)
        if got.shape == want.shape and np.issubdtype(got.dtype, np.number) and np.any(
                ~np.isfinite(got) & np.isfinite(want)):
            return True
    return False


def _fails_alike(compared, implementation):
    """Right on exactly the cases where the variant is right (and equal to it there)."""
    for p in compared:
        variant_outputs = _trusted_outputs(p.case, implementation)
        if variant_outputs is None:
            return False
        variant_right = _matches(variant_outputs, p.expected, p.case.tolerance)
        if variant_right != (not p.differences()):
            return False
    return True


def _observe(exercise, candidate, played):
    observations = []
    for probe in exercise.probes:
        with _quietly(), _watch_forbidden_calls():
            try:
                with _time_limit(exercise.time_limit_s):
                    observations += probe(exercise, candidate, played)
            except (Exception, SystemExit, _TimeLimit):
                continue  # a probe that cannot run says nothing
    return observations


# --- the message -------------------------------------------------------------------

def _telling(played):
    """The played case that shows the difference best: the largest error."""
    wrong = [p for p in played if p.differences()]
    return max(wrong, key=Played.worst_error) if wrong else None


def _digits(want, got):
    """Enough significant digits to see where two numbers part."""
    gap = abs(want - got) / max(abs(want), abs(got), 1e-300)
    return int(min(16, max(4, math.ceil(-math.log10(gap)) + 2 if gap > 0 else 4)))


def _entries(want, got, count=3):
    """The `count` entries that differ most, as 'index (i, j): expected a, got b'."""
    want = np.asarray(want, dtype=np.float64)
    got = aligned(want, got).astype(np.float64)
    gap = np.where(np.isfinite(got), np.abs(want - got), np.inf)
    order = np.argsort(-gap, axis=None, kind="stable")[:count]
    lines = []
    for flat in order:
        index = np.unravel_index(flat, want.shape)
        a, b = float(want[index]), float(got[index])
        digits = _digits(a, b) if math.isfinite(b) else 6
        where = f"at {tuple(int(i) for i in index)}" if want.ndim else ""
        lines.append(f"{where} expected {a:.{digits}g}, got {b:.{digits}g}".strip())
    return "; ".join(lines)


def _evidence(played):
    """Where the candidate's output differs most: the case, the output and entries."""
    best = _telling(played)
    if best is None:
        return ""
    label, want, got, problem = max(
        best.differences(),
        key=lambda d: relative_error(d[1], aligned(d[1], d[2])) if d[3] == "differs" else math.inf)
    if isinstance(want, (bool, np.bool_)):
        return f"On {best.case.description}: {label}: {problem}."
    if problem == "differs":
        error = relative_error(want, aligned(want, got))
        return (f"On {best.case.description}, {label} is off by a relative error of "
                f"{error:.1e} (allowed {best.case.tolerance:.0e}): {_entries(want, got)}.")
    if problem == "contains NaN or inf":
        return f"On {best.case.description}, {label} {problem}: {_entries(want, got)}."
    return f"On {best.case.description}, {label} {problem}."


def _also_raised(played):
    failures = [p.failure for p in played if p.failure is not None]
    return f"Also: {failures[0].message}" if failures else ""


def _lines(*parts):
    return "\n".join(part for part in parts if part)


def _named_message(mistakes, played):
    if len(mistakes) == 1:
        mistake = mistakes[0]
        return _lines(mistake.diagnosis, _evidence(played), _also_raised(played),
                      f"Hint: {mistake.hint}")
    first, second = mistakes
    hints = first.hint if first.hint == second.hint else f"{first.hint} And: {second.hint}"
    return _lines(f"Two mistakes together. (1) {first.diagnosis} (2) {second.diagnosis}",
                  _evidence(played), _also_raised(played), f"Hint: {hints}")


def _verdict(exercise, candidate, groups):
    cases = [case for group in groups for case in exercise.cases(group)]
    played = _play_all(exercise, candidate, cases)
    wrong = [p for p in played if p.differences()]
    failed = [p for p in played if p.failure is not None]
    if not wrong and not failed:
        worst = max((relative_error(want, aligned(want, got))
                     for p in played for (_, want), (_, got) in zip(p.expected, p.outputs)
                     if not isinstance(want, (bool, np.bool_))), default=0.0)
        return CheckResult(exercise.name, True,
                           f"All {len(cases)} hidden cases match the reference "
                           f"(largest relative error {worst:.1e}).")
    if not wrong:
        return CheckResult(exercise.name, False, failed[0].failure.message)
    mistakes = _diagnose(exercise, played)
    if mistakes:
        return CheckResult(exercise.name, False, _named_message(mistakes, played),
                           "+".join(m.id for m in mistakes))
    observations = _observe(exercise, candidate, played)
    hint = f"Hint: {exercise.hint}" if exercise.hint else ""
    return CheckResult(exercise.name, False,
                       _lines(*(o.sentence for o in observations), _evidence(played),
                              _also_raised(played), hint),
                       observation=observations[0].id if observations else _shape_id(played))


def _shape_id(played):
    """The observation "wrong-shape" when an output has the wrong shape (the evidence line says which):
    an observation the class report can count, though no probe was needed."""
    shapes = [problem for p in played for *_, problem in p.differences()
              if problem.startswith("has shape")]
    return "wrong-shape" if shapes else None


def verdict(exercise, candidate, groups):
    """The CheckResult for a candidate on these case groups; never raises because
    of the candidate."""
    if not callable(candidate):
        got = ("None: did the cell that defines it run?" if candidate is None
               else describe(candidate))
        return CheckResult(exercise.name, False, f"Expected your {exercise.signature}, got {got}.")
    try:
        with _quietly():  # comparing odd values (complex, objects) may warn
            return _verdict(exercise, candidate, groups)
    except _Failed as failure:
        return CheckResult(exercise.name, False, failure.message, failure.mistake)
