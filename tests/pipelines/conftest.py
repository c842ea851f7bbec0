"""A registry of the tiny models for sweep tests (cards point into the shared tiny_dir)."""

from __future__ import annotations

import pytest

from models.registry import Registry
from sdaas.config import Settings


@pytest.fixture
def sweep_settings(tmp_path, tiny_dir, monkeypatch) -> Settings:
    monkeypatch.setenv("SDAAS_HOME", str(tmp_path))
    monkeypatch.delenv("SDAAS_PROMPT_SALT", raising=False)
    s = Settings(home=tmp_path, extra_model_roots=(tiny_dir.resolve(),))
    reg = Registry(s.registry_path, model_roots=s.model_roots)
    for card in sorted((tiny_dir / "cards").glob("*.yaml")):
        reg.register_file(card)
    return s


@pytest.fixture
def clip_path(tiny_dir):
    return tiny_dir / "tiny-clip"
