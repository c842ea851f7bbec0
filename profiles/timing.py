"""How a run is timed on a shared host: repeated until the calls agree.

The sweep times each cell so, and serving's first probes of a model the same way, so
that a probe and the profile row it is compared with carry the same noise (one timed
call against a median of several was 4-6 of 6 probes within 15 % of the sweep)."""

from __future__ import annotations

import math
import statistics

from profiles.summary import SPREAD_TARGET

REPEATS = (2, 5)  # timed calls per cell: at least, at most (until they agree)


def relative_spread(values: list[float]) -> float:
    """How much timed calls of one cell disagree, relative to their median: half the
    range for two calls, the robust standard deviation (1.4826 MAD) for more, so one
    call slowed by a burst of background load does not keep a cell unsettled."""
    if len(values) < 2:
        return math.nan
    mid = statistics.median(values)
    if mid <= 0:
        return math.inf
    if len(values) == 2:
        return (max(values) - min(values)) / (2 * mid)
    return 1.4826 * statistics.median(abs(v - mid) for v in values) / mid


def timed_repeats(run, *, repeats=REPEATS, target=SPREAD_TARGET):
    """Call `run()` (it returns seconds) until `repeats[0]` calls agree within `target`
    or `repeats[1]` calls are spent; the calls' seconds, the last call's other output."""
    times, out = [], None
    while len(times) < repeats[1]:
        seconds, out = run()
        times.append(seconds)
        if len(times) >= repeats[0] and relative_spread(times) <= target:
            break
    return times, out
