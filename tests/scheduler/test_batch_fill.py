"""Filling a step batch: slack-sjf offers its most urgent jobs of the batch's model first,
and a job that cannot join (it would make the slower batch late) is passed over, not the
end of the fill."""

from types import SimpleNamespace

from scheduler.policies.batch_fill import fill_batch
from scheduler.policies.slack_sjf import SlackSjf
from scheduler.queues import SlackQueue


class _Catalog:
    batch_factor = {(0, 0): [None, 1.0, 1.5, 2.0, 2.5]}  # a batch of n runs factor[n]x

    def batch_limit(self, m, ck):
        return 4


def _sim(pred, deadline, model):
    return SimpleNamespace(model=model, ck=[0], n_inst=[1], catalog=_Catalog(),
                           deadline_ts=deadline, pred=pred)  # fmt: skip


def test_the_queue_offers_a_models_jobs_most_urgent_first_and_skips_taken_ones():
    pred = [1.0, 2.0, 1.0, 1.0]
    deadline = [50.0, 5.0, 9.0, 3.0]  # latest starts 49, 3, 8, 2
    q = SlackQueue(pred, deadline, [0, 0, 0, 1])
    for j in range(4):
        q.push(j)
    assert q.candidates_of(0, 10) == [1, 2, 0]
    assert q.candidates_of(0, 2) == [1, 2]  # and the heap still holds all three
    q.take(1)
    assert q.candidates_of(0, 10) == [2, 0] and q.candidates_of(1, 10) == [3]


def test_a_job_that_would_be_late_is_passed_over_and_the_next_one_joins():
    # batch [0] at t=0, 2 s alone; queued, most urgent first: job 2 (1 s, due 2.5),
    # job 1 (4 s, due 7), job 3 (1 s, due 20)
    pred = [2.0, 4.0, 1.0, 1.0]
    deadline = [30.0, 7.0, 2.5, 20.0]
    sim = _sim(pred, deadline, [0, 0, 0, 0])
    q = SlackQueue(pred, deadline, sim.model)
    for j in (1, 2, 3):
        q.push(j)
    assert q.candidates_of(0, 10) == [2, 1, 3]  # most urgent first: 1.5, 3, 19
    got = fill_batch(sim, q, [0], 0, 0.0, pred, waiting=3)
    # job 2: a batch of 2 takes 1.5 x 2 = 3 s > 2.5: passed over; job 1: 1.5 x 4 = 6 s
    # <= 7: joins; job 3: a batch of 3 takes 2.0 x 4 = 8 s > 7 (job 1's due): passed over
    assert got == [0, 1]
    assert q.candidates_of(0, 10) == [2, 3]  # the passed-over ones are still queued
    # with a later start nothing fits
    q2 = SlackQueue(pred, deadline, sim.model)
    q2.push(3)
    assert fill_batch(sim, q2, [0], 0, 25.0, pred, waiting=1) == [0]


def _policy_on(sim):
    p = SlackSjf()
    p.sim = sim
    return p


def test_slack_sjf_fills_most_urgent_first_on_a_short_queue_and_shortest_on_a_long_one():
    """Rule 6: while fewer than 4 jobs wait per instance the batch takes the most urgent
    (they can least afford the next batch); from 4 on, the shortest (an urgent-first fill
    there serves each job at its last moment, as EDF does, and packs fewer per batch)."""
    # job 0 runs; queued: jobs 1, 2 long and urgent (4 s, latest starts 16 and 17), jobs
    # 3, 4, 5 short and relaxed (1 s, latest starts 39-41); a batch of 4 takes 2.5x its
    # longest job, so either fill meets every deadline
    pred = [1.0, 4.0, 4.0, 1.0, 1.0, 1.0]
    deadline = [50.0, 20.0, 21.0, 40.0, 41.0, 42.0]
    sim = _sim(pred, deadline, [0] * 6)
    sim.config = SimpleNamespace(cold_start=False)
    sim.n_inst = [2]  # 2 instances: the queue is long from 8 waiting
    policy = _policy_on(sim)
    q = SlackQueue(pred, deadline, sim.model)
    for j in range(1, 6):
        q.push(j)
    # 5 waiting on 2 instances: short; the fill may add ceil(5 / 2) = 3 jobs, urgent first
    assert policy._fill(q, [0], inst=0, kind=0, t=0.0) == [0, 1, 2, 3]
    sim.n_inst = [1]  # the same 5 on 1 instance: long; the 3 shortest join
    q = SlackQueue(pred, deadline, sim.model)
    for j in range(1, 6):
        q.push(j)
    assert policy._fill(q, [0], inst=0, kind=0, t=0.0) == [0, 3, 4, 5]
