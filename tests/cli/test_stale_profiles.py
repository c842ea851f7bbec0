"""A latency profile serving keeps contradicting is reported (`sdaas models show`) and
re-measured alone (`sdaas profile --stale`). Real home, real predictor, real sweep."""

from __future__ import annotations

import json

import pytest

from adapters.result_store import ResultStore
from cli.main import main
from predictor.latency_correction import Observation
from predictor.store import load_predictor
from predictor.tracking import LATENCY_MODEL

pytestmark = pytest.mark.slow


@pytest.fixture
def stale_home(serving_settings, tmp_path, monkeypatch):
    """Serving observed toy-s running 10x slower than predicted, 6 times."""
    import pipelines.serving_setup as setup

    store_path = tmp_path / "results.db"
    monkeypatch.setattr(setup, "result_store_path", lambda settings: store_path)
    version = load_predictor(serving_settings, LATENCY_MODEL).version
    acc = load_predictor(serving_settings, LATENCY_MODEL).spec.categories["accelerator"][0]
    store = ResultStore(store_path)
    slow = [Observation(("toy-s@1.0", acc, 1), 0.05, 0.5 * (1 + i / 100)) for i in range(6)]
    store.observe(slow, "job", version)
    store.observe([Observation(("toy-m@1.0", acc, 1), 0.05, 0.05)], "job", version)
    store.observe([Observation(("toy-m@1.0", acc, 1), 0.05, 9.0)] * 9, "job", "older")
    return serving_settings, acc


def test_models_show_reports_a_stale_profile_and_only_that_one(stale_home, capsys):
    settings, acc = stale_home
    home = ["--home", str(settings.home)]
    assert main([*home, "models", "show", "toy-s"]) == 0
    out = capsys.readouterr().out
    assert f"latency as served on {acc}, batch 1: observed 10.2" in out
    assert "STALE: re-measure with `sdaas profile --stale`" in out
    assert main([*home, "models", "show", "toy-m"]) == 0
    out = capsys.readouterr().out
    assert "observed 1.00x the prediction over 1 runs" in out  # an older predictor's: not counted
    assert "STALE" not in out


def test_profile_stale_re_measures_just_the_stale_cells(stale_home, tmp_path, capsys):
    settings, acc = stale_home
    out_dir = tmp_path / "sweep"
    args = ["--home", str(settings.home), "profile", "--stale", "--steps", "1,2"]
    assert main([*args, "--prompts", "1", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert f"stale: toy-s@1.0 on {acc} (batch 1)" in out and "re-measuring" in out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["config"]["models"] == ["toy-s"]
    assert manifest["grid_cells"] == 2 and manifest["rows"] == 2
