"""What the cluster can serve: per (model, accelerator kind) latency by steps and batch,
per model CLIP by steps, styles, model-load cost, price. Built from the reference
profiles (`data/reference/reference_profiles.parquet`, published/derived rows) so the
simulator costs jobs exactly as the planner's training data does.

Latency rows are linear in steps by construction (`per_step * (steps + k)`), so the
catalog keeps, per (model, kind), the batch-1 latency on the model's step grid
(interpolated between profiled step counts) and a batch factor curve `L(b) / L(1)`
from the batch-size rows (no batch rows: no batching gain, factor b).

Numbers that no source gives are ASSUMED and say so here: which styles each reference
model serves, model load (cold start) seconds and accelerator prices.

Residency (which models an accelerator holds at once) is memory: a kind holds models
while their checkpoint sizes (`SIZE_GB`) sum within its budget, its memory
(`MEMORY_GB`) less the working memory of its largest batch (`working_gb`). Loading a
model that does not fit evicts the least recently used ones until it does
(`lru_evictions`, the one rule the simulator, the elastic pool and the fleet router use).
A count of models (`MAX_RESIDENT`, serving's `--max-resident`) is the special case
where every model weighs 1 and the budget is the count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
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

# ASSUMED: models resident at once (GPU memory: 16 GB -> 1, 24 GB -> 2, 40 GB+ -> 4): the
# count rule before residency from memory, kept for comparison (`residency="count"`).
MAX_RESIDENT: dict[str, int] = {"A100": 4, "H100": 4, "V100": 1, "A10": 2, "T4": 1}

# Residency from memory. GB here is GiB (2**30 bytes), as GPU memory is quoted.
# Parameters (millions) of each reference model's fp16 checkpoint: UNet, text
# encoder(s), VAE; 2 bytes a parameter.
PARAMS_M: dict[str, tuple[float, float, float]] = {
    # Rombach et al. 2022 and the SD v1.5 card: UNet 860M, CLIP ViT-L/14 text 123M,
    # VAE (KL-f8) 84M
    "sd-1.5": (860.0, 123.0, 84.0),
    # Podell et al. 2023 (arXiv 2307.01952) Tab. 1: UNet 2,567M, text encoders CLIP
    # ViT-L 123M + OpenCLIP ViT-bigG 695M; the same KL-f8 VAE (84M)
    "sdxl": (2567.0, 818.0, 84.0),
    # ASSUMED: SD 2.1's architecture (SD-Turbo is distilled from it, Sauer et al. 2023,
    # arXiv 2311.17042): UNet 866M, OpenCLIP ViT-H/14 text encoder about 340M, VAE 84M
    "sd-turbo": (866.0, 340.0, 84.0),
    # SDXS-512 (Song et al. 2024, arXiv 2403.16627, Tab. 1 as read here): UNet 319M,
    # text encoder 123M, tiny VAE decoder 1.2M (ASSUMED: the table's rounding)
    "sdxs": (319.0, 123.0, 1.2),
    # SDXL-Lightning is distilled from SDXL with its architecture (Lin et al. 2024,
    # arXiv 2402.13929): SDXL's sizes
    "sdxl-lightning": (2567.0, 818.0, 84.0),
}
# fp16 checkpoint sizes: sd-1.5 1.99, sdxl 6.46, sd-turbo 2.40, sdxs 0.82 GB
SIZE_GB: dict[str, float] = {m: sum(p) * 2e6 / 2**30 for m, p in PARAMS_M.items()}

# GPU memory per kind, GB. A100: DiffServe (the A100 rows every model takes) does not
# say which; its SDXL rows run batch 16 at 1024x1024 and not 32, and by the working
# memory below batch 16 needs about 68 GB: ASSUMED the 80 GB part. H100 80 GB (SXM and
# PCIe); V100: ASSUMED 16 GB (Lambda's V100 rows ran on the 16 GB SXM2; the transcribed
# SD 1.5 latency does not say); A10 24 GB; T4 16 GB.
MEMORY_GB: dict[str, float] = {"A100": 80.0, "H100": 80.0, "V100": 16.0, "A10": 24.0, "T4": 16.0}
# Working memory (activations, latents, the VAE decode) per image of a batch, GB, from
# measured peaks less the weights: SD 1.x at 512x512 from Lambda's benchmark
# (data/reference/sources/lambda_sd14_30steps_batch_gpus.csv: SD 1.4, fp16, xformers,
# A100-SXM4-40GB, 11.12 GB peak at batch 8); SDXL at 1024x1024 from Hugging Face's
# "Exploring simple optimizations for SDXL" (A100 40 GB, fp16 + SDPA, 4 images a run:
# 21.7 GB). ASSUMED: linear in the batch size; sd-turbo and sdxs (512x512) take SD 1.5's
# (an upper bound for sdxs's smaller UNet), sdxl-lightning SDXL's.
_WORK_PEAK = {"sd-1.5": (8, 11.12), "sdxl": (4, 21.7)}  # family: (batch, peak GB)
_WORK_FAMILY = {"sd-1.5": "sd-1.5", "sd-turbo": "sd-1.5", "sdxs": "sd-1.5",
                "sdxl": "sdxl", "sdxl-lightning": "sdxl"}  # fmt: skip
WORK_GB_PER_IMAGE: dict[str, float] = {
    m: (_WORK_PEAK[f][1] - SIZE_GB[f]) / _WORK_PEAK[f][0] for m, f in _WORK_FAMILY.items()
}
CONTEXT_GB = 1.0  # ASSUMED: the CUDA context and allocator slack every device keeps

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
EPS = 1e-9  # GB sums compared with a budget: what float rounding may leave over


def lru_evictions(
    resident: Sequence[int], used: float, model: int, weight: Sequence[float], budget: float
) -> int:
    """The residency rule: loading `model` where `resident` (least recently used first,
    weights summed to `used`) are held evicts the least recently used ones until the
    weights fit `budget`; how many it evicts (0: it fits; all: it fits only alone)."""
    over = used + weight[model] - budget
    n = 0
    while over > EPS and n < len(resident):
        over -= weight[resident[n]]
        n += 1
    return n


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
    # residency as a count: models resident at once per kind (every model weighs 1)
    max_resident: dict[int, int] = field(default_factory=dict)
    # residency as memory (when both are given): each model's checkpoint GB, and each
    # kind's budget, its memory less its working memory (GB); `max_resident` is then
    # derived: how many of the smallest model fit
    size_gb: dict[int, float] = field(default_factory=dict)
    budget_gb: dict[int, float] = field(default_factory=dict)
    # what the residency rule reads: per model its weight, per kind its budget (GB, or
    # 1 and the count)
    weight: list[float] = field(default_factory=list, init=False, repr=False, compare=False)
    budget: dict[int, float] = field(default_factory=dict, init=False, repr=False, compare=False)
    # batch_limit's answers: policies ask at every dispatch (a numpy scan each time was
    # 13 % of slack-sjf's run under cProfile)
    _limits: dict[tuple[int, int], int] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        n = len(self.models)
        if self.size_gb and self.budget_gb:
            self.weight = [float(self.size_gb[m]) for m in range(n)]
            self.budget = {k: float(b) for k, b in self.budget_gb.items()}
            light = min(self.weight, default=1.0)
            if not self.max_resident:
                self.max_resident = {k: max(1, int(b // light)) for k, b in self.budget.items()}
            for m, k in self.latency:
                if k in self.budget and self.weight[m] > self.budget[k] + EPS:
                    raise InvalidInputError(
                        f"model {self.models[m]!r} ({self.weight[m]:.2f} GB) does not fit on "
                        f"{self.kinds[k]} beside its working memory ({self.budget[k]:.2f} GB "
                        "left for models): give the kind more memory or drop the model there"
                    )
        else:
            self.weight = [1.0] * n
            self.budget = {k: float(c) for k, c in self.max_resident.items()}

    @property
    def by_memory(self) -> bool:
        """Residency is memory (GB), not a count of models."""
        return bool(self.size_gb and self.budget_gb)

    def evictions(self, resident: Sequence[int], used: float, model: int, kind: int) -> int:
        """How many models a load of `model` on an instance of `kind` evicts: `resident`
        holds its models least recently used first, `used` their weights summed. 0: it
        fits beside them (`lru_evictions`)."""
        return lru_evictions(resident, used, model, self.weight, self.budget[kind])

    def hold(self, models: Iterable[int], kind: int) -> int:
        """The fewest instances of `kind` that hold `models` at once: their weights
        summed over the kind's budget, rounded up (a count catalog: models over the
        count)."""
        total = sum(self.weight[m] for m in set(models))
        return math.ceil(total / self.budget[kind] - EPS) if total else 0

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


RESIDENCY = ("memory", "count")


def working_gb(catalog: Catalog, kind: int, base: dict[int, str] | None = None) -> float:
    """The memory kind `kind` keeps free to run its largest batch: the most, over the
    models it runs, of the model's working memory per image times its batch limit.
    `base`: each model's reference model (default: the model's own name)."""
    worst = 0.0
    for m in range(len(catalog.models)):
        if catalog.can_run(m, kind):
            ref = (base or {}).get(m, catalog.models[m])
            worst = max(worst, WORK_GB_PER_IMAGE[ref] * catalog.batch_limit(m, kind))
    return worst


def memory_budgets(
    catalog: Catalog, memory_gb: dict[str, float] | None = None, base=None
) -> dict[int, float]:
    """Per kind of `catalog`, GB left for resident models: its memory (`MEMORY_GB`,
    overridden by `memory_gb`) less its working memory and `CONTEXT_GB`."""
    memory = {**MEMORY_GB, **(memory_gb or {})}
    out = {}
    for k, kind in enumerate(catalog.kinds):
        if kind not in memory:
            raise InvalidInputError(
                f"accelerator {kind!r}: no memory size; known: {', '.join(memory)}"
            )
        out[k] = memory[kind] - working_gb(catalog, k, base) - CONTEXT_GB
    return out


def load_catalog(
    kinds: list[str] | None = None,
    ref_dir: Path = REFERENCE_DIR,
    max_steps: int = 50,
    *,
    residency: str = "memory",
    memory_gb: dict[str, float] | None = None,
) -> Catalog:
    """The reference catalog over `kinds` (default: every kind in KIND_LABELS).
    `residency`: "memory" (checkpoint sizes against each kind's memory, `memory_gb`
    overriding `MEMORY_GB`, e.g. {"A100": 40}) or "count" (the ASSUMED `MAX_RESIDENT`)."""
    if residency not in RESIDENCY:
        raise InvalidInputError(f"residency: {residency!r}: one of {', '.join(RESIDENCY)}")
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
    cat = Catalog(
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
    if residency == "count":
        return cat
    return replace(cat, max_resident={}, size_gb={i: SIZE_GB[m] for i, m in enumerate(models)},
                   budget_gb=memory_budgets(cat, memory_gb))  # fmt: skip


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
