"""The live core when a device's time or engine goes wrong: a segment of jobs predicted
at 0 s is accounted (no division by zero in the device's pipe reader), a device whose
engine was restarted gets its jobs back from step 0 (none lost, none run twice), and one
that cannot come back leaves service with its jobs failed."""

from __future__ import annotations

import pytest

from scheduler.cluster import Cluster
from scheduler.live import LIVE_CONFIG, MAX_CRASHES, LiveCore, LiveJob
from scheduler.options import Option
from scheduler.policies import make_policy
from scheduler.seam import Command, Cut, StartSegment
from sdaas.job_status import JobStatus
from tests.scheduler.conftest import toy_catalog


class Device:
    """Records the segments the core starts; the test ends them."""

    def __init__(self):
        self.segments: list[tuple[list[int], int]] = []
        self.cuts = 0

    def send(self, command: Command) -> None:
        if isinstance(command, StartSegment):
            self.segments.append(([sj.index for sj in command.jobs], command.steps))
        elif isinstance(command, Cut):
            self.cuts += 1


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def core_of(policy: str = "fcfs", devices: int = 1):
    clock, settled = Clock(), []
    core = LiveCore(toy_catalog(), Cluster.parse(f"{devices}xX"), make_policy(policy),
                    LIVE_CONFIG, clock, lambda j, s, t: settled.append((j, s)))  # fmt: skip
    devs = [Device() for _ in range(devices)]
    core.attach(devs)
    return core, devs, clock, settled


def job(steps: int = 10, pred: float | None = None) -> LiveJob:
    opt = [Option(0, steps, float(steps) if pred is None else pred)]
    return LiveJob("any", 1e12, 0.0, opt, opt, payload=f"req-{steps}")


@pytest.mark.parametrize("policy", ["fcfs", "orca"])
def test_a_segment_of_jobs_predicted_at_zero_seconds_is_accounted(policy):
    """A warm-up job's option predicts 0 s (bench/engine_bench.py): its segment's time is
    shared by the steps the jobs ran, not divided by a zero prediction."""
    core, devs, clock, _ = core_of(policy)
    core.submit([job(10, pred=0.0), job(5, pred=0.0)])
    jobs, steps = devs[0].segments[-1]
    clock.t = 2.0
    core.segment_end(0, steps)
    while core.in_flight():
        jobs, steps = devs[0].segments[-1]
        clock.t += 1.0
        core.segment_end(0, steps)
    assert core.status[:2] == [JobStatus.DONE, JobStatus.DONE]
    assert sum(core.took_s) > 0 and all(n > 0 for n in core.steps_run)
    assert list(core.measured_speed()) == [1.0, 1.0]  # nothing predicted: nothing to scale


def test_a_restarted_device_runs_its_segment_again_from_step_0():
    core, devs, clock, _ = core_of("fcfs")
    core.submit([job(10)])
    clock.t = 0.5
    core.submit([job(4)])
    assert devs[0].segments == [([0], 10)]
    clock.t = 3.0
    core.segment_end(0, 3)  # interrupted after 3 steps: job 0 goes on with 7
    assert devs[0].segments[-1] == ([0], 7) and core.steps_left[0] == 10 - 3
    rec = core.requeue_device(0, crashed=[0])
    assert rec.requeued == [0] and rec.failed == []
    assert devs[0].segments[-1] == ([0], 10)  # all of its steps again
    assert core.crashes[0] == 1 and core.status[:2] == [JobStatus.PENDING, JobStatus.PENDING]
    clock.t = 13.0
    core.segment_end(0, 10)
    assert core.status[0] == JobStatus.DONE and devs[0].segments[-1] == ([1], 4)
    clock.t = 17.0
    core.segment_end(0, 4)
    assert core.status == [JobStatus.DONE, JobStatus.DONE] and not core.in_flight()
    assert core.idle[0] == [0]  # idle once, not twice


def test_a_queued_job_with_state_on_the_crashed_device_restarts_too():
    """Job 0 was preempted with 3 steps done and waits in the queue; that state was on
    the engine that crashed, so it also runs again from step 0."""
    core, devs, clock, _ = core_of("sjf")
    core.submit([job(10)])
    core.submit([job(6)])
    clock.t = 3.0
    core.segment_end(0, 3)  # job 0 back in the queue with 7 left; job 1 is shorter
    assert devs[0].segments[-1] == ([1], 6) and core.steps_left[0] == 7
    rec = core.requeue_device(0, crashed=[1])
    assert rec.requeued == [0, 1] and devs[0].segments[-1] == ([1], 6)
    clock.t = 9.0
    core.segment_end(0, 6)
    assert core.status[1] == JobStatus.DONE and devs[0].segments[-1] == ([0], 10)
    assert core.crashes == [0, 1]


def test_a_job_whose_end_went_out_is_not_run_again():
    """The engine said "done" for job 0, then its pipe reader crashed before the core
    settled the segment: job 0 is done, never re-run (no second answer)."""
    core, devs, clock, _ = core_of("orca")
    core.submit([job(5), job(10)])
    assert devs[0].segments == [([0, 1], 5)]
    clock.t = 5.0
    rec = core.requeue_device(0, crashed=[0, 1], ended={0: JobStatus.DONE})
    assert core.status[0] == JobStatus.DONE and rec.requeued == [1]
    assert devs[0].segments[-1] == ([1], 10)


def test_a_job_in_too_many_crashes_fails_instead_of_looping():
    core, devs, clock, _ = core_of("fcfs")
    core.submit([job(10), job(4)])
    for _ in range(MAX_CRASHES):
        rec = core.requeue_device(0, crashed=[0])
    assert [sj.index for sj in rec.failed] == [0]
    assert core.status[:2] == [JobStatus.FAILED, JobStatus.PENDING]
    assert devs[0].segments[-1] == ([1], 4)  # the device goes on with the next job


def test_a_cancelled_running_job_settles_when_its_device_crashes():
    core, devs, clock, settled = core_of("fcfs")
    core.submit([job(10)])
    assert core.cancel(0) and devs[0].cuts == 1
    rec = core.requeue_device(0, crashed=[0])
    assert (
        core.status[0] == JobStatus.CANCELLED
        and settled == [(0, JobStatus.CANCELLED)]
        and not rec.requeued
    )


def test_a_device_that_cannot_come_back_leaves_service():
    core, devs, clock, settled = core_of("fcfs", devices=2)
    core.submit([job(10), job(10), job(4)])  # 0 on device 0, 1 on device 1, 2 queued
    on_0 = [j for j in range(3) if core.dev_of[j] == 0]
    failed = core.fail_device(0)
    assert sorted(sj.index for sj in failed) == on_0
    assert all(core.status[j] == JobStatus.FAILED for j in on_0)
    assert 0 in core.out_of_service and 0 not in core.idle[0]
    core.submit([job(3)])  # queued on the device still in service
    assert core.dev_of[3] == 1 and core.status[3] == JobStatus.PENDING
    core.fail_device(1)
    core.submit([job(3)])  # no device left: refused at once, not queued for ever
    assert core.status[4] == JobStatus.REJECTED and settled[-1] == (4, JobStatus.REJECTED)


def test_a_policy_that_raises_placing_a_job_fails_it_and_the_rest_of_its_window_once():
    """A policy bug must not leave jobs pending for ever (serving's drain would hang):
    the job it raised on and the window's jobs after it fail, answered once, with the
    reason; the jobs before it run."""
    core, devs, clock, settled = core_of("fcfs")
    place = core.policy.place

    def broken(j, t):
        if j == 1:
            raise RuntimeError("a bug")
        return place(j, t)

    core.policy.place = broken
    a, b, c = core.submit([job(3), job(4), job(5)])
    assert settled == [(b, JobStatus.FAILED), (c, JobStatus.FAILED)]
    assert core.refusals[b].why == core.refusals[c].why == "internal: RuntimeError"
    assert core.status[a] == JobStatus.PENDING and devs[0].segments == [([a], 3)]
    assert core.in_flight() == 1 and core.backlog[0] == pytest.approx(3.0)


def test_a_job_queued_before_the_policy_raised_is_settled_and_never_dispatched():
    core, devs, clock, settled = core_of("fcfs")
    core.submit([job(3)])  # the device is busy with it
    dispatch = core._dispatch_idle

    def broken(t):
        raise RuntimeError("a bug after the push")

    core._dispatch_idle = broken
    (j,) = core.submit([job(4)])
    assert settled == [(j, JobStatus.FAILED)] and core.backlog[0] == pytest.approx(3.0)
    core._dispatch_idle = dispatch
    clock.t = 3.0
    core.segment_end(0, 3)  # the device asks for work: the failed job is skipped
    assert all(j not in jobs for jobs, _ in devs[0].segments) and core.in_flight() == 0


def test_a_cancel_that_comes_during_a_jobs_last_step_leaves_it_done_once():
    """The device ran the last step before it saw the cut, and sent the image: the job is
    done, not also cancelled (two outcomes, whichever stored first winning)."""
    core, devs, clock, settled = core_of("fcfs")
    core.submit([job(3)])
    assert core.cancel(0) and devs[0].cuts == 1
    clock.t = 3.0
    out = core.segment_end(0, 3)
    assert out.done == [0] and out.cancelled == []
    assert core.status[0] == JobStatus.DONE and settled == []  # no 'cancelled' answer


def test_a_cancel_before_the_last_step_still_cancels():
    core, devs, clock, settled = core_of("fcfs")
    core.submit([job(3)])
    core.cancel(0)
    clock.t = 1.0
    out = core.segment_end(0, 1)  # cut after one step
    assert out.cancelled == [0] and settled == [(0, JobStatus.CANCELLED)]
