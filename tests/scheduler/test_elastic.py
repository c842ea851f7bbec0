"""The elastic cluster: the same policies on a pool whose instances come and go."""

from dataclasses import replace

import numpy as np
import pytest

from scheduler.catalog import single_model_catalog
from scheduler.cluster import Cluster
from scheduler.elastic import Autoscaler, ElasticSimulator, wanted
from scheduler.policies import make_policy
from scheduler.simulator import SimConfig, Simulator
from scheduler.workload import SloClass, Workload
from sdaas.job_status import JobStatus
from tests.scheduler.conftest import assert_copies_are_the_resident_models, gb_catalog

CFG = SimConfig(clip_margin=0.0, clip_noise=0.0, cold_start=False)


def steady(rate: float, seconds: float, then_quiet_s: float) -> Workload:
    """Jobs of 1 s at `rate`/s for `seconds`, then one job after a quiet spell."""
    arrival = np.r_[np.arange(0.0, seconds, 1.0 / rate), seconds + then_quiet_s]
    n = len(arrival)
    return Workload("steady", arrival, np.zeros(n, int), (SloClass("any", 30.0, 0.0),),
                    np.ones(n), np.zeros(n))  # fmt: skip


def test_the_pool_grows_after_the_delay_shrinks_when_idle_and_bills_what_was_up():
    """3 jobs/s of 1 s work: at 50 % target use the signal asks for 6 instances, more
    while the queue that built during the delay drains; they come up 60 s after they are
    asked for, and after the quiet spell's idle time the pool is back to one instance."""
    scaler = Autoscaler(start=1, tick_s=30, window_s=60, target_util=0.5, delay_s=(60, 60),
                        idle_s=300, models_window_s=60)  # fmt: skip
    sim = ElasticSimulator(single_model_catalog(1.0), Cluster.parse("10xX"), make_policy("fcfs"),
                           CFG, scaler)  # fmt: skip
    w = steady(3.0, 1200.0, 3000.0)
    r = sim.run(w)
    assert (r.status == JobStatus.DONE).all()
    ups = dict(sim.timeline)
    assert ups[30] > 1 and ups[60] >= 6 and max(ups.values()) <= 10  # asked for early
    assert 5 <= ups[1200] <= 7  # the steady state: 3 s of work a second at 50 %
    assert ups[max(t for t in ups if t < 1200 + 3000)] == 1  # shrunk back in the spell
    jct = r.finish - r.arrival
    # asked for at t=30, up at t=90: until then one instance, and a queue builds ...
    assert jct[(w.arrival > 60) & (w.arrival < 90)].max() > 30
    # ... which the grown pool drains; later jobs wait no more than their run
    assert jct[(w.arrival > 600) & (w.arrival < 1200)].max() <= 2.0
    hours = np.nanmax(r.finish) / 3600
    assert 1.5 * hours < sim.gpu_hours < 0.5 * 10 * hours  # more than the floor, not all
    # instances that went away took their models with them
    assert_copies_are_the_resident_models(sim)


def test_a_pool_that_never_scales_decides_as_the_fixed_cluster():
    """Every instance up from the start and none going away: the elastic simulator makes
    the fixed simulator's decisions (it only adds scaling events)."""
    rng = np.random.default_rng(0)
    n = 400
    arrival = np.cumsum(rng.exponential(0.4, n))
    w = Workload("p", arrival, np.zeros(n, int), (SloClass("any", 3.0, 0.0),),
                 np.exp(rng.normal(0, 0.3, n)), np.zeros(n))  # fmt: skip
    cat, cluster = single_model_catalog(1.0), Cluster.parse("3xX")
    for policy in ("sjf", "slack-sjf"):
        fixed = Simulator(cat, cluster, make_policy(policy), CFG).run(w)
        scaler = Autoscaler(start=3, idle_s=float("inf"))
        elastic = ElasticSimulator(cat, cluster, make_policy(policy), CFG, scaler).run(w)
        assert list(elastic.status) == list(fixed.status)
        assert np.allclose(elastic.finish, fixed.finish, equal_nan=True)


def test_bad_pool_sizes_are_clamped_to_one():
    sim = ElasticSimulator(single_model_catalog(1.0), Cluster.parse("2xX"), make_policy("fcfs"),
                           CFG, Autoscaler(start=0))  # fmt: skip
    r = sim.run(steady(1.0, 10.0, 1.0))  # over before the first tick: one instance
    assert (r.status == JobStatus.DONE).all() and sim.n_inst == [1]
    assert sim.gpu_hours == pytest.approx(np.nanmax(r.finish) / 3600)


def test_the_models_held_ask_for_their_gb_over_a_devices_budget():
    """X (6.5 GB) and a, b, c (2 GB each) asked for in the window, with next to no work:
    12.5 GB over an 8.5 GB budget wants 2 instances; three X-sized models would want 3.
    The same four as a count of 4 a device want 1."""
    sc = Autoscaler(start=1, window_s=60, models_window_s=600)
    recent = [(100.0 + i, 0.01, m) for i, m in enumerate([4, 0, 1, 2, 0])]
    mem, count = gb_catalog(), gb_catalog(None, 4)
    assert wanted(sc, recent, 110.0, 0.0, 1, mem, 0) == 2
    assert wanted(sc, recent, 110.0, 0.0, 1, count, 0) == 1
    heavy = replace(mem, size_gb={**mem.size_gb, 0: 6.5, 1: 6.5})
    assert wanted(sc, recent, 110.0, 0.0, 1, heavy, 0) == 3
    # out of the models window: nothing held, the least kept
    assert wanted(sc, recent, 110.0 + 600.0, 0.0, 1, mem, 0) == 1
