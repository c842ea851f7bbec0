"""Benchmark the scheduler simulator: speed at scale, and the policy comparison.

1. Speed: one million Poisson jobs on a 64-accelerator cluster (32xA100+32xT4) at 0.8
   of capacity, per policy: simulated jobs per second on one core (aim >= 100k for sjf
   and fcfs) and peak resident memory. The non-aimed policies run 200k jobs.
2. The comparison (scheduler/comparison.py) on 8xA100+8xT4 over offered load 0.3-1.2,
   Poisson, bursty (Gamma, CV 5) and the DiffServe trace, every policy, several seeds.

With --full: writes bench/results/scheduler_speed.json and bench/results/scheduler/
(runs.parquet, summary.parquet, summary.md, jct_vs_load.png, slo_vs_load.png, meta.json):
the results the README quotes (about 3 min on 2 cores). Without (`make bench`): a quick
version, 200k-job speed runs and 5k jobs x 3 seeds, into scheduler_speed-quick.json and
scheduler-quick/. Usage: python bench/scheduler_bench.py [--full]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np

from scheduler.catalog import load_catalog
from scheduler.cluster import Cluster
from scheduler.comparison import ComparisonConfig, estimate_capacity, print_progress, run_comparison
from scheduler.policy import known_policies, make_policy
from scheduler.simulator import Simulator
from scheduler.workload import make_workload, poisson_arrivals, slo_mix

RESULTS = Path(__file__).resolve().parent / "results"


def speed(n_aimed: int, n_other: int) -> dict:
    cluster = Cluster.parse("32xA100+32xT4")
    cat = load_catalog(cluster.kinds)
    classes = slo_mix("mixed", cat.all_styles)
    cap = estimate_capacity(cat, cluster, classes)
    out = {"cluster": str(cluster), "capacity_jobs_per_s": cap, "load": 0.8, "policies": {}}
    for p in known_policies():
        n = n_aimed if p in ("sjf", "fcfs") else n_other
        rng = np.random.default_rng(0)
        w = make_workload("poisson", poisson_arrivals(0.8 * cap, n, rng), classes, rng)
        t0 = time.perf_counter()
        r = Simulator(cat, cluster, make_policy(p)).run(w)
        wall = time.perf_counter() - t0
        out["policies"][p] = {
            "jobs": n,
            "wall_s": round(wall, 2),
            "jobs_per_s": round(n / wall),
            "events": r.events,
        }
        print(f"  {p:12s} {n:>9,} jobs  {wall:6.1f} s  {n / wall:>9,.0f} jobs/s")
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="1M-job speed run, 20k jobs x 5 seeds")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "" if args.full else "-quick"
    print("speed (32xA100+32xT4, Poisson at 0.8 of capacity):")
    sp = speed(1_000_000 if args.full else 200_000, 200_000 if args.full else 50_000)
    sp["host"] = platform.node()
    (RESULTS / f"scheduler_speed{tag}.json").write_text(json.dumps(sp, indent=2) + "\n")
    cfg = ComparisonConfig(jobs=20_000 if args.full else 5_000, seeds=5 if args.full else 3)
    print(f"comparison on {cfg.cluster}: {cfg.jobs} jobs x {cfg.seeds} seeds per point")
    folder = RESULTS / f"scheduler{tag}"
    res = run_comparison(cfg, folder, progress=print_progress)
    print(f"  capacity {res['meta']['capacity_jobs_per_s']:.1f} jobs/s, "
          f"{res['meta']['wall_s']:.0f} s; results in {folder}")  # fmt: skip


if __name__ == "__main__":
    main()
