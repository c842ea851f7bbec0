"""The serving transform in a streaming pipeline (TestStream): event-time windows, and
within each window the jobs run in SJF order of their predicted time."""

from __future__ import annotations

import math
import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to_per_window
from apache_beam.transforms.window import IntervalWindow, TimestampedValue

from adapters.kafka_io import RawRecord
from pipelines.serving import ServeJobs
from pipelines.serving_setup import build_spec
from sdaas.job_request import JobRequest
from tests.pipelines.serving_home import PROMPT

pytestmark = pytest.mark.slow


def test_each_window_runs_its_jobs_shortest_predicted_first(serving_settings, tmp_path):
    spec = build_spec(serving_settings, window_s=10.0, max_backlog_s=1e9)
    # no online correction here: the expected order is computed from the planner alone
    spec = type(spec)(
        **{**spec.__dict__, "store_path": str(tmp_path / "r.db"), "correct_latency": False}
    )
    base = math.floor(time.time() / 10) * 10 - 20  # two whole windows in the recent past
    style = spec.planner.styles[0]
    clips = (45.0, 0.0, 30.0, 10.0)  # arrival order is not SJF order
    windows: dict[IntervalWindow, list[tuple[str, int]]] = {}
    stream = TestStream()
    offset = 0
    for w in range(2):
        start = base + 10 * w
        jobs = []
        for i, clip in enumerate(clips):
            j = JobRequest(uuid.uuid4().hex[:10], "t", PROMPT, style, 300.0, clip, i,
                           submitted_ts=start + 1 + i)  # fmt: skip
            jobs.append(j)
        elements = [
            TimestampedValue(RawRecord(0, offset + i, j.to_json(), j.submitted_ts), j.submitted_ts)
            for i, j in enumerate(jobs)
        ]
        offset += len(jobs)
        stream = stream.add_elements(elements).advance_watermark_to(start + 10)
        pred = {
            j.job_id: spec.planner.plan(j.style, j.latency_slo_s, j.min_clip).predicted_latency_s
            for j in jobs
        }
        order = sorted(jobs, key=lambda j: (pred[j.job_id], j.submitted_ts))
        windows[IntervalWindow(start, start + 10)] = [(j.job_id, k) for k, j in enumerate(order)]
        assert len(set(pred.values())) > 1 and order[0] is not jobs[0]
    stream = stream.advance_watermark_to_infinity()

    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        out = p | stream | ServeJobs(spec)
        ran = out["results"] | beam.Map(lambda r: (r.job_id, r.run_order))
        assert_that(ran, equal_to_per_window(windows))
