"""bench/gpu_check.py, the one-shot GPU check, in its --smoke form: the same code paths on
the CPU with tiny shapes, so a lent GPU's few minutes are not spent finding a bug."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"
SD15_UNET_PARAMS = 859_520_964  # SD 1.5's UNet: the hard-coded config is the real one


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)  # fmt: skip


def load(path: Path) -> dict:
    assert path.is_file(), f"{path} missing"
    return json.loads(path.read_text())


def test_smoke_writes_every_part(tmp_path):
    r = run("--smoke", "--out", str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "unet_step" in r.stdout and "engine" in r.stdout  # progress as it goes

    summary = load(tmp_path / "summary.json")
    assert summary["smoke"] is True
    assert summary["environment"]["torch"] and summary["environment"]["device"] == "cpu"
    assert "--smoke" in summary["command"] and summary["wall_s"] > 0
    assert len(summary["host"]["load_avg_before"]) == 3
    assert {k: v["status"] for k, v in summary["parts"].items()} == {
        "unet_step": "ok", "engine": "ok", "sim_to_real": "skipped"}  # fmt: skip
    assert not summary["budget_exceeded"]

    unet = load(tmp_path / "unet_step.json")
    assert unet["status"] == "ok"
    assert unet["model"]["sd15_config_params"] == SD15_UNET_PARAMS
    assert set(unet["per_batch"]) == {"1", "2"}
    for b, row in unet["per_batch"].items():
        assert row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"] > 0
        assert row["unet_batch"] == 2 * int(b)  # classifier-free guidance doubles it
    assert unet["batch_factor"]["1"] == 1.0 and unet["batch_factor"]["2"] > 0

    engine = load(tmp_path / "engine.json")
    assert engine["status"] == "ok"
    arms = engine["arms"]
    assert set(arms) == {"one_at_a_time_pipeline", "one_at_a_time_stepped",
                         "stepped_batches_of_2"}  # fmt: skip
    for arm in arms.values():
        assert arm["jobs_per_s"] > 0 and arm["step"]["median_ms"] > 0
        assert arm["speedup_vs_one_at_a_time_pipeline"] > 0
    assert arms["stepped_batches_of_2"]["batch"] == 2

    s2r = load(tmp_path / "sim_to_real.json")
    assert s2r["status"] == "skipped" and "--sim-smoke" in s2r["reason"]


def test_budget_spent_skips_parts_and_says_so(tmp_path):
    r = run("--smoke", "--out", str(tmp_path), "--budget-s", "0", "--parts", "unet_step,engine")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = load(tmp_path / "summary.json")
    assert summary["budget_exceeded"] is True
    for part in ("unet_step", "engine"):
        assert summary["parts"][part]["status"] == "skipped"
        assert "budget" in load(tmp_path / f"{part}.json")["reason"]


def test_help_explains_the_run():
    r = run("--help", timeout=60)
    assert r.returncode == 0
    for word in ("--smoke", "--budget-s", "--out", "--sim-smoke", "unet_step", "sim_to_real"):
        assert word in r.stdout
