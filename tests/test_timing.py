import time

import pytest

from bn_course.timing import Timings, compare, median_time


class FakeClock:
    """A clock that only moves when a timed function says how long it took."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def function_taking(self, durations):
        """A function whose successive calls last ``durations`` (seconds) on this clock."""
        remaining = iter(durations)

        def function():
            self.now += next(remaining)

        return function


def test_median_ignores_the_warmup_call_and_an_outlier():
    clock = FakeClock()
    function = clock.function_taking([50.0, 3.0, 1.0, 2.0, 100.0, 4.0])
    assert median_time(function, repeats=5, warmup=1, clock=clock) == 3.0


def test_median_calls_the_function_warmup_plus_repeats_times():
    calls = []
    median_time(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6


def test_median_time_measures_real_time():
    assert median_time(lambda: time.sleep(0.002), repeats=3, warmup=0) >= 0.002


@pytest.mark.parametrize("repeats, warmup", [(0, 1), (3, -1)])
def test_median_time_rejects_bad_counts(repeats, warmup):
    with pytest.raises(ValueError, match="repeats"):
        median_time(lambda: None, repeats=repeats, warmup=warmup)


def test_compare_keeps_the_order_and_names_the_fastest():
    clock = FakeClock()
    timings = compare({"slow": clock.function_taking([0.0, 0.004, 0.004, 0.004]),
                       "fast": clock.function_taking([0.0, 0.001, 0.001, 0.001])},
                      repeats=3, clock=clock)
    assert [name for name, _ in timings.rows] == ["slow", "fast"]
    assert timings.fastest == pytest.approx(0.001)
    lines = str(timings).splitlines()
    assert lines[1].split() == ["slow", "4.00", "ms", "4.0x"]
    assert lines[2].split() == ["fast", "1.00", "ms", "fastest"]


def test_compare_needs_something_to_time():
    with pytest.raises(ValueError, match="nothing to time"):
        compare({})


@pytest.mark.parametrize("seconds, text", [(2.5, "2.50 s"), (0.0123, "12.30 ms"),
                                           (4.2e-5, "42.0 µs")])
def test_times_are_shown_in_readable_units(seconds, text):
    assert text in str(Timings([("f", seconds)]))


def test_html_table_escapes_names():
    table = Timings([("a<b>", 0.002), ("c", 0.001)])._repr_html_()
    assert "a&lt;b&gt;" in table and "<td>2.0x</td>" in table
