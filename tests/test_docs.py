"""docs/exercises.md and the checkers' registry describe the same exercises."""

import re
from pathlib import Path

from bn_course.checks import EXERCISES, NOTEBOOK_EXERCISES

DOCS = Path(__file__).resolve().parent.parent / "docs" / "exercises.md"


def documented():
    """{exercise name: (notebook, signature cell)} from the API table's rows."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"\d\d", cells[1]):
            continue
        for name in re.findall(r"`(\w+)`", cells[0]):
            rows[name] = (cells[1], cells[2])
    return rows


def test_every_registered_exercise_is_documented_in_its_notebook():
    registered = {name: notebook for notebook, names in NOTEBOOK_EXERCISES.items()
                  for name in names}
    assert {name: notebook for name, (notebook, _) in documented().items()} == registered


def test_documented_function_signatures_match_the_checker():
    for name, (_, signature) in documented().items():
        checked = EXERCISES[name].signature
        if name[0].islower():  # functions; classes are described in words
            parameters = checked[checked.index("("):checked.index(")") + 1]
            assert signature.startswith(f"`{parameters}`"), (name, signature, checked)
