"""What every benchmark records of the host it ran on (import it from a bench script:
bench/ is on sys.path when one runs)."""

from __future__ import annotations

import os
import platform


def host_info(load_avg_before) -> dict:
    """The machine, its cores, and the load average before the bench and now: compare
    numbers only within one run, and look here when they look noisy."""
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_before": load_avg_before,
        "load_avg_after": os.getloadavg(),
    }
