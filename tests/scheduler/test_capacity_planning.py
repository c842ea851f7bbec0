"""Capacity planning finds the smallest cluster that meets an attainment, on a case
where the answer can be counted by hand."""

import numpy as np
import pytest

from scheduler.capacity_planning import gpus_needed, scaled, unit_mix
from scheduler.catalog import single_model_catalog
from scheduler.cluster import Cluster
from scheduler.simulator import SimConfig
from scheduler.workload import SloClass, Workload
from sdaas.errors import InvalidInputError

EXACT = SimConfig(clip_margin=0.0, clip_noise=0.0, cold_start=False)


def burst(k: int, slo_s: float) -> Workload:
    """k jobs at t=0 and one an hour later; each takes 1 s."""
    arrival = np.r_[np.zeros(k), 3600.0]
    n = k + 1
    return Workload("burst", arrival, np.zeros(n, int), (SloClass("any", slo_s, 0.0),),
                    np.ones(n), np.zeros(n))  # fmt: skip


def test_unit_mix_and_scaling():
    assert str(unit_mix(Cluster.parse("8xA100+8xT4"))) == "1xA100+1xT4"
    assert str(unit_mix(Cluster.parse("6xA100+2xT4"))) == "3xA100+1xT4"
    assert str(scaled(Cluster.parse("3xA100+1xT4"), 4)) == "12xA100+4xT4"


def test_the_smallest_cluster_for_each_target():
    """19 one-second jobs at once with a 1.0 s SLO: N instances serve N of them in time,
    and the late job always makes it: attainment (N + 1) / 20."""
    cat = single_model_catalog(1.0)
    needs = gpus_needed(cat, Cluster.parse("4xX"), ["fcfs"], burst(19, 1.0), EXACT)
    by = {n.target: n for n in needs}
    assert [by[t].gpus for t in (0.90, 0.95, 0.99)] == [17, 18, 19]
    assert by[0.90].units == 17  # units of 1xX
    assert by[0.95].gpu_hours == 18.0  # over one hour of arrivals
    assert by[0.99].best == 1.0


def test_a_target_no_cluster_reaches_says_never():
    cat = single_model_catalog(1.0)
    needs = gpus_needed(cat, Cluster.parse("1xX"), ["fcfs"], burst(3, 0.5), EXACT,
                        targets=(0.9,), max_units=4)  # fmt: skip
    assert needs[0].units is None and needs[0].gpus is None and needs[0].best == 0.0


def test_a_down_shifting_policy_is_planned_with_the_clip_risk_each_target_allows(monkeypatch):
    """slack-sjf's 99 % answer comes from runs at the 99 % margin (SimConfig.for_target),
    its 90 % answer from runs at the 90 % one; fcfs ignores the margin and runs once."""
    from scheduler import capacity_planning

    margins: list[tuple[str, float]] = []
    real = capacity_planning.Simulator

    def recording(catalog, cluster, policy, cfg):
        margins.append((policy.key.value, cfg.relaxed_margin))
        return real(catalog, cluster, policy, cfg)

    monkeypatch.setattr(capacity_planning, "Simulator", recording)
    cat = single_model_catalog(1.0)
    cfg = SimConfig(clip_margin=2.0, clip_noise=0.5, cold_start=False)
    gpus_needed(cat, Cluster.parse("1xX"), ["slack-sjf", "fcfs"], burst(3, 10.0), cfg,
                targets=(0.90, 0.99))  # fmt: skip
    ours = {m for p, m in margins if p == "slack-sjf"}
    assert ours == {cfg.for_target(0.90).relaxed_margin, cfg.for_target(0.99).relaxed_margin}
    assert {m for p, m in margins if p == "fcfs"} == {cfg.relaxed_margin}


def test_the_down_shift_margin_grows_with_the_goodput_asked_for():
    cfg = SimConfig()  # noise 0.5, planner margin 1.2
    assert cfg.for_target(0.90).relaxed_margin == pytest.approx(0.64, abs=0.005)
    assert cfg.for_target(0.95).relaxed_margin == pytest.approx(0.82, abs=0.005)
    assert cfg.for_target(0.99).relaxed_margin == pytest.approx(1.16, abs=0.005)
    assert cfg.for_target(1.0).relaxed_margin == cfg.clip_margin  # capped by the planner's
    assert cfg.for_target(0.3).relaxed_margin == 0.0  # never below min CLIP
    with pytest.raises(InvalidInputError, match="goodput target"):
        cfg.for_target(1.5)
