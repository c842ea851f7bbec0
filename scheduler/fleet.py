"""Fleet scale: one scheduling core for the whole cluster against a core per host.

The design keeps ONE logical queue per cluster (DESIGN.md section 2: pooled queues beat
partitioned ones). This module is the evidence for or against it at 64-1,024 GPUs: the
same jobs on H hosts of G GPUs, arranged as

* `central`: one Simulator over all H x G GPUs (the design);
* `po2`: a front-end router sends each job, at arrival, to the less loaded of two
  random hosts, and each host runs its own core over its own GPUs;
* `po2-models`: the same, model-aware (`route_po2_models`): the candidates are two
  random hosts and the host that last got the job's model, scored by outstanding work
  per GPU plus the model's load time where the router believes the host lacks it;
* `random`: the router sends each job to a uniformly random host.

A router at arrival decides once, so each host is simulated independently on the jobs
routed to it, and the outcomes are merged back into one result in the jobs' order:
goodput and the lost share are over ALL arrived jobs, as everywhere else.

Every host has the cluster's unit mix (`capacity_planning.unit_mix`), so a fleet of H
hosts is the same GPUs whatever the arrangement; `hosts_needed` finds, per arrangement,
the fewest hosts at which a goodput target is met.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from scheduler.capacity_planning import scaled, smallest, unit_mix
from scheduler.catalog import Catalog, lru_evictions
from scheduler.cluster import Cluster
from scheduler.metrics import summarize
from scheduler.options import ClassOptions
from scheduler.policies import make_policy, policy_class
from scheduler.production import production_requests
from scheduler.production_workload import production_jobs
from scheduler.sim_config import SimConfig
from scheduler.simulator import SimResult, Simulator
from scheduler.workload import Workload, at_exact_rate
from sdaas.errors import InvalidInputError
from sdaas.job_status import JobStatus

ARRANGEMENTS = ("central", "po2", "po2-models", "random")
GPUS_PER_HOST = 8


def host_cluster(cluster: Cluster, gpus_per_host: int = GPUS_PER_HOST) -> Cluster:
    """One host: `cluster`'s unit mix scaled to `gpus_per_host` GPUs (8xA100+8xT4 with 8
    GPUs a host: 4xA100+4xT4), so that partitioning changes the queues, not the mix."""
    unit = unit_mix(cluster)
    if gpus_per_host < 1 or gpus_per_host % unit.size:
        raise InvalidInputError(
            f"gpus_per_host: {gpus_per_host!r}: must be a positive multiple of the unit mix "
            f"{unit} ({unit.size} GPUs), so every host has the cluster's mix"
        )
    return scaled(unit, gpus_per_host // unit.size)


def fleet_workload(
    catalog: Catalog,
    rate: float,
    duration_s: float,
    *,
    days: float = 2.0,
    seed: int = 0,
    pred_error: float = 0.1,
    clip_margin: float = SimConfig.clip_margin,
) -> Workload:
    """The production-like requests of `days` days (nights, peak hours, sessions)
    compressed into `duration_s` seconds at `rate` jobs/s, as the comparison compresses
    them (`at_exact_rate`). With `days` and `duration_s` fixed, a fleet k times larger gets
    k times the jobs in the same daily shape: the same jobs per GPU at every scale."""
    if not (math.isfinite(rate) and rate > 0):
        raise InvalidInputError(f"rate: {rate!r} jobs/s: must be a finite number > 0")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise InvalidInputError(f"duration_s: {duration_s!r}: must be a finite number > 0")
    n = max(2, round(rate * duration_s))
    req = production_requests(n, seed=seed, days=days)
    w = production_jobs(catalog, req, np.random.default_rng(seed),
                        pred_error=pred_error, clip_margin=clip_margin)  # fmt: skip
    arrival = at_exact_rate(w.arrival, rate)
    return Workload("production", arrival, w.cls, w.classes, w.true_factor, w.clip_noise)


def class_options(
    catalog: Catalog, cluster: Cluster, w: Workload, policy: str, config: SimConfig
) -> ClassOptions:
    """The options the Simulator would build for `w` (its `begin`, the same rule:
    `ClassOptions.for_run`), built once for the whole workload: 128 hosts each building
    them for their share cost more than the simulation."""
    ck = [catalog.kind_index(k) for k in cluster.kinds]
    margin_override = policy_class(policy).clip_margin_override
    return ClassOptions.for_run(catalog, w.classes, ck, config, margin_override)


def predicted_plan(options: ClassOptions, w: Workload) -> tuple[np.ndarray, np.ndarray]:
    """Per job, its predicted seconds and its model on its fastest kind: what a router
    that knows the job's plan but not where it will run would count it as."""
    best = [min((o for o in opts if o is not None), key=lambda o: o.pred_s)
            for opts in options.planned]  # fmt: skip
    pred = np.asarray([o.pred_s for o in best])
    model = np.asarray([o.model for o in best], dtype=np.int64)
    return pred[w.cls], model[w.cls]


def predicted_seconds(options: ClassOptions, w: Workload) -> np.ndarray:
    """Per job, its predicted seconds on its fastest kind (`predicted_plan`)."""
    return predicted_plan(options, w)[0]


def host_budget(catalog: Catalog, host: Cluster) -> float:
    """What a host holds at once: its GPUs' residency budgets summed, GB of checkpoints
    in a memory catalog (4xA100+4xT4: 4 x 48.5 + 4 x 13.9 = 249.5 GB), models in a count
    catalog (4 x 4 + 4 x 1 = 20)."""
    return sum(catalog.budget[catalog.kind_index(k)] * n for k, n in host.counts)


# -------------------------------------------------------------------------- routing
def route_random(n: int, hosts: int, rng: np.random.Generator) -> np.ndarray:
    """Each job's host, uniformly at random."""
    return rng.integers(hosts, size=n)


def random_pairs(n: int, hosts: int, rng: np.random.Generator) -> np.ndarray:
    """Per job, two distinct random hosts (the same one twice when there is one host)."""
    a = rng.integers(hosts, size=n)
    b = (a + rng.integers(1, hosts, size=n)) % hosts if hosts > 1 else a
    return np.stack([a, b], axis=1)


def route_po2(
    arrival: np.ndarray, pred_s: np.ndarray, pairs: np.ndarray, gpus_per_host: int
) -> np.ndarray:
    """Power of two choices: job j goes to whichever of `pairs[j]` has less outstanding
    predicted work (the first on a tie). The outstanding work is the router's OWN
    estimate, as a front end without the hosts' queue state would keep it: the predicted
    seconds it has sent a host, drained as a fluid at the host's GPU count per second of
    wall time, never below 0. It knows nothing of batching, model loads, drops or
    prediction error."""
    hosts = int(pairs.max()) + 1 if len(pairs) else 0
    work = [0.0] * hosts  # outstanding at `since`
    since = [0.0] * hosts
    out = np.empty(len(arrival), dtype=np.int64)
    g = float(gpus_per_host)
    for j, (t, p, (a, b)) in enumerate(zip(arrival.tolist(), pred_s.tolist(),
                                           pairs.tolist(), strict=True)):  # fmt: skip
        wa = max(0.0, work[a] - g * (t - since[a]))
        wb = max(0.0, work[b] - g * (t - since[b]))
        work[a], since[a], work[b], since[b] = wa, t, wb, t
        h = a if wa <= wb else b
        work[h] += p
        out[j] = h
    return out


def route_po2_models(
    arrival: np.ndarray,
    pred_s: np.ndarray,
    model: np.ndarray,
    load_s: np.ndarray,
    pairs: np.ndarray,
    gpus_per_host: int,
    budget: float,
    weight: list[float] | None = None,
) -> np.ndarray:
    """Model-aware power of two choices. Job j's candidates are `pairs[j]` and the host
    that last got its model (`model[j]`), if that is neither; each scores

        outstanding work / `gpus_per_host` + (`load_s[j]` if the host lacks the model),

    and the job goes to the lowest score (the first of pair, pair, last host on a tie).

    Both terms are the router's OWN estimates, from what it has routed, as a front end
    without the hosts' state would keep them:

    * outstanding work: as `route_po2` counts it (predicted seconds sent, drained as a
      fluid at `gpus_per_host` per second of wall time, never below 0), plus `load_s[j]`
      for a job sent to a host believed to lack its model: a GPU spends that loading;
    * holds the model: the host is believed to hold the models most recently routed to
      it while their `weight`s (per model; None: 1 each) sum within `budget`
      (`host_budget`), the residency rule (`lru_evictions`) over the host as one pool.
      The host's own residency is per GPU, its dispatcher picks the GPU, and a model
      routed there may have been evicted since, or loaded on several GPUs: the
      estimate is optimistic where a host serves many models at once.

    `load_s[j]`: the load time of job j's model (0 for all: model loads are free)."""
    hosts = int(pairs.max()) + 1 if len(pairs) else 0
    work = [0.0] * hosts  # outstanding at `since`
    since = [0.0] * hosts
    held: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(hosts)]
    used = [0.0] * hosts  # the weights of the models each is believed to hold
    if weight is None:
        weight = [1.0] * (int(model.max()) + 1 if len(model) else 0)
    last: dict[int, int] = {}  # model -> the host that last got it
    out = np.empty(len(arrival), dtype=np.int64)
    g = float(gpus_per_host)
    for j, (t, p, m, load, (a, b)) in enumerate(zip(arrival.tolist(), pred_s.tolist(),
                                                    model.tolist(), load_s.tolist(),
                                                    pairs.tolist(), strict=True)):  # fmt: skip
        c = last.get(m, a)
        best, best_score, best_miss = -1, math.inf, 0.0
        for h in (a, b) if c in (a, b) else (a, b, c):
            w_h = max(0.0, work[h] - g * (t - since[h]))
            work[h], since[h] = w_h, t
            miss = 0.0 if m in held[h] else load
            score = w_h / g + miss
            if score < best_score:
                best, best_score, best_miss = h, score, miss
        work[best] += p + best_miss
        lru = held[best]
        if m in lru:
            lru.move_to_end(m)
        else:
            n = lru_evictions(list(lru), used[best], m, weight, budget)
            for _ in range(n):
                used[best] -= weight[lru.popitem(last=False)[0]]
            lru[m] = None
            used[best] += weight[m]
        last[m] = best
        out[j] = best
    return out


# ---------------------------------------------------------------------- the runs
@dataclass
class FleetResult:
    """One arrangement's run: the merged per-job result (jobs in the workload's order,
    instances host by host), each job's host (all 0 for central) and `summarize`'s row."""

    arrangement: str
    hosts: int
    gpus_per_host: int
    host_of: np.ndarray
    result: SimResult
    summary: dict = field(repr=False)

    @property
    def gpus(self) -> int:
        return self.hosts * self.gpus_per_host

    @property
    def goodput(self) -> float:
        """Both SLOs met, share of ALL arrived jobs."""
        return self.summary["both_slo_met"]

    @property
    def lost_share(self) -> float:
        """Rejected at arrival or dropped after waiting, share of all arrived jobs."""
        return self.summary["lost_share"]


def _subset(w: Workload, idx: np.ndarray, options: ClassOptions):
    """The jobs `idx` of `w` as a workload of their own, with only their SLO classes (a
    production workload has one class per job) and those classes' options."""
    used, cls = np.unique(w.cls[idx], return_inverse=True)
    sub = Workload(w.name, w.arrival[idx], cls.astype(np.int64),
                   tuple(w.classes[c] for c in used), w.true_factor[idx],
                   w.clip_noise[idx])  # fmt: skip
    return sub, options.subset(used.tolist())


def _merge(parts: list[tuple[np.ndarray, SimResult | None]], w: Workload, host: Cluster):
    """One SimResult from the hosts' results (a host that got no job: idle instances)."""
    n = w.n
    status = np.full(n, JobStatus.PENDING, dtype=np.int64)
    floats = {k: np.full(n, np.nan) for k in ("start", "finish", "pred_s", "true_work_s",
                                              "clip", "latency_slo_s", "min_clip")}  # fmt: skip
    ints = {k: np.full(n, -1, dtype=np.int64) for k in ("kind", "model", "steps")}
    busy, inst_kind, events, ref = [], [], 0, None
    idle_kinds = np.asarray([k for k, (_, c) in enumerate(host.counts) for _ in range(c)])
    for idx, r in parts:
        if r is None:
            busy.append(np.zeros(len(idle_kinds)))
            inst_kind.append(idle_kinds)
            continue
        ref = r
        status[idx] = r.status
        for k, a in floats.items():
            a[idx] = getattr(r, k)
        for k, a in ints.items():
            a[idx] = getattr(r, k)
        busy.append(r.busy_s)
        inst_kind.append(r.instance_kind)
        events += r.events
    if ref is None:
        raise InvalidInputError("fleet: no host got a job; the workload is empty")
    return SimResult(policy=ref.policy, workload=w.name, cluster=ref.cluster,
                     arrival=w.arrival, status=status, busy_s=np.concatenate(busy),
                     instance_kind=np.concatenate(inst_kind), kinds=ref.kinds,
                     models=ref.models, events=events, **floats, **ints)  # fmt: skip


def run_fleet(
    catalog: Catalog,
    host: Cluster,
    hosts: int,
    arrangement: str,
    w: Workload,
    policy: str = "slack-sjf",
    config: SimConfig | None = None,
    *,
    seed: int = 0,
    options: ClassOptions | None = None,
) -> FleetResult:
    """`w` on `hosts` hosts like `host`, arranged as `arrangement` (see the module's
    text). Every host runs its own `make_policy(policy)`. `seed`: the router's draws.
    `options`: `class_options` of `w`, when the caller runs it many times."""
    if arrangement not in ARRANGEMENTS:
        raise InvalidInputError(
            f"arrangement: {arrangement!r}: unknown; known: {', '.join(ARRANGEMENTS)}"
        )
    if not (isinstance(hosts, int) and hosts >= 1):
        raise InvalidInputError(f"hosts: {hosts!r}: must be an integer >= 1")
    config = config or SimConfig()
    make_policy(policy)  # an unknown key fails before any work
    fleet = scaled(host, hosts)
    if options is None:
        options = class_options(catalog, host, w, policy, config)
    if arrangement == "central":
        host_of = np.zeros(w.n, dtype=np.int64)
        r = Simulator(catalog, fleet, make_policy(policy), config).run(w, options)
        return FleetResult(arrangement, hosts, host.size, host_of, r, summarize(r))
    rng = np.random.default_rng(seed)
    if arrangement == "random":
        host_of = route_random(w.n, hosts, rng)
    elif arrangement == "po2":
        pairs = random_pairs(w.n, hosts, rng)
        host_of = route_po2(w.arrival, predicted_seconds(options, w), pairs, host.size)
    else:  # po2-models
        pairs = random_pairs(w.n, hosts, rng)
        pred, model = predicted_plan(options, w)
        load_s = np.asarray([catalog.load_s[m] for m in range(len(catalog.models))])
        load = load_s[model] if config.cold_start else np.zeros(w.n)
        host_of = route_po2_models(w.arrival, pred, model, load, pairs, host.size,
                                   host_budget(catalog, host), catalog.weight)  # fmt: skip
    order = np.argsort(host_of, kind="stable")
    bounds = np.searchsorted(host_of[order], np.arange(hosts + 1))
    parts = []
    for h in range(hosts):
        idx = order[bounds[h] : bounds[h + 1]]
        if not len(idx):
            parts.append((idx, None))
            continue
        sub, opts = _subset(w, idx, options)
        parts.append((idx, Simulator(catalog, host, make_policy(policy), config).run(sub, opts)))
    merged = _merge(parts, w, host)
    merged.cluster = f"{hosts} hosts x ({host}), {arrangement}"
    return FleetResult(arrangement, hosts, host.size, host_of, merged, summarize(merged))


# ------------------------------------------------------------------ hosts needed
@dataclass(frozen=True)
class FleetNeed:
    """The fewest hosts at which `arrangement` meets both SLOs for `target` of all
    arrived jobs (None: not within `max_hosts`; then `goodput` is the best seen), and
    every point the search simulated: (hosts, goodput, lost share)."""

    arrangement: str
    policy: str
    target: float
    hosts: int | None
    gpus: int | None
    goodput: float
    lost_share: float
    relaxed_margin: float
    curve: tuple[tuple[int, float, float], ...]


def hosts_needed(
    catalog: Catalog,
    host: Cluster,
    w: Workload,
    arrangement: str,
    policy: str = "slack-sjf",
    config: SimConfig | None = None,
    targets: tuple[float, ...] = (0.90, 0.95),
    *,
    start: int = 1,
    max_hosts: int = 1024,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[FleetNeed]:
    """Per target, the fewest hosts at which `arrangement` meets it on `w`. A policy that
    down-shifts steps runs each target with the CLIP risk it allows
    (`SimConfig.for_target`), as in capacity planning. The router's seed is the same at
    every size; each later target starts from the previous answer."""
    config = config or SimConfig()
    adapts = policy_class(policy).downshifts
    out = []
    for target in targets:
        cfg = config.for_target(target) if adapts else config
        options = class_options(catalog, host, w, policy, cfg)
        seen: dict[int, FleetResult] = {}

        def meets(h: int, cfg=cfg, options=options, seen=seen, target=target) -> bool:
            if h not in seen:
                r = run_fleet(catalog, host, h, arrangement, w, policy, cfg, seed=seed,
                              options=options)  # fmt: skip
                seen[h] = r
                if progress:
                    progress(f"{arrangement} {target:.0%}: {h} hosts ({h * host.size} GPUs) "
                             f"goodput {r.goodput:.4f}, lost {r.lost_share:.4f}")  # fmt: skip
            return seen[h].goodput >= target

        h = smallest(meets, start, max_hosts)
        best = seen[h] if h is not None else max(seen.values(), key=lambda r: r.goodput)
        curve = tuple((k, seen[k].goodput, seen[k].lost_share) for k in sorted(seen))
        out.append(FleetNeed(arrangement, policy, target, h, None if h is None else h * host.size,
                             best.goodput, best.lost_share, cfg.relaxed_margin,
                             curve))  # fmt: skip
        if h is not None:
            start = h
    return out
