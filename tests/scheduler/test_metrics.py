"""The metrics of a run do not reward losing work: goodput over all arrived jobs, the
lost share split into rejected and dropped, and what dropped jobs waited for nothing."""

import numpy as np
import pytest

from scheduler.metrics import LOST_PENALTY_SLOS, summarize
from scheduler.simulator import SimResult
from sdaas.job_status import JobStatus


def result(status, arrival, finish, slo, clip, min_clip) -> SimResult:
    n = len(status)
    arr = lambda x: np.asarray(x, float)  # noqa: E731
    return SimResult(
        policy="p", workload="w", cluster="1xX", arrival=arr(arrival), latency_slo_s=arr(slo),
        min_clip=arr(min_clip), status=np.asarray(status), start=arr(arrival), finish=arr(finish),
        kind=np.zeros(n, int), model=np.zeros(n, int), steps=np.ones(n, int),
        pred_s=np.ones(n), true_work_s=np.ones(n), clip=arr(clip), busy_s=np.array([2.0]),
        instance_kind=np.zeros(1, int), kinds=["X"], models=["m"], events=0,
    )  # fmt: skip


def test_lost_jobs_count_against_goodput_and_jct():
    # job 0 meets both SLOs, 1 misses its deadline, 2 misses its CLIP, 3 is rejected at
    # arrival, 4 is dropped after waiting 3 s
    r = result(
        status=[
            JobStatus.DONE,
            JobStatus.DONE,
            JobStatus.DONE,
            JobStatus.REJECTED,
            JobStatus.DROPPED,
        ],
        arrival=[0, 0, 1, 2, 2],
        finish=[1, 3, 2, 2, 5],
        slo=[2, 2, 2, 2, 2],
        clip=[30, 30, 10, np.nan, np.nan],
        min_clip=[20, 20, 20, 20, 20],
    )
    m = summarize(r)
    assert m["both_slo_met"] == pytest.approx(1 / 5)  # over all arrived, not the 3 done
    assert m["latency_slo_met"] == pytest.approx(2 / 5)
    assert m["mean_jct_s"] == pytest.approx((1 + 3 + 1) / 3)
    assert m["lost_share"] == pytest.approx(2 / 5)
    assert m["rejected_share"] == pytest.approx(1 / 5)
    assert m["dropped_share"] == pytest.approx(1 / 5)
    assert m["dropped_wait_s"] == pytest.approx(3 / 5)  # the drop's wait, per arrived job
    lost = [0 + LOST_PENALTY_SLOS * 2, 3 + LOST_PENALTY_SLOS * 2]
    assert m["mean_jct_penalized_s"] == pytest.approx((1 + 3 + 1 + sum(lost)) / 5)
    assert m["mean_jct_penalized_s"] > m["mean_jct_s"]
