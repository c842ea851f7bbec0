"""A serving-ready sdaas home, built once per session: the shipped toy-world models
registered, a small real profiling sweep on this host, and real predictors trained
on it (MLflow, champion). About 40 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import Registry
from pipelines.profile_grid import SweepConfig
from pipelines.profile_sweep import run_sweep
from predictor.train_cli import train_all
from sdaas.config import SHIPPED_TOYWORLD, Settings

PROMPT = "three small red circles in the top left corner"


def build_home(home: Path) -> Settings:
    s = Settings(home=home)
    s.models_dir.mkdir(parents=True, exist_ok=True)
    reg = Registry(s.registry_path, model_roots=s.model_roots)
    for card in sorted((SHIPPED_TOYWORLD / "cards").glob("*.yaml")):
        reg.register_file(card, exist_ok=True)
    run_sweep(s, SweepConfig(steps=(1, 2, 4, 8), prompts=1, seeds=(0,)), progress=lambda *_: None)
    train_all(s, data="measured")
    return s


@pytest.fixture(scope="session")
def serving_settings(tmp_path_factory) -> Settings:
    return build_home(tmp_path_factory.mktemp("serving-home"))


@pytest.fixture
def broker():
    from pipelines.kafka_broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b
