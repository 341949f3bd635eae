"""nbgrader settings for bn-course (nbgrader 0.9).

The repository is the course directory: run nbgrader from here, e.g.
``nbgrader generate_assignment 01_batch_statistics --force``, ``nbgrader autograde
01_batch_statistics``, ``nbgrader generate_feedback 01_batch_statistics``.
``bn-course build`` and ``bn-course grade`` load this same file.
Options: https://nbgrader.readthedocs.io/en/stable/configuration/config_options.html
"""

c = get_config()  # noqa: F821 -- provided by traitlets when it loads this file

# One assignment per notebook: solutions/NN_slug/NN_slug.ipynb is the source,
# notebooks/NN_slug/NN_slug.ipynb the release that students open.
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"

# Seconds a cell may run while autograding before nbgrader interrupts it (an
# endless loop in a student's cell). The heaviest solution cell takes a few
# seconds; this leaves room for slow machines. nbgrader's Execute has its own
# trait, and its FAQ documents ExecutePreprocessor's: set both.
c.Execute.timeout = 120
c.ExecutePreprocessor.timeout = 120

# A test cell that writes anything to stderr scores 0. Library warnings are not
# the student's fault: drop stderr outputs that are Python warnings
# ("...: UserWarning: ..."), PyTorch's C++ warnings ("[W ...] ...") or
# matplotlib's first-run font cache notice. Errors still score 0.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = (
    r"(?m)\w+Warning: |^\[W[\d ]|Matplotlib is building the font cache"
)

# Students (and Colab, VS Code) delete, duplicate or strip cells. Put missing
# grade cells back, matched by grade_id, instead of failing the notebook.
# nbgrader 0.9.6's OverwriteCells crashes on some of these cases (see
# bn_course/instructor/preprocessors.py); RobustOverwriteCells takes its place, same settings.
c.OverwriteCells.add_missing_cells = True
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "bn_course.instructor.preprocessors.RobustOverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]
