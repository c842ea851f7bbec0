"""Predictors trained once per session on the shipped reference profiles (real LightGBM)."""

from __future__ import annotations

import pytest

from predictor.dataset import load_training_data
from predictor.features import CLIP_SPEC, LATENCY_SPEC
from predictor.training import train
from sdaas.config import Settings


@pytest.fixture(scope="session")
def reference_data(tmp_path_factory):
    return load_training_data(Settings(home=tmp_path_factory.mktemp("home")), "reference")


@pytest.fixture(scope="session")
def latency_model(reference_data):
    return train(reference_data.frame, LATENCY_SPEC, {"n_estimators": 200})


@pytest.fixture(scope="session")
def clip_model(reference_data):
    return train(reference_data.frame, CLIP_SPEC, {"n_estimators": 200})
