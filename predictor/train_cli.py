"""`sdaas train`: both predictors, tracked and registered, with a printed report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from predictor.dataset import load_training_data
from predictor.features import CLIP_SPEC, LATENCY_SPEC, PROMPT_CLIP_SPEC
from predictor.tracking import (
    CLIP_MODEL,
    LATENCY_MODEL,
    PROMPT_CLIP_MODEL,
    TrackedModel,
    log_and_register,
)
from predictor.training import PROMPT_CLIP_PARAMS, train
from profiles.summary import describe_noise, noisy_fits, summarize
from sdaas.config import Settings


def noisy_training_fits(frame):
    """The measured latency lines of the training rows that look noisy."""
    measured = frame[frame["source"] == "measured"]
    if measured.empty:
        return []
    cols = ["model", "accelerator", "batch_size", "source", "steps", "latency_s", "clip_score"]
    cols += [c for c in ("spread",) if c in measured.columns]
    return noisy_fits(summarize(pl.from_pandas(measured[cols].reset_index(drop=True))))


@dataclass(frozen=True)
class TrainReport:
    data: str
    data_hash: str
    sources: dict[str, int]
    latency: TrackedModel
    clip: TrackedModel | None
    latency_metrics: dict[str, float]
    clip_metrics: dict[str, float]
    noisy: tuple[str, ...] = ()  # measured fits that say the host was noisy
    # the prompt-aware CLIP predictor (None: no profile rows with prompt features)
    prompt_clip: TrackedModel | None = None
    prompt_clip_metrics: dict[str, float] | None = None


def train_all(
    settings: Settings,
    *,
    data: str = "both",
    profiles_dir: Path | None = None,
    params: dict | None = None,
    promote: bool = True,
    seed: int = 0,
    accept_noisy: bool = False,
) -> TrainReport:
    """accept_noisy: promote a champion even when the measured profiles' fits say the
    host was noisy (`profiles.summary.noise_reason`); otherwise such a run is logged,
    flagged in MLflow, and not promoted."""
    td = load_training_data(settings, data, profiles_dir)
    noisy = noisy_training_fits(td.frame)
    why_not = ""
    if noisy and not accept_noisy:
        why_not = (
            f"not promoted: trained on noisy profiles ({describe_noise(noisy)}); re-run "
            "`sdaas profile` on a quiet host, or pass --accept-noisy"
        )

    def track(name: str, trained) -> TrackedModel:
        return log_and_register(
            settings,
            name,
            trained,
            data_choice=data,
            data_hash=td.data_hash,
            sources=td.sources,
            promote=promote and not why_not,
            why_not=why_not,
            noisy=tuple(describe_noise([f]) for f in noisy),
        )

    lat = train(td.frame, LATENCY_SPEC, params, seed)
    lat_t = track(LATENCY_MODEL, lat)
    clip_t, clip_metrics = None, {}
    if td.frame["clip_score"].notna().any():
        clip = train(td.frame, CLIP_SPEC, params, seed)
        clip_metrics = clip.metrics
        clip_t = track(CLIP_MODEL, clip)
    prompt_t, prompt_metrics = None, None
    rows = td.prompt_rows()
    if rows["prompt_id"].nunique() >= 2:
        aware_params = {**PROMPT_CLIP_PARAMS, **(params or {})}
        aware = train(rows, PROMPT_CLIP_SPEC, aware_params, seed, prompt_basis=td.prompt_basis)
        prompt_metrics = aware.metrics
        prompt_t = track(PROMPT_CLIP_MODEL, aware)
    return TrainReport(
        data,
        td.data_hash,
        td.sources,
        lat_t,
        clip_t,
        lat.metrics,
        clip_metrics,
        tuple(describe_noise([f]) for f in noisy),
        prompt_t,
        prompt_metrics,
    )
