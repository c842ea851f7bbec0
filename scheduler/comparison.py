"""The comparison: every policy on the same jobs, over offered load, per workload shape.

Load is relative to the cluster's capacity, measured, not guessed: capacity is the
throughput of FCFS without batching when every job of the mix is waiting at time zero
(`estimate_capacity`). Policies that batch can therefore serve more than load 1.0.

Common random numbers: per (workload, seed) one set of jobs is drawn at unit rate; each
load rescales its arrival times, so policies and loads differ only in what they vary.
Results: `runs.parquet` (one row per run), `summary.parquet` (mean and 95 % CI over
seeds, aggregated with polars), `summary.md`, `jct_vs_load.png`, `slo_vs_load.png`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from scheduler.catalog import Catalog, load_catalog
from scheduler.cluster import Cluster
from scheduler.metrics import aggregate, summarize
from scheduler.policy import known_policies, make_policy
from scheduler.simulator import SimConfig, Simulator
from scheduler.workload import (
    Workload,
    bursty_arrivals,
    make_workload,
    poisson_arrivals,
    read_trace,
    slo_mix,
    trace_arrivals,
)
from sdaas.errors import InvalidInputError

DEFAULT_TRACE = Path(__file__).resolve().parents[1] / "data" / "traces" / "trace_3to40qps.txt"
DEFAULT_LOADS = (0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.2)


@dataclass
class ComparisonConfig:
    cluster: str = "8xA100+8xT4"
    policies: list[str] = field(default_factory=known_policies)
    loads: tuple[float, ...] = DEFAULT_LOADS
    workloads: tuple[str, ...] = ("poisson", "bursty", "trace")
    jobs: int = 20_000
    seeds: int = 3
    pred_error: float = 0.1
    burst_cv: float = 5.0
    slo_mix: str = "mixed"
    trace: str = str(DEFAULT_TRACE)
    clip_margin: float = 0.5
    cold_start: bool = True

    def check(self) -> None:
        problems = []
        for x in self.loads:
            if not (isinstance(x, int | float) and math.isfinite(x) and x > 0):
                problems.append(f"load: {x!r}: must be a finite number > 0 (share of capacity)")
        if self.jobs < 10:
            problems.append(f"jobs: {self.jobs}: must be >= 10")
        if self.seeds < 1:
            problems.append(f"seeds: {self.seeds}: must be >= 1")
        for w in self.workloads:
            if w not in ("poisson", "bursty", "trace"):
                problems.append(f"workload: {w!r}: one of poisson, bursty, trace")
        if problems:
            raise InvalidInputError("; ".join(problems))


def estimate_capacity(
    catalog: Catalog, cluster: Cluster, classes, *, jobs: int | None = None, seed: int = 0
) -> float:
    """Jobs/s the cluster sustains under FCFS without batching, every job queued at t=0."""
    n = jobs or max(500, 100 * cluster.size)
    rng = np.random.default_rng(seed)
    w = make_workload("saturated", np.zeros(n), classes, rng, service="exact")
    r = Simulator(catalog, cluster, make_policy("fcfs"), SimConfig(clip_margin=0.5)).run(w)
    return n / float(np.max(r.finish))


def unit_workload(cfg: ComparisonConfig, kind: str, classes, seed: int) -> Workload:
    """Jobs at mean rate 1/s; `at_load` rescales time."""
    rng = np.random.default_rng(seed)
    if kind == "poisson":
        arr = poisson_arrivals(1.0, cfg.jobs, rng)
    elif kind == "bursty":
        arr = bursty_arrivals(1.0, cfg.jobs, rng, cv=cfg.burst_cv)
    else:
        arr = trace_arrivals(read_trace(Path(cfg.trace)), 1.0, cfg.jobs)
    return make_workload(kind, arr, classes, rng, pred_error=cfg.pred_error)


def at_load(w: Workload, rate: float) -> Workload:
    return Workload(w.name, w.arrival / rate, w.cls, w.classes, w.true_factor, w.clip_noise)


def run_comparison(cfg: ComparisonConfig, out: Path | None = None, progress=None) -> dict:
    """Run the grid; write Parquet, markdown and plots under `out` when given."""
    cfg.check()
    cluster = Cluster.parse(cfg.cluster)
    catalog = load_catalog(cluster.kinds)
    cluster.check(catalog)
    for p in cfg.policies:
        make_policy(p)  # unknown names fail before any work
    classes = slo_mix(cfg.slo_mix, catalog.all_styles)
    capacity = estimate_capacity(catalog, cluster, classes)
    sim_cfg = SimConfig(clip_margin=cfg.clip_margin, cold_start=cfg.cold_start)
    rows = []
    total = len(cfg.workloads) * cfg.seeds * len(cfg.loads) * len(cfg.policies)
    done = 0
    t0 = time.perf_counter()
    for kind in cfg.workloads:
        for seed in range(cfg.seeds):
            base = unit_workload(cfg, kind, classes, seed)
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
    meta = {
        "config": asdict(cfg),
        "capacity_jobs_per_s": capacity,
        "cluster": str(cluster),
        "wall_s": time.perf_counter() - t0,
    }
    if out is not None:
        write_outputs(runs, summary, meta, Path(out))
    return {"runs": runs, "summary": summary, "meta": meta}


def write_outputs(runs: pl.DataFrame, summary: pl.DataFrame, meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    runs.write_parquet(out / "runs.parquet")
    summary.write_parquet(out / "summary.parquet")
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "summary.md").write_text(markdown_summary(summary, meta))
    plot(summary, out)


def _cell(row: dict, metric: str, fmt: str) -> str:
    v, ci = row[metric], row.get(f"{metric}_ci")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = format(v, fmt)
    if ci is not None and not math.isnan(ci) and row["seeds"] > 1:
        s += " ± " + format(ci, fmt)
    return s


def markdown_summary(summary: pl.DataFrame, meta: dict) -> str:
    cfg = meta["config"]
    lines = [
        f"# Scheduler comparison: {meta['cluster']}",
        "",
        "Capacity (FCFS, no batching, all jobs queued): "
        f"**{meta['capacity_jobs_per_s']:.1f} jobs/s**. "
        f"{cfg['jobs']} jobs per run, {cfg['seeds']} seeds (± = 95 % CI over seeds), "
        f"SLO mix `{cfg['slo_mix']}`, prediction error σ={cfg['pred_error']}, "
        f"bursty CV {cfg['burst_cv']}, trace `{Path(cfg['trace']).name}`.",
        "JCT over completed jobs; SLO shares over all arrived jobs "
        "(rejected/dropped count as missed).",
        "",
    ]
    for kind in summary["workload"].unique(maintain_order=True).to_list():
        part = summary.filter(pl.col("workload") == kind)
        loads = sorted(part["load"].unique().to_list())
        for title, metric, fmt in (
            ("mean JCT (s)", "mean_jct_s", ".2f"),
            ("both SLOs met (share)", "both_slo_met", ".3f"),
            ("p99 JCT of the longest decile (s)", "p99_jct_longest_decile_s", ".1f"),
        ):
            lines += [f"## {kind}: {title}", ""]
            lines.append("| policy | " + " | ".join(f"load {x:g}" for x in loads) + " |")
            lines.append("|---|" + "---|" * len(loads))
            for p in part["policy"].unique(maintain_order=True).to_list():
                cells = []
                for x in loads:
                    row = part.filter((pl.col("policy") == p) & (pl.col("load") == x)).row(
                        0, named=True
                    )
                    cells.append(_cell(row, metric, fmt))
                lines.append(f"| {p} | " + " | ".join(cells) + " |")
            lines.append("")
        hi = max(loads)
        part_hi = part.filter(pl.col("load") == hi).sort("policy")
        lines += [f"## {kind}: rejected / dropped / utilization at load {hi:g}", ""]
        lines += ["| policy | rejected | dropped | utilization |", "|---|---|---|---|"]
        for row in part_hi.iter_rows(named=True):
            lines.append(
                f"| {row['policy']} | {row['rejected']:.0f} | {row['dropped']:.0f} | "
                f"{row['utilization']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(summary: pl.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = summary["workload"].unique(maintain_order=True).to_list()
    policies = summary["policy"].unique(maintain_order=True).to_list()
    for metric, ylabel, fname, log in (
        ("mean_jct_s", "mean JCT (s)", "jct_vs_load.png", True),
        ("both_slo_met", "share of jobs meeting both SLOs", "slo_vs_load.png", False),
    ):
        fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
        for ax, kind in zip(axes[0], kinds, strict=True):
            for p in policies:
                part = summary.filter((pl.col("workload") == kind) & (pl.col("policy") == p))
                part = part.sort("load")
                style = "--" if p == "srpt-oracle" else "-"
                ax.errorbar(
                    part["load"].to_list(),
                    part[metric].to_list(),
                    yerr=part[f"{metric}_ci"].fill_nan(0).fill_null(0).to_list(),
                    label=p,
                    linestyle=style,
                    marker="o",
                    markersize=3,
                    capsize=2,
                )
            ax.set_title(kind)
            ax.set_xlabel("offered load (share of FCFS capacity)")
            ax.set_ylabel(ylabel)
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)


def print_progress(done: int, total: int, elapsed: float) -> None:
    if done == total or done % max(1, total // 20) == 0:
        eta = elapsed / done * (total - done)
        print(f"  {done}/{total} runs, {elapsed:.0f} s elapsed, ~{eta:.0f} s left", file=sys.stderr)
