"""Invariants of every run: terminal states add up, jobs only run where their model
can, no accelerator does more than one thing at a time, work is conserved."""

import numpy as np
import pytest

from scheduler.cluster import Cluster
from scheduler.comparison import estimate_capacity
from scheduler.job_table import JOB_ARRAYS
from scheduler.policies import known_policies, make_policy, policy_class
from scheduler.segments import Arithmetic
from scheduler.simulator import SimConfig, Simulator, simulate
from scheduler.workload import SloClass, bursty_arrivals, make_workload, slo_mix
from sdaas.errors import InvalidInputError
from sdaas.job_status import JobStatus
from tests.scheduler.conftest import assert_copies_are_the_resident_models, gb_catalog, jobs

CLUSTER = Cluster.parse("4xA100+4xT4")


@pytest.fixture(scope="module")
def overloaded(catalog, mixed):
    cap = estimate_capacity(catalog, CLUSTER, mixed, jobs=400)
    rng = np.random.default_rng(3)
    return make_workload("b", bursty_arrivals(1.2 * cap, 4000, rng), mixed, rng, pred_error=0.3)


@pytest.mark.parametrize("policy", known_policies())
def test_every_job_ends_in_exactly_one_terminal_state(catalog, overloaded, policy):
    r = simulate(catalog, CLUSTER, make_policy(policy), overloaded)
    counts = {
        s: int((r.status == s).sum())
        for s in (JobStatus.DONE, JobStatus.REJECTED, JobStatus.DROPPED)
    }
    assert sum(counts.values()) == overloaded.n
    if policy_class(policy).completes_all:
        assert counts[JobStatus.DONE] == overloaded.n
    assert (r.finish >= r.arrival - 1e-12).all()
    done = r.status == JobStatus.DONE
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
    served = r.true_work_s[r.status == JobStatus.DONE].sum()
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


def test_queue_per_device_joins_the_least_loaded_device_and_stays_there():
    """Serving's mode: identical devices share a profile, not a queue. A job joins the
    device with the least queued predicted work and waits there, even when the other
    frees first because a job ran longer than predicted; one shared queue would move it."""
    import numpy as np

    from scheduler.cluster import Cluster
    from scheduler.policies import make_policy
    from scheduler.simulator import SimConfig, Simulator
    from scheduler.workload import SloClass, Workload
    from tests.scheduler.conftest import toy_catalog

    five, one = SloClass("any", 1e6, 50.0), SloClass("any", 1e6, 10.0)
    w = Workload("hand", np.array([0.0, 0.0, 0.1]), np.array([0, 0, 1]), (five, one),
                 np.array([2.0, 1.0, 1.0]), np.zeros(3))  # A: 5 s predicted, 10 s true  # fmt: skip
    finish = {}
    for per_device in (True, False):
        cfg = SimConfig(clip_margin=0.0, clip_noise=0.0, queue_per_device=per_device, log=True)
        sim = Simulator(toy_catalog(), Cluster.parse("2xX"), make_policy("fcfs"), cfg)
        finish[per_device] = list(sim.run(w).finish)
    assert finish[True] == pytest.approx([10.0, 5.0, 11.0])  # C queued behind A on device 0
    assert finish[False] == pytest.approx([10.0, 5.0, 6.0])  # the shared queue gives C to 1


class Recording(Arithmetic):
    """The simulator's own runner, counting what it is asked."""

    def __init__(self, core):
        super().__init__(core)
        self.runs = self.cuts = 0

    def run(self, i, batch, work_start, work, factor):
        self.runs += 1
        return super().run(i, batch, work_start, work, factor)

    def cut(self, i, t):
        self.cuts += 1
        super().cut(i, t)


def test_every_segment_and_every_cut_goes_through_the_runner(catalog, overloaded):
    sim = Simulator(catalog, CLUSTER, make_policy("srpt-oracle"), SimConfig(log=True))
    sim.runner = runner = Recording(sim)
    r = sim.run(overloaded)
    default = simulate(catalog, CLUSTER, make_policy("srpt-oracle"), overloaded)
    assert np.array_equal(r.finish, default.finish, equal_nan=True)
    assert runner.runs == sum(1 for e in sim.log if e[0] == "run") and runner.cuts > 0


def test_every_per_job_array_grows_with_the_jobs(catalog, overloaded):
    sim = Simulator(catalog, CLUSTER, make_policy("sjf"))
    sim.begin(overloaded)
    sim.add_jobs([1e9], [0], [1.0])  # as the live core adds them
    assert {len(getattr(sim, name)) for name in JOB_ARRAYS} == {overloaded.n + 1}


@pytest.mark.parametrize("policy", ["sjf", "slack-sjf"])
def test_the_copies_placement_counts_are_the_resident_models(catalog, overloaded, policy):
    sim = Simulator(catalog, CLUSTER, make_policy(policy))
    sim.run(overloaded)
    assert any(sim.resident)
    assert_copies_are_the_resident_models(sim)


def _one_after_another(order: list[str]):
    """One job of each model in `order`, 10 s apart (each runs alone, 1 s)."""
    classes = {m: SloClass(m, 100.0, 0.0) for m in order}
    return jobs([(classes[m], 10.0 * i) for i, m in enumerate(order)])


EXACT = SimConfig(clip_margin=0.0, clip_noise=0.0)


def test_a_load_evicts_the_least_recently_used_until_it_fits():
    """a, b, c (2 GB each), then X (6.5 GB) on one 8.5 GB device: X evicts a and b, the
    least recently used, and c stays; c runs again (most recent now), then a evicts X.
    Under a count of 3 each load evicts one model, the least recently used."""
    order = ["a", "b", "c", "X", "c", "a"]
    for cat, after_x, end in (
        (gb_catalog(), ["c", "X"], ["c", "a"]),
        (gb_catalog(None, 3), ["b", "c", "X"], ["X", "c", "a"]),
    ):
        sim = Simulator(cat, Cluster.parse("1xG"), make_policy("fcfs"), EXACT)
        r = sim.run(_one_after_another(order[:4]))
        assert (r.status == JobStatus.DONE).all()
        assert [cat.models[m] for m in sim.resident[0]] == after_x
        r = sim.run(_one_after_another(order))
        assert [cat.models[m] for m in sim.resident[0]] == end
        assert sim.used[0] == pytest.approx(sum(cat.weight[m] for m in sim.resident[0]))
        # c's second run found it resident: 5 loads of 0.5 s, 6 jobs of 1 s
        assert sum(r.busy_s) == pytest.approx(6 * 1.0 + 5 * 0.5)
        assert_copies_are_the_resident_models(sim)


def test_a_load_goes_where_the_newcomer_fits_not_where_a_count_has_room():
    """Idle instance 1 holds b, c, d (6 GB), instance 0 holds a (2 GB): X (6.5 GB) fits
    only beside a. A count of 4 sees room on both and takes the most recently idled (1),
    evicting nothing; the memory rule takes 0, which evicts nothing, rather than 1, which
    would evict the only copies of b and c."""
    for cat, chosen in ((gb_catalog(), 0), (gb_catalog(None, 4), 1)):
        sim = Simulator(cat, Cluster.parse("2xG"), make_policy("fcfs"), EXACT)
        sim.begin(_one_after_another(["X"]))
        for i, held in ((0, [0]), (1, [1, 2, 3])):
            sim.resident[i][:] = held
            sim.used[i] = sum(cat.weight[m] for m in held)
            for m in held:
                sim.copies[0][m] = 1
        sim.idle[0] = [0, 1]  # instance 1 idled last: looked at first
        sim.model[0] = cat.models.index("X")
        assert sim._idle_for(0, 0) == chosen
