"""Metrics of one simulated run, and their aggregation over seeds with confidence
intervals.

A metric must not reward losing work. The primary one is goodput: the share of ALL
arrived jobs that met both SLOs (a rejected or dropped job met none). JCT statistics are
over completed jobs, so every table that shows them shows the lost share (rejected at
arrival + dropped after waiting) beside them, and `mean_jct_penalized_s` counts each
lost job at its wait plus LOST_PENALTY_SLOS times its latency SLO (the user must ask
again). A rejection at arrival costs the user nothing but the answer; a drop after
waiting wastes the wait (`dropped_wait_s`)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from scheduler.simulator import SimResult
from sdaas.job_status import JobStatus

# two-sided 95 % Student t quantiles by degrees of freedom (no scipy at run time)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip

# a lost job counts in `mean_jct_penalized_s` as its wait + this many latency SLOs
LOST_PENALTY_SLOS = 2.0

METRICS = (
    "mean_jct_s",
    "mean_jct_penalized_s",
    "p50_jct_s",
    "p95_jct_s",
    "p99_jct_s",
    "p99_jct_longest_decile_s",
    "latency_slo_met",
    "clip_slo_met",
    "both_slo_met",
    "goodput_per_s",
    "rejected",
    "dropped",
    "lost_share",
    "rejected_share",
    "dropped_share",
    "dropped_wait_s",
    "utilization",
)


def summarize(r: SimResult) -> dict:
    """One row of numbers for one run."""
    n = len(r.status)
    done = r.status == JobStatus.DONE
    jct = r.jct[done]
    rejected, dropped = r.status == JobStatus.REJECTED, r.status == JobStatus.DROPPED
    lost = ~done
    waited = np.where(lost, np.nan_to_num(r.finish - r.arrival), 0.0)
    penalized = np.where(lost, waited + LOST_PENALTY_SLOS * r.latency_slo_s, r.jct)
    lat_ok = done & (r.jct <= r.latency_slo_s + 1e-9)
    clip_ok = done & (r.clip >= r.min_clip)
    both = lat_ok & clip_ok
    span = float(r.arrival[-1] - r.arrival[0]) or 1.0
    horizon = float(np.nanmax(r.finish) - r.arrival[0]) or 1.0
    # starvation: the p99 JCT of the decile of completed jobs with the most work
    if done.sum() >= 10:
        work = r.true_work_s[done]
        longest = jct[work >= np.quantile(work, 0.9)]
        p99_long = float(np.percentile(longest, 99))
    else:
        p99_long = math.nan

    def pct(q):
        return float(np.percentile(jct, q)) if len(jct) else math.nan

    return {
        "jobs": n,
        "done": int(done.sum()),
        "mean_jct_s": float(jct.mean()) if len(jct) else math.nan,
        "mean_jct_penalized_s": float(penalized.mean()),
        "p50_jct_s": pct(50),
        "p95_jct_s": pct(95),
        "p99_jct_s": pct(99),
        "p99_jct_longest_decile_s": p99_long,
        "latency_slo_met": float(lat_ok.mean()),
        "clip_slo_met": float(clip_ok.mean()),
        "both_slo_met": float(both.mean()),
        "goodput_per_s": float(both.sum() / span),
        "rejected": int(rejected.sum()),
        "dropped": int(dropped.sum()),
        "lost_share": float(lost.mean()),
        "rejected_share": float(rejected.mean()),
        "dropped_share": float(dropped.mean()),
        # seconds dropped jobs waited before they were dropped, per arrived job
        "dropped_wait_s": float(waited[dropped].sum() / n),
        "utilization": float(r.busy_s.sum() / (len(r.busy_s) * horizon)),
    }


def t95(df: int) -> float:
    if df <= 0:
        return math.nan
    if df in _T95:
        return _T95[df]
    below = [k for k in _T95 if k <= df]
    return _T95[max(below)] if df <= 30 else 1.96


def aggregate(runs: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Mean over seeds and the half-width of its 95 % confidence interval per metric
    (`<metric>` and `<metric>_ci`)."""
    exprs = [pl.len().alias("seeds")]
    for m in METRICS:
        exprs += [pl.col(m).mean().alias(m), pl.col(m).std().alias(f"{m}_sd")]
    out = runs.group_by(by).agg(exprs).sort(by)
    tq = pl.Series([t95(int(s) - 1) for s in out["seeds"]])
    return out.with_columns(
        [(pl.col(f"{m}_sd") * tq / pl.col("seeds").sqrt()).alias(f"{m}_ci") for m in METRICS]
    ).drop([f"{m}_sd" for m in METRICS])
