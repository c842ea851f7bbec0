"""`sdaas train`: both predictors, tracked and registered, with a printed report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from predictor.dataset import load_training_data
from predictor.features import CLIP_SPEC, LATENCY_SPEC
from predictor.tracking import CLIP_MODEL, LATENCY_MODEL, TrackedModel, log_and_register
from predictor.training import train
from sdaas.config import Settings


@dataclass(frozen=True)
class TrainReport:
    data: str
    data_hash: str
    sources: dict[str, int]
    latency: TrackedModel
    clip: TrackedModel | None
    latency_metrics: dict[str, float]
    clip_metrics: dict[str, float]


def train_all(
    settings: Settings,
    *,
    data: str = "both",
    profiles_dir: Path | None = None,
    params: dict | None = None,
    promote: bool = True,
    seed: int = 0,
) -> TrainReport:
    td = load_training_data(settings, data, profiles_dir)

    def track(name: str, trained) -> TrackedModel:
        return log_and_register(
            settings,
            name,
            trained,
            data_choice=data,
            data_hash=td.data_hash,
            sources=td.sources,
            promote=promote,
        )

    lat = train(td.frame, LATENCY_SPEC, params, seed)
    lat_t = track(LATENCY_MODEL, lat)
    clip_t, clip_metrics = None, {}
    if td.frame["clip_score"].notna().any():
        clip = train(td.frame, CLIP_SPEC, params, seed)
        clip_metrics = clip.metrics
        clip_t = track(CLIP_MODEL, clip)
    return TrainReport(data, td.data_hash, td.sources, lat_t, clip_t, lat.metrics, clip_metrics)
