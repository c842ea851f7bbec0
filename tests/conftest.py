"""Shared fixtures: offline model libraries, a throwaway sdaas home, tiny models built once."""

from __future__ import annotations

import os

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ[_k] = _v

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from sdaas.config import Settings  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """The tiny models and their cards, built once per test session."""
    from models.tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny") / "models"
    make_tiny(out)
    return out


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """A fresh sdaas home per test, so no test sees another's registry."""
    monkeypatch.setenv("SDAAS_HOME", str(tmp_path))
    monkeypatch.delenv("SDAAS_MODEL_ROOTS", raising=False)
    monkeypatch.delenv("SDAAS_PROMPT_SALT", raising=False)
    s = Settings(home=tmp_path)
    s.models_dir.mkdir(parents=True)
    return s


@pytest.fixture
def model_dir(settings, tiny_dir) -> Path:
    """A real diffusers folder inside the test home's allowed model root (hard-linked copy)."""
    target = settings.models_dir / "tiny-sketch-s"
    shutil.copytree(tiny_dir / "tiny-sketch-s", target, copy_function=os.link)
    return target


def make_card(model_dir: Path, **overrides) -> dict:
    """A valid card dict for `model_dir`; override fields to break it."""
    card = {
        "name": "tiny-test",
        "version": "1.0",
        "owner": "tests",
        "styles": ["flat"],
        "source": {"kind": "diffusers", "path": str(model_dir)},
        "scheduler": "euler",
        "resolutions": ["64x64"],
        "steps": {"min": 1, "max": 50},
        "guidance_scale": 7.5,
        "accelerators": ["cpu"],
    }
    card.update(overrides)
    return card


def run_cli(*args: str):
    """`python -m cli ARGS` in a real process: real exit codes, real stdout/stderr."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True)


# one serving-ready home per session, for the serving and CLI tests alike
from tests.pipelines.serving_home import broker, serving_settings  # noqa: E402, F401
