"""Wall-clock timing for the notebooks: the median of a few runs, and a table of several.

    table = compare({"step by step": lambda: backward(dout, x, gamma),
                     "compact": lambda: backward_compact(dout, x, gamma)})
    table   # in Jupyter: name, median time, and how many times slower than the fastest

The median, not the mean: on a shared machine one run in a few is slowed down by
something else, and the median ignores it. The first call (``warmup``) is not timed:
it pays for one-off costs such as loading a library's kernels or allocating caches.
"""

import html
import statistics
import time
from dataclasses import dataclass

__all__ = ["Timings", "compare", "median_time"]


def median_time(function, repeats=5, warmup=1, clock=time.perf_counter):
    """Median wall time of ``function()`` in seconds, over ``repeats`` timed calls
    that follow ``warmup`` untimed ones."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        function()
    durations = []
    for _ in range(repeats):
        start = clock()
        function()
        durations.append(clock() - start)
    return statistics.median(durations)


@dataclass(frozen=True)
class Timings:
    """Median times in seconds, ``[(name, seconds), ...]`` in the order they were given."""

    rows: list

    @property
    def fastest(self):
        return min(seconds for _, seconds in self.rows)

    def _formatted(self):
        """(name, time, "how much slower than the fastest") as text, one tuple per row."""
        fastest = self.fastest
        return [(name, _duration(seconds),
                 "fastest" if seconds == fastest else f"{seconds / fastest:.1f}x")
                for name, seconds in self.rows]

    def __str__(self):
        rows = self._formatted()
        width = max(len(name) for name, _, _ in rows)
        lines = [f"{'':<{width}}  {'median':>9}  vs fastest"]
        lines += [f"{name:<{width}}  {time_text:>9}  {ratio}" for name, time_text, ratio in rows]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self):
        cells = "".join(
            f"<tr><td style='text-align:left'>{html.escape(name)}</td><td>{time_text}</td>"
            f"<td>{ratio}</td></tr>" for name, time_text, ratio in self._formatted())
        return ("<table><tr><th style='text-align:left'></th><th>median time</th>"
                f"<th>vs fastest</th></tr>{cells}</table>")


def _duration(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def compare(functions, repeats=5, warmup=1, clock=time.perf_counter):
    """``Timings`` of several zero-argument callables, given as ``{name: function}``."""
    if not functions:
        raise ValueError("nothing to time: pass at least one function")
    return Timings([(name, median_time(function, repeats, warmup, clock))
                    for name, function in functions.items()])
