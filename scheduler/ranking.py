"""Ranking policies without rewarding lost work.

Mean JCT is over completed jobs, so a policy that drops its slow jobs looks fast: in the
tables of old, slack-sjf and clockwork were 2-8x *better than the SRPT oracle* while
losing 29-59 % of the jobs. Here a policy is ranked first by goodput (both SLOs met,
share of all arrived jobs), and its mean JCT is compared with the oracle's only at equal
completion: when it lost no more of the arrived jobs than the oracle did. Otherwise the
comparison is left empty and the table says what was lost.
"""

from __future__ import annotations

import polars as pl

ORACLE = "srpt-oracle"  # the true-CLIP oracle: a reference line, out of any policy's reach
FAIR = "fair-bound"  # the bound on the same information (scheduler/policies/fair_bound.py)
OURS = "slack-sjf"
BOUNDS = (ORACLE, FAIR)  # not baselines: ours is compared with the best of the rest
LABELS = {ORACLE: "true-CLIP oracle, reference", FAIR: "fair bound", OURS: "ours"}


def label(policy: str) -> str:
    """A policy's name as the tables print it: `srpt-oracle (true-CLIP oracle,
    reference)`, `fair-bound (fair bound)`, `slack-sjf (ours)`; others as they are."""
    return f"{policy} ({LABELS[policy]})" if policy in LABELS else policy


EQUAL_COMPLETION = 1e-9  # share of arrived jobs: equal, up to float error


def jct_vs_oracle(summary: pl.DataFrame) -> pl.DataFrame:
    """`summary` (one row per workload, load, policy) with `jct_vs_oracle`: the policy's
    mean JCT over the oracle's at equal completion, null where it lost more."""
    keys = ["workload", "load"]
    oracle = summary.filter(pl.col("policy") == ORACLE).select(
        *keys, pl.col("mean_jct_s").alias("_oracle_jct"), pl.col("lost_share").alias("_lost")
    )
    at_equal = pl.col("lost_share") <= pl.col("_lost") + EQUAL_COMPLETION
    return (
        summary.join(oracle, on=keys, how="left")
        .with_columns(
            pl.when(at_equal)
            .then(pl.col("mean_jct_s") / pl.col("_oracle_jct"))
            .otherwise(None)
            .alias("jct_vs_oracle")
        )
        .drop("_oracle_jct", "_lost")
    )


def ranked(summary: pl.DataFrame, workload: str, load: float) -> pl.DataFrame:
    """The policies at one (workload, load), best first: by goodput, then by mean JCT
    against the oracle at equal completion (a policy that lost more comes after every
    one that did not, at equal goodput)."""
    part = jct_vs_oracle(summary).filter(
        (pl.col("workload") == workload) & (pl.col("load") == load)
    )
    return part.sort(["both_slo_met", "jct_vs_oracle"], descending=[True, False], nulls_last=True)
