"""Benchmark the scheduler simulator: speed at scale, the policy comparison, elasticity.

1. Speed: one million Poisson jobs on a 64-accelerator cluster (32xA100+32xT4) at 0.8
   of capacity for sjf and fcfs, 200k for the others: simulated jobs per second on one
   core (aim >= 100k for every policy), best of 3 with the spread and the load average
   recorded (a spread over 25 % is flagged noisy), and peak resident memory.
2. The comparison (scheduler/comparison.py) on 8xA100+8xT4 over offered load 0.3-1.2,
   Poisson, bursty (Gamma, CV 5), the DiffServe trace, the production-like requests and
   a Markov-modulated Poisson workload (`mmpp`: --mmpp-rates, --mmpp-dwell-s), plus any
   arrival trace (--trace-file, repeatable), every policy, several seeds: goodput, lost
   share, JCT, and the GPUs each policy needs for 90/95/99 % goodput (bisection, for
   every workload: trace files too). It prints the headline: per workload, ours against
   the best baseline (target <= 0.70) and against the fair bound (`fair-bound`, target
   <= 1.15), with the true-CLIP oracle for scale.
3. Elasticity (scheduler/elastic.py): the production-like requests in real time (2
   days), an elastic pool of A100s against the smallest fixed cluster at the same
   goodput and at 95 %, in GPU-hours.

With --full: writes bench/results/scheduler_speed.json, bench/results/scheduler/
(runs.parquet, summary.parquet, gpus_needed.parquet, summary.md, *.png, meta.json) and
bench/results/elastic.json: the results the README quotes (about 10 min on 2 cores).
Without (`make bench`): a quick version (200k-job speed runs, 5k jobs x 3 seeds) into
scheduler_speed-quick.json, scheduler-quick/ and elastic-quick.json.
Usage: python bench/scheduler_bench.py [--full] [--speed-only | --comparison-only |
--elastic-only] [--workloads poisson,bursty,trace,production,mmpp] [--trace-file PATH ...]
[--mmpp-rates 1,10 --mmpp-dwell-s 60,10] [--jobs N --seeds N --loads ... --policies ...]
[--pred-error 0.1] [--out NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from scheduler.catalog import load_catalog
from scheduler.cluster import Cluster
from scheduler.comparison import (
    DEFAULT_LOADS,
    WORKLOADS,
    ComparisonConfig,
    estimate_capacity,
    print_progress,
    run_comparison,
)
from scheduler.comparison_report import headline
from scheduler.policies import known_policies, make_policy
from scheduler.simulator import SimConfig, Simulator
from scheduler.workload import MMPP_DWELL_S, MMPP_RATES, make_workload, poisson_arrivals, slo_mix

RESULTS = Path(__file__).resolve().parent / "results"


TARGET_JOBS_PER_S = 100_000  # every policy, on one core (issue 12)
REPEATS = 3  # best of 3: the host is shared; the spread says how noisy the run was
NOISY_SPREAD = 0.25  # (slowest - fastest) / fastest above this: the numbers are suspect


def speed(n_aimed: int, n_other: int) -> dict:
    cluster = Cluster.parse("32xA100+32xT4")
    cat = load_catalog(cluster.kinds)
    classes = slo_mix("mixed", cat.all_styles)
    cap = estimate_capacity(cat, cluster, classes)
    out = {"cluster": str(cluster), "capacity_jobs_per_s": cap, "load": 0.8,
           "repeats": REPEATS, "load_average_before": os.getloadavg(), "policies": {}}  # fmt: skip
    for p in known_policies():
        n = n_aimed if p in ("sjf", "fcfs") else n_other
        rng = np.random.default_rng(0)
        w = make_workload("poisson", poisson_arrivals(0.8 * cap, n, rng), classes, rng)
        walls = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            r = Simulator(cat, cluster, make_policy(p)).run(w)
            walls.append(time.perf_counter() - t0)
        wall, spread = min(walls), (max(walls) - min(walls)) / min(walls)
        out["policies"][p] = {
            "jobs": n,
            "wall_s": round(wall, 2),
            "jobs_per_s": round(n / wall),
            "spread": round(spread, 3),
            "events": r.events,
        }
        flags = [f"noisy: spread {spread:.0%}"] if spread > NOISY_SPREAD else []
        if n / wall < TARGET_JOBS_PER_S:
            flags.append(f"BELOW the {TARGET_JOBS_PER_S:,} jobs/s target")
        note = "  " + "; ".join(flags) if flags else ""
        print(f"  {p:12s} {n:>9,} jobs  {wall:6.2f} s  {n / wall:>9,.0f} jobs/s"
              f"  (best of {REPEATS}, spread {spread:.0%}){note}")  # fmt: skip
    out["load_average_after"] = os.getloadavg()
    out["noisy"] = [p for p, v in out["policies"].items() if v["spread"] > NOISY_SPREAD]
    out["below_target"] = [
        p for p, v in out["policies"].items() if v["jobs_per_s"] < TARGET_JOBS_PER_S
    ]
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    below = out["below_target"] or "none"
    print(f"  load average before {out['load_average_before'][0]:.2f}, after "
          f"{out['load_average_after'][0]:.2f}; below target: {below}")  # fmt: skip
    return out


ELASTIC_UNIT = "1xA100"
ELASTIC_DAYS = 2.0  # the production-like day shape in real time: hours of 3600 s
ELASTIC_TARGET = 0.95  # the goodput the issue asks of the elastic cluster


def elastic(tag: str) -> None:
    """The production-like requests in real time (20k over 2 days: nights, peak hours),
    an elastic pool of A100s against the smallest fixed clusters."""
    from scheduler.elastic import Autoscaler, elastic_vs_fixed
    from scheduler.production import production_requests
    from scheduler.production_workload import production_catalog, production_jobs

    unit = Cluster.parse(ELASTIC_UNIT)
    n = 20_000 if not tag else 5_000
    cat, _ = production_catalog(unit.kinds, 86)
    req = production_requests(n, seed=0, days=ELASTIC_DAYS)
    w = production_jobs(cat, req, np.random.default_rng(0))
    scaler = Autoscaler()
    t0 = time.perf_counter()
    config = SimConfig().for_target(ELASTIC_TARGET)  # ours takes the CLIP risk 95 % allows
    rows = elastic_vs_fixed(cat, unit, known_policies(), w, config, scaler)
    out = {"unit": ELASTIC_UNIT, "requests": n, "days": ELASTIC_DAYS, "seed": 0,
           "autoscaler": scaler.__dict__, "target": ELASTIC_TARGET,
           "relaxed_margin": config.relaxed_margin, "wall_s": time.perf_counter() - t0,
           "load_average": os.getloadavg(), "policies": rows}  # fmt: skip
    (RESULTS / f"elastic{tag}.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"elastic pool of {ELASTIC_UNIT} vs fixed, {n} production-like requests over "
          f"{ELASTIC_DAYS:g} days:")  # fmt: skip
    for r in rows:
        same = r["fixed_same_goodput_gpu_hours"]
        p95 = r["fixed_95_gpu_hours"]
        same = "never" if same is None else f"{same:.0f} GPU-h"
        p95 = "never" if p95 is None else f"{p95:.0f} GPU-h"
        print(f"  {r['policy']:12s} elastic goodput {r['elastic_goodput']:.3f} at "
              f"{r['elastic_gpu_hours']:.0f} GPU-h (peak {r['elastic_peak_gpus']}); fixed at "
              f"that goodput {same}; fixed for 95 % {p95}")  # fmt: skip


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma list of numbers") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def print_headline(needed) -> None:
    """Ours against the best baseline and the fair bound, per workload and target."""
    for t in sorted(set(needed["target"].to_list())):
        print(f"  GPUs for {t:.0%} goodput: ours / best baseline (<= 0.70), ours / fair "
              "bound (<= 1.15), true-CLIP oracle (reference):")  # fmt: skip
        for h in headline(needed, t):

            def g(x):
                return "never" if x is None else str(x)

            def r(x, goal):
                return (
                    "  -  " if x is None else f"{x:.2f} {'met' if x <= goal + 1e-9 else 'MISSED'}"
                )

            base = f"{g(h['baseline_gpus'])} {h['best_baseline'] or ''}".strip()
            loose = f"  (fair bound loose: {', '.join(h['below_fair_bound'])})" if h[
                "below_fair_bound"] else ""  # fmt: skip
            print(f"    {h['workload']:18s} ours {g(h['ours']):>5s}  baseline {base:16s} "
                  f"{r(h['vs_baseline'], h['baseline_target'])}  fair bound "
                  f"{g(h['fair_bound']):>5s} {r(h['vs_fair_bound'], h['fair_target'])}  "
                  f"oracle {g(h['oracle'])}{loose}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="1M-job speed run, 20k jobs x 5 seeds")
    ap.add_argument("--speed-only", action="store_true", help="only the speed runs")
    ap.add_argument("--comparison-only", action="store_true", help="only the comparison")
    ap.add_argument("--elastic-only", action="store_true", help="only the elastic cluster")
    ap.add_argument("--workloads", type=_names, default=WORKLOADS,
                    help=f"comma list of {', '.join(WORKLOADS)} (default all)")  # fmt: skip
    ap.add_argument("--trace-file", action="append", default=[], metavar="PATH",
                    help="one more workload: this arrival trace (`arrival_ms[,...]` a line), "
                         "named trace:<file stem>; repeatable")  # fmt: skip
    ap.add_argument("--mmpp-rates", type=_floats, default=MMPP_RATES,
                    help="mmpp: relative arrival rate of each state (default 1,10)")  # fmt: skip
    ap.add_argument(
        "--mmpp-dwell-s",
        type=_floats,
        default=MMPP_DWELL_S,
        help="mmpp: mean seconds in each state at load 1.0 (default 60,10)",
    )
    ap.add_argument("--jobs", type=int, help="jobs per run (default 20000 with --full, else 5000)")
    ap.add_argument("--seeds", type=int, help="seeds per point (default 5 with --full, else 3)")
    ap.add_argument("--loads", type=_floats, default=DEFAULT_LOADS,
                    help="offered loads, share of capacity (default 0.3,...,1.2)")  # fmt: skip
    ap.add_argument("--policies", type=_names, help="comma list (default: all)")
    ap.add_argument("--pred-error", type=float, default=0.1,
                    help="sigma of log(true / predicted run time), default 0.1; 0: every "
                         "prediction exact (what clairvoyance on run times is worth)")  # fmt: skip
    ap.add_argument("--out", help="results folder under bench/results/ (default scheduler, "
                                  "or scheduler-quick without --full)")  # fmt: skip
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "" if args.full else "-quick"
    if args.elastic_only:
        elastic(tag)
        return
    if not args.comparison_only:
        print("speed (32xA100+32xT4, Poisson at 0.8 of capacity):")
        sp = speed(1_000_000 if args.full else 200_000, 200_000 if args.full else 50_000)
        sp["host"] = platform.node()
        (RESULTS / f"scheduler_speed{tag}.json").write_text(json.dumps(sp, indent=2) + "\n")
    if args.speed_only:
        return
    cfg = ComparisonConfig(
        jobs=args.jobs or (20_000 if args.full else 5_000),
        seeds=args.seeds or (5 if args.full else 3),
        loads=args.loads,
        workloads=tuple(args.workloads) + tuple(f"trace:{p}" for p in args.trace_file),
        mmpp_rates=args.mmpp_rates,
        mmpp_dwell_s=args.mmpp_dwell_s,
        pred_error=args.pred_error,
        **({"policies": list(args.policies)} if args.policies else {}),
    )
    print(f"comparison on {cfg.cluster}: {cfg.jobs} jobs x {cfg.seeds} seeds per point, "
          f"workloads {', '.join(cfg.workloads)}")  # fmt: skip
    folder = RESULTS / (args.out or f"scheduler{tag}")
    t0 = time.perf_counter()
    res = run_comparison(cfg, folder, progress=print_progress)
    print_headline(res["gpus_needed"])
    print(f"  comparison: {time.perf_counter() - t0:.0f} s wall, load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    if args.comparison_only:
        return
    elastic(tag)
    caps = ", ".join(f"{k} {c:.1f}" for k, c in res["meta"]["capacity_jobs_per_s"].items())
    print(f"  capacity (jobs/s) {caps}, "
          f"{res['meta']['wall_s']:.0f} s; results in {folder}")  # fmt: skip


if __name__ == "__main__":
    main()
