"""Emulated devices: their timing comes from the profile catalog (the line through its
batch-1 latencies, its batch factors, its load seconds), and a real device engine runs
them as it runs a model: Started, a Stepped per step, Done, SegmentEnded."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from engine.device_engine import DeviceEngine
from engine.emulated_devices import emulated_loader, timing_from_profile
from models.emulated import EmulatedLoader, StepTiming
from scheduler.catalog import load_catalog
from scheduler.cluster import Cluster
from scheduler.live import LIVE_CONFIG, LiveCore
from scheduler.policies import make_policy
from scheduler.seam import (
    Done,
    ImageRequest,
    SegmentEnded,
    SegmentJob,
    Started,
    StartSegment,
    Stepped,
)
from sdaas.errors import InvalidInputError
from sdaas.job_status import JobStatus
from tests.engine.conftest import MODELS, Events, catalog, engine_of, job
from tests.models.test_emulated import FakeTime


def test_the_timing_is_the_line_through_the_catalog_latency():
    cat = catalog()  # toy-s: 0.02 s a step, no fixed part; factors 1 + 0.3 (b - 1) to 4
    t = timing_from_profile("toy-s", "cpu", cat)
    assert t.fixed_s == pytest.approx(0.0, abs=1e-12) and t.step_s == pytest.approx(0.02)
    assert t.batch_factor == pytest.approx((1.0, 1.3, 1.6, 1.9)) and t.load_s == 0.0
    steps = cat.steps.astype(float)
    lat = np.where((steps >= 5) & (steps <= 30), 0.5 + 0.1 * steps, np.inf)
    cat = replace(cat, latency={**cat.latency, (1, 0): lat}, load_s={0: 0.0, 1: 2.5})
    t = timing_from_profile("toy-m", "cpu", cat)
    assert (t.fixed_s, t.step_s, t.load_s) == (pytest.approx(0.5), pytest.approx(0.1), 2.5)


def test_a_negative_fixed_part_is_taken_as_none():
    cat = catalog()
    lat = np.maximum(0.1 * cat.steps - 0.3, 0.01)  # a line through (3, 0) and below
    t = timing_from_profile("toy-s", "cpu", replace(cat, latency={(0, 0): lat}))
    assert t.fixed_s == 0.0 and t.step_s > 0


def test_the_reference_timing_reproduces_the_profile():
    cat = load_catalog(["A100", "T4"])
    t = timing_from_profile("sd-1.5", "A100", cat)
    i = cat.models.index("sd-1.5")
    for steps in (1, 20, 50):
        assert t.fixed_s + steps * t.step_s == pytest.approx(cat.latency[(i, 0)][steps - 1])
    assert t.batch_factor == tuple(cat.batch_factor[(i, 0)][1:9])
    assert t.fixed_s > 0 and t.load_s == cat.load_s[i]
    assert timing_from_profile("sd-1.5", "T4", cat).batch_factor == (1.0,)  # batch 1 only
    with pytest.raises(InvalidInputError, match="no profile on T4"):
        timing_from_profile("sdxl", "T4", cat)
    with pytest.raises(InvalidInputError, match="not in the catalog"):
        timing_from_profile("toy-s", "A100", cat)
    loader = emulated_loader("T4", catalog=cat)
    assert list(loader.timings) == ["sd-1.5"]


def test_a_catalog_without_latencies_is_refused():
    cat = catalog()  # as engine.live_catalog builds it: zeros, costs from the planner
    cat = replace(cat, latency={mk: np.zeros(len(cat.steps)) for mk in cat.latency})
    with pytest.raises(InvalidInputError, match="no latencies"):
        timing_from_profile("toy-s", "cpu", cat)


def test_a_device_engine_runs_a_segment_on_an_emulated_device():
    clock = FakeTime()
    timing = StepTiming(fixed_s=0.5, step_s=0.1, batch_factor=(1.0, 1.5), load_s=2.0)
    loader = EmulatedLoader({"toy-s": timing}, sleep=clock.sleep, clock=clock.clock)
    events, ended = [], threading.Event()

    def emit(event):
        events.append(event)
        if isinstance(event, SegmentEnded):
            ended.set()

    engine = DeviceEngine(0, ["toy-s"], loader, emit).start()
    reqs = [ImageRequest("two red circles", seed, 32, 32, 4.0) for seed in (1, 2)]
    jobs = tuple(SegmentJob(j, 0, 3, r) for j, r in enumerate(reqs))
    try:
        engine.send(StartSegment(0, jobs, 3))
        assert ended.wait(10.0)
    finally:
        engine.stop(5.0)
    assert events[:2] == [Started(0, 0), Started(0, 1)]
    assert events[2:8] == [Stepped(0, j, s, 3) for s in (1, 2, 3) for j in (0, 1)]
    done = events[8:10]
    assert [type(e) for e in done] == [Done, Done] and [e.job for e in done] == [0, 1]
    assert [e.image.size for e in done] == [(32, 32)] * 2
    assert [e.stats.max_batch for e in done] == [2, 2]
    assert [len(e.stats.step_s) for e in done] == [3, 3]  # timed by the engine's own clock
    assert events[10:] == [SegmentEnded(0, 3)]
    assert clock.slept == pytest.approx([2.0, 0.15, 0.15, 0.15, 0.75])  # load, steps, decode
    assert engine.resident == ["toy-s"] and not engine.runs


def test_the_live_core_serves_jobs_on_emulated_devices():
    """Through the core (orca), the link and an engine whose device sleeps the time the
    core's own catalog costs: both jobs done, with their images."""
    cat = catalog()
    core = LiveCore(cat, Cluster.parse("1xcpu"), make_policy("orca"), LIVE_CONFIG)
    events = Events()
    engine = engine_of(core, 0, emulated_loader("cpu", catalog=cat), events)
    core.attach([engine.link])
    engine.start()
    events.expect = 2
    t0 = time.perf_counter()
    core.submit([job(0, 4, 1), job(1, 3, 2)])
    try:
        assert events.wait(core, timeout=30.0)
    finally:
        engine.stop(5.0)
    assert core.status[:2] == [JobStatus.DONE, JobStatus.DONE]
    assert [events.images[j].size for j in (0, 1)] == [(32, 32)] * 2
    assert time.perf_counter() - t0 >= 4 * 0.02 + 3 * 0.04  # it slept the catalog's steps
    assert sorted(engine.resident) == sorted(MODELS)
