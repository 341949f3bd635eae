"""Time notebook 07's training: the experiments, the slider panel, and the whole notebook.

    python bench/bench_training.py [--skip-notebook]

* experiments: each of notebook 07's experiments, trained from scratch in this process
  (wall and CPU seconds, and milliseconds per training step);
* layers: the paper's BN run (2,000 steps) with torch.nn.BatchNorm1d, with the course's
  from-scratch BatchNorm1d and with the solution notebook's BatchNorm2d (what a student
  pastes into notebook 07), each with the notebook's build_mlp, and how far the curves are
  from torch's (the notebook's network must not take more than 1.5x the time of torch's);
* panel: what a slider move costs: a fresh pair of curves (two new 200-step runs, the
  figure and its PNG, as the inline backend renders it) for a few settings, and a move
  back to a setting already trained (budget for a fresh pair: 3 s on 2 cores);
* notebook: the solution notebook executed headless in a fresh kernel, start-up included
  (budget: 35 s on 2 cores), and, for scale, a fresh kernel that only runs the setup cell's
  imports.

The machine is often shared: the load average is printed with the numbers. Exits 1 when a
budget is exceeded or the notebook fails to run.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "solutions" / "07_training_comparisons" / "07_training_comparisons.ipynb"
NOTEBOOK_BUDGET_S = 35.0
PANEL_BUDGET_S = 3.0
SETUP_IMPORTS = ("import numpy as np\nimport bn_course\n"
                 "from bn_course.demos import training_comparisons as demo")


def load():
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


@contextlib.contextmanager
def stopwatch(row):
    """Fills row["wall"] and row["cpu"] (seconds) for the block."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield row
    row["wall"], row["cpu"] = time.perf_counter() - wall, time.process_time() - cpu


def bench_experiments(demo):
    experiments = [(f"paper figure, 2 x {demo.PAPER.steps} steps", demo.paper_runs)]
    for knob, values in demo.SWEEP_VALUES.items():
        experiments.append((f"{knob} sweep, {len(values)} pairs x "
                            f"{demo.sweep_centre(knob).steps} steps",
                            lambda knob=knob: demo.sweep_runs(knob)))
    experiments.append((f"noise run, {demo.NOISE.steps} steps", lambda: demo.run(demo.NOISE)))
    print(f"\nexperiments, trained in this process in the notebook's order ({load()})")
    print(f"{'':<38}{'wall s':>8}{'cpu s':>8}{'new runs':>10}")
    for name, train in experiments:
        before = demo.runs_trained()
        with stopwatch({}) as row, contextlib.redirect_stderr(io.StringIO()):  # no bars
            train()
        new_runs = demo.runs_trained() - before
        print(f"{name:<38}{row['wall']:>8.2f}{row['cpu']:>8.2f}{new_runs:>10}")


def notebook_answers(*names):
    """Classes and functions defined by the solution notebook's answer cells, run as a
    student's code (not from bn_course.reference, which the self-checks refuse)."""
    namespace = {}
    for cell in json.loads(NOTEBOOK.read_text())["cells"]:
        grader = cell["metadata"].get("nbgrader", {})
        if cell["cell_type"] == "code" and (grader.get("solution")
                                            or grader.get("grade_id") == "setup"):
            exec("".join(cell["source"]), namespace)  # noqa: S102
    return [namespace[name] for name in names]


def bench_layers(demo):
    from bn_course.reference.torch import BatchNorm1d

    build_mlp, pasted = notebook_answers("build_mlp", "BatchNorm2d")
    layers = [("torch.nn.BatchNorm1d", demo.Network(build_mlp)),
              ("course's from-scratch BatchNorm1d", demo.Network(build_mlp, BatchNorm1d)),
              ("notebook's BatchNorm2d, as 1d", demo.Network(build_mlp,
                                                             demo.as_batchnorm1d(pasted)))]
    print(f"\nlayers: the paper's BN run, {demo.PAPER.steps} steps ({load()})")
    print(f"{'':<38}{'wall s':>8}{'cpu s':>8}{'cpu vs torch':>14}{'max |loss diff|':>17}")
    torch_run = torch_cpu = None
    for name, network in layers:
        with stopwatch({}) as row, contextlib.redirect_stderr(io.StringIO()):
            history = demo.run(replace(demo.PAPER, bn=True, network=network))
        torch_run, torch_cpu = torch_run or history, torch_cpu or row["cpu"]
        difference = max(abs(a - b) for a, b in zip(history.loss, torch_run.loss))
        print(f"{name:<38}{row['wall']:>8.2f}{row['cpu']:>8.2f}{row['cpu'] / torch_cpu:>13.1f}x"
              f"{difference:>17.1e}")


def redraw_seconds(panel, **values):
    """Set the sliders (one redraw each is what a person does; the last one counts)."""
    *first, (last_name, last_value) = values.items()
    for name, value in first:
        panel.sliders[name].value = value
    with stopwatch({}) as row:
        panel.sliders[last_name].value = last_value
        panel.figure.savefig(io.BytesIO(), format="png")  # what the inline backend does
    return row["wall"], panel.status.value


def bench_panel(demo):
    print(f"\npanel: one slider move, runs of {demo.SWEEP.steps} steps "
          f"(budget for a fresh pair: {PANEL_BUDGET_S} s; {load()})")
    with contextlib.redirect_stdout(io.StringIO()):  # display() prints outside Jupyter
        panel = demo.training_panel()
    moves = [("fresh pair, lr 0.3", {"lr": 0.3}),
             ("fresh pair, depth 7", {"lr": 1.0, "depth": 7}),
             ("fresh pair, batch 128", {"depth": 3, "batch_size": 128}),
             ("fresh pair, init 0.25", {"batch_size": 60, "init_scale": 0.25}),
             ("back to lr 0.3 (remembered)", {"init_scale": 2.0, "lr": 0.3})]
    slowest_fresh = 0.0
    for name, values in moves:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            seconds, status = redraw_seconds(panel, **values)
        print(f"{name:<30}{seconds:>7.2f} s   status: {status}")
        if name.startswith("fresh"):
            slowest_fresh = max(slowest_fresh, seconds)
    return slowest_fresh <= PANEL_BUDGET_S


def execute(notebook):
    import nbclient

    with stopwatch({}) as row:
        nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOK.parent)}}
                                ).execute()
    return row["wall"]


def bench_notebook():
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    print(f"\nnotebook, fresh kernel, start-up included ({load()})")
    imports_only = execute(new_notebook(cells=[new_code_cell(SETUP_IMPORTS)]))
    print(f"{'kernel start + setup imports':<38}{imports_only:>7.1f} s")
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    try:
        seconds = execute(nbformat.read(NOTEBOOK, as_version=4))
    except (CellExecutionError, CellTimeoutError) as error:  # it names the failing cell
        print(f"{NOTEBOOK.name} failed to run:\n{error}")
        return False
    verdict = "within" if seconds <= NOTEBOOK_BUDGET_S else "OVER"
    print(f"{NOTEBOOK.name:<38}{seconds:>7.1f} s   ({verdict} the {NOTEBOOK_BUDGET_S:g} s budget)")
    return seconds <= NOTEBOOK_BUDGET_S


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-notebook", action="store_true",
                        help="time the experiments and the panel only")
    args = parser.parse_args()
    os.environ.pop("NBGRADER_EXECUTION", None)

    with stopwatch({}) as row:
        from bn_course.demos import training_comparisons as demo
        demo.digits()
        import torch  # noqa: F401  (what the first training cell pays for)
    print(f"imports and data: {row['wall']:.2f} s")
    bench_experiments(demo)
    bench_layers(demo)
    ok = bench_panel(demo)
    if not args.skip_notebook:
        ok = bench_notebook() and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
