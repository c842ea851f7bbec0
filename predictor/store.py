"""Loading registered predictors (`models:/sdaas-latency@champion`).

A missing store, a missing alias or an unreadable model is a clear startup error
(`PredictorStoreError`), raised when the serving pipeline or simulator starts, never in
the middle of a request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from predictor.features import FeatureSpec
from predictor.tracking import CHAMPION, SPEC_ARTIFACT, PredictorStoreError, connect
from sdaas.config import Settings


@dataclass
class LoadedPredictor:
    name: str
    version: str
    spec: FeatureSpec
    model: object  # lightgbm.LGBMRegressor

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return self.spec.decode_target(self.model.predict(self.spec.frame(df)), df)


def load_registered(mlflow, name: str, mv) -> LoadedPredictor:
    import json

    model = mlflow.lightgbm.load_model(f"models:/{name}/{mv.version}")
    path = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=SPEC_ARTIFACT)
    with open(path) as f:
        spec = FeatureSpec.from_json(json.dumps(json.load(f)))
    return LoadedPredictor(name, str(mv.version), spec, model)


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
