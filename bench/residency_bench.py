"""How residency moves the production-like result: GPUs needed for a goodput target, ours
(slack-sjf) against the best baseline, under three residency rules for the same jobs:

* `count`: the ASSUMED count the catalog used before (4 models per A100, 1 per T4);
* `memory A100-40GB`: checkpoint sizes against each GPU's memory less the working memory
  of its largest batch (scheduler/catalog.py: SIZE_GB, MEMORY_GB, working_gb), with 40 GB
  A100s;
* `memory A100-80GB`: the same with 80 GB A100s (the catalog's default).

The jobs are the comparison's production-like ones (scheduler/comparison.py: 86
checkpoints, a third SDXL-based) on its cluster's mix (8xA100+8xT4, grown as N x
(1xA100+1xT4)), arriving at 1x the 8xA100+8xT4 capacity measured under the count rule
for every setting, so only residency differs. GPUs needed: the bisection of
scheduler/capacity_planning.py (`gpus_needed`), per seed.

Writes bench/results/scheduler/residency.json and residency.png (about 5 min on 2 shared
cores, 3.4 min of CPU).
Usage: python bench/residency_bench.py [--jobs N] [--seeds N] [--targets 0.9,0.95]
[--policies ...] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl

from scheduler.capacity_planning import gpus_needed, unit_mix
from scheduler.catalog import MAX_RESIDENT, MEMORY_GB
from scheduler.cluster import Cluster
from scheduler.comparison import ComparisonConfig, at_load, capacity_of
from scheduler.comparison_report import headline
from scheduler.policies import known_policies
from scheduler.production import PRODUCTION, production_requests
from scheduler.production_workload import production_catalog, production_jobs
from scheduler.ranking import OURS
from scheduler.simulator import SimConfig
from scheduler.workload import Workload, at_exact_rate

OUT = Path(__file__).resolve().parent / "results" / "scheduler" / "residency.json"
HEADLINE = ("target", "ours", "best_baseline", "baseline_gpus", "vs_baseline", "fair_bound",
            "vs_fair_bound", "oracle")  # fmt: skip
# (name, residency, memory overrides)
SETTINGS = (
    ("count (ASSUMED 4/A100, 1/T4)", "count", None),
    ("memory, A100-40GB", "memory", {"A100": 40.0}),
    ("memory, A100-80GB", "memory", {"A100": 80.0}),
)


def jobs_of(catalog, n: int, seed: int, cfg: ComparisonConfig) -> Workload:
    """The comparison's production-like jobs at unit rate (`comparison.setup`)."""
    req = production_requests(n, seed=seed)
    w = production_jobs(catalog, req, np.random.default_rng(seed),
                        pred_error=cfg.pred_error, clip_margin=cfg.clip_margin)  # fmt: skip
    return Workload("production", at_exact_rate(w.arrival, 1.0), w.cls, w.classes,
                    w.true_factor, w.clip_noise)  # fmt: skip


def residency_of(catalog, kinds: list[str]) -> dict:
    """What a GPU of each kind holds: its budget, and how many checkpoints of each base
    it runs fit it alone."""
    out = {}
    for kind in kinds:
        k = catalog.kind_index(kind)
        row = {"budget": round(catalog.budget[k], 2),
               "unit": "GB" if catalog.by_memory else "models"}  # fmt: skip
        if catalog.by_memory:
            for base in ("sd-1.5", "sdxl"):
                ms = [i for i, name in enumerate(catalog.models)
                      if name.endswith(":" + base) and catalog.can_run(i, k)]  # fmt: skip
                if ms:
                    row[f"{base}_size_gb"] = round(catalog.weight[ms[0]], 2)
                    row[f"{base}_fit"] = int(catalog.budget[k] // catalog.weight[ms[0]])
        out[kind] = row
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = min(r["target"] for r in rows)
    at = [r for r in rows if r["target"] == target]
    names = list(dict.fromkeys(r["setting"] for r in at))
    seeds = sorted({r["seed"] for r in at})
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / (2 * len(seeds))
    for s, seed in enumerate(seeds):
        by = {r["setting"]: r for r in at if r["seed"] == seed}
        x = np.arange(len(names))
        ours = [by[n]["ours"] or np.nan for n in names]
        base = [by[n]["baseline_gpus"] or np.nan for n in names]
        off = (2 * s) * width - 0.4 + width / 2
        ax.bar(x + off, ours, width, color="C0", label=f"{OURS} (ours)" if s == 0 else None)
        ax.bar(x + off + width, base, width, color="C1",
               label="best baseline" if s == 0 else None)  # fmt: skip
        fair = [by[n]["fair_bound"] or np.nan for n in names]
        ax.plot(x + off, fair, "k_", markersize=14, label="fair bound" if s == 0 else None)
        for i, n in enumerate(names):
            if by[n]["best_baseline"]:
                ax.text(x[i] + off + width, base[i], by[n]["best_baseline"], rotation=90,
                        ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax.set_ylim(0, 1.2 * max(r["baseline_gpus"] or r["ours"] or 0 for r in at))
    ax.set_xticks(np.arange(len(names)), names, fontsize=8)
    ax.set_ylabel(f"GPUs for {target:.0%} goodput")
    ax.set_title(f"production-like, 1xA100+1xT4 units; seeds {', '.join(map(str, seeds))}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=20_000, help="jobs per seed (default 20000)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default 1)")
    ap.add_argument("--targets", default="0.9,0.95", help="goodput targets (default 0.9,0.95)")
    ap.add_argument("--policies", help="comma list (default: all)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"results JSON (default {OUT})")
    args = ap.parse_args()
    targets = tuple(float(x) for x in args.targets.split(","))
    policies = args.policies.split(",") if args.policies else known_policies()
    cfg = ComparisonConfig(jobs=args.jobs, workloads=("production",))
    cluster = Cluster.parse(cfg.cluster)
    sim_cfg = SimConfig(clip_margin=cfg.clip_margin, cold_start=cfg.cold_start)
    before = os.getloadavg()
    t0 = time.perf_counter()
    catalogs = {name: production_catalog(cluster.kinds, PRODUCTION.checkpoints,
                                         residency=res, memory_gb=mem)[0]
                for name, res, mem in SETTINGS}  # fmt: skip
    count = catalogs[SETTINGS[0][0]]
    units = {seed: jobs_of(count, args.jobs, seed, cfg) for seed in range(args.seeds)}
    # one arrival rate for every setting: the count rule's capacity of 8xA100+8xT4
    capacity = capacity_of(count, cluster, units[0], cfg.clip_margin)
    rows, needs = [], []
    for name, res, mem in SETTINGS:
        cat = catalogs[name]
        for seed, unit in units.items():
            w = at_load(unit, cfg.plan_load * capacity)
            s0 = time.perf_counter()
            got = gpus_needed(cat, cluster, policies, w, sim_cfg, targets)
            frame = pl.DataFrame([{"workload": "production", **asdict(n)} for n in got])
            for t in targets:
                for h in headline(frame, t):
                    row = {k: h[k] for k in HEADLINE}
                    rows.append({"setting": name, "residency": res, "memory_gb": mem,
                                 "seed": seed, **row})  # fmt: skip
            needs += [{"setting": name, "seed": seed, **asdict(n)} for n in got]
            print(f"  {name:30s} seed {seed}: {time.perf_counter() - s0:5.1f} s")
    wall = time.perf_counter() - t0
    after = os.getloadavg()
    out = {
        "what": "GPUs needed (units of 1xA100+1xT4) for a goodput target on the production-"
        "like jobs, by residency rule",
        "cluster": str(cluster),
        "unit_mix": str(unit_mix(cluster)),
        "jobs": args.jobs,
        "seeds": args.seeds,
        "targets": list(targets),
        "rate_jobs_per_s": capacity * cfg.plan_load,
        "rate_note": "1x the count rule's capacity of 8xA100+8xT4, the same for every setting",
        "count_rule": MAX_RESIDENT,
        "memory_gb_default": MEMORY_GB,
        "residency": {name: residency_of(catalogs[name], cluster.kinds) for name, *_ in SETTINGS},
        "headline": rows,
        "gpus_needed": needs,
        "wall_s": round(wall, 1),
        "load_average_before": before,
        "load_average_after": after,
        "host": platform.node(),
        "command": "python bench/residency_bench.py "
        f"--jobs {args.jobs} --seeds {args.seeds} --targets {args.targets}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    plot(rows, args.out.with_suffix(".png"))

    def g(x):
        return "never" if x is None else str(x)

    print(f"production-like on {unit_mix(cluster)} units, {args.jobs} jobs at "
          f"{capacity:.3f} jobs/s, seeds 0-{args.seeds - 1}:")  # fmt: skip
    for name, *_ in SETTINGS:
        print(f"  {name}: " + ", ".join(
            f"{k} holds {v['budget']:g} {v['unit']}" + (
                " (" + " or ".join(f"{v[b + '_fit']} {b}" for b in ("sd-1.5", "sdxl")
                                   if b + "_fit" in v) + ")" if "sd-1.5_fit" in v else "")
            for k, v in out["residency"][name].items()))  # fmt: skip
        for r in (r for r in rows if r["setting"] == name):
            ratio = "-" if r["vs_baseline"] is None else f"{r['vs_baseline']:.2f}"
            print(f"    {r['target']:.0%} seed {r['seed']}: ours {g(r['ours'])}, best "
                  f"baseline {g(r['baseline_gpus'])} ({r['best_baseline']}), ours/baseline "
                  f"{ratio}, fair bound {g(r['fair_bound'])}, true-CLIP oracle "
                  f"{g(r['oracle'])}")  # fmt: skip
    print(f"  {wall:.0f} s wall; load average before {before[0]:.2f}, after {after[0]:.2f}; "
          f"results in {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
