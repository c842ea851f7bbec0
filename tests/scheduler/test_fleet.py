"""Fleet arrangements (scheduler/fleet.py): central is one core over every GPU, per-host
arrangements are independent cores over each host's share of the jobs, the router does
what it says, and every arrived job is counted once."""

import numpy as np
import pytest

from scheduler.capacity_planning import smallest
from scheduler.cluster import Cluster
from scheduler.fleet import (
    ARRANGEMENTS,
    class_options,
    fleet_workload,
    host_budget,
    host_cluster,
    hosts_needed,
    predicted_plan,
    random_pairs,
    route_po2,
    route_po2_models,
    run_fleet,
)
from scheduler.metrics import summarize
from scheduler.policies import make_policy
from scheduler.production_workload import production_catalog
from scheduler.simulator import SimConfig, Simulator
from scheduler.workload import Workload
from sdaas.errors import InvalidInputError
from sdaas.job_status import JobStatus
from tests.scheduler.conftest import workload

REF = Cluster.parse("8xA100+8xT4")
HOST = Cluster.parse("4xA100+4xT4")


@pytest.fixture(scope="module")
def prod():
    """The production-like catalog and ~1,200 jobs of it: about one 8-GPU host's load."""
    cat, _ = production_catalog(REF.kinds, 86)
    return cat, fleet_workload(cat, 1.2 * 1.6435 / 16 * 8, 1000.0, seed=3)


def _same(a, b):
    for f in ("status", "start", "finish", "kind", "model", "steps", "clip"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def test_host_is_the_unit_mix_scaled():
    assert host_cluster(REF) == HOST
    assert host_cluster(Cluster.parse("2xA100"), 8) == Cluster.parse("8xA100")
    with pytest.raises(InvalidInputError, match="gpus_per_host"):
        host_cluster(Cluster.parse("1xA100+2xT4"), 8)  # 3-GPU unit


def test_central_is_one_simulator_over_all_gpus(catalog, mixed):
    w = workload(mixed, 40.0, 1500, seed=1)
    r = run_fleet(catalog, HOST, 2, "central", w, "slack-sjf")
    alone = Simulator(catalog, REF, make_policy("slack-sjf"), SimConfig()).run(w)
    _same(r.result, alone)
    assert r.gpus == 16 and r.summary == summarize(alone)


def test_random_with_one_host_is_central(prod):
    cat, w = prod
    cfg = SimConfig().for_target(0.9)
    central = run_fleet(cat, HOST, 1, "central", w, "slack-sjf", cfg)
    for arrangement in ("random", "po2", "po2-models"):
        r = run_fleet(cat, HOST, 1, arrangement, w, "slack-sjf", cfg, seed=5)
        assert (r.host_of == 0).all()
        _same(r.result, central.result)
        assert r.goodput == central.goodput


def test_each_host_runs_alone_on_its_jobs(prod):
    """Per-host arrangements: what each host's jobs get is what a lone Simulator over
    that host gives them (its own class table, nothing shared)."""
    cat, w = prod
    r = run_fleet(cat, HOST, 3, "po2", w, "slack-sjf", seed=2)
    assert set(np.unique(r.host_of)) == {0, 1, 2}
    for h in range(3):
        idx = np.flatnonzero(r.host_of == h)
        sub = Workload(w.name, w.arrival[idx], w.cls[idx], w.classes, w.true_factor[idx],
                       w.clip_noise[idx])  # fmt: skip
        alone = Simulator(cat, HOST, make_policy("slack-sjf"), SimConfig()).run(sub)
        for f in ("status", "finish", "steps", "clip"):
            np.testing.assert_array_equal(getattr(r.result, f)[idx], getattr(alone, f))


def test_po2_sends_a_job_to_the_less_loaded_of_its_two_hosts():
    arrival = np.array([0.0, 9.0, 10.0, 100.0, 100.0, 100.0])
    pred = np.array([80.0, 20.0, 1.0, 1.0, 50.0, 10.0])
    pairs = np.array([[0, 1], [0, 1], [0, 1], [1, 0], [1, 2], [1, 2]])
    got = route_po2(arrival, pred, pairs, gpus_per_host=8)
    # j0: a tie, the first; j1: host 0 still has 80 - 8*9 = 8 s; j2: host 0 has drained
    # to 0, host 1 has 20 - 8 = 12 s (undrained counts would send it to 1); j3: both are
    # at 0, not below (negative counts would send it to 0); j4: host 1 has j3's 1 s;
    # j5: host 1 (1 s) over host 2 (50 s), though host 0 is empty: not one of its two
    assert got.tolist() == [0, 1, 0, 1, 2, 1]


def _po2_models(arrival, pred, model, pairs, slots=20, load=7.0):
    arrival, pred, model = np.asarray(arrival, float), np.asarray(pred, float), np.asarray(model)
    load_s = np.full(len(arrival), load)
    return route_po2_models(arrival, pred, model, load_s, np.asarray(pairs), 8, slots).tolist()


def test_po2_models_prefers_the_host_that_holds_the_model():
    """j2 runs model 0, which host 0 got with j0: host 0 has more work per GPU (23 / 8 =
    2.9 s: j0's 16 s and its 7 s load) than host 1 (15 / 8 = 1.9 s), but host 1 would
    load the model (+7 s); po2 sends j2 to host 1. j3: host 0 is not one of its two
    random hosts but, as the host that last got model 0, its third candidate: it beats
    the empty host 2 (0 + 7 s)."""
    arrival = [0.0, 0.0, 0.0, 0.0]
    pred, model = [16.0, 8.0, 1.0, 1.0], [0, 1, 0, 0]
    pairs = [[0, 1], [1, 0], [1, 0], [1, 2]]
    assert _po2_models(arrival, pred, model, pairs) == [0, 1, 0, 0]
    assert route_po2(np.asarray(arrival), np.asarray(pred), np.asarray(pairs), 8)[2] == 1


def test_po2_models_lets_load_dominate_the_model_held():
    """Host 0 holds model 0 but has 807 / 8 = 101 s of work per GPU: the idle host 1
    wins though it must load the model (7 s), and is then the model's last host."""
    got = _po2_models([0.0, 0.0, 0.0], [800.0, 1.0, 1.0], [0, 0, 0], [[0, 1], [0, 1], [0, 0]])
    assert got == [0, 1, 1]  # j2: only host 0 in its pair, host 1 is its last host


def test_po2_models_forgets_models_beyond_a_hosts_slots():
    """With one slot, model 1 (forced onto host 0 by its pair) evicts model 0 there: at
    t=100, all drained, hosts 1 and 0 both score a load and the tie goes to the first.
    With two slots host 0 still holds model 0 and wins."""
    args = ([0.0, 0.0, 100.0], [1.0, 1.0, 1.0], [0, 1, 0], [[0, 1], [0, 0], [1, 0]])
    assert _po2_models(*args, slots=1) == [0, 0, 1]
    assert _po2_models(*args, slots=2) == [0, 0, 0]


def test_po2_models_believes_a_host_holds_what_fits_its_budget():
    """Models 0-2 (2 GB) then 3 (6.5 GB) forced onto host 0, whose 8.5 GB the router
    believes full: 3 evicts 0 and 1 (the least recently routed), not 2. At t=100 model
    2 goes back to host 0 (held), model 1 scores a load on both hosts and the tie goes
    to host 1. As a count of 3, 3 evicts only 0, and model 1 stays on host 0."""
    arrival = np.asarray([0.0, 0.0, 0.0, 0.0, 100.0, 100.0])
    pred, model = np.ones(6), np.asarray([0, 1, 2, 3, 2, 1])
    pairs = np.asarray([[0, 0]] * 4 + [[1, 0], [1, 0]])
    load = np.full(6, 7.0)
    gb = route_po2_models(arrival, pred, model, load, pairs, 8, 8.5, [2.0, 2.0, 2.0, 6.5])
    assert gb.tolist() == [0, 0, 0, 0, 0, 1]
    assert route_po2_models(arrival, pred, model, load, pairs, 8, 3).tolist() == [0] * 6


def test_po2_models_routes_by_the_plans_model_and_the_hosts_budget(prod):
    cat, w = prod
    # memory: 4 x (A100 80 GB - 30.5 for SDXL at batch 8 - 1) + 4 x (T4 16 - 1.1 - 1)
    assert host_budget(cat, HOST) == pytest.approx(4 * 48.52 + 4 * 13.86, abs=0.05)
    count, _ = production_catalog(REF.kinds, 86, residency="count")
    assert host_budget(count, HOST) == 4 * 4 + 4 * 1  # the count: models
    r = run_fleet(cat, HOST, 4, "po2-models", w, "slack-sjf", seed=2)
    _, model = predicted_plan(class_options(cat, HOST, w, "slack-sjf", SimConfig()), w)
    # the job's model is the one its host ran (one model per checkpoint style)
    np.testing.assert_array_equal(r.result.model, model)
    # model-aware routing spreads a model over few hosts: fewer (host, model) pairs
    po2 = run_fleet(cat, HOST, 4, "po2", w, "slack-sjf", seed=2)
    pairs = {(h, m) for h, m in zip(r.host_of.tolist(), model.tolist(), strict=True)}
    pairs_po2 = {(h, m) for h, m in zip(po2.host_of.tolist(), model.tolist(), strict=True)}
    assert len(pairs) < len(pairs_po2)


def test_random_pairs_are_two_distinct_hosts():
    p = random_pairs(5000, 7, np.random.default_rng(0))
    assert (p[:, 0] != p[:, 1]).all() and p.min() == 0 and p.max() == 6
    assert (random_pairs(10, 1, np.random.default_rng(0)) == 0).all()


def test_every_arrived_job_is_counted_once(prod):
    cat, w = prod
    busy = Workload(w.name, w.arrival / 3.0, w.cls, w.classes, w.true_factor, w.clip_noise)
    for arrangement in ARRANGEMENTS:
        r = run_fleet(cat, HOST, 2, arrangement, busy, "slack-sjf", seed=1)
        s = r.result.status
        done, rej, drop = (s == JobStatus.DONE), (s == JobStatus.REJECTED), (s == JobStatus.DROPPED)
        assert (done | rej | drop).all(), arrangement
        assert done.sum() + rej.sum() + drop.sum() == w.n == r.summary["jobs"]
        assert rej.sum() + drop.sum() > 0, "the case must lose jobs to test the count"
        assert r.lost_share == pytest.approx((w.n - done.sum()) / w.n)
        assert np.bincount(r.host_of, minlength=2).sum() == w.n
        assert len(r.result.busy_s) == 16
        assert r.goodput <= done.mean()


def test_smallest_finds_the_threshold_from_any_start():
    for start in (1, 5, 37, 60, 1000):
        calls = []

        def meets(u, calls=calls):
            calls.append(u)
            return u >= 37

        assert smallest(meets, start, 200) == 37
        assert len(set(calls)) <= 2 * 8 + 2
    assert smallest(lambda u: u >= 300, 4, 200) is None
    assert smallest(lambda u: True, 16, 200) == 1


def test_smallest_narrows_with_known_sizes():
    """Sizes known from an earlier search (cheap to ask again) narrow the bisection:
    from 1, doubling meets at 64; known 40 (met) and 36 (not) leave 37-39 to try."""
    calls = []

    def meets(u):
        calls.append(u)
        return u >= 37

    assert smallest(meets, 1, 128, known=[36, 40]) == 37
    assert calls[:7] == [1, 2, 4, 8, 16, 32, 64]
    assert set(calls[7:]) <= {36, 40, 37, 38, 39}


def test_hosts_needed_is_a_simulated_size_that_meets_the_target(prod):
    cat, w = prod
    (need,) = hosts_needed(cat, HOST, w, "random", targets=(0.75,), start=2, max_hosts=16)
    assert need.hosts is not None and need.gpus == need.hosts * 8
    curve = {h: g for h, g, _ in need.curve}
    assert curve[need.hosts] >= 0.75 and need.goodput == curve[need.hosts]
    if need.hosts > 1:
        assert curve[need.hosts - 1] < 0.75


def test_unknown_arrangement_is_refused(prod):
    cat, w = prod
    with pytest.raises(InvalidInputError, match="arrangement"):
        run_fleet(cat, HOST, 2, "round-robin", w)
