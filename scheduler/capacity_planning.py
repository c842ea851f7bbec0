"""Capacity planning: the smallest cluster at which a policy reaches an SLO attainment.

This is the number operators size clusters by, and, unlike a table over offered load,
it does not depend on how load is defined: the jobs and their arrival times are fixed,
only the cluster grows. Clusters grow in units of the configured cluster's mix reduced
to its smallest whole form (8xA100+8xT4 grows as N x (1xA100+1xT4)); each policy's
attainment (both SLOs met, share of ALL arrived jobs) is found by doubling the cluster
until each target is met, then bisecting (`smallest`, which the fleet comparison,
scheduler/fleet.py, searches hosts with too). Attainment is assumed to grow with the
cluster; every answer is a size that was simulated and met the target.
A policy that down-shifts steps runs each target with the CLIP risk that target allows
(`SimConfig.for_target`): the operator who asks for 99 % gets a scheduler that takes no
more than 1 % risk on a down-shifted job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import reduce

from scheduler.catalog import Catalog
from scheduler.cluster import Cluster
from scheduler.metrics import summarize
from scheduler.policies import make_policy, policy_class
from scheduler.simulator import SimConfig, Simulator
from scheduler.workload import Workload

TARGETS = (0.90, 0.95, 0.99)
MAX_UNITS = 128


@dataclass(frozen=True)
class Need:
    """What `policy` needs to meet both SLOs for `target` of all arrived jobs: `units`
    of the mix (None: not within `max_units`; `best` is then the attainment there)."""

    policy: str
    target: float
    units: int | None
    gpus: int | None
    gpu_hours: float | None
    best: float


def unit_mix(cluster: Cluster) -> Cluster:
    """The cluster's mix in its smallest whole form: 8xA100+8xT4 -> 1xA100+1xT4."""
    g = reduce(math.gcd, (n for _, n in cluster.counts))
    return Cluster(tuple((k, n // g) for k, n in cluster.counts))


def scaled(unit: Cluster, units: int) -> Cluster:
    return Cluster(tuple((k, n * units) for k, n in unit.counts))


def smallest(
    passes: Callable[[int], bool],
    start: int = 1,
    limit: int = MAX_UNITS,
    known: Iterable[int] = (),
) -> int | None:
    """The fewest units in [1, `limit`] at which `passes` holds, assumed to hold from
    some size on. From `start` (clamped to [1, limit]): halve while it holds, or double
    (capped at `limit`) until it does; then bisect between the smallest size tried that
    passes and the largest tried below it. Starting near the answer spares a large
    fleet the overloaded runs at a handful of units.

    `known`: sizes the caller already has outcomes for (`passes` on them must be cheap,
    e.g. cached from an earlier target); they narrow the bracket and may be the answer.
    `passes` is called at most once per size here. Every answer is a size at which
    `passes` held; None: it held at no size tried (not at `limit`)."""
    got: dict[int, bool] = {}

    def ok(u: int) -> bool:
        if u not in got:
            got[u] = passes(u)
        return got[u]

    u = max(1, min(start, limit))
    if ok(u):
        while u > 1:  # halve while it holds
            u //= 2
            if not ok(u):
                break
    else:
        while u < limit:  # double until it holds
            u = min(2 * u, limit)
            if ok(u):
                break
    tried = sorted({*known, *got})
    met = [u for u in tried if ok(u)]
    if not met:
        return None
    top = met[0]
    lo = max((u for u in tried if u < top), default=0)
    while top - lo > 1:  # does not hold at lo (or lo = 0), holds at top
        mid = (lo + top) // 2
        lo, top = (lo, mid) if ok(mid) else (mid, top)
    return top


def gpus_needed(
    catalog: Catalog,
    cluster: Cluster,
    policies: list[str],
    w: Workload,
    config: SimConfig,
    targets: tuple[float, ...] = TARGETS,
    max_units: int = MAX_UNITS,
) -> list[Need]:
    """Per policy and target, the fewest units of `cluster`'s mix at which the policy
    meets both SLOs for at least `target` of `w`'s jobs. GPU-hours: the GPUs times the
    span of the arrivals."""
    unit = unit_mix(cluster)
    hours = float(w.arrival[-1] - w.arrival[0]) / 3600.0
    out = []
    for p in policies:
        adapts = policy_class(p).downshifts
        seen: dict[float, dict[int, float]] = {}  # relaxed margin -> units -> attainment

        def attainment(u: int, cfg: SimConfig, p=p, seen=seen) -> float:
            at = seen.setdefault(cfg.relaxed_margin, {})
            if u not in at:
                r = Simulator(catalog, scaled(unit, u), make_policy(p), cfg).run(w)
                at[u] = summarize(r)["both_slo_met"]
            return at[u]

        for target in targets:
            cfg = config.for_target(target) if adapts else config
            known = list(seen.get(cfg.relaxed_margin, ()))  # from earlier targets

            def meets(u: int, cfg=cfg, target=target) -> bool:
                return attainment(u, cfg) >= target

            top = smallest(meets, 1, max_units, known)
            at = seen[cfg.relaxed_margin]
            if top is None:
                out.append(Need(p, target, None, None, None, max(at.values())))
                continue
            gpus = top * unit.size
            out.append(Need(p, target, top, gpus, gpus * hours, at[top]))
    return out
