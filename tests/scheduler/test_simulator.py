"""Invariants of every run: terminal states add up, jobs only run where their model
can, no accelerator does more than one thing at a time, work is conserved."""

import numpy as np
import pytest

from scheduler.cluster import Cluster
from scheduler.comparison import estimate_capacity
from scheduler.policy import known_policies, make_policy, policy_class
from scheduler.simulator import DONE, DROPPED, REJECTED, SimConfig, simulate
from scheduler.workload import bursty_arrivals, make_workload, slo_mix
from sdaas.errors import InvalidInputError

CLUSTER = Cluster.parse("4xA100+4xT4")


@pytest.fixture(scope="module")
def overloaded(catalog, mixed):
    cap = estimate_capacity(catalog, CLUSTER, mixed, jobs=400)
    rng = np.random.default_rng(3)
    return make_workload("b", bursty_arrivals(1.2 * cap, 4000, rng), mixed, rng, pred_error=0.3)


@pytest.mark.parametrize("policy", known_policies())
def test_every_job_ends_in_exactly_one_terminal_state(catalog, overloaded, policy):
    r = simulate(catalog, CLUSTER, make_policy(policy), overloaded)
    counts = {s: int((r.status == s).sum()) for s in (DONE, REJECTED, DROPPED)}
    assert sum(counts.values()) == overloaded.n
    if policy_class(policy).completes_all:
        assert counts[DONE] == overloaded.n
    assert (r.finish >= r.arrival - 1e-12).all()
    done = r.status == DONE
    assert (r.start[done] >= r.arrival[done] - 1e-12).all()
    # a job runs at most at batch-1 speed, so it takes at least its true work
    assert (r.finish[done] - r.start[done] >= r.true_work_s[done] * (1 - 1e-9)).all()
    assert np.isnan(r.clip[~done]).all() and not np.isnan(r.clip[done]).any()


@pytest.mark.parametrize("policy", known_policies())
def test_jobs_only_run_on_accelerators_that_can_run_their_model(catalog, overloaded, policy):
    r = simulate(catalog, CLUSTER, make_policy(policy), overloaded)
    placed = r.kind >= 0
    ck = [catalog.kind_index(k) for k in r.kinds]
    pairs = set(zip(r.model[placed].tolist(), r.kind[placed].tolist(), strict=True))
    assert all(catalog.can_run(m, ck[k]) for m, k in pairs)
    on_t4 = {r.models[m] for m, k in pairs if r.kinds[k] == "T4"}
    assert on_t4 == {"sd-1.5"}  # T4 got work, and only the model profiled on it


@pytest.mark.parametrize("policy", known_policies())
def test_no_accelerator_is_busier_than_the_clock(catalog, overloaded, policy):
    r = simulate(catalog, CLUSTER, make_policy(policy), overloaded)
    horizon = np.nanmax(r.finish) - 0.0
    assert (r.busy_s <= horizon + 1e-6).all()


@pytest.mark.parametrize("policy", known_policies())
def test_work_is_conserved(catalog, overloaded, policy):
    """Without model loads, busy time = the true work served (one job at a time, any
    preemption), or less when batches share steps."""
    r = simulate(catalog, CLUSTER, make_policy(policy), overloaded, SimConfig(cold_start=False))
    served = r.true_work_s[r.status == DONE].sum()
    if policy_class(policy).batching:
        assert r.busy_s.sum() <= served * (1 + 1e-9)
    else:
        assert r.busy_s.sum() == pytest.approx(served, rel=1e-9)


def test_a_class_no_accelerator_can_serve_is_an_error(catalog):
    classes = slo_mix("mixed", ["sketch"])  # sketch: sd-1.5, sd-turbo, sdxs
    w = make_workload("x", np.arange(10.0), classes, np.random.default_rng(0))
    w.classes = (w.classes[0].__class__("sketch", 5.0, 99.0),)
    w.cls[:] = 0
    with pytest.raises(InvalidInputError, match="no model on cluster 4xA100\\+4xT4 serves"):
        simulate(catalog, CLUSTER, make_policy("fcfs"), w)


def test_same_workload_same_result(catalog, overloaded):
    a = simulate(catalog, CLUSTER, make_policy("slack-sjf"), overloaded)
    b = simulate(catalog, CLUSTER, make_policy("slack-sjf"), overloaded)
    assert np.array_equal(a.finish, b.finish, equal_nan=True)
