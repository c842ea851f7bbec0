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


def test_gpus_needed_on_a_trace_file(tmp_path):
    """A trace file's arrivals, as they are recorded: 19 requests at 0 ms and one an hour
    later, each 1 s with a 1 s SLO: the same hand count as the burst above."""
    from scheduler.workload import read_trace

    f = tmp_path / "burst.txt"
    f.write_text("".join("0,x\n" for _ in range(19)) + "3600000,x\n")
    arrival = read_trace(f)
    n = len(arrival)
    w = Workload("trace:burst", arrival, np.zeros(n, int), (SloClass("any", 1.0, 0.0),),
                 np.ones(n), np.zeros(n))  # fmt: skip
    needs = gpus_needed(single_model_catalog(1.0), Cluster.parse("4xX"), ["fcfs"], w, EXACT)
    assert [x.gpus for x in needs] == [17, 18, 19]


def test_the_comparison_plans_gpus_for_any_trace_file_and_mmpp(tmp_path):
    """`trace:PATH` is a workload like the built-in ones (named by the file's stem), and
    the GPUs each policy needs are searched for it and for mmpp as for the others; the
    headline puts ours against the best baseline and the fair bound."""
    import polars as pl

    from scheduler.comparison import DEFAULT_TRACE, ComparisonConfig, run_comparison

    f = tmp_path / "mine.txt"
    f.write_text(DEFAULT_TRACE.read_text())
    cfg = ComparisonConfig(jobs=300, seeds=1, loads=(0.8,), cluster="2xA100+2xT4",
                           workloads=(f"trace:{f}", "mmpp"), plan_targets=(0.9,),
                           policies=["fcfs", "slack-sjf", "fair-bound", "srpt-oracle"])  # fmt: skip
    res = run_comparison(cfg, tmp_path / "out")
    needed = res["gpus_needed"]
    assert set(needed["workload"]) == {"trace:mine", "mmpp"}
    assert needed.height == 2 * 4 and needed["gpus"].is_not_null().sum() >= 6
    assert res["meta"]["traces"] == {"trace:mine": str(f)}
    md = (tmp_path / "out" / "summary.md").read_text()
    head = md.split("## Ours against the best baseline and the fair bound")[1].split("## GPUs")[0]
    assert "| trace:mine |" in head and "| mmpp |" in head and "ours / fair bound" in head
    assert "srpt-oracle (true-CLIP oracle, reference)" in md
    ours = needed.filter((pl.col("workload") == "mmpp") & (pl.col("policy") == "slack-sjf"))
    assert f"| mmpp | {ours['gpus'][0]} |" in head
