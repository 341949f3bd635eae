"""Small numerical helpers that everything else may import (this module imports
nothing of the course)."""

import numpy as np


def relative_error(a, b):
    """max|a - b| / max(1e-8, max(|a| + |b|)): one number for a whole array."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b), initial=0.0)
                 / max(1e-8, float(np.max(np.abs(a) + np.abs(b), initial=0.0))))
