"""The comparison: every policy on the same jobs, over offered load, per workload shape.

Load is relative to the cluster's capacity, measured, not guessed: capacity is the
throughput of FCFS without batching when every job of the mix is waiting at time zero
(`estimate_capacity`). Policies that batch can therefore serve more than load 1.0.

Common random numbers: per (workload, seed) one set of jobs is drawn at unit rate
(realised, not only on average: `workload.at_exact_rate`); each load rescales its
arrival times, so policies and loads differ only in what they vary, and the load a run
offers is the nominal one.

Policies are ranked honestly (scheduler/metrics.py): goodput over all arrived jobs
first; mean JCT only beside the lost share, and against the oracle only at equal
completion. Capacity planning (scheduler/capacity_planning.py) adds the cluster each
policy needs for 90/95/99 % attainment on the seed-0 jobs at `plan_load`.

Results: `runs.parquet` (one row per run), `summary.parquet` (mean and 95 % CI over
seeds, aggregated with polars), `gpus_needed.parquet`, `summary.md`, `jct_vs_load.png`,
`slo_vs_load.png`, `gpus_needed.png`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from scheduler.capacity_planning import TARGETS, gpus_needed, unit_mix
from scheduler.catalog import Catalog, load_catalog
from scheduler.cluster import Cluster
from scheduler.comparison_report import markdown_summary, plot, plot_needed
from scheduler.metrics import aggregate, summarize
from scheduler.policies import known_policies, make_policy
from scheduler.production import PRODUCTION, production_requests
from scheduler.production_workload import production_catalog, production_jobs
from scheduler.simulator import SimConfig, Simulator
from scheduler.workload import (
    MMPP_DWELL_S,
    MMPP_RATES,
    Workload,
    at_exact_rate,
    bursty_arrivals,
    make_workload,
    mmpp_arrivals,
    mmpp_check,
    poisson_arrivals,
    read_trace,
    realised_rate,
    slo_mix,
    trace_arrivals,
)
from sdaas.errors import InvalidInputError

DEFAULT_TRACE = Path(__file__).resolve().parents[1] / "data" / "traces" / "trace_3to40qps.txt"
DEFAULT_LOADS = (0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.2)
WORKLOADS = ("poisson", "bursty", "trace", "production", "mmpp")
# any arrival trace as one more workload: `trace:PATH` (named `trace:<file stem>`)
TRACE_PREFIX = "trace:"


def trace_workloads(workloads, default_trace: str) -> dict[str, str]:
    """Trace workloads by name -> file: `trace` is `default_trace`, `trace:PATH` is PATH,
    named `trace:<stem>`."""
    out = {}
    for w in workloads:
        if w == "trace":
            out[w] = str(default_trace)
        elif w.startswith(TRACE_PREFIX) and len(w) > len(TRACE_PREFIX):
            path = w[len(TRACE_PREFIX) :]
            out[TRACE_PREFIX + Path(path).stem] = path
    return out


def workload_names(workloads) -> list[str]:
    """The names results are reported under (a `trace:PATH` by its file's stem)."""
    return [
        TRACE_PREFIX + Path(w[len(TRACE_PREFIX) :]).stem if w.startswith(TRACE_PREFIX) else w
        for w in workloads
    ]


@dataclass
class ComparisonConfig:
    cluster: str = "8xA100+8xT4"
    policies: list[str] = field(default_factory=known_policies)
    loads: tuple[float, ...] = DEFAULT_LOADS
    workloads: tuple[str, ...] = WORKLOADS
    jobs: int = 20_000
    seeds: int = 3
    pred_error: float = 0.1
    burst_cv: float = 5.0
    # mmpp: relative rate per state, and mean seconds in each (at load 1.0; a load
    # rescales time, so at load 0.5 a state lasts twice as long)
    mmpp_rates: tuple[float, ...] = MMPP_RATES
    mmpp_dwell_s: tuple[float, ...] = MMPP_DWELL_S
    slo_mix: str = "mixed"
    trace: str = str(DEFAULT_TRACE)
    clip_margin: float = SimConfig.clip_margin
    cold_start: bool = True
    # capacity planning: the clusters each policy needs at this load of the configured
    # cluster's capacity (0: skip)
    plan_load: float = 1.0
    plan_targets: tuple[float, ...] = TARGETS

    def check(self) -> None:
        problems = []
        for x in self.loads:
            if not (isinstance(x, int | float) and math.isfinite(x) and x > 0):
                problems.append(f"load: {x!r}: must be a finite number > 0 (share of capacity)")
        if self.jobs < 10:
            problems.append(f"jobs: {self.jobs}: must be >= 10")
        if not (math.isfinite(self.plan_load) and self.plan_load >= 0):
            problems.append(f"plan_load: {self.plan_load!r}: must be >= 0 (0: no planning)")
        for x in self.plan_targets:
            if not 0 < x <= 1:
                problems.append(f"plan target: {x!r}: must be a share in (0, 1]")
        if self.seeds < 1:
            problems.append(f"seeds: {self.seeds}: must be >= 1")
        for w in self.workloads:
            if w not in WORKLOADS and not (
                w.startswith(TRACE_PREFIX) and len(w) > len(TRACE_PREFIX)
            ):
                problems.append(f"workload: {w!r}: one of {', '.join(WORKLOADS)}, or trace:PATH")
        names = workload_names(self.workloads)
        for w in sorted({x for x in names if names.count(x) > 1}):
            problems.append(f"workload: {w!r} named twice (trace files need distinct names)")
        if "mmpp" in self.workloads:
            try:
                mmpp_check(self.mmpp_rates, self.mmpp_dwell_s)
            except InvalidInputError as e:
                problems.append(str(e))
        if problems:
            raise InvalidInputError("; ".join(problems))


def estimate_capacity(
    catalog: Catalog,
    cluster: Cluster,
    classes,
    *,
    jobs: int | None = None,
    seed: int = 0,
    clip_margin: float = SimConfig.clip_margin,
) -> float:
    """Jobs/s the cluster sustains under FCFS without batching, every job queued at t=0
    (planned with the run's CLIP margin: a larger margin plans more steps)."""
    n = jobs or max(500, 100 * cluster.size)
    rng = np.random.default_rng(seed)
    w = make_workload("saturated", np.zeros(n), classes, rng, service="exact")
    return capacity_of(catalog, cluster, w, clip_margin)


def capacity_of(catalog: Catalog, cluster: Cluster, w: Workload, clip_margin: float) -> float:
    """Jobs/s the cluster serves `w`'s jobs at, all queued at t=0, FCFS, one at a time,
    each taking its prediction."""
    n = w.n
    queued = Workload("saturated", np.zeros(n), w.cls, w.classes, np.ones(n), np.zeros(n))
    config = SimConfig(clip_margin=clip_margin)
    r = Simulator(catalog, cluster, make_policy("fcfs"), config).run(queued)
    return n / float(np.max(r.finish))


@dataclass
class Setup:
    """What one workload kind runs on: its catalog, its capacity on the cluster (the
    load unit) and its jobs per seed at unit rate."""

    catalog: Catalog
    capacity: float
    unit: Callable[[int], Workload]


def setup(
    cfg: ComparisonConfig, kind: str, cluster: Cluster, reference: Catalog, capacity: float
) -> Setup:
    """poisson / bursty / mmpp / trace (any trace file): the reference catalog and its
    capacity for the SLO mix (computed once for all of them); production: the
    checkpoints' catalog and the production-like requests
    (scheduler/production_workload.py). `kind`: a workload's name (`workload_names`)."""
    if kind == "production":
        catalog, _ = production_catalog(cluster.kinds, PRODUCTION.checkpoints)

        def unit(seed: int) -> Workload:
            req = production_requests(cfg.jobs, seed=seed)
            w = production_jobs(catalog, req, np.random.default_rng(seed),
                                pred_error=cfg.pred_error, clip_margin=cfg.clip_margin)  # fmt: skip
            arrival = at_exact_rate(w.arrival, 1.0)
            return Workload(kind, arrival, w.cls, w.classes, w.true_factor, w.clip_noise)

        return Setup(catalog, capacity_of(catalog, cluster, unit(0), cfg.clip_margin), unit)
    classes = slo_mix(cfg.slo_mix, reference.all_styles)
    traces = trace_workloads(cfg.workloads, cfg.trace)
    times = read_trace(Path(traces[kind])) if kind in traces else None

    def unit(seed: int) -> Workload:
        """Jobs at mean rate 1/s; `at_load` rescales time."""
        rng = np.random.default_rng(seed)
        if kind == "poisson":
            arr = poisson_arrivals(1.0, cfg.jobs, rng)
        elif kind == "bursty":
            arr = bursty_arrivals(1.0, cfg.jobs, rng, cv=cfg.burst_cv)
        elif kind == "mmpp":  # drawn in seconds at load 1.0 (the states' dwell times)
            arr = mmpp_arrivals(capacity, cfg.jobs, rng, cfg.mmpp_rates, cfg.mmpp_dwell_s)
            arr = at_exact_rate(arr, 1.0)
        else:
            arr = trace_arrivals(times, 1.0, cfg.jobs)
        return make_workload(kind, arr, classes, rng, pred_error=cfg.pred_error)

    return Setup(reference, capacity, unit)


def at_load(w: Workload, rate: float) -> Workload:
    return Workload(w.name, w.arrival / rate, w.cls, w.classes, w.true_factor, w.clip_noise)


def run_comparison(cfg: ComparisonConfig, out: Path | None = None, progress=None) -> dict:
    """Run the grid; write Parquet, markdown and plots under `out` when given."""
    cfg.check()
    cluster = Cluster.parse(cfg.cluster)
    reference = load_catalog(cluster.kinds)
    cluster.check(reference)
    for p in cfg.policies:
        make_policy(p)  # unknown names fail before any work
    classes = slo_mix(cfg.slo_mix, reference.all_styles)
    capacity = estimate_capacity(reference, cluster, classes, clip_margin=cfg.clip_margin)
    kinds = workload_names(cfg.workloads)
    setups = {kind: setup(cfg, kind, cluster, reference, capacity) for kind in kinds}
    sim_cfg = SimConfig(clip_margin=cfg.clip_margin, cold_start=cfg.cold_start)
    rows = []
    total = len(kinds) * cfg.seeds * len(cfg.loads) * len(cfg.policies)
    done = 0
    t0 = time.perf_counter()
    for kind in kinds:
        catalog, capacity = setups[kind].catalog, setups[kind].capacity
        for seed in range(cfg.seeds):
            base = setups[kind].unit(seed)
            cv = base.interarrival_cv()
            for load in cfg.loads:
                w = at_load(base, load * capacity)
                for p in cfg.policies:
                    s0 = time.perf_counter()
                    r = Simulator(catalog, cluster, make_policy(p), sim_cfg).run(w)
                    wall = time.perf_counter() - s0
                    rows.append(
                        {
                            "policy": p,
                            "workload": kind,
                            "load": float(load),
                            "seed": seed,
                            "rate_per_s": load * capacity,
                            "realised_load": realised_rate(w.arrival) / capacity,
                            "interarrival_cv": cv,
                            "sim_jobs_per_s": w.n / wall,
                            **summarize(r),
                        }
                    )
                    done += 1
                    if progress:
                        progress(done, total, time.perf_counter() - t0)
    runs = pl.DataFrame(rows)
    summary = aggregate(runs, ["workload", "load", "policy"])
    needs = []
    if cfg.plan_load > 0:
        for kind, st in setups.items():
            w = at_load(st.unit(0), cfg.plan_load * st.capacity)
            for n in gpus_needed(st.catalog, cluster, cfg.policies, w, sim_cfg, cfg.plan_targets):
                needs.append({"workload": kind, **asdict(n)})
            if progress:
                progress(done, total, time.perf_counter() - t0)
    schema = {"workload": pl.String, "policy": pl.String, "target": pl.Float64,
              "units": pl.Int64, "gpus": pl.Int64, "gpu_hours": pl.Float64,
              "best": pl.Float64}  # fmt: skip
    needed = pl.DataFrame(needs, schema=schema)
    meta = {
        "config": asdict(cfg),
        "capacity_jobs_per_s": {kind: st.capacity for kind, st in setups.items()},
        "traces": trace_workloads(cfg.workloads, cfg.trace),
        "cluster": str(cluster),
        "unit_mix": str(unit_mix(cluster)),
        "wall_s": time.perf_counter() - t0,
    }
    if out is not None:
        write_outputs(runs, summary, needed, meta, Path(out))
    return {"runs": runs, "summary": summary, "gpus_needed": needed, "meta": meta}


def write_outputs(
    runs: pl.DataFrame, summary: pl.DataFrame, needed: pl.DataFrame, meta: dict, out: Path
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    runs.write_parquet(out / "runs.parquet")
    summary.write_parquet(out / "summary.parquet")
    needed.write_parquet(out / "gpus_needed.parquet")
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "summary.md").write_text(markdown_summary(summary, needed, meta))
    plot(summary, out)
    if needed.height:
        plot_needed(needed, meta, out)


def print_progress(done: int, total: int, elapsed: float) -> None:
    if done == total or done % max(1, total // 20) == 0:
        eta = elapsed / done * (total - done)
        print(f"  {done}/{total} runs, {elapsed:.0f} s elapsed, ~{eta:.0f} s left", file=sys.stderr)
