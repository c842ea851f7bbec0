"""A run timed on a shared host: repeated until its calls agree (the sweep's cells and
serving's first probes alike)."""

from __future__ import annotations

from profiles.timing import relative_spread, timed_repeats


def test_repeats_stop_when_calls_agree_and_go_on_while_they_do_not():
    calm = iter([1.0, 1.01, 5.0])
    times, _ = timed_repeats(lambda: (next(calm), None), repeats=(2, 5))
    assert times == [1.0, 1.01]
    bursty = iter([1.0, 3.0, 1.0, 1.02, 9.0])
    times, _ = timed_repeats(lambda: (next(bursty), None), repeats=(2, 5))
    assert times == [1.0, 3.0, 1.0]  # the burst is outvoted by the third call
    wild = iter([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    times, _ = timed_repeats(lambda: (next(wild), None), repeats=(2, 5))
    assert len(times) == 5 and relative_spread(times) > 0.05  # budget spent, unsettled
