"""A serving-ready sdaas home, built once per session (`prepare_toy_home`: toy-world
models, a small real sweep on this host, real predictors in MLflow), and a broker."""

from __future__ import annotations

import pytest

from pipelines.serving_setup import prepare_toy_home
from sdaas.config import Settings

PROMPT = "three small red circles in the top left corner"


@pytest.fixture(scope="session")
def serving_settings(tmp_path_factory) -> Settings:
    return prepare_toy_home(tmp_path_factory.mktemp("serving-home"))


@pytest.fixture
def broker():
    from adapters.kafka_broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b
