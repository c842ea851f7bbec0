"""The live core when devices leave and join (a fleet: a node died, an engine scaled
in or out): a leaving device's jobs finish on the others from step 0, none lost, none
run twice, nothing is placed on it again; a kind with no device left refuses; a device
that joins gets work at once."""

from __future__ import annotations

import pytest

from scheduler.live import MAX_CRASHES
from sdaas.job_status import JobStatus
from tests.scheduler.test_live_recovery import core_of, job


def finish(core, devs, clock, i: int) -> None:
    """Device i runs its last segment to the end."""
    jobs, steps = devs[i].segments[-1]
    clock.t += 1.0
    core.segment_end(i, steps)


@pytest.mark.parametrize("policy", ["fcfs", "orca", "clockwork"])
def test_a_device_that_leaves_gives_its_jobs_to_the_others(policy):
    core, devs, clock, settled = core_of(policy, devices=2)
    core.submit([job(10) for _ in range(4)])
    running = {i: devs[i].segments[-1][0] for i in (0, 1) if devs[i].segments}
    assert 1 in running, "device 1 got no segment"
    rec = core.leave(1)
    assert set(running[1]) <= set(rec.requeued) and not rec.failed
    assert 1 in core.out_of_service and core.in_service() == [0]
    before = len(devs[1].segments)
    while core.in_flight():
        finish(core, devs, clock, 0)
    assert len(devs[1].segments) == before  # nothing placed on it again
    assert [core.status[j] for j in range(4)] == [JobStatus.DONE] * 4
    for j in running[1]:
        assert core.steps_run[j] >= core.steps[j]  # from step 0 on device 0
        assert core.restarts[j] == 1
    assert all(core.restarts[j] == 0 for j in range(4) if j not in running[1])


def test_a_job_that_crashed_engines_max_crashes_times_fails_instead_of_moving_on():
    core, devs, clock, _ = core_of("fcfs", devices=3)
    core.submit([job(10)])
    j = devs[0].segments[-1][0][0]
    for n in range(MAX_CRASHES):
        i = next(i for i, d in enumerate(devs) if d.segments and j in d.segments[-1][0]
                 and i not in core.out_of_service)  # fmt: skip
        rec = core.leave(i, crashed=[j])
        if n < MAX_CRASHES - 1:
            assert rec.requeued == [j]
    assert [sj.index for sj in rec.failed] == [j] and core.status[j] == JobStatus.FAILED


def test_with_no_device_of_its_kind_left_jobs_fail_and_new_ones_are_refused():
    core, devs, clock, settled = core_of("fcfs", devices=1)
    core.submit([job(10), job(10)])
    rec = core.leave(0)
    assert not rec.requeued and len(rec.failed) == 2
    assert all(core.status[j] == JobStatus.FAILED for j in range(2))
    (k,) = core.submit([job(10)])
    assert core.status[k] == JobStatus.REJECTED and (k, JobStatus.REJECTED) in settled


def test_a_device_that_joins_takes_queued_work_at_once():
    core, devs, clock, _ = core_of("fcfs", devices=2)
    core.leave(1)
    core.submit([job(10) for _ in range(3)])
    assert not devs[1].segments and len(devs[0].segments) == 1
    core.join(1)
    assert devs[1].segments and 1 in core.in_service()
    while core.in_flight():
        for i in (0, 1):
            if core.seg_jobs[i]:
                finish(core, devs, clock, i)
    assert [core.status[j] for j in range(3)] == [JobStatus.DONE] * 3
