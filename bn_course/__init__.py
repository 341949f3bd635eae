"""bn-course: Batch Normalization from first principles.

Importing the package is cheap on purpose (a notebook's kernel start-up counts):
torch and scikit-learn load only when a submodule that needs them is used.
"""

__version__ = "0.1.0"
__all__ = ["Progress", "check", "__version__"]


def __getattr__(name):
    # PEP 562: `bn_course.Progress` and `bn_course.check` without importing
    # the checkers at package import time.
    if name in ("Progress", "check"):
        from bn_course import checks
        return getattr(checks, name)
    raise AttributeError(f"module 'bn_course' has no attribute {name!r}")
