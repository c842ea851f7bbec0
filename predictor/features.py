"""Feature specs for the two predictors, and the checks LightGBM itself does not make.

A spec fixes the feature order, which columns are categorical (with their category lists,
saved with the model so predict-time frames use the same codes) and the monotone
constraint per feature. LightGBM *aborts the process* (C++ fatal, exit 134) when a
non-zero monotone constraint lands on a categorical column, so `validate` refuses that
before training ever starts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from predictor.prompt_features import PROMPT_FEATURES


def _around(by_step: dict[int, float] | None, steps, combine, default: float) -> np.ndarray:
    """Per step of `steps`: `combine` of the values of the profiled step counts around it
    (the nearest one past the profiled range); `default` where there are none."""
    steps = np.asarray(steps, dtype=float)
    if not by_step:
        return np.full(len(steps), default)
    at = np.array(sorted(by_step), dtype=float)
    v = np.array([by_step[int(s)] for s in at])
    hi = np.clip(np.searchsorted(at, steps, side="left"), 0, len(at) - 1)
    lo = np.clip(np.searchsorted(at, steps, side="right") - 1, 0, len(at) - 1)
    return combine(v[lo], v[hi])


@dataclass(frozen=True)
class FeatureSpec:
    """What a predictor reads. `categories` is filled from the training data."""

    target: str
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    monotone: tuple[int, ...]  # per feature: +1 increasing, 0 free, -1 decreasing
    categories: dict[str, list[str]] = field(default_factory=dict)
    # "raw": fit the target as is. "log_per_step": fit log(target / (steps + k)), a nearly
    # step-independent per-step cost, with k learned per group (see STEP_OFFSET below).
    target_mode: str = "raw"
    step_offsets: dict[str, float] = field(default_factory=dict)
    # model key -> accelerators it has training rows on: the only places it can be costed
    # (a card's `cuda` pattern also matches published GPUs the model never ran on).
    profiled: dict[str, list[str]] = field(default_factory=dict)
    profiled_steps: dict[str, list[int]] = field(default_factory=dict)  # model key -> steps
    # model key -> batch sizes it was profiled at: the batches serving may form with it
    profiled_batches: dict[str, list[int]] = field(default_factory=dict)
    # model key -> how far below its prediction the CLIP of a prompt it never saw falls,
    # at quantile CLIP_COVERAGE (prompt-grouped cross-validation, `training.clip_margins`):
    # the planner promises prediction - margin, a CLIP a user can bet a job on.
    lower_margin: dict[str, float] = field(default_factory=dict)
    # model key -> {profiled step count: margin}: the same quantile among that step
    # count's rows alone (the spread differs by steps; a plan lands on one step count)
    step_margin: dict[str, dict[int, float]] = field(default_factory=dict)
    # model key -> {profiled step count: the CLIP a new caption's image reaches with
    # probability CLIP_COVERAGE, split conformal over the profiled captions}: no promise
    # there exceeds it. Some images score 0 whatever the mean (toy-s: 16-28 % at every
    # step count), which no margin under the mean covers where the mean is high
    # (`training.clip_floors`)
    clip_floor: dict[str, dict[int, float]] = field(default_factory=dict)

    def with_margins(
        self, margins: dict[str, float], step_margins: dict | None = None
    ) -> FeatureSpec:
        return replace(
            self,
            lower_margin=dict(margins),
            step_margin={k: dict(v) for k, v in (step_margins or {}).items()},
        )

    def floor_at(self, key: str, steps: np.ndarray) -> np.ndarray:
        """The most a promise at each of `steps` may be for model `key`: the lower of the
        floors of the profiled step counts around it (the nearest past the profiled
        range); infinite (no cap) for a model without floors."""
        return _around(self.clip_floor.get(key), steps, np.minimum, np.inf)

    def margin_at(self, key: str, steps: np.ndarray) -> np.ndarray:
        """The margin a promise at each of `steps` takes for model `key`: the larger of
        the step margins of the profiled step counts around it (the nearest one past the
        profiled range); the per-model margin without step margins; 0 without either."""
        return _around(self.step_margin.get(key), steps, np.maximum,
                       self.lower_margin.get(key, 0.0))  # fmt: skip

    def validate(self) -> None:
        problems = []
        if len(self.monotone) != len(self.features):
            problems.append(
                f"monotone has {len(self.monotone)} entries for {len(self.features)} features"
            )
        for name, m in zip(self.features, self.monotone, strict=False):
            if m not in (-1, 0, 1):
                problems.append(f"monotone[{name}] = {m}: must be -1, 0 or 1")
            if m != 0 and name in self.categorical:
                problems.append(
                    f"monotone[{name}] = {m}: a monotone constraint on a categorical feature "
                    "aborts LightGBM; set it to 0"
                )
        unknown = [c for c in self.categorical if c not in self.features]
        if unknown:
            problems.append(f"categorical {unknown}: not among the features")
        if problems:
            raise ValueError("invalid feature spec: " + "; ".join(problems))

    def with_categories(self, df: pd.DataFrame) -> FeatureSpec:
        cats = {c: sorted(str(v) for v in df[c].unique()) for c in self.categorical}
        offsets = fit_step_offsets(df, self.target) if self.target_mode == "log_per_step" else {}
        profiled = {}
        if "accelerator" in self.categorical:
            pairs = df[["model", "accelerator"]].astype(str).drop_duplicates()
            profiled = {m: sorted(g["accelerator"]) for m, g in pairs.groupby("model")}
        steps = df[["model", "steps"]].drop_duplicates()
        profiled_steps = {
            str(m): sorted(int(x) for x in g["steps"]) for m, g in steps.groupby("model")
        }
        batches = {}
        if "batch_size" in df.columns:
            rows = df[["model", "batch_size"]].drop_duplicates()
            batches = {
                str(m): sorted(int(x) for x in g["batch_size"]) for m, g in rows.groupby("model")
            }
        return replace(  # margins and floors stay: they are not learnt from categories
            self,
            categories=cats,
            step_offsets=offsets,
            profiled=profiled,
            profiled_steps=profiled_steps,
            profiled_batches=batches,
        )

    def offsets_for(self, df: pd.DataFrame) -> np.ndarray:
        keys = group_keys(df)
        return np.array([self.step_offsets.get(k, STEP_OFFSET) for k in keys], dtype=float)

    def encode_target(self, y: np.ndarray, df: pd.DataFrame) -> np.ndarray:
        if self.target_mode == "log_per_step":
            return np.log(y / (df["steps"].to_numpy(dtype=float) + self.offsets_for(df)))
        return y

    def decode_target(self, y: np.ndarray, df: pd.DataFrame) -> np.ndarray:
        if self.target_mode == "log_per_step":
            return np.exp(y) * (df["steps"].to_numpy(dtype=float) + self.offsets_for(df))
        return y

    def frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """The model's input frame: feature order, categoricals coded with the saved lists
        (an unseen category becomes NaN, which LightGBM routes as missing)."""
        out = pd.DataFrame(index=df.index)
        for f in self.features:
            if f in self.categorical:
                vals = df[f].astype(str)
                known = vals.where(vals.isin(self.categories[f]))  # unseen -> NaN
                out[f] = pd.Categorical(known, categories=self.categories[f])
            elif f in df.columns:
                out[f] = df[f].astype(float)
            else:  # a prompt feature of rows that have none (reference profiles): missing
                out[f] = np.nan
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        d = json.loads(text)
        return cls(
            d["target"],
            tuple(d["features"]),
            tuple(d["categorical"]),
            tuple(d["monotone"]),
            {k: list(v) for k, v in d["categories"].items()},
            d.get("target_mode", "raw"),
            {k: float(v) for k, v in d.get("step_offsets", {}).items()},
            {k: list(v) for k, v in d.get("profiled", {}).items()},
            {k: [int(x) for x in v] for k, v in d.get("profiled_steps", {}).items()},
            {k: [int(x) for x in v] for k, v in d.get("profiled_batches", {}).items()},
            {k: float(v) for k, v in d.get("lower_margin", {}).items()},
            {
                k: {int(s): float(m) for s, m in v.items()}
                for k, v in d.get("step_margin", {}).items()
            },
            {
                k: {int(s): float(m) for s, m in v.items()}
                for k, v in d.get("clip_floor", {}).items()
            },
        )


# Latency is about per_step * (steps + k), k the fixed text-encoder + VAE part in step
# units (k = 2.1 for SD 1.5 at 512², batch 1; ~0.5 for the tiny models). Trees are
# piecewise constant, so fitting latency itself is off by a whole bucket between profiled
# step counts. So the latency model fits log(latency / (steps + k_g)), with k_g the
# intercept/slope ratio of a least-squares line per group (model, accelerator, batch size,
# pixels) of the training rows: a target that barely moves with steps, with per-model and
# per-accelerator effects additive in log space. Monotone +1 in steps on that target, times
# (steps + k_g) > 0 increasing, makes predicted latency strictly increasing. Groups never
# profiled fall back to STEP_OFFSET.
STEP_OFFSET = 2.0
MAX_STEP_OFFSET = 50.0


def group_keys(df: pd.DataFrame) -> list[str]:
    cols = [df[c].astype(str) for c in ("model", "accelerator", "batch_size", "pixels")]
    return ["|".join(parts) for parts in zip(*cols, strict=True)]


def fit_step_offsets(df: pd.DataFrame, target: str) -> dict[str, float]:
    """k_g = a / b of `target = a + b * steps` per group, clamped to [0, MAX_STEP_OFFSET]."""
    out: dict[str, float] = {}
    keyed = df.assign(_key=group_keys(df))
    for key, g in keyed.groupby("_key"):
        s, y = g["steps"].to_numpy(dtype=float), g[target].to_numpy(dtype=float)
        if len(np.unique(s)) < 2:
            continue
        b, a = np.polyfit(s, y, 1)
        k = a / b if b > 0 else STEP_OFFSET
        out[str(key)] = float(np.clip(k, 0.0, MAX_STEP_OFFSET))
    return out


LATENCY_SPEC = FeatureSpec(
    target="latency_s",
    features=("model", "accelerator", "log_steps", "pixels", "batch_size", "guidance_scale"),
    categorical=("model", "accelerator"),
    monotone=(0, 0, 1, 0, 0, 0),  # batch: +1 cost 1 point of reference MAPE; data decides
    target_mode="log_per_step",
)
CLIP_SPEC = FeatureSpec(
    target="clip_score",
    features=("model", "log_steps", "pixels", "guidance_scale", "prompt_tokens"),
    categorical=("model",),
    monotone=(0, 1, 0, 0, 0),
)


# The prompt-aware CLIP predictor: the same curve inputs plus what may be known of the
# prompt (`predictor.prompt_features`: token and object counts, the CLIP text embedding's
# coordinates on the sweep's PCA basis). Trained only on rows that carry them; its
# `step_margin` is calibrated on the planning rule replayed on caption-held-out errors
# (`predictor.training.prompt_clip_margins`).
PROMPT_CLIP_SPEC = FeatureSpec(
    target="clip_score",
    features=("model", "log_steps", "pixels", "guidance_scale", *PROMPT_FEATURES),
    categorical=("model",),
    monotone=(0, 1, 0, 0) + (0,) * len(PROMPT_FEATURES),
)


def add_derived_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Columns the specs read that profiles do not store directly."""
    df = df.copy()
    df["model"] = df["model"].astype(str) + "@" + df["model_version"].astype(str)
    df["pixels"] = (df["height"].astype(float) * df["width"].astype(float)).astype(float)
    df["log_steps"] = np.log(df["steps"].astype(float) + STEP_OFFSET)
    return df


def mape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y_pred - y_true) / np.abs(y_true)) * 100.0)


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y_pred - y_true)))
