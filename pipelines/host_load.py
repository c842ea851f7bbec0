"""What else the host was doing while something was measured: load average per core and
the CPU steal share (a VM whose host is oversubscribed loses time to it). NaN where the
platform does not say."""

from __future__ import annotations

import math
import os
from pathlib import Path


def load_per_core() -> float:
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return math.nan


def steal_share() -> float:
    """Share of CPU time stolen since boot (/proc/stat)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return math.nan
    return ticks[7] / sum(ticks) if len(ticks) > 7 and sum(ticks) else math.nan


def host_load() -> dict:
    return {"load_per_core": load_per_core(), "steal_share": steal_share()}
