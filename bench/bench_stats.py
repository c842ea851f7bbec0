"""Statistics the benchmarks share."""

from __future__ import annotations


def clustered_share(hits: list[bool], groups: list[str]) -> tuple[float, float]:
    """(share, half-width of its 95 % interval), the ratio estimator's standard error
    clustered by group (one caption's jobs move together)."""
    import numpy as np

    h = np.asarray(hits, dtype=float)
    if not len(h):
        return float("nan"), float("nan")
    share = float(h.mean())
    g = np.unique(np.asarray(groups), return_inverse=True)[1]
    dev = np.bincount(g, weights=h - share)
    k = len(dev)
    se = float(np.sqrt(np.sum(dev**2) * k / max(k - 1, 1)) / len(h))
    return share, 1.96 * se
