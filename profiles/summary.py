"""Inspect profiles: the fitted `latency = a + b * steps` line per (model, accelerator,
batch size) with its R², CLIP score at the step extremes, failures, and a PNG plot.

Read with polars straight from the Parquet files the sweep wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from profiles.parquet_io import read_failures, read_profiles
from sdaas.errors import NotFoundError
from sdaas.table import format_table


@dataclass(frozen=True)
class LineFit:
    """Least-squares latency line for one (model, accelerator, batch size, source)."""

    model: str
    accelerator: str
    batch_size: int
    source: str
    n: int
    intercept_s: float
    per_step_s: float
    r2: float
    clip_first: float  # mean CLIP score at the fewest steps profiled
    clip_last: float  # ... and at the most
    steps_min: int
    steps_max: int
    noisy: str = ""  # why the fit says its cells were measured on a noisy host; "" if not


# A measured latency line is flagged noisy when it explains too little (R²), when a
# negative intercept goes beyond its own residual noise (no call takes less than no
# time), or when many of its cells never settled within their repeat budget.
R2_MIN = 0.95
SPREAD_TARGET = 0.05  # a cell's timed calls agree within +-5 % (the sweep repeats until)
UNSETTLED_SHARE = 0.2


def noise_reason(steps, latency, spread, r2: float, intercept: float) -> str:
    why = []
    if not np.isnan(r2) and r2 < R2_MIN:
        why.append(f"R² {r2:.3f} < {R2_MIN}")
    if len(np.unique(steps)) >= 2 and intercept < 0:
        slope, icpt = np.polyfit(steps.astype(float), latency.astype(float), 1)
        rms = float(np.sqrt(np.mean((latency - (icpt + slope * steps)) ** 2)))
        if -intercept > 2 * rms:
            why.append(f"intercept {intercept:.4f} s < 0")
    spread = spread[~np.isnan(spread)]
    unsettled = int(np.sum(spread > SPREAD_TARGET))
    if len(spread) and unsettled > UNSETTLED_SHARE * len(spread):
        why.append(f"{unsettled} of {len(spread)} cells unsettled (spread > 5 %)")
    return "; ".join(why)


def fit_line(steps: np.ndarray, latency: np.ndarray) -> tuple[float, float, float]:
    """(intercept, slope, R²) of latency on steps. R² is 1.0 for an exact fit, and NaN
    when steps do not vary (no line can be fitted)."""
    if len(np.unique(steps)) < 2:
        return float(np.mean(latency)), float("nan"), float("nan")
    slope, intercept = np.polyfit(steps.astype(float), latency.astype(float), 1)
    pred = intercept + slope * steps
    ss_res = float(np.sum((latency - pred) ** 2))
    ss_tot = float(np.sum((latency - latency.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return float(intercept), float(slope), r2


def load_frame(path: Path) -> pl.DataFrame:
    return pl.from_arrow(read_profiles(path))


def summarize(df: pl.DataFrame) -> list[LineFit]:
    """One fit per (model, accelerator, batch size, kind): published and derived rows form
    one latency line ('reference'), assumed CLIP rows their own group."""
    fits = []
    df = df.with_columns(
        pl.when(pl.col("source").is_in(["published", "derived"]))
        .then(pl.lit("reference"))
        .otherwise(pl.col("source"))
        .alias("source")
    )
    keys = ["model", "accelerator", "batch_size", "source"]
    for key, group in sorted(df.group_by(keys), key=lambda kg: tuple(str(k) for k in kg[0])):
        timed = group.filter(pl.col("latency_s").is_not_nan())
        steps = group["steps"].to_numpy()
        a, b, r2 = (
            fit_line(timed["steps"].to_numpy(), timed["latency_s"].to_numpy())
            if timed.height
            else (float("nan"),) * 3
        )
        by_steps = (
            group.filter(pl.col("clip_score").is_not_nan())
            .group_by("steps")
            .agg(pl.col("clip_score").mean())
            .sort("steps")
        )
        if by_steps.height == 0:
            by_steps = pl.DataFrame({"steps": [0], "clip_score": [float("nan")]})
        noisy = ""
        if key[3] == "measured" and timed.height:
            spread = (
                timed["spread"].fill_null(float("nan")).to_numpy()
                if "spread" in timed.columns
                else np.array([])
            )
            noisy = noise_reason(
                timed["steps"].to_numpy(), timed["latency_s"].to_numpy(), spread, r2, a
            )
        fits.append(
            LineFit(
                model=key[0],
                accelerator=key[1],
                batch_size=int(key[2]),
                source=key[3],
                n=group.height,
                intercept_s=a,
                per_step_s=b,
                r2=r2,
                clip_first=float(by_steps["clip_score"][0]),
                clip_last=float(by_steps["clip_score"][-1]),
                steps_min=int(steps.min()),
                steps_max=int(steps.max()),
                noisy=noisy,
            )
        )
    return fits


def noisy_fits(fits: list[LineFit]) -> list[LineFit]:
    return [f for f in fits if f.noisy]


def describe_noise(fits: list[LineFit]) -> str:
    """One line per noisy fit, for the summary, MLflow and `sdaas train`'s refusal."""
    return "; ".join(f"{f.model} on {f.accelerator} b{f.batch_size}: {f.noisy}" for f in fits)


def format_summary(fits: list[LineFit], failures: list[dict]) -> str:
    table = format_table(
        [
            "model",
            "accelerator",
            "batch",
            "source",
            "rows",
            "a (s)",
            "b (s/step)",
            "R²",
            "steps",
            "CLIP first→last",
        ],
        [
            [
                f.model,
                f.accelerator,
                f.batch_size,
                f.source,
                f.n,
                f"{f.intercept_s:.4f}",
                f"{f.per_step_s:.4f}",
                f"{f.r2:.4f}",
                f"{f.steps_min}-{f.steps_max}",
                f"{f.clip_first:.2f}→{f.clip_last:.2f}",
            ]
            for f in fits
        ],
    )
    noisy = noisy_fits(fits)
    if noisy:
        table += (
            f"\nNOISY fits: {len(noisy)} of {len(fits)}: {describe_noise(noisy)}. The host was "
            "busy while profiling: re-run `sdaas profile` on a quiet host (or with more "
            "--repeats); `sdaas train` promotes a champion on these only with --accept-noisy"
        )
    if failures:
        by_model: dict[str, int] = {}
        for f in failures:
            by_model[f["model"]] = by_model.get(f["model"], 0) + 1
        table += "\nfailed cells: " + ", ".join(f"{m} {n}" for m, n in sorted(by_model.items()))
        table += f" (total {len(failures)}; reasons in failures.jsonl)"
    else:
        table += "\nfailed cells: 0"
    return table


def plot_profiles(df: pl.DataFrame, fits: list[LineFit], out_png: Path) -> Path:
    """Latency (points + fitted line) per (model, accelerator) and mean CLIP score per model
    vs steps. Many lines (reference profiles): batch size 1 only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(fits) > 14:
        fits = [f for f in fits if f.batch_size == 1]
    fig, (ax_l, ax_c) = plt.subplots(1, 2, figsize=(14, 5.5))
    clip_done: set[tuple[str, str]] = set()
    for i, f in enumerate(fits):
        color = f"C{i % 10}"
        sources = ["published", "derived"] if f.source == "reference" else [f.source]
        sel = df.filter(
            (pl.col("model") == f.model)
            & (pl.col("accelerator") == f.accelerator)
            & (pl.col("batch_size") == f.batch_size)
            & pl.col("source").is_in(sources)
        )
        batch = f" b{f.batch_size}" if f.batch_size != 1 else ""
        if not np.isnan(f.per_step_s):
            ax_l.scatter(sel["steps"], sel["latency_s"], s=8, color=color, alpha=0.6)
            xs = np.array([f.steps_min, f.steps_max])
            ax_l.plot(
                xs,
                f.intercept_s + f.per_step_s * xs,
                color=color,
                lw=1,
                label=f"{f.model}{batch} @ {f.accelerator}: {f.intercept_s:.3f}"
                f" + {f.per_step_s:.4f}·steps (R² {f.r2:.3f})",
            )
        clip = (
            sel.filter(pl.col("clip_score").is_not_nan())
            .group_by("steps")
            .agg(pl.col("clip_score").mean())
            .sort("steps")
        )
        # Assumed curves are per model, the same on every accelerator: draw each once.
        key = (f.model, f.source if f.source == "assumed" else f.accelerator)
        if clip.height and key not in clip_done:
            clip_done.add(key)
            tag = " (ASSUMED curve)" if f.source == "assumed" else f" @ {f.accelerator}"
            ax_c.plot(
                clip["steps"],
                clip["clip_score"],
                marker="o",
                ms=3,
                color=color,
                label=f"{f.model}{batch}{tag}",
            )
    ax_l.set(xlabel="denoising steps", ylabel="latency (s)", title="Latency vs steps")
    ax_c.set(xlabel="denoising steps", ylabel="mean CLIP score", title="CLIP score vs steps")
    ax_l.legend(fontsize=6, loc="upper left")
    ax_c.legend(fontsize=7, loc="lower right")
    n_acc = len({f.accelerator for f in fits})
    fig.suptitle(
        f"sdaas profiles: {len({f.model for f in fits})} models on {n_acc} accelerator(s)",
        fontsize=10,
    )
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def latest_run(profiles_dir: Path) -> Path:
    """The newest sweep run under `profiles_dir` (NotFoundError, saying what to run,
    where there is none: a fresh home has no folder yet)."""
    d = Path(profiles_dir)
    runs = sorted(p for p in d.iterdir() if (p / "manifest.json").is_file()) if d.is_dir() else []
    if not runs:
        raise NotFoundError(f"no sweep runs under {profiles_dir}; run `sdaas profile` first")
    return runs[-1]


def summary_report(path: Path, plot_png: Path | None = None) -> tuple[str, list[LineFit]]:
    df = load_frame(path)
    fits = summarize(df)
    failures = read_failures(path) if Path(path).is_dir() else []
    text = format_summary(fits, failures)
    if plot_png is not None:
        plot_profiles(df, fits, plot_png)
        text += f"\nplot: {plot_png}"
    return text, fits
