"""What the class got wrong: per exercise, who passed, and the mistakes the checkers named.

The hidden test cells call ``bn_course.checks.grade``, whose AssertionError ends with
``[mistake: ID]`` or ``[observation: ID]`` when the checker recognised what went
wrong. The autograded notebooks keep those errors; this module counts them per
exercise, once per student, so that the instructor sees what to teach again.
"""

import csv
import html
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bn_course.instructor.layout import AUTOGRADED_DIR

MARK = re.compile(r"\[(mistake|observation): ([\w.-]+)\]")
EXERCISE = re.compile(r"""\bgrade\(\s*["'](\w+)["']""")  # grade("batch_var", ...)
EXAMPLES = 3  # students named per finding


@dataclass(frozen=True)
class Finding:
    """A named mistake or observation, and the students whose answers showed it."""

    kind: str  # "mistake" or "observation"
    name: str
    students: tuple


@dataclass(frozen=True)
class ExerciseSummary:
    """How the graded students did on one exercise."""

    assignment: str
    exercise: str
    graded: int  # students whose notebook was graded
    passed: int  # of them, those with every test cell of the exercise at full marks
    findings: tuple  # Finding, most common first

    @property
    def share_passed(self):
        return self.passed / self.graded if self.graded else 0.0


def class_report(root, grades):
    """A summary per exercise of the graded notebooks of ``grades`` in course directory
    ``root`` (scores from its gradebook, named mistakes from its autograded notebooks)."""
    import nbformat
    from nbgrader.api import Gradebook

    passed = defaultdict(dict)  # (assignment, exercise) -> {student: bool}
    found = defaultdict(lambda: defaultdict(set))  # (assignment, exercise) -> mark -> students
    graded = [g for g in grades if g.problem is None]
    with Gradebook(f"sqlite:///{Path(root) / 'gradebook.db'}") as gradebook:
        for grade in graded:
            path = (Path(root) / AUTOGRADED_DIR / grade.student / grade.assignment
                    / f"{grade.notebook}.ipynb")
            cells = _test_cells(nbformat.read(str(path), as_version=4))
            scores = {g.name: g for g in gradebook.find_submission_notebook(
                grade.notebook, grade.assignment, grade.student).grades}
            for grade_id, (exercise, marks) in cells.items():
                key, score = (grade.assignment, exercise), scores.get(grade_id)
                if score is None:  # a cell the gradebook does not know: not graded
                    continue
                full = score.score is not None and score.score >= score.max_score
                passed[key][grade.student] = passed[key].get(grade.student, True) and full
                for mark in marks:
                    found[key][mark].add(grade.student)
    return [_summary(key, passed[key], found[key]) for key in sorted(passed)]


def _test_cells(notebook):
    """{grade_id: (exercise, {(kind, name), ...})} for the autograded test cells."""
    cells = {}
    for cell in notebook.cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not nbgrader.get("grade") or nbgrader.get("solution"):
            continue
        match = EXERCISE.search(cell.source)
        exercise = match.group(1) if match else nbgrader["grade_id"]
        errors = "\n".join(output.get("evalue", "") for output in cell.get("outputs", [])
                           if output.get("output_type") == "error")
        cells[nbgrader["grade_id"]] = (exercise, set(MARK.findall(errors)))
    return cells


def _summary(key, passed, found):
    findings = sorted((Finding(kind, name, tuple(sorted(students)))
                       for (kind, name), students in found.items()),
                      key=lambda f: (-len(f.students), f.kind, f.name))
    return ExerciseSummary(*key, graded=len(passed), passed=sum(passed.values()),
                           findings=tuple(findings))


def format_report(summaries):
    """The class report, for a terminal."""
    if not summaries:
        return ""
    lines = ["What the class got wrong (per exercise: share passed, named mistakes):"]
    for summary in summaries:
        lines.append(f"  {summary.assignment}  {summary.exercise}: {summary.passed}/"
                     f"{summary.graded} passed ({summary.share_passed:.0%})")
        for finding in summary.findings:
            examples = ", ".join(finding.students[:EXAMPLES])
            more = ", ..." if len(finding.students) > EXAMPLES else ""
            lines.append(f"      {len(finding.students):4d}  {finding.kind} {finding.name} "
                         f"({examples}{more})")
    return "\n".join(lines)


CSV_FIELDS = ["assignment", "exercise", "students_graded", "passed", "share_passed",
              "kind", "name", "students", "examples"]


def write_report_csv(summaries, path):
    """One row per exercise (kind empty) and one per named mistake or observation."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_FIELDS)
        for s in summaries:
            exercise = [s.assignment, s.exercise, s.graded, s.passed, f"{s.share_passed:.3f}"]
            writer.writerow([*exercise, "", "", "", ""])
            for f in s.findings:
                writer.writerow([*exercise, f.kind, f.name, len(f.students),
                                 " ".join(f.students[:EXAMPLES])])


def write_report_html(summaries, path):
    """The report as a page: a bar per exercise (share passed), its findings below it."""
    rows = []
    for s in summaries:
        width = round(300 * s.share_passed)
        findings = "".join(
            f"<li>{len(f.students)} &times; {f.kind} <code>{html.escape(f.name)}</code> "
            f"({html.escape(', '.join(f.students[:EXAMPLES]))})</li>" for f in s.findings)
        rows.append(
            f"<tr><td>{html.escape(s.assignment)}</td><td><code>{html.escape(s.exercise)}"
            f"</code></td><td><svg width='300' height='14'><rect width='300' height='14' "
            f"fill='#eee'/><rect width='{width}' height='14' fill='#4a8'/></svg> "
            f"{s.passed}/{s.graded}</td><td><ul>{findings}</ul></td></tr>")
    Path(path).write_text(
        "<!doctype html><meta charset='utf-8'><title>bn-course: class report</title>"
        "<style>body{font-family:sans-serif}td{vertical-align:top;padding:4px 8px}</style>"
        "<h1>What the class got wrong</h1><table><tr><th>notebook</th><th>exercise</th>"
        "<th>passed</th><th>named mistakes and observations</th></tr>"
        + "".join(rows) + "</table>\n", encoding="utf-8")
