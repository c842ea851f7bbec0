"""slack-sjf's guards against the latency predictor's error (rules 8 and 9 of its
docstring), its choice of steps on a queue that is not long (3) and the queue it orders
by. Toy model (`toy_catalog`): 1 s per denoising step, CLIP 10 per step; planned at min
CLIP 40 + margin 5 = 5 steps (5 s), down-shifted at min CLIP exactly = 4 steps (4 s)."""

import pytest

from scheduler.cluster import Cluster
from scheduler.options import ClassOptions
from scheduler.policies import make_policy
from scheduler.queues import SlackQueue
from scheduler.simulator import SimConfig, Simulator
from scheduler.workload import SloClass
from sdaas.job_status import JobStatus
from tests.scheduler.conftest import jobs, toy_catalog

CFG = SimConfig(clip_margin=5.0, relaxed_margin=0.0, clip_noise=0.0, log=True)
ONE = Cluster.parse("1xX")


def one_job(slo: float, true_factor: float):
    w = jobs([(SloClass("any", slo, 40.0), 0.0)])
    w.true_factor[0] = true_factor
    return w


def run(policy, w):
    sim = Simulator(toy_catalog(batch2=float("inf")), ONE, policy, CFG)
    return sim.run(w), sim.log


def test_a_plan_that_makes_its_deadline_only_without_the_margin_runs_down_shifted():
    # planned: 5 s, in time for 5.5 s only if the prediction is right; truly 12 % slower
    # it ends at 5.6, late. Down-shifted, 4 s (4.6 with the margin), it makes it.
    # (believing predictions exact, it keeps the plan)
    w = one_job(slo=5.5, true_factor=1.12)
    r, _ = run(make_policy("slack-sjf", margin=0.0, observe=False, spread=0.0), w)
    assert (r.steps[0], r.finish[0]) == (5, pytest.approx(5.6))  # done, but late
    r, _ = run(make_policy("slack-sjf"), w)
    assert (r.steps[0], r.finish[0]) == (4, pytest.approx(4.48))
    assert r.status[0] == JobStatus.DONE


def test_the_fair_bound_knows_the_true_time_and_keeps_the_plan_without_a_margin():
    # exactly as predicted: the plan makes 5.5 s, and the fair bound (true times) runs it
    r, _ = run(make_policy("fair-bound"), one_job(slo=5.5, true_factor=1.0))
    assert (r.steps[0], r.finish[0]) == (5, pytest.approx(5.0))
    # slack-sjf cannot tell this job from a slower one: it down-shifts
    r, _ = run(make_policy("slack-sjf"), one_job(slo=5.5, true_factor=1.0))
    assert r.steps[0] == 4


def test_a_job_without_the_margin_runs_one_step_and_is_dropped_if_its_rate_makes_it_late():
    # only the 4-step option makes 4.3 s, and not with the margin (4.6): it runs one step
    # first. 20 % slow, that step takes 1.2 s, and 3.6 s are left: 4.8 > 4.3, dropped
    # then, one step spent instead of a whole late run.
    w = one_job(slo=4.3, true_factor=1.2)
    r, log = run(make_policy("slack-sjf"), w)
    assert r.status[0] == JobStatus.DROPPED and r.finish[0] == pytest.approx(1.2)
    assert r.busy_s.sum() == pytest.approx(1.2)
    assert [e[0] for e in log] == ["admit", "run", "drop"]
    r, _ = run(make_policy("slack-sjf", observe=False), w)
    assert r.status[0] == JobStatus.DONE and r.finish[0] == pytest.approx(4.8)  # late
    assert r.busy_s.sum() == pytest.approx(4.8)


def test_a_watched_job_seen_in_time_runs_on_to_its_end():
    # 10 % fast: 0.9 s for the first step, 2.7 s left, in time: it runs on (a second
    # segment) and ends at 3.6 as it would have unwatched
    w = one_job(slo=4.3, true_factor=0.9)
    r, log = run(make_policy("slack-sjf"), w)
    assert r.status[0] == JobStatus.DONE and r.finish[0] == pytest.approx(3.6)
    assert [e[0] for e in log] == ["admit", "run", "run"]
    unwatched, log = run(make_policy("slack-sjf", observe=False), w)
    assert unwatched.finish[0] == pytest.approx(3.6) and [e[0] for e in log] == ["admit", "run"]


def test_a_job_with_the_margin_to_spare_runs_unwatched_in_one_segment():
    r, log = run(make_policy("slack-sjf"), one_job(slo=100.0, true_factor=1.3))
    assert r.steps[0] == 5 and r.finish[0] == pytest.approx(6.5)
    assert [e[0] for e in log] == ["admit", "run"]


def test_the_queue_orders_hold_across_dry_spells_and_re_pushes():
    size = [5.0, 1.0, 3.0, 2.0, 4.0]
    deadline = [6.0, 50.0, 3.5, 30.0, 100.0]  # latest starts 1, 49, 0.5, 28, 96
    model = [0, 1, 0, 1, 0]
    q = SlackQueue(size, deadline, model)
    for j in (0, 1, 2):
        q.push(j)
    assert (q.shortest(), q.most_urgent(), q.shortest_of(0)) == (1, 2, 2)
    assert q.candidates_of(0, 8) == [2, 0]  # most urgent first
    for j in (0, 1, 2):
        q.take(j)
    assert len(q) == 0 and not q.live
    q.push(3)  # the queue ran dry: nothing taken before comes back
    assert (q.shortest(), q.most_urgent(), q.shortest_of(0), q.shortest_of(1)) == (3, 3, None, 3)
    q.push(0)
    q.push(4)
    q.take(0)
    q.push(0)  # taken and pushed again: one live entry, at its latest push
    assert len(q) == len(q.live) == 3
    assert q.candidates_of(0, 8) == [0, 4]
    got = []
    while q.live:
        j = q.shortest()
        got.append(j)
        q.take(j)
    assert got == [3, 4, 0]


WIDE = SimConfig(clip_margin=25.0, relaxed_margin=0.0, clip_noise=5.0, log=True)


def test_a_late_plan_runs_at_the_steps_least_likely_to_miss_either_slo():
    # planned at min CLIP 40 + 25: 7 steps (7 s); down-shifted: 4 steps (CLIP 40, its min
    # exactly: misses it half the time with CLIP noise 5); in between 6 and 5. SLO 6.5 s
    # on an idle instance: 7 s is late; 6 s makes it only if the run is at most 8 % slower
    # than predicted (21 % late with the 10 % spread slack-sjf believes); 5 s is late 0.4 %
    # of the time and misses CLIP 2 % (50: 2 sigma over 40): 5 steps.
    cl = SloClass("any", 6.5, 40.0)
    opts = ClassOptions.build(toy_catalog(), (cl,), [0], 25.0, 0.0)
    assert [o.steps for o in opts.between_of(0, 0)] == [6, 5]
    w = jobs([(cl, 0.0)])
    sim = Simulator(toy_catalog(batch2=float("inf")), ONE, make_policy("slack-sjf"), WIDE)
    r = sim.run(w)
    assert (r.steps[0], r.finish[0]) == (5, pytest.approx(5.0))
    # believing exact run times it would take 6 steps, as the fair bound (true times) does
    sim = Simulator(
        toy_catalog(batch2=float("inf")), ONE, make_policy("slack-sjf", spread=0.0), WIDE
    )
    assert sim.run(w).steps[0] == 6
    sim = Simulator(toy_catalog(batch2=float("inf")), ONE, make_policy("fair-bound"), WIDE)
    assert sim.run(w).steps[0] == 6
    # adjacent step counts leave nothing in between
    assert ClassOptions.build(toy_catalog(), (cl,), [0], 5.0, 0.0).between_of(0, 0) == ()
