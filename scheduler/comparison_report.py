"""What `sdaas bench` shows: summary.md and the plots, written so that no table rewards
losing work (scheduler/ranking.py): goodput first, the lost share beside every mean
JCT, JCT against the oracle only at equal completion, and the GPUs each policy needs."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from scheduler.metrics import LOST_PENALTY_SLOS
from scheduler.ranking import ORACLE, OURS, jct_vs_oracle


def _cell(row: dict, metric: str, fmt: str) -> str:
    v, ci = row[metric], row.get(f"{metric}_ci")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = format(v, fmt)
    if ci is not None and not math.isnan(ci) and row["seeds"] > 1:
        s += " ± " + format(ci, fmt)
    return s


def _lost(row: dict) -> str:
    return f"lost {row['lost_share']:.0%}"


def _jct_cell(row: dict) -> str:
    s = _cell(row, "mean_jct_s", ".2f")
    return s if row["lost_share"] < 0.005 else f"{s} ({_lost(row)})"


def _vs_oracle_cell(row: dict) -> str:
    r = row["jct_vs_oracle"]
    return f"{r:.2f}x" if r is not None and math.isfinite(r) else f"- ({_lost(row)})"


TABLES = (  # title, how a row becomes a cell
    ("goodput: both SLOs met, share of ALL arrived jobs",
     lambda r: _cell(r, "both_slo_met", ".3f")),
    ("mean JCT (s) of completed jobs, and the share lost", _jct_cell),
    ("mean JCT over the oracle's, at equal completion", _vs_oracle_cell),
    (f"mean JCT (s), a lost job counted at its wait + {LOST_PENALTY_SLOS:g}x its latency SLO",
     lambda r: _cell(r, "mean_jct_penalized_s", ".2f")),
    ("p99 JCT of the longest decile (s)", lambda r: _cell(r, "p99_jct_longest_decile_s", ".1f")),
)  # fmt: skip


def markdown_summary(summary: pl.DataFrame, needed: pl.DataFrame, meta: dict) -> str:
    cfg = meta["config"]
    lines = [
        f"# Scheduler comparison: {meta['cluster']}",
        "",
        "Capacity (FCFS, no batching, all jobs queued; the load unit): "
        + ", ".join(f"{k} **{c:.1f} jobs/s**" for k, c in meta["capacity_jobs_per_s"].items())
        + ". Each run's realised load is its nominal load. "
        f"{cfg['jobs']} jobs per run, {cfg['seeds']} seeds (± = 95 % CI over seeds), "
        f"SLO mix `{cfg['slo_mix']}`, prediction error σ={cfg['pred_error']}, "
        f"bursty CV {cfg['burst_cv']}, trace `{Path(cfg['trace']).name}`.",
        "",
        "How to read: **goodput** (both SLOs met, over all arrived jobs: a rejected or "
        "dropped job met none) ranks the policies. Mean JCT is over completed jobs, so "
        "the share lost (rejected at arrival + dropped after waiting) stands beside it, "
        f"and it is compared with `{ORACLE}` only where a policy lost no more of the jobs "
        "than the oracle did (equal completion).",
        "",
    ]
    lines += _needed_section(needed, meta)
    summary = jct_vs_oracle(summary)
    for kind in summary["workload"].unique(maintain_order=True).to_list():
        part = summary.filter(pl.col("workload") == kind)
        loads = sorted(part["load"].unique().to_list())
        for title, cell in TABLES:
            lines += [f"## {kind}: {title}", ""]
            lines.append("| policy | " + " | ".join(f"load {x:g}" for x in loads) + " |")
            lines.append("|---|" + "---|" * len(loads))
            for p in part["policy"].unique(maintain_order=True).to_list():
                rows = part.filter(pl.col("policy") == p)
                cells = [cell(rows.filter(pl.col("load") == x).row(0, named=True)) for x in loads]
                lines.append(f"| {p} | " + " | ".join(cells) + " |")
            lines.append("")
        hi = max(loads)
        part_hi = part.filter(pl.col("load") == hi).sort("policy")
        lines += [
            f"## {kind}: what was lost at load {hi:g}",
            "",
            "Rejected at arrival (the user can act at once) and dropped after waiting "
            "(the wait is wasted: seconds per arrived job).",
            "",
            "| policy | rejected | dropped | wasted wait (s/job) | utilization |",
            "|---|---|---|---|---|",
        ]
        for row in part_hi.iter_rows(named=True):
            lines.append(
                f"| {row['policy']} | {row['rejected_share']:.1%} | {row['dropped_share']:.1%}"
                f" | {row['dropped_wait_s']:.3f} | {row['utilization']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def _need_cell(row: dict) -> str:
    if row["units"] is None:
        return f"never (best {row['best']:.1%})"
    return f"{row['gpus']} GPUs ({row['gpu_hours']:.2f} GPU-h)"


def _needed_section(needed: pl.DataFrame, meta: dict) -> list[str]:
    if not needed.height:
        return []
    cfg = meta["config"]
    targets = sorted(needed["target"].unique().to_list())
    lines = [
        "## GPUs needed",
        "",
        f"The smallest cluster (multiples of {meta['unit_mix']}) at which each policy meets "
        "both SLOs for a share of all arrived jobs, on the seed-0 jobs arriving at "
        f"{cfg['plan_load']:g}x the capacity of {meta['cluster']} for that workload; "
        "GPU-hours over the span of the arrivals. `never`: not reached by the largest "
        "cluster tried.",
        "",
    ]
    for kind in needed["workload"].unique(maintain_order=True).to_list():
        part = needed.filter(pl.col("workload") == kind)
        lines.append(f"| {kind} | " + " | ".join(f"{t:.0%}" for t in targets) + " |")
        lines.append("|---|" + "---|" * len(targets))
        for p in part["policy"].unique(maintain_order=True).to_list():
            rows = part.filter(pl.col("policy") == p)
            cells = [_need_cell(rows.filter(pl.col("target") == t).row(0, named=True))
                     for t in targets]  # fmt: skip
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
        lines += ["", _ours_line(part, targets[0]), ""]
    return lines


def _ours_line(part: pl.DataFrame, target: float) -> str:
    """`ours` against the best baseline (the oracle is a bound, not a baseline)."""
    at = part.filter((pl.col("target") == target) & pl.col("gpus").is_not_null())
    gpus = dict(zip(at["policy"].to_list(), at["gpus"].to_list(), strict=True))
    base = {p: g for p, g in gpus.items() if p not in (OURS, ORACLE)}
    if OURS not in gpus:
        return f"At {target:.0%}: {OURS} did not reach it."
    s = f"At {target:.0%}: {OURS} needs {gpus[OURS]} GPUs"
    if base:
        best = min(base, key=base.get)
        s += (f", {1 - gpus[OURS] / base[best]:.0%} fewer than the best baseline "
              f"({best}, {base[best]})")  # fmt: skip
    else:
        s += "; no baseline reached it"
    if ORACLE in gpus:
        s += f", {gpus[OURS] / gpus[ORACLE]:.2f}x the oracle's ({gpus[ORACLE]})"
    return s + "."


def _axes(n: int, plt):
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    return fig, axes[0]


def plot(summary: pl.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = summary["workload"].unique(maintain_order=True).to_list()
    policies = summary["policy"].unique(maintain_order=True).to_list()
    for metric, ylabel, fname, log in (
        ("mean_jct_s", "mean JCT of completed jobs (s); hollow: lost > 1 %", "jct_vs_load.png",
         True),
        ("both_slo_met", "goodput: share of all arrived jobs meeting both SLOs",
         "slo_vs_load.png", False),
        ("lost_share", "share of arrived jobs lost (rejected + dropped)", "lost_vs_load.png",
         False),
    ):  # fmt: skip
        fig, axes = _axes(len(kinds), plt)
        for ax, kind in zip(axes, kinds, strict=True):
            for p in policies:
                part = summary.filter((pl.col("workload") == kind) & (pl.col("policy") == p))
                part = part.sort("load")
                line = ax.errorbar(
                    part["load"].to_list(),
                    part[metric].to_list(),
                    yerr=part[f"{metric}_ci"].fill_nan(0).fill_null(0).to_list(),
                    label=p,
                    linestyle="--" if p == ORACLE else "-",
                    marker="o",
                    markersize=3,
                    capsize=2,
                )
                if metric == "mean_jct_s":  # hollow markers where jobs were lost
                    lost = part.filter(pl.col("lost_share") > 0.01)
                    edge = line[0].get_color()
                    ax.scatter(lost["load"].to_list(), lost[metric].to_list(), s=40,
                               facecolors="white", edgecolors=edge, zorder=3)  # fmt: skip
            ax.set_title(kind)
            ax.set_xlabel("offered load (share of FCFS capacity)")
            ax.set_ylabel(ylabel, fontsize=8)
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)


def plot_needed(needed: pl.DataFrame, meta: dict, out: Path) -> None:
    """GPUs needed per policy and target, one panel per workload (a missing bar: never)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = needed["workload"].unique(maintain_order=True).to_list()
    targets = sorted(needed["target"].unique().to_list())
    fig, axes = _axes(len(kinds), plt)
    width = 0.8 / len(targets)
    for ax, kind in zip(axes, kinds, strict=True):
        part = needed.filter(pl.col("workload") == kind)
        policies = part["policy"].unique(maintain_order=True).to_list()
        for t_i, t in enumerate(targets):
            rows = part.filter(pl.col("target") == t)
            gpus = [rows.filter(pl.col("policy") == p)["gpus"][0] for p in policies]
            xs = [x + t_i * width for x in range(len(policies))]
            ax.bar(xs, [g or 0 for g in gpus], width, label=f"{t:.0%}")
        ax.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(policies))])
        ax.set_xticklabels(policies, rotation=45, ha="right", fontsize=7)
        ax.set_title(kind)
        ax.set_ylabel(f"GPUs needed ({meta['unit_mix']} units)", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[-1].legend(title="goodput", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gpus_needed.png", dpi=110)
    plt.close(fig)
