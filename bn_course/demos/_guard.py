"""How a demo uses a student's answer: never a traceback through the course, never a
figure drawn from wrong numbers.

A demo hands the student's function to ``yours_or_ours`` (or ``yours_or_none``) before it
uses it. An answer that passes its self-check (``bn_course.checks.check``, a fraction of a
second) is used as it is. Any other answer (unfinished, raising, returning None or the
wrong shape, or just wrong) is replaced by the course's answer, or by nothing, and one
line says so:

    This figure uses your `normalize`, which does not pass its self-check yet: On a (8, 3)
    batch, output: expected a NumPy array, got None. Showing the course's answer instead.

Demos that show how a wrong answer differs (notebook 05's gradient check, the tables
that compare a student's layer with PyTorch's) cannot ask the self-check: they run the
answer inside ``running_yours`` (or ``call_yours``), which turns a crash into the same
kind of line.
"""

import contextlib
import weakref

__all__ = ["Failed", "WrongOutput", "array_shaped", "call_yours", "running_yours", "say",
           "self_check_problem", "yours_or_none", "yours_or_ours"]

# The verdicts on answers already checked, {answer: {exercise name: problem}}: a slider
# panel or a notebook cell that asks twice about the same function object pays once. A
# student who edits and reruns the cell creates a new object, which is checked afresh.
_verdicts = weakref.WeakKeyDictionary()


def self_check_problem(name, candidate):
    """None when ``candidate`` passes the self-check of exercise ``name``; otherwise the
    first line of the diagnosis."""
    try:
        return _verdicts[candidate][name]
    except (KeyError, TypeError):  # TypeError: not weak-referenceable (None, a number)
        pass
    from bn_course.checks import check

    result = check(name, candidate)
    problem = None if result.passed else _first_line(result.message)
    try:
        _verdicts.setdefault(candidate, {})[name] = problem
    except TypeError:
        pass
    return problem


def yours_or_ours(name, yours, ours, what="figure"):
    """``yours`` when it passes the self-check of ``name``, else ``ours`` (the course's
    answer), with one line that says why."""
    problem = self_check_problem(name, yours)
    if problem is None:
        return yours
    say(f"This {what} uses your `{name}`, which does not pass its self-check yet: "
        f"{problem} Showing the course's answer instead.")
    return ours


def yours_or_none(name, yours, what="comparison"):
    """``yours`` when it passes the self-check of ``name``, else None, with one line that
    says why (for a demo that only makes sense with the student's answer, such as a
    comparison of it with PyTorch's)."""
    problem = self_check_problem(name, yours)
    if problem is None:
        return yours
    say(f"This {what} needs your `{name}`, which does not pass its self-check yet: "
        f"{problem} Run this cell again once it passes.")
    return None


class Failed(Exception):
    """A student's function raised inside ``call_yours``; the line was printed."""


def call_yours(function, *args, what="check", **kwargs):
    """``function(*args, **kwargs)``; if it raises, one line says so and ``Failed`` is
    raised (the demo returns None on it, so the cell shows no traceback)."""
    name = getattr(function, "__name__", "function")
    with running_yours(name, what):
        return function(*args, **kwargs)
    raise Failed(name)


@contextlib.contextmanager
def running_yours(name, what="comparison"):
    """Run the block; if the student's ``name`` makes it raise, print one line instead
    of a traceback. For demos that show how a student's answer differs from PyTorch's:
    a wrong answer gives a true table of differences, only a crash is caught."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 -- whatever the student's code raises
        say(f"This {what} could not run your `{name}`: {_error_text(error)}")


class WrongOutput(Exception):
    """What a student's function returned, when a demo cannot use it."""


def array_shaped(value, shape):
    """``value`` as a float64 array of ``shape`` (or with as many entries, e.g. (1, D) for
    (D,)); ``WrongOutput`` otherwise."""
    import numpy as np

    if hasattr(value, "detach"):  # a torch tensor, perhaps one that requires grad
        value = value.detach().cpu().numpy()
    if value is None or not isinstance(value, (np.ndarray, float, int, np.number)):
        raise WrongOutput(f"{type(value).__name__}, not an array of shape {shape}")
    if np.size(value) != np.prod(shape, dtype=int):
        raise WrongOutput(f"an array of shape {np.shape(value)}, not {shape}")
    return np.asarray(value, dtype=np.float64).reshape(shape)


def _error_text(error):
    if isinstance(error, WrongOutput):
        return f"it returned {error}."
    if isinstance(error, NotImplementedError):
        return "it is not implemented yet (it raises NotImplementedError)."
    return f"it raised {type(error).__name__}: {_first_line(error)}"


_said = {}  # the line printed last, and in which notebook cell


def say(line):
    """Print ``line``, unless the same line was already printed by the cell that is
    running (one cell may ask twice about the same answer)."""
    cell = _running_cell()
    if cell is not None and _said.get("line") == (cell, line):
        return
    _said["line"] = (cell, line)
    print(line)


def _running_cell():
    """An id of the notebook cell being executed (the kernel's request); None outside a
    Jupyter kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return None
    try:
        return kernel.get_parent()["header"]["msg_id"]
    except (AttributeError, KeyError, TypeError):
        return None


def _first_line(message):
    """The first line of ``message``, ending with a full stop."""
    lines = str(message).strip().splitlines() or ["no message"]
    line = lines[0].rstrip(":")
    return line if line.endswith((".", "!", "?")) else line + "."
