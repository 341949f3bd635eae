"""nbgrader preprocessors that nbgrader_config.py names (plain classes, loaded by nbgrader).

``RobustOverwriteCells`` takes the place of nbgrader 0.9.6's ``OverwriteCells``.
"""

from nbformat.notebooknode import NotebookNode
from nbformat.v4.nbbase import random_cell_id
from nbgrader.api import Gradebook
from nbgrader.preprocessors import ClearHiddenTests, OverwriteCells


def grade_ids(notebook):
    """The grade_ids of a notebook's nbgrader cells."""
    return {cell.metadata["nbgrader"]["grade_id"] for cell in notebook.cells
            if "grade_id" in cell.metadata.get("nbgrader", {})}


class RobustOverwriteCells(OverwriteCells):
    """nbgrader's OverwriteCells, which survives what editors and students do to cells.

    With ``add_missing_cells``, nbgrader 0.9.6 crashes (KeyError) when a deleted
    grade cell came after a read-only cell, and when a duplicated or unknown cell
    keeps nbgrader metadata without a grade_id; a crash costs the student the
    whole notebook. This version re-inserts a missing grade cell after the
    nearest cell of the source that is still there, and first gives back their
    identity to read-only cells whose metadata an editor stripped (their source
    is still the released one), so their tests run where the student's code is.
    """

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        with Gradebook(info["db_url"]) as gradebook:
            source = gradebook.find_notebook(info["notebook"], info["assignment"])
            self._reidentify_stripped_cells(nb, source)
        return super().preprocess(nb, resources)

    def _reidentify_stripped_cells(self, nb, source):
        points = {cell.name: cell.max_score for cell in source.grade_cells}
        present = grade_ids(nb)
        released = {_released_source(cell): cell for cell in source.source_cells
                    if cell.locked and cell.name not in present}
        # From the end, as DeduplicateIds keeps the last copy of a duplicated cell.
        for cell in reversed(nb.cells):
            key = cell.source.strip()
            match = released.get(key)
            if "nbgrader" in cell.metadata or not match or match.cell_type != cell.cell_type:
                continue
            del released[key]
            self.log.warning("Cell %s had lost its nbgrader metadata, restored", match.name)
            cell.metadata["nbgrader"] = {
                "grade": match.name in points, "grade_id": match.name, "locked": True,
                "solution": False, "schema_version": 3,
                **({"points": points[match.name]} if match.name in points else {})}

    def add_missing_grade_cells(self, nb, resources):
        source = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        points = {cell.name: cell.max_score for cell in source.grade_cells}
        solutions = {cell.name for cell in source.solution_cells}
        insert_at = 0
        # Rows come back in the order generate_assignment saved them: the
        # source notebook's order (upstream relies on it too).
        for source_cell in source.source_cells:
            index = _index_of(nb, source_cell.name)
            if index is not None:
                insert_at = index + 1
            elif source_cell.name in points:
                self.log.warning("Missing grade cell %s, adding it back", source_cell.name)
                cell = self.missing_cell_transform(source_cell, points[source_cell.name],
                                                   is_solution=source_cell.name in solutions)
                if nb.nbformat_minor >= 5:  # cell ids became required in nbformat 4.5
                    cell["id"] = random_cell_id()
                nb.cells.insert(insert_at, cell)
                insert_at += 1
        return nb, resources

    def add_missing_task_cells(self, nb, resources):
        # DeduplicateIds and an unknown grade_id leave {"nbgrader": {...}} without
        # a grade_id, which upstream's add_missing_task_cells indexes.
        for cell in nb.cells:
            nbgrader = cell.metadata.get("nbgrader")
            if nbgrader is not None and "grade_id" not in nbgrader:
                del cell.metadata["nbgrader"]
        return super().add_missing_task_cells(nb, resources)


def _released_source(source_cell):
    cell = NotebookNode(cell_type=source_cell.cell_type, source=source_cell.source,
                        metadata={})
    ClearHiddenTests(enforce_metadata=False).preprocess_cell(cell, {}, 0)
    return cell.source.strip()

def _index_of(nb, grade_id):
    for index, cell in enumerate(nb.cells):
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return index
    return None
