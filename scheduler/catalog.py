"""What the cluster can serve: per (model, accelerator kind) latency by steps and batch,
per model CLIP by steps, styles, model-load cost, price. Built from the reference
profiles (`data/reference/reference_profiles.parquet`, published/derived rows) so the
simulator costs jobs exactly as the planner's training data does.

Latency rows are linear in steps by construction (`per_step * (steps + k)`), so the
catalog keeps, per (model, kind), the batch-1 latency on the model's step grid
(interpolated between profiled step counts) and a batch factor curve `L(b) / L(1)`
from the batch-size rows (no batch rows: no batching gain, factor b).

Numbers that no source gives are ASSUMED and say so here: which styles each reference
model serves, model load (cold start) seconds, accelerator prices and how many models
fit in an accelerator's memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from profiles.reference import REFERENCE_DIR, assumed_clip, assumed_curves
from sdaas.accelerator_names import kind_of
from sdaas.errors import InvalidInputError

# The reference profile each accelerator kind of a cluster spec takes its latencies from,
# keyed by `kind_of` (A100 <- DiffServe's A100 rows: the only A100 with every model and
# batch sizes).
CLUSTER_PROFILES = (
    "cuda-NVIDIA A100 (DiffServe)",
    "cuda-NVIDIA H100",
    "cuda-NVIDIA V100",
    "cuda-NVIDIA A10",
    "cuda-NVIDIA T4",
)
KIND_LABELS: dict[str, str] = {kind_of(label): label for label in CLUSTER_PROFILES}

# ASSUMED: on-demand cloud list prices, USD per GPU-hour (order of magnitude, 2024).
PRICE_PER_HOUR: dict[str, float] = {"A100": 3.0, "H100": 5.0, "V100": 2.5, "A10": 1.0, "T4": 0.5}

# ASSUMED: models resident at once (GPU memory: 16 GB -> 1, 24 GB -> 2, 40 GB+ -> 4).
MAX_RESIDENT: dict[str, int] = {"A100": 4, "H100": 4, "V100": 1, "A10": 2, "T4": 1}

# ASSUMED: seconds to load a model onto an accelerator (weights from local NVMe to GPU).
LOAD_S: dict[str, float] = {
    "sd-1.5": 3.0,
    "sdxl": 7.0,
    "sd-turbo": 3.0,
    "sdxs": 1.5,
    "sdxl-lightning": 7.0,
}

# ASSUMED: styles each reference model serves well (the cards of a real deployment say).
STYLES: dict[str, tuple[str, ...]] = {
    "sd-1.5": ("photo", "anime", "sketch"),
    "sdxl": ("photo", "anime"),
    "sd-turbo": ("photo", "sketch"),
    "sdxs": ("sketch",),
    "sdxl-lightning": ("photo", "anime"),
}

MAX_BATCH = 8  # continuous batching is capped here even where profiles go higher


@dataclass
class Catalog:
    """models[i] on kinds[k]: `latency[(i, k)]` is the batch-1 seconds at steps 1..S
    (+inf outside the model's grid); `batch_factor[(i, k)][b]` is L(b)/L(1) for b in
    0..MAX_BATCH (index 0 unused). `clip[i]` is the CLIP curve at steps 1..S."""

    models: list[str]
    kinds: list[str]
    styles: dict[str, tuple[str, ...]]
    steps: np.ndarray  # (S,) 1..S
    latency: dict[tuple[int, int], np.ndarray]
    batch_factor: dict[tuple[int, int], np.ndarray]
    clip: dict[int, np.ndarray]
    load_s: dict[int, float] = field(default_factory=dict)
    price_per_hour: dict[int, float] = field(default_factory=dict)
    max_resident: dict[int, int] = field(default_factory=dict)
    # batch_limit's answers: policies ask at every dispatch (a numpy scan each time was
    # 13 % of slack-sjf's run under cProfile)
    _limits: dict[tuple[int, int], int] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def can_run(self, model: int, kind: int) -> bool:
        return (model, kind) in self.latency

    def kind_index(self, kind: str) -> int:
        if kind not in self.kinds:
            raise InvalidInputError(
                f"accelerator {kind!r}: no profile for it; profiled kinds: {', '.join(self.kinds)}"
            )
        return self.kinds.index(kind)

    def batch_limit(self, model: int, kind: int) -> int:
        """The largest batch model can run on kind (its last finite factor)."""
        limit = self._limits.get((model, kind))
        if limit is None:
            f = self.batch_factor[(model, kind)]
            limit = self._limits[(model, kind)] = int(np.flatnonzero(np.isfinite(f))[-1])
        return limit

    @property
    def all_styles(self) -> list[str]:
        return sorted({s for m in self.models for s in self.styles[m]})


def _interp_steps(steps: np.ndarray, lat: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Batch-1 latency on the full grid; +inf outside the profiled step range."""
    out = np.full(len(grid), np.inf)
    inside = (grid >= steps.min()) & (grid <= steps.max())
    out[inside] = np.interp(grid[inside], steps, lat)
    return out


def _batch_factor(rows: pd.DataFrame) -> np.ndarray:
    """L(b)/L(1) at the largest profiled step count, interpolated over b; inf beyond."""
    f = np.full(MAX_BATCH + 1, np.inf)
    f[1] = 1.0
    top = rows[rows.steps == rows.steps.max()]
    by_b = top.groupby("batch_size").latency_s.median()
    if 1 not in by_b.index or len(by_b) < 2:
        return f
    bs = by_b.index.to_numpy(dtype=float)
    ratio = (by_b / by_b.loc[1]).to_numpy()
    hi = int(min(MAX_BATCH, bs.max()))
    f[1 : hi + 1] = np.interp(np.arange(1, hi + 1), bs, ratio)
    return f


def load_catalog(
    kinds: list[str] | None = None, ref_dir: Path = REFERENCE_DIR, max_steps: int = 50
) -> Catalog:
    """The reference catalog over `kinds` (default: every kind in KIND_LABELS)."""
    kinds = list(kinds or KIND_LABELS)
    unknown = [k for k in kinds if k not in KIND_LABELS]
    if unknown:
        raise InvalidInputError(
            f"accelerator {unknown[0]!r}: no reference profile; profiled kinds: "
            + ", ".join(KIND_LABELS)
        )
    frame = pd.read_parquet(ref_dir / "reference_profiles.parquet")
    frame = frame[frame.latency_s.notna()]
    curves = assumed_curves(ref_dir)
    models = [m for m in STYLES if m in set(frame.model)]
    grid = np.arange(1, max_steps + 1)
    latency, factor, clip = {}, {}, {}
    for i, m in enumerate(models):
        rows_m = frame[frame.model == m]
        clip[i] = np.array([assumed_clip(curves[m], int(s)) for s in grid])
        for k, kind in enumerate(kinds):
            rows = rows_m[rows_m.accelerator == KIND_LABELS[kind]]
            if rows.empty:
                continue
            b1 = rows[rows.batch_size == 1].groupby("steps").latency_s.median()
            lat = _interp_steps(b1.index.to_numpy(float), b1.to_numpy(), grid.astype(float))
            latency[(i, k)] = lat
            factor[(i, k)] = _batch_factor(rows)
    for i in range(len(models)):
        # CLIP outside the model's served step range is unreachable.
        served = np.zeros(len(grid), bool)
        for (mi, _k), lat in latency.items():
            if mi == i:
                served |= np.isfinite(lat)
        clip[i] = np.where(served, clip[i], -np.inf)
    return Catalog(
        models=models,
        kinds=kinds,
        styles={m: STYLES[m] for m in models},
        steps=grid,
        latency=latency,
        batch_factor=factor,
        clip=clip,
        load_s={i: LOAD_S[m] for i, m in enumerate(models)},
        price_per_hour={k: PRICE_PER_HOUR[kind] for k, kind in enumerate(kinds)},
        max_resident={k: MAX_RESIDENT[kind] for k, kind in enumerate(kinds)},
    )


def single_model_catalog(service_s: float, *, kind: str = "X") -> Catalog:
    """One model with one step count on one kind, costing `service_s`: the queueing-theory
    tests' server (M/M/1, M/D/1), where only arrivals and service times matter."""
    return Catalog(
        models=["m"],
        kinds=[kind],
        styles={"m": ("any",)},
        steps=np.array([1]),
        latency={(0, 0): np.array([service_s])},
        batch_factor={(0, 0): np.array([np.inf, 1.0])},
        clip={0: np.array([100.0])},
        load_s={0: 0.0},
        price_per_hour={0: 1.0},
        max_resident={0: 1},
    )
