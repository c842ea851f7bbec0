"""Sim-to-real: the cluster simulator against the served engine on this host, same jobs.

How far are `sdaas bench`'s numbers from what serving does? The simulator is trusted
only as far as it agrees with real runs (Vidur reports < 9 % error). Here both sides get
exactly the same workload: toy-world `toy-m` jobs at 10-30 steps, Poisson arrivals at
0.5, 0.8 and 1.0 of this host's measured capacity (FCFS one at a time, as `sdaas bench`
defines load), latency SLOs of 2-8x a job's own run time, under `sjf` (no batching) and
`orca` (continuous batching of denoising steps):

* served: the scheduling core (`scheduler/live.LiveCore`) with a device engine in a
  process of its own (`engine/device_process.py`, the `sdaas serve` default) running the
  real diffusers model step by step, jobs submitted at their arrival times in wall-clock
  time (Kafka and Beam are left out: `bench/serving_bench.py` measures those);
* simulated: `scheduler/simulator.Simulator` on a catalog built from this host's
  measurements (job seconds per step count, batch cost per batch size: what a profile
  holds), the same arrivals, steps and SLOs, true run time = the catalog's.

Reported per (policy, load): mean and p95 JCT and SLO attainment over all arrived jobs,
simulated vs served, and their errors against the targets (mean JCT within 10 %, p95
within 15 %, attainment within 3 points). Each served arm runs twice; a spread of more
than 15 % between the two marks it noisy (the host's noise, not the simulator's error).

Writes bench/results/sim_to_real.json. Usage: python bench/sim_to_real_bench.py [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import engine_bench as eb  # bench/ is on sys.path when this file runs as a script
import numpy as np

LOADS = (0.5, 0.8, 1.0)
POLICIES = ("sjf", "orca")
TARGETS = {"mean_jct_err": 0.10, "p95_jct_err": 0.15, "slo_points": 0.03}


def workload(n: int, rate: float, job_s: dict[int, float], seed: int):
    """(arrival offset s, steps, latency SLO s) per job: SLO 2-8x the job's own time."""
    rng = np.random.default_rng(seed)
    steps = rng.choice(eb.STEPS, n).tolist()
    arrivals = np.cumsum(rng.exponential(1 / rate, n)).tolist()
    scale = rng.uniform(2.0, 8.0, n).tolist()
    return [(a, int(s), k * job_s[int(s)]) for a, s, k in zip(arrivals, steps, scale, strict=True)]


def simulate(policy: str, jobs, job_s, factors) -> dict:
    from scheduler.cluster import Cluster
    from scheduler.live import LIVE_CONFIG
    from scheduler.options import ClassOptions
    from scheduler.policy import make_policy
    from scheduler.simulator import DONE, Simulator
    from scheduler.workload import SloClass, Workload

    n = len(jobs)
    classes = tuple(SloClass("flat", slo, 0.0) for _, _, slo in jobs)
    opts = [[(0, s, job_s[s])] for _, s, _ in jobs]
    w = Workload("sim-to-real", np.array([a for a, _, _ in jobs]), np.arange(n), classes,
                 np.ones(n), np.zeros(n))  # fmt: skip
    sim = Simulator(eb.catalog(job_s, factors), Cluster.parse("1xcpu"), make_policy(policy),
                    LIVE_CONFIG)  # fmt: skip
    r = sim.run(w, ClassOptions(opts, opts))
    ok = r.status == DONE
    jct = r.jct[ok]
    met = ok & (r.jct <= r.latency_slo_s + 1e-9)
    return {
        "jct_mean_s": float(jct.mean()),
        "jct_p95_s": float(np.percentile(jct, 95)),
        "slo_attainment_all_arrived": float(met.sum() / n),
        "lost_share": float(1 - ok.sum() / n),
    }


def errors(sim: dict, real: dict) -> dict:
    return {
        "mean_jct_err": abs(sim["jct_mean_s"] - real["jct_mean_s"]) / real["jct_mean_s"],
        "p95_jct_err": abs(sim["jct_p95_s"] - real["jct_p95_s"]) / real["jct_p95_s"],
        "slo_points": abs(sim["slo_attainment_all_arrived"] - real["slo_attainment_all_arrived"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=60, help="jobs per (policy, load) arm")
    ap.add_argument("--out", default=str(eb.RESULTS / "sim_to_real.json"))
    args = ap.parse_args()
    card, backend = eb.load()
    load0 = os.getloadavg()
    job_s, factors = eb.measure(backend, card)
    capacity = 1.0 / statistics.mean(job_s.values())  # FCFS one at a time, mean job
    print(f"toy-m job seconds {job_s}; batch factors {factors}; capacity {capacity:.2f}/s")
    arms = []
    for policy in POLICIES:
        for load in LOADS:
            jobs = workload(args.jobs, load * capacity, job_s, seed=int(load * 10))
            sim = simulate(policy, jobs, job_s, factors)
            real = eb.repeat(
                lambda p=policy, j=jobs: eb.run_engine(
                    p, 1, None, j, job_s, factors, backend, card, process=True
                )
            )
            err = errors(sim, real)
            ok = {k: err[k] <= t for k, t in TARGETS.items()}
            arms.append({"policy": policy, "load": load, "simulated": sim, "served": real,
                         "errors": err, "met": ok})  # fmt: skip
            print(
                f"{policy:5s} load {load:.1f}: mean JCT sim {sim['jct_mean_s']:.2f} s / "
                f"served {real['jct_mean_s']:.2f} s ({err['mean_jct_err']:.0%}), p95 "
                f"{sim['jct_p95_s']:.2f} / {real['jct_p95_s']:.2f} ({err['p95_jct_err']:.0%}),"
                f" SLO {sim['slo_attainment_all_arrived']:.0%} / "
                f"{real['slo_attainment_all_arrived']:.0%}"
                f"{'  NOISY' if real['noisy'] else ''}"
            )
    out = {
        "benchmark": "sim_to_real",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_avg_before": load0,
            "load_avg_after": os.getloadavg(),
        },  # fmt: skip
        "hardware": "CPU (this host); one device process, torch's default threads",
        "workload": {
            "model": eb.MODEL,
            "jobs_per_arm": args.jobs,
            "steps": eb.STEPS,
            "slo": "2-8x the job's own run time",
            "loads": LOADS,
            "capacity_jobs_per_s": capacity,
        },  # fmt: skip
        "job_s": job_s,
        "batch_factor": factors,
        "targets": TARGETS,
        "arms": arms,
        "all_met": all(all(a["met"].values()) for a in arms),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2, default=float)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
