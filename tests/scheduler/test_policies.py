"""Each policy's defining behaviour on hand-built job sets with exact expected times.
Toy model: 1 s per denoising step, CLIP 10 per step, so min CLIP 50 means 5 steps."""

import numpy as np
import pytest

from scheduler.cluster import Cluster
from scheduler.policies import known_policies, make_policy, policy_class
from scheduler.policy import PolicyKey
from scheduler.simulator import SimConfig, simulate
from scheduler.workload import SloClass
from sdaas.errors import InvalidInputError
from sdaas.job_status import JobStatus
from tests.scheduler.conftest import jobs, toy_catalog

EXACT = SimConfig(clip_margin=0.0, clip_noise=0.0)
ONE = Cluster.parse("1xX")


def steps(n, slo=1e6):
    return SloClass("any", slo, n * 10.0)


def run(policy, w, catalog=None, cluster=ONE, config=EXACT):
    p = make_policy(policy) if isinstance(policy, str) else policy
    return simulate(catalog or toy_catalog(), cluster, p, w, config)


def test_every_key_is_registered_and_unknown_names_the_known_ones():
    assert set(known_policies()) == {k.value for k in PolicyKey}
    for key in known_policies():
        cls = policy_class(key)
        assert cls.__module__.startswith("scheduler.policies.") and cls.stands_for
    with pytest.raises(InvalidInputError, match="unknown; known policies: sjf, fcfs"):
        make_policy("lifo")


# A: 5 steps at t=0 (runs at once); B: 3 steps at 0.1; C: 1 step at 0.2.
ABC = [(steps(5), 0.0), (steps(3), 0.1), (steps(1), 0.2)]


def test_fcfs_serves_in_arrival_order():
    r = run("fcfs", jobs(ABC))
    assert list(r.finish) == pytest.approx([5.0, 8.0, 9.0])


def test_sjf_serves_the_shortest_predicted_job_first_without_preempting():
    r = run("sjf", jobs(ABC))
    assert list(r.finish) == pytest.approx([5.0, 9.0, 6.0])


def test_edf_serves_the_earliest_deadline_first():
    w = jobs([(steps(5), 0.0), (steps(1, slo=100), 0.1), (steps(3, slo=10), 0.2)])
    r = run("edf", w)
    assert list(r.finish) == pytest.approx([5.0, 9.0, 8.0])


def test_srpt_oracle_preempts_at_the_next_step_boundary():
    # C (1 s) arrives at 0.5 while A (5 s) runs: A is cut at its step boundary 1.0.
    nobatch = toy_catalog(batch2=float("inf"))
    r = run("srpt-oracle", jobs([(steps(5), 0.0), (steps(1), 0.5)]), nobatch)
    assert list(r.finish) == pytest.approx([6.0, 2.0])
    # with a batching gain C joins A's batch at 1.0 instead: C done after 1.5 s more
    r = run("srpt-oracle", jobs([(steps(5), 0.0), (steps(1), 0.5)]), toy_catalog(batch2=1.5))
    assert list(r.finish) == pytest.approx([5.5, 2.5])


def test_srpt_oracle_uses_true_not_predicted_times():
    w = jobs([(steps(5), 0.0), (steps(3), 0.1), (steps(2), 0.2)])
    w.true_factor[1] = 0.1  # B is predicted 3 s but truly 0.3 s; C truly 2 s
    r = run("srpt-oracle", w, toy_catalog(batch2=float("inf")))
    assert r.finish[1] < r.finish[2]
    r = run("sjf", w)
    assert r.finish[1] > r.finish[2]  # sjf trusts the prediction


def test_fastserve_lets_a_short_job_overtake_at_the_end_of_a_quantum():
    # q0 = 0.5: first step 1 s -> level 1 (quantum 1 s). A uses its quantum, sinks.
    r = run(make_policy("fastserve", q0=0.5), jobs([(steps(5), 0.0), (steps(1), 0.5)]))
    assert list(r.finish) == pytest.approx([6.0, 2.0])


def test_orca_joins_a_running_batch_between_steps():
    # B joins A at A's step boundary 1.0; a batch of 2 runs each job at 1/1.5 speed:
    # A's 4 s left take 6 s (done 7.0), B then has 1 s left alone (done 8.0).
    r = run("orca", jobs([(steps(5), 0.0), (steps(5), 0.5)]))
    assert list(r.finish) == pytest.approx([7.0, 8.0])


def test_clockwork_rejects_the_impossible_and_drops_the_late():
    w = jobs(
        [
            (steps(5, slo=6), 0.0),  # runs 0-5
            (steps(3, slo=2), 0.1),  # 3 s of work, 2 s SLO: rejected at admission
            (steps(2, slo=4), 0.2),  # can start at 5.0 only: 7.0 > 4.2, dropped
            (steps(1, slo=10), 0.3),  # fine
        ]
    )
    r = run("clockwork", w)
    assert list(r.status) == [JobStatus.DONE, JobStatus.REJECTED, JobStatus.DROPPED, JobStatus.DONE]
    assert r.finish[3] == pytest.approx(6.0)


def test_infaas_picks_the_cheapest_kind_that_meets_the_slo():
    cat = toy_catalog(slow_kind=True)
    cluster = Cluster.parse("1xX+1xY")
    # loose: Y (2 s/step, 1/6 the price) meets 20 s; tight 6 s: only X does.
    r = run("infaas", jobs([(steps(5, slo=20), 0.0), (steps(5, slo=6), 0.0)]), cat, cluster)
    assert [r.kinds[k] for k in r.kind] == ["Y", "X"]
    # the planner's rule puts both loose jobs on the fastest finish instead
    r = run("sjf", jobs([(steps(5, slo=20), 0.0)]), cat, cluster)
    assert r.kinds[r.kind[0]] == "X"


def test_cold_start_is_charged_once_per_load():
    cat = toy_catalog(load_s=2.0)
    r = run("fcfs", jobs([(steps(1), 0.0), (steps(1), 0.0)]), cat)
    assert list(r.finish) == pytest.approx([3.0, 4.0])
    r = run("srpt-oracle", jobs([(steps(1), 0.0)]), cat)  # the bound's relaxation
    assert r.finish[0] == pytest.approx(1.0)


def test_slack_sjf_rejects_only_what_cannot_make_it_even_when_idle():
    w = jobs([(steps(5, slo=4), 0.0), (steps(2, slo=4), 0.0)])
    r = run(make_policy("slack-sjf", downshift=False), w)
    assert list(r.status) == [JobStatus.REJECTED, JobStatus.DONE]


def test_slack_sjf_rescues_an_urgent_job_that_plain_sjf_starves():
    # X runs 0-1. Waiting: U (4 s, must finish by 6) and two 1-step jobs.
    # sjf runs both short ones first (U then ends at 7, late); slack-sjf runs one short
    # job (U still makes it), then U, since a second one would make U late.
    w = jobs([(steps(1), 0.0), (steps(4, slo=6), 0.0), (steps(1), 0.1), (steps(1), 0.2)])
    r = run("sjf", w)
    assert r.finish[1] == pytest.approx(7.0)
    r = run(make_policy("slack-sjf", batching=False), w)
    assert r.finish[1] == pytest.approx(6.0) and r.status[1] == JobStatus.DONE
    assert sorted(r.finish) == pytest.approx([1.0, 2.0, 6.0, 7.0])


def test_slack_sjf_downshifts_steps_only_when_the_queue_is_long():
    # planned at min CLIP 40 + margin 5 = 5 steps; relaxed (min CLIP exactly): 4 steps
    cfg = SimConfig(clip_margin=5.0, relaxed_margin=0.0, clip_noise=0.0)
    few = jobs([(steps(4), 0.0)])
    r = run(make_policy("slack-sjf", batching=False), few, config=cfg)
    assert list(r.steps) == [5]
    many = jobs([(steps(4), 0.0)] * 8)
    r = run(make_policy("slack-sjf", batching=False, long_queue=2.0), many, config=cfg)
    # job 0 starts on an idle accelerator; job 1 starts with 6 waiting (>= 2 per
    # instance) and is down-shifted; the last ones start with a short queue
    assert (r.steps[0], r.steps[1], r.steps[-1]) == (5, 4, 5)


def two_model_catalog(load_s: float = 5.0, models: str = "ab", seconds_per_step=(1.0,)):
    """Models a (style sa) and b (style sb) (or one per letter of `models`) on kind X:
    1 s per step (one kind per entry of `seconds_per_step`: X, Y, ...), CLIP 10 per
    step, `load_s` to load, one model resident at a time."""
    from scheduler.catalog import Catalog

    grid = np.arange(1, 11)
    factor = np.full(9, np.inf)
    factor[1] = 1.0
    ks = range(len(seconds_per_step))
    pairs = [(m, k) for m in range(len(models)) for k in ks]
    return Catalog(models=list(models), kinds=["XYZ"[k] for k in ks],
                   styles={m: (f"s{m}",) for m in models}, steps=grid,
                   latency={(m, k): grid * seconds_per_step[k] for m, k in pairs},
                   batch_factor=dict.fromkeys(pairs, factor),
                   clip={m: grid * 10.0 for m in range(len(models))},
                   load_s=dict.fromkeys(range(len(models)), load_s),
                   price_per_hour=dict.fromkeys(ks, 1.0),
                   max_resident=dict.fromkeys(ks, 1))  # fmt: skip


def test_an_arriving_job_goes_to_the_idle_instance_that_holds_its_model():
    """Two idle instances, one holding a, one holding b: a later job runs where its
    model is, without a load, whichever instance the idle list would hand out first."""
    a, b = SloClass("sa", 1e6, 10.0), SloClass("sb", 1e6, 10.0)
    cfg = SimConfig(clip_margin=0.0, clip_noise=0.0, cold_start=True)
    two = Cluster.parse("2xX")
    # the first two load (5 s + 1 s); the later ones find their model resident
    w = jobs([(a, 0.0), (b, 0.0), (a, 10.0), (b, 10.0)])
    r = run("fcfs", w, catalog=two_model_catalog(), cluster=two, config=cfg)
    assert list(r.finish) == pytest.approx([6.0, 6.0, 11.0, 11.0])
    w = jobs([(a, 0.0), (b, 0.5), (a, 10.0)])
    r = run("fcfs", w, catalog=two_model_catalog(), cluster=two, config=cfg)
    assert list(r.finish) == pytest.approx([6.0, 6.5, 11.0])


def test_a_load_evicts_a_model_that_has_another_copy_not_the_only_one():
    """Three idle instances hold a, a and b; a job of c loads over one of the a copies,
    so a later b job still finds b resident. The idle list would hand out b's instance
    (the last to finish), and evicting it made that b job pay a second load."""
    a, b, c = SloClass("sa", 1e6, 10.0), SloClass("sb", 1e6, 10.0), SloClass("sc", 1e6, 10.0)
    cfg = SimConfig(clip_margin=0.0, clip_noise=0.0, cold_start=True)
    w = jobs([(a, 0.0), (a, 0.0), (b, 0.0), (c, 10.0), (b, 20.0)])
    cat = two_model_catalog(models="abc")
    r = run("fcfs", w, catalog=cat, cluster=Cluster.parse("3xX"), config=cfg)
    assert list(r.finish) == pytest.approx([6.0, 6.0, 6.0, 16.0, 21.0])


def test_slack_sjf_places_a_job_where_its_model_is_counting_the_load_elsewhere():
    """X runs 1 s per step, Y 2 s; loads take 5 s. A b job went to Y while X was busy;
    a later b job finishes sooner on Y (2 s) than on idle X with a load (6 s): ours runs
    it on Y, residency-blind placement loads it on X."""
    a4, b1 = SloClass("sa", 1e6, 40.0), SloClass("sb", 1e6, 10.0)
    w = jobs([(a4, 0.0), (b1, 0.1), (b1, 20.0)])
    cat = two_model_catalog(seconds_per_step=(1.0, 2.0))
    cluster = Cluster.parse("1xX+1xY")
    cfg = SimConfig(clip_margin=0.0, relaxed_margin=0.0, clip_noise=0.0, cold_start=True)
    ours = run(make_policy("slack-sjf", batching=False, downshift=False), w, cat, cluster, cfg)
    assert list(ours.finish) == pytest.approx([9.0, 7.1, 22.0])
    assert list(ours.kind) == [0, 1, 1]
    sjf = run("sjf", w, cat, cluster, cfg)
    assert sjf.finish[2] == pytest.approx(26.0) and sjf.kind[2] == 0


def test_slack_sjf_runs_the_shortest_job_on_this_instance_counting_loads():
    """Instance holds a; queued: a 2-step job of b (the SJF head) and a 3-step job of a.
    Counting b's 5 s load, the a job is shorter here and runs first; residency-blind
    SJF loads b first."""
    a1, a3, b2 = SloClass("sa", 1e6, 10.0), SloClass("sa", 1e6, 30.0), SloClass("sb", 1e6, 20.0)
    w = jobs([(a1, 0.0), (b2, 0.1), (a3, 0.2)])
    cfg = SimConfig(clip_margin=0.0, relaxed_margin=0.0, clip_noise=0.0, cold_start=True)
    cat = two_model_catalog()
    ours = run(make_policy("slack-sjf", batching=False, downshift=False), w, cat, config=cfg)
    assert list(ours.finish) == pytest.approx([6.0, 16.0, 9.0])  # a1, a3, then load b
    sjf = run("sjf", w, cat, config=cfg)
    assert list(sjf.finish) == pytest.approx([6.0, 13.0, 21.0])  # b loads, a reloads


def test_slack_sjf_leaves_a_job_only_a_load_makes_late_to_the_busy_instance_holding_its_model():
    """Two instances, loads take 5 s. a (5 steps) loads on one (done at 10), b on the
    other (done at 6). A 1-step a job due at 11.5 waits: at 6 the free instance would
    load a and finish it at 12, late; ours leaves it to the busy twin holding a, which
    finishes it at 11. Residency-blind SJF loads it and is late."""
    a5, b1 = SloClass("sa", 1e6, 50.0), SloClass("sb", 1e6, 10.0)
    a1 = SloClass("sa", 11.0, 10.0)
    w = jobs([(a5, 0.0), (b1, 0.0), (a1, 0.5)])
    cfg = SimConfig(clip_margin=0.0, relaxed_margin=0.0, clip_noise=0.0, cold_start=True)
    cat, two = two_model_catalog(), Cluster.parse("2xX")
    ours = run(make_policy("slack-sjf", batching=False, downshift=False), w, cat, two, cfg)
    assert list(ours.finish) == pytest.approx([10.0, 6.0, 11.0])
    assert list(ours.status) == [JobStatus.DONE] * 3
    sjf = run("sjf", w, cat, two, cfg)
    assert sjf.finish[2] == pytest.approx(12.0)


def test_slack_sjf_cuts_a_long_job_at_its_next_step_for_a_short_one_that_cannot_wait():
    """A (5 steps) runs from 0; B (1 step, due 2.5) arrives at 0.5 and would be late
    after A: A gives way at its step boundary 1.0, B runs 1-2, A resumes and is done at
    6. Without preemption B is dropped. A short job that can wait does not cut A."""
    w = jobs([(steps(5), 0.0), (steps(1, slo=2.0), 0.5)])
    ours = run(make_policy("slack-sjf", batching=False, downshift=False), w)
    assert list(ours.finish) == pytest.approx([6.0, 2.0])
    kept = run(make_policy("slack-sjf", batching=False, downshift=False, preempt=False), w)
    assert list(kept.status) == [JobStatus.DONE, JobStatus.DROPPED]
    w = jobs([(steps(5), 0.0), (steps(1, slo=9.0), 0.5)])
    ours = run(make_policy("slack-sjf", batching=False, downshift=False), w)
    assert list(ours.finish) == pytest.approx([5.0, 6.0])


def test_an_idle_instance_that_leaves_the_queue_to_a_busy_twin_is_asked_once():
    """gather_ties asks every idle instance for work at an arrival: one that takes
    nothing (the queued job waits for the busy twin holding its model) goes back to idle
    and is not asked again at the same time (it was, for ever: the elastic bench hung)."""
    a5, b1 = SloClass("sa", 1e6, 50.0), SloClass("sb", 1e6, 10.0)
    a1 = SloClass("sa", 4.0, 10.0)  # at 7: 13 with a load on the idle one, 11 on a's
    w = jobs([(a5, 0.0), (b1, 0.0), (a1, 7.0)])
    cfg = SimConfig(clip_margin=0.0, relaxed_margin=0.0, clip_noise=0.0, cold_start=True,
                    gather_ties=True)  # fmt: skip
    ours = run(make_policy("slack-sjf", batching=False, downshift=False), w,
               two_model_catalog(), Cluster.parse("2xX"), cfg)  # fmt: skip
    assert list(ours.finish) == pytest.approx([10.0, 6.0, 11.0])
