"""Admission in the policy's own order, and device instances (issue 12): real pipeline,
real planner, toy models."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from adapters.result_store import ResultStore
from models.accelerators import Accelerator
from tests.pipelines.test_serving_hardening import _job, _records, _serve_records, _spec

pytestmark = pytest.mark.slow


def _window(spec, short_slo: float):
    """Long jobs first, then one short job whose SLO is shorter than the long jobs'
    predicted work together: arrival order would charge it all of it."""
    plan = spec.planner.plan
    short = _job(min_clip=0.0, latency_slo_s=short_slo)
    long_clip = 40.0
    long_s = plan("flat", 300.0, long_clip).predicted_latency_s
    short_s = plan("flat", short_slo, 0.0).predicted_latency_s
    n = int(short_slo / long_s) + 2
    assert short_s * 2 < short_slo < n * long_s  # the case the issue describes
    return [_job(min_clip=long_clip, latency_slo_s=300.0) for _ in range(n)] + [short]


@pytest.mark.parametrize("policy, short_admitted", [("sjf", True), ("fcfs", False)])
def test_a_short_job_is_charged_only_the_work_that_runs_before_it(
    serving_settings, tmp_path, policy, short_admitted
):
    spec = replace(_spec(serving_settings, tmp_path / "results.db"), policy=policy)
    jobs = _window(spec, short_slo=1.5)
    now = time.time()
    outcomes = _serve_records(spec, _records([json.dumps(j).encode() for j in jobs], now))
    assert set(outcomes.values()) == {"result"}
    store = ResultStore(spec.store_path)
    short = store.get("alice", jobs[-1]["job_id"])
    if short_admitted:  # SJF runs it first, so it is charged (nearly) nothing
        assert short.status == "done" and short.run_order == 0, short.error
        assert short.latency_slo_met
    else:  # FCFS runs it last: it really would wait for every long job
        assert short.status == "rejected"
        assert "queued" in short.error and "+ run" in short.error
    longs = [store.get("alice", j["job_id"]) for j in jobs[:-1]]
    assert all(r.status == "done" for r in longs)


def test_two_devices_with_the_same_name_both_receive_work(serving_settings, tmp_path):
    spec = _spec(serving_settings, tmp_path / "results.db", max_backlog_s=0.0)
    (acc,) = spec.accelerators
    two = (Accelerator("cpu", acc, "cpu-a"), Accelerator("cpu", acc, "cpu-b"))
    spec = replace(spec, devices=two)
    jobs = [_job() for _ in range(3)]
    _serve_records(spec, _records([json.dumps(j).encode() for j in jobs], time.time()))
    got = [ResultStore(spec.store_path).get("alice", j["job_id"]) for j in jobs]
    done = sorted(r.device for r in got if r.status == "done")
    assert done == ["cpu-a", "cpu-b"]  # one each: the bound is per device, not per name
    (rejected,) = [r for r in got if r.status == "rejected"]
    assert "overloaded" in rejected.error and all(r.accelerator == acc for r in got)
