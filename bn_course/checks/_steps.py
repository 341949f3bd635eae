"""The steps of batch norm's forward pass, each with knobs for its classic
mistakes. Exercise modules build their variants from these, so that a mistake
in one step can be combined with a mistake in another.
"""

import numpy as np


def statistics(x, axis=0, ddof=0, stat="var", one_pass=False):
    """(mean, var) over ``axis`` with keepdims. stat="std" returns the standard
    deviation where the variance belongs; one_pass uses mean(x**2) - mean(x)**2."""
    mean = x.mean(axis=axis, keepdims=True)
    n = x.size // mean.size
    if one_pass:
        var = ((x * x).mean(axis=axis, keepdims=True) - mean ** 2) * n / (n - ddof)
    else:
        var = ((x - mean) ** 2).sum(axis=axis, keepdims=True) / (n - ddof)
    return mean, np.sqrt(var) if stat == "std" else var


def normalized(x, mean, var, eps, eps_place="inside", divide_by="std", centre="once"):
    """x_hat. eps_place: "inside" sqrt(var + eps), "outside" sqrt(var) + eps,
    "missing", "after" (added to the quotient), "floor" sqrt(max(var, eps)) or
    "times" sqrt(var * (1 + eps)).
    divide_by "var" forgets the square root. centre: "once", "never" or "twice" (the
    mean subtracted again)."""
    centred = {"once": x - mean, "never": x, "twice": x - 2 * mean}[centre]
    if divide_by == "var":
        return centred / (var + (0 if eps_place == "missing" else eps))
    if eps_place == "inside":
        return centred / np.sqrt(var + eps)
    if eps_place == "outside":
        return centred / (np.sqrt(var) + eps)
    if eps_place == "after":
        return centred / np.sqrt(var) + eps
    if eps_place == "floor":
        return centred / np.sqrt(np.maximum(var, eps))
    if eps_place == "times":
        return centred / np.sqrt(var * (1 + eps))
    return centred / np.sqrt(var)


def scaled(x_hat, gamma, beta, affine="right"):
    """gamma * x_hat + beta, or a classic slip: "swapped", "no-shift", "no-scale",
    "shift-then-scale" (x_hat + beta) * gamma, "none" (x_hat returned as it is)."""
    return {"right": lambda: gamma * x_hat + beta, "swapped": lambda: beta * x_hat + gamma,
            "no-shift": lambda: gamma * x_hat, "no-scale": lambda: x_hat + beta,
            "shift-then-scale": lambda: (x_hat + beta) * gamma, "none": lambda: x_hat}[affine]()
