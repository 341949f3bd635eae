"""Every demo cell of the released notebooks 01-08, run with answers that are not done:
the blank release as nbgrader makes it, and answers that return None, raise, or return
the wrong shape. No cell may fail inside the course's code (a traceback through
bn_course), and a cell that hands a student's answer to a demo prints one friendly line
that says what is wrong with it.

The cells run in this process, in order, as a kernel would run them, with notebook 07's
experiments shrunk to a few steps. Cells that only show the course's own figures (no
student name in them) are left to the tests that run whole notebooks.
"""

import ast
import contextlib
import io
import json
import re
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bn_course
from bn_course.demos import training_comparisons

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
RELEASED = ["01_batch_statistics", "02_normalizing", "03_scale_and_shift", "04_train_vs_eval",
            "05_backward", "06_pytorch_module", "07_training_comparisons", "08_beyond"]
PACKAGE = str(Path(bn_course.__file__).resolve().parent)
FRIENDLY = re.compile(r"does not pass its self-check yet|could not run your|needs `\w+` to return")


# --- answers that are not done ---------------------------------------------------------

class _NumpyLayer:
    """A NumPy layer with notebook 04's API whose call misbehaves as ``kind`` says."""

    kind = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.gamma, self.beta = np.ones(num_features), np.zeros(num_features)
        self.running_mean, self.running_var = np.zeros(num_features), np.ones(num_features)
        self.eps, self.momentum, self.training = eps, momentum, True

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def __call__(self, x):
        return misbehave(self.kind, x)


class _TorchLayer(nn.Module):
    """A module with torch.nn.BatchNorm2d's parameters and buffers whose forward misbehaves."""

    kind = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0))

    def forward(self, x):
        return misbehave(self.kind, x)


def misbehave(kind, x):
    if kind == "raises":
        raise ValueError("something is not right yet")
    if kind == "returns None":
        return None
    return x[:, :1] if getattr(x, "ndim", 0) >= 2 else np.zeros(3)  # the wrong shape


def unfinished(original, kind):
    """A stand-in for the student's ``original`` (a function or a class) that misbehaves
    in the way ``kind`` says."""
    if isinstance(original, type):
        base = _TorchLayer if issubclass(original, nn.Module) else _NumpyLayer
        return type(original.__name__, (base,), {"kind": kind})

    def answer(*args, **kwargs):
        return misbehave(kind, args[0] if args else None)

    answer.__name__ = original.__name__
    return answer


# --- running a released notebook's cells -------------------------------------------------

def cells(notebook):
    path = NOTEBOOKS / notebook / f"{notebook}.ipynb"
    return json.loads(path.read_text())["cells"]


def grader(cell):
    return cell["metadata"].get("nbgrader", {})


def defined_names(source):
    """The functions and classes a cell defines, and the names it assigns at top level."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def mentions(source, names):
    return any(re.search(rf"\b{re.escape(name)}\b", source) for name in names)


def run_cell(source, namespace):
    """Run a cell as a kernel would (its last expression is shown, here with repr);
    returns (what it printed, the exception it raised or None)."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(tree, "<cell>", "exec"), namespace)  # noqa: S102
            if last is not None:
                repr(eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace))
    except Exception as error:  # noqa: BLE001 -- judged by where it was raised
        return out.getvalue(), error
    return out.getvalue(), None


def course_frames(error):
    """The traceback entries of ``error`` that lie in the course's package."""
    return [frame for frame in traceback.extract_tb(error.__traceback__)
            if frame.filename.startswith(PACKAGE)]


def run_released(notebook, kind):
    """Run the notebook's cells with every answer in the state ``kind`` ("blank": the
    release as it is); returns [(source, printed, error), ...] for the cells that involve
    the student's answers."""
    namespace, answers, involved, results = {}, set(), set(), []
    for cell in cells(notebook):
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or grader(cell).get("grade") or \
                grader(cell).get("grade_id") == "colab_setup":
            continue
        if grader(cell).get("solution"):
            run_cell(source, namespace)
            names = defined_names(source)
            answers |= names
            if kind != "blank":
                namespace.update({name: unfinished(namespace[name], kind) for name in names})
            continue
        if "demo." in source and not mentions(source, answers | involved) \
                and not defined_names(source):
            continue  # the course's own figure: the notebook tests run it
        printed, error = run_cell(source, namespace)
        if mentions(source, answers | involved):
            involved |= defined_names(source)
            results.append((source, printed, error))
    return results


@pytest.fixture
def small_experiments(monkeypatch, not_grading):
    """Notebook 07's experiments in miniature, so that the demos run in a moment."""
    demo = training_comparisons
    small = replace(demo.SWEEP, hidden=12, steps=20, eval_every=10)
    monkeypatch.setattr(demo, "SWEEP", small)
    monkeypatch.setattr(demo, "PAPER", replace(small, steps=40, record_preactivations=True))
    monkeypatch.setattr(demo, "NOISE", replace(small, steps=20, bn=True, bn_noise=1.0,
                                               record_preactivations=True))
    monkeypatch.setattr(demo, "SWEEP_VALUES", {knob: values[:2] for knob, values
                                               in demo.SWEEP_VALUES.items()})


@pytest.mark.parametrize("kind", ["blank", "returns None", "raises", "wrong shape"])
@pytest.mark.parametrize("notebook", RELEASED)
def test_no_demo_cell_fails_inside_the_course(notebook, kind, small_experiments):
    results = run_released(notebook, kind)
    assert results, "no cell of this notebook uses the student's answers"
    for source, printed, error in results:
        if error is not None:  # allowed only from the student's own code, called by the cell
            frames = course_frames(error)
            assert not frames, (f"{source}\nraised {type(error).__name__}: {error} in "
                                f"{frames[-1].filename}:{frames[-1].lineno}")
        elif "demo." in source and mentions(source, _original_answers(notebook)):
            assert FRIENDLY.search(printed), f"{source}\nprinted no friendly line:\n{printed}"


def _original_answers(notebook):
    names = set()
    for cell in cells(notebook):
        if grader(cell).get("solution") and cell["cell_type"] == "code":
            names |= defined_names("".join(cell["source"]))
    return names


def test_a_verdict_belongs_to_its_exercise():
    from answers import solution

    from bn_course.demos._guard import self_check_problem

    batch_mean = solution("01_batch_statistics", "batch_mean")
    assert self_check_problem("batch_mean", batch_mean) is None
    assert self_check_problem("batch_var", batch_mean)  # a mean is not a variance
    assert self_check_problem("batch_mean", batch_mean) is None  # remembered per exercise


def test_one_line_per_cell_in_a_kernel():
    """A cell that asks twice about the same answer prints its line once; the next cell
    prints it again."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("from bn_course.demos._guard import say\n"
                                  "say('same')\nsay('same')\nsay('other')"),
        nbformat.v4.new_code_cell("say('other')"),
    ])
    NotebookClient(notebook, timeout=60, kernel_name="python3").execute()  # shuts it down
    printed = ["".join(output["text"] for output in cell.outputs) for cell in notebook.cells]
    assert printed == ["same\nother\n", "other\n"]
