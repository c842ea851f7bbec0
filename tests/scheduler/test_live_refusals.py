"""The live core records why it refused a job when and where it decides: no option on
any accelerator, over the admission bound, refused by the policy at admission, or
dropped from its queue; with the seconds it decided on. Serving's refusal text is made
from this record, not rebuilt afterwards."""

from __future__ import annotations

from dataclasses import replace

from scheduler.cluster import Cluster
from scheduler.live import LIVE_CONFIG, LiveCore, LiveJob
from scheduler.options import Option
from scheduler.policies import make_policy
from sdaas.job_status import JobStatus
from tests.scheduler.conftest import toy_catalog
from tests.scheduler.test_live_recovery import Clock, Device


def core(policy: str, **config) -> tuple[LiveCore, Clock, list]:
    clock, settled = Clock(), []
    c = LiveCore(toy_catalog(), Cluster.parse("1xX"), make_policy(policy),
                 replace(LIVE_CONFIG, **config), clock,
                 lambda j, s, t: settled.append((j, JobStatus(s))))  # fmt: skip
    c.attach([Device()])
    return c, clock, settled


def job(clock: Clock, slo: float, steps: int = 10, options=True) -> LiveJob:
    opt = [Option(0, steps, float(steps))] if options else [None]
    return LiveJob("any", clock.t + slo, 0.0, opt, opt)


def test_an_unservable_and_an_overloaded_job_are_refused_with_their_reason():
    c, clock, settled = core("fcfs", max_backlog_s=15.0)
    c.submit([job(clock, 100.0), job(clock, 100.0), job(clock, 100.0, options=False)])
    c.submit([job(clock, 100.0)])  # 20 s queued on the one device: over the 15 s bound
    assert settled == [(2, JobStatus.REJECTED), (3, JobStatus.REJECTED)]
    assert c.refusals[2].why == "unservable" and c.refusals[2].fastest_s == float("inf")
    assert c.refusals[3].why == "overloaded" and c.refusals[3].fastest_s == 10.0
    assert set(c.refusals) == {2, 3}  # the admitted ones have none


def test_a_policy_refusal_and_a_drop_record_the_seconds_it_decided_on():
    c, clock, settled = core("clockwork")  # refuses what cannot meet its deadline
    c.submit([job(clock, 100.0), job(clock, 8.0)])  # job 1 needs 10 s, has 8
    assert settled == [(1, JobStatus.REJECTED)]
    why = c.refusals[1]
    assert why.why == "admission" and why.slo_left_s == 8.0 and why.fastest_s == 10.0
    clock.t = 1.0
    c.submit([job(clock, 10.5)])  # it could finish by 11.5 if it started now
    clock.t = 10.0
    c.segment_end(0, 10)  # job 0 ends; job 2 could finish at 20 at best
    assert settled[1:] == [(2, JobStatus.DROPPED)] and c.refusals[2].why == "dropped"
    assert c.refusals[2].waited_s == 9.0 and c.refusals[2].pred_s == 10.0
