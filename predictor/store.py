"""The predictor store: MLflow's tracking store and model registry in the sdaas home, and
loading registered predictors (`models:/sdaas-latency@champion`) from it.

The store lives in `mlruns/mlflow.db` (sqlite; MLflow 3 refuses the plain-folder store)
with artifacts under `mlruns/artifacts`. A missing store, a missing alias or an
unreadable model is a clear startup error (`PredictorStoreError`), raised when the
serving pipeline or simulator starts, never in the middle of a request.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from predictor.features import FeatureSpec
from predictor.prompt_features import BASIS_FILE, PromptBasis
from sdaas.config import Settings
from sdaas.errors import SdaasError

CHAMPION = "champion"
SPEC_ARTIFACT = "feature_spec.json"

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class PredictorStoreError(SdaasError):
    """The MLflow store or a registered predictor is missing or unreadable."""


def store_paths(settings: Settings) -> tuple[Path, Path]:
    root = settings.home / "mlruns"
    return root / "mlflow.db", root / "artifacts"


def tracking_uri(settings: Settings) -> str:
    return f"sqlite:///{store_paths(settings)[0]}"


def connect(settings: Settings, *, create: bool):
    """Point MLflow at this home's store. Without `create`, a missing store is an error."""
    # mlflow (over a second to import) only once a store is opened, not with this module
    import mlflow
    import mlflow.lightgbm  # noqa: F401 - makes mlflow.lightgbm available to callers

    db, artifacts = store_paths(settings)
    if not create and not db.is_file():
        raise PredictorStoreError(
            f"no predictor store at {db}: train predictors first with `sdaas train`"
        )
    if create:
        artifacts.mkdir(parents=True, exist_ok=True)
    elif db.stat().st_size and db.read_bytes()[:16] != b"SQLite format 3\x00":
        raise PredictorStoreError(f"predictor store {db} is not an sqlite database (corrupt?)")
    mlflow.set_tracking_uri(tracking_uri(settings))
    mlflow.set_registry_uri(tracking_uri(settings))
    return mlflow


@dataclass
class LoadedPredictor:
    name: str
    version: str
    spec: FeatureSpec
    model: object  # lightgbm.LGBMRegressor
    prompt_basis: PromptBasis | None = None  # the prompt-aware CLIP predictor's

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return self.spec.decode_target(self.model.predict(self.spec.frame(df)), df)


def load_registered(mlflow, name: str, mv) -> LoadedPredictor:
    model = mlflow.lightgbm.load_model(f"models:/{name}/{mv.version}")
    path = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=SPEC_ARTIFACT)
    with open(path) as f:
        spec = FeatureSpec.from_json(json.dumps(json.load(f)))
    basis = None
    listed = mlflow.MlflowClient().list_artifacts(mv.run_id)
    if any(a.path == BASIS_FILE for a in listed):
        where = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=BASIS_FILE)
        basis = PromptBasis.load(Path(where))
    return LoadedPredictor(name, str(mv.version), spec, model, basis)


def load_predictor(settings: Settings, name: str, alias: str = CHAMPION) -> LoadedPredictor:
    """The version of `name` that holds `alias`, with its feature spec."""
    mlflow = connect(settings, create=False)
    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds here
        raise PredictorStoreError(
            f"no predictor models:/{name}@{alias} in {settings.home / 'mlruns'} "
            f"({type(exc).__name__}): train one with `sdaas train`"
        ) from None
    try:
        return load_registered(mlflow, name, mv)
    except Exception as exc:  # noqa: BLE001
        raise PredictorStoreError(
            f"predictor models:/{name}@{alias} (v{mv.version}) cannot be loaded: "
            f"{type(exc).__name__}: {exc}. Retrain with `sdaas train`"
        ) from None
