"""The production-like requests as simulator jobs: checkpoints with their bases' costs,
CLIP calibrated on published data, SLOs and min CLIPs derived from the steps asked, and
a planner that then serves full models in the 20-40 step range, as production does."""

import numpy as np
import polars as pl
import pytest

from scheduler.cluster import Cluster
from scheduler.comparison import ComparisonConfig, run_comparison
from scheduler.policies import make_policy
from scheduler.production import production_requests
from scheduler.production_workload import production_catalog, production_jobs, sd15_clip
from scheduler.simulator import SimConfig, Simulator
from sdaas.job_status import JobStatus

CLUSTER = Cluster.parse("2xA100+2xT4")


@pytest.fixture(scope="module")
def built():
    cat, bases = production_catalog(CLUSTER.kinds, 86)
    req = production_requests(3000, seed=4)
    return cat, bases, req, production_jobs(cat, req, np.random.default_rng(4))


def test_the_checkpoint_catalog(built):
    cat, bases, _, _ = built
    assert len(cat.models) == 86 and bases.count("sdxl") == 86 // 3
    assert all(np.isfinite(cat.latency[(r, 0)][99]) for r in range(86))  # 100 steps
    assert not cat.can_run(bases.index("sdxl"), 1)  # a T4 runs no SDXL
    # the SD 1.5 curve passes through DeepCache's points (PLMS, COCO, ViT-g/14)
    assert sd15_clip(np.array([25, 50])) == pytest.approx([29.99, 30.30], abs=0.03)
    assert sd15_clip(np.array([40]))[0] - sd15_clip(np.array([20]))[0] > 0.3  # not flat


def test_slos_and_min_clips_come_from_the_steps_asked(built):
    cat, _, req, w = built
    for i in range(0, req.n, 97):
        c, r = w.classes[i], int(req.checkpoint[i])
        a100 = cat.latency[(r, 0)]
        steps = int(req.steps[i])
        natural = a100[steps - 1] * c.work_scale
        assert 1.2 - 1e-9 <= c.latency_slo_s / natural <= 5.0 + 1e-9
        assert c.min_clip == pytest.approx(cat.clip[r][steps - 1] - SimConfig.clip_margin)
        assert c.work_scale >= (2.0 if req.lora[i] else 1.0) * (1.0 if req.images[i] == 1 else 1.2)


def test_full_models_are_served_at_20_to_40_steps(built):
    cat, bases, _, w = built
    r = Simulator(cat, CLUSTER, make_policy("fcfs"), SimConfig(cold_start=False)).run(w)
    sd15 = (r.status == JobStatus.DONE) & np.isin(
        r.model, [i for i, b in enumerate(bases) if b == "sd-1.5"]
    )
    share = ((r.steps[sd15] >= 20) & (r.steps[sd15] <= 40)).mean()
    assert share >= 0.9


def test_the_comparison_runs_the_production_workload(tmp_path):
    cfg = ComparisonConfig(jobs=800, seeds=1, loads=(0.5,), workloads=("production",),
                           cluster="2xA100+2xT4", policies=["fcfs", "slack-sjf", "srpt-oracle"],
                           plan_load=0.0)  # fmt: skip
    res = run_comparison(cfg, tmp_path)
    runs = res["runs"]
    assert runs["realised_load"].to_list() == pytest.approx([0.5] * 3, rel=1e-9)
    assert res["meta"]["capacity_jobs_per_s"]["production"] > 0
    assert runs.filter(pl.col("policy") == "srpt-oracle")["both_slo_met"][0] >= 0.9
    assert "## production: goodput" in (tmp_path / "summary.md").read_text()
