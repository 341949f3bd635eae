"""The answer key of notebook 08's case files: which batch-norm bug each one hides.

It lives with the other answers, where the checker's watch for calls to the
course's answers covers it; the notebook shows only the symptoms."""

BN_BUGS = ("eval-mode-forgotten", "stats-frozen-while-fine-tuning",
           "dropout-before-batchnorm", "no-bug")

CASE_LETTERS = ("A", "B", "C", "D")
_PLANTED = {"A": "stats-frozen-while-fine-tuning", "B": "dropout-before-batchnorm",
            "C": "no-bug", "D": "eval-mode-forgotten"}


def planted_bug(case):
    """The bug behind a case file ("A" to "D")."""
    return _PLANTED[case]
