"""Inputs and case builders that several notebooks' exercises share.

Every builder is seeded: the same group gives the same arrays in every kernel.
The inputs are chosen so that mistakes show: features with different means and
scales (a wrong axis cannot pass), a nearly constant feature and eps = 1 (eps
mistakes become large), offsets of 1e6 (a one-pass variance loses its digits),
batches of two, strided and column-major layouts.
"""

import copy

import numpy as np

from bn_course.checks._core import Case, InputModified, WrongArity

# --- inputs -----------------------------------------------------------------------

def batch(rng, n, d, *, offset=0.0, spread=1.0, constant_feature=False, nearly_constant=False):
    """(N, D) data whose features have different means and scales, so that a
    statistic taken over the wrong axis, or not per feature, cannot pass."""
    means = offset + rng.uniform(-3, 3, size=d)
    scales = spread * rng.uniform(0.5, 2.0, size=d)
    x = means + scales * rng.standard_normal((n, d))
    if constant_feature:
        x[:, -1] = means[-1]
    if nearly_constant:  # variance about 1e-6: eps decides the result
        x[:, -1] = means[-1] + 1e-3 * rng.standard_normal(n)
    return x


def column_major(x):
    """The same values as a column-major (Fortran-ordered) array."""
    return np.asfortranarray(x)


def shapes(group):
    """(description, x) pairs for a group; every call builds the same arrays."""
    rng = np.random.default_rng({"basic": 101, "awkward": 202, "float32": 303}[group])
    if group == "basic":
        return [(f"a ({n}, {d}) batch", batch(rng, n, d))
                for n, d in [(8, 3), (16, 5), (5, 7), (32, 4)]]
    if group == "awkward":
        x_strided = batch(rng, 12, 10)[::2, ::3]
        return [
            ("a batch of two (2, 4)", batch(rng, 2, 4)),
            ("a single feature (9, 1)", batch(rng, 9, 1)),
            ("a (10, 3) batch whose last feature is constant",
             batch(rng, 10, 3, constant_feature=True)),
            ("a (20, 3) batch with values near 1e4", batch(rng, 20, 3, offset=1e4)),
            ("a non-contiguous (6, 4) view", x_strided),
            ("a column-major (7, 5) array", column_major(batch(rng, 7, 5))),
            ("a wide (4, 300) batch", batch(rng, 4, 300)),
            # Fails the one-pass formula mean(x**2) - mean(x)**2, which cancels digits.
            ("a (12, 3) batch with values near 1e6", batch(rng, 12, 3, offset=1e6)),
            ("a (11, 3) batch whose last feature is nearly constant (variance ~1e-6)",
             batch(rng, 11, 3, nearly_constant=True)),
        ]
    return [(f"a float32 ({n}, {d}) batch", batch(rng, n, d).astype(np.float32))
            for n, d in [(8, 3), (16, 6), (3, 5)]]


def image_shapes(group):
    """(description, x) pairs of (N, C, H, W) batches, per channel different."""
    rng = np.random.default_rng({"basic": 104, "awkward": 204, "float32": 304}[group])

    def images(n, c, h, w, offset=0.0):
        means = offset + rng.uniform(-3, 3, size=(1, c, 1, 1))
        return means + rng.uniform(0.5, 2, size=(1, c, 1, 1)) * rng.standard_normal((n, c, h, w))

    if group == "basic":
        return [(f"a ({n}, {c}, {h}, {w}) batch", images(n, c, h, w))
                for n, c, h, w in [(4, 3, 5, 5), (8, 2, 3, 4), (3, 5, 2, 6)]]
    if group == "awkward":
        return [
            ("a batch of one image (1, 3, 4, 4)", images(1, 3, 4, 4)),
            ("1x1 images (6, 4, 1, 1)", images(6, 4, 1, 1)),
            ("a single channel (5, 1, 3, 3)", images(5, 1, 3, 3)),
            ("a (4, 3, 3, 3) batch with values near 1e4", images(4, 3, 3, 3, offset=1e4)),
            ("a channels-last (non-contiguous) (3, 4, 2, 5) batch",
             channels_last(images(3, 4, 2, 5))),
            ("a (3, 2, 4, 4) batch with values near 1e6", images(3, 2, 4, 4, offset=1e6)),
        ]
    return [(f"a float32 ({n}, {c}, {h}, {w}) batch", images(n, c, h, w).astype(np.float32))
            for n, c, h, w in [(4, 3, 5, 5), (2, 6, 3, 3)]]


def channels_last(x):
    """The same (N, C, H, W) values, stored as (N, H, W, C) in memory."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, 3)), 3, 1)


def per_feature(rng, d, low, high, dtype):
    return rng.uniform(low, high, size=d).astype(dtype)


def gamma_beta(rng, d, dtype):
    return per_feature(rng, d, 0.5, 2.0, dtype), per_feature(rng, d, -1.0, 1.0, dtype)


def eps_for(index):
    """Cycle through the default and larger eps values, so eps mistakes show."""
    return [None, 0.1, 1.0, 1e-3][index % 4]


def momentum_for(index):
    return [None, 0.3, 0.05][index % 3]


def with_eps(kwargs, eps):
    return kwargs if eps is None else {**kwargs, "eps": eps}


def eps_text(eps):
    return "default eps" if eps is None else f"eps={eps}"


# --- playing a case -------------------------------------------------------------------

def fresh_copy(value):
    """A copy the candidate may ruin. Arrays keep their memory layout: a strided
    view stays a strided view (non-contiguous input is one of the hidden cases)."""
    if not isinstance(value, np.ndarray):
        return copy.deepcopy(value)
    if value.flags.c_contiguous or value.flags.f_contiguous:
        return value.copy(order="K")
    buffer = np.empty(tuple(2 * size for size in value.shape), dtype=value.dtype)
    view = buffer[(slice(None, None, 2),) * value.ndim]
    view[...] = value
    return view


def _unchanged(original, passed):
    """Arrays equal; objects (such as fold_batchnorm's `bn`) with equal attributes."""
    if isinstance(original, np.ndarray):
        return np.array_equal(original, passed, equal_nan=True)
    if hasattr(original, "__dict__"):
        return all(_unchanged(value, getattr(passed, name, None))
                   for name, value in vars(original).items())
    return True


def call_unmodified(function, args, kwargs, may_modify=()):
    """Call function on copies of args; raise InputModified if it changed one.

    ``may_modify`` names the arguments that the API allows to be updated in
    place (the running statistics)."""
    copies = {name: fresh_copy(value) for name, value in args.items()}
    result = function(*copies.values(), **kwargs)
    for name, original in args.items():
        if name not in may_modify and not _unchanged(original, copies[name]):
            raise InputModified(name)
    return result


def unpack(result, count):
    if not isinstance(result, (tuple, list)) or len(result) != count:
        raise WrongArity(count, result)
    return result


def function_case(description, args, kwargs=None, labels=("output",), float32=False,
                  may_modify=()):
    """A case that calls the candidate once and labels what it returns. Probes
    can call it again with some arguments changed: ``case.rerun(candidate, eps=1.0)``."""
    kwargs = kwargs or {}

    def rerun(candidate, **changes):
        changed_args = {name: changes.get(name, value) for name, value in args.items()}
        changed_kwargs = {**kwargs, **{k: v for k, v in changes.items() if k not in args}}
        result = call_unmodified(candidate, changed_args, changed_kwargs, may_modify)
        if len(labels) == 1:
            return [(labels[0], result)]
        return list(zip(labels, unpack(result, len(labels))))

    return Case(description, rerun, float32, rerun=rerun, args=args, kwargs=kwargs)


def gamma_beta_cases(named_inputs, rng):
    """One case per (description, x): random per-feature (or per-channel) gamma and
    beta, and eps cycling through the default and larger values."""
    cases = []
    for i, (desc, x) in enumerate(named_inputs):
        gamma, beta = gamma_beta(rng, x.shape[1], x.dtype)
        eps = eps_for(i)
        cases.append(function_case(
            f"{desc}, {eps_text(eps)}", {"x": x, "gamma": gamma, "beta": beta},
            with_eps({}, eps), float32=x.dtype == np.float32))
    return cases
