"""Device engines in processes of their own: two devices really run at once, every job
ends with its image, and a crash (the pipe reader raised, the worker died) is logged,
reported as a fault, and recovered: a fresh worker runs the jobs again, each job ends
once; a device that cannot come back fails its jobs with a clear error, never hangs."""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import contextmanager

import numpy as np

from engine.device_process import DeviceProcess
from engine.link import Restarts
from models.card import load_card
from scheduler.cluster import Cluster
from scheduler.live import LIVE_CONFIG, LiveCore
from scheduler.policies import make_policy
from sdaas.config import SHIPPED_TOYWORLD
from sdaas.health import Faults
from sdaas.job_status import JobStatus
from tests.engine.conftest import MODELS, WORDS, Events, catalog, job, link_of


@contextmanager
def running(devices: int, policy: str = "sjf", faults: Faults | None = None):
    """A live core over `devices` device processes for the block; they stop at its end."""
    cards = {m: load_card(SHIPPED_TOYWORLD / "cards" / f"{m}.yaml") for m in MODELS}
    core = LiveCore(catalog(), Cluster.parse(f"{devices}xcpu"), make_policy(policy), LIVE_CONFIG)
    events = Events()
    stamped = []

    def on_event(event):
        events(event)
        stamped.append((time.monotonic(), WORDS[type(event)], event.job, event.device))

    fault = faults.report if faults else None
    links = [link_of(core, i, on_event, on_fault=fault) for i in range(devices)]
    procs = [DeviceProcess(link, cards, MODELS, device="cpu", threads=1) for link in links]
    for link, p in zip(links, procs, strict=True):
        link.connect(p)
    core.attach(links)
    try:
        for p in procs:
            p.start()
        yield core, procs, events, stamped
    finally:
        for p in procs:
            p.stop(5)


def test_two_device_processes_run_at_once_and_answer_every_job():
    with running(2) as (core, procs, events, stamped):
        events.expect = 4
        core.submit([job(1, 30, s) for s in range(4)])
        assert events.wait(core, 120)
        assert core.status[:4] == [JobStatus.DONE] * 4
        spans = {}
        for t, kind, _, dev in stamped:
            if kind == "step":
                lo, hi = spans.get(dev, (t, t))
                spans[dev] = (min(lo, t), max(hi, t))
        (a0, a1), (b0, b1) = spans[0], spans[1]
        assert a0 < b1 and b0 < a1  # both devices stepped during the same interval
        assert len(events.images) == 4
        assert all(np.asarray(im).shape == (32, 32, 3) for im in events.images.values())


def fail_once(core, exc: Exception):
    """The core's accounting raises once, in the device's pipe reader (issue 25: a
    ZeroDivisionError there killed the reader and everything waited for ever)."""
    real = core._account

    def account(*a):
        if not account.raised:
            account.raised = True
            raise exc
        return real(*a)

    account.raised = False
    core._account = account


def steps_of(events, j: int) -> list[int]:
    return [e[3]["step"] for e in events.seen if e[0] == "step" and e[1] == j]


def test_a_crash_in_the_pipe_reader_restarts_the_device_and_requeues_its_jobs(caplog):
    """Job 0 (4 steps) and job 1 (12) run batched; the segment ends with job 0 done and
    the reader crashes settling it: logged with its traceback, a fault reported, a
    fresh worker runs job 1 again from step 0, and each job is done exactly once."""
    faults = Faults()
    with running(1, "orca", faults) as (core, procs, events, _):
        fail_once(core, ZeroDivisionError("float division by zero"))
        old = procs[0].proc
        events.expect = 2
        with caplog.at_level(logging.ERROR):
            core.submit([job(1, 4, 1), job(1, 12, 2)])
            assert events.wait(core, 120)
        assert core.status[:2] == [JobStatus.DONE, JobStatus.DONE]
        assert Counter(e[1] for e in events.seen if e[0] == "done") == {0: 1, 1: 1}
        assert steps_of(events, 0) == [1, 2, 3, 4]
        assert steps_of(events, 1) == [1, 2, 3, 4, *range(1, 13)]  # again from step 0
        assert procs[0].proc is not old and not old.is_alive()
        crash = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
        assert crash and crash[0].exc_info[0] is ZeroDivisionError
        (fault,) = faults.current()
        assert fault.part == "engine 0" and not fault.fatal
        assert fault.reason.startswith("pipe reader crashed (ZeroDivisionError: float division")
        assert fault.reason.endswith("engine restarted, 1 jobs re-queued")
        events.expect = 3
        core.submit([job(0, 3, 3)])  # the device serves on
        assert events.wait(core, 60) and core.status[2] == JobStatus.DONE


def test_a_dead_device_process_is_restarted_and_its_jobs_run_again():
    faults = Faults()
    with running(1, "sjf", faults) as (core, procs, events, stamped):
        events.expect = 2
        core.submit([job(1, 30, 1), job(1, 5, 2)])
        while sum(1 for e in stamped if e[1] == "step") < 3:
            time.sleep(0.01)
        procs[0].proc.kill()
        assert events.wait(core, 120)
        assert core.status[:2] == [JobStatus.DONE, JobStatus.DONE]
        assert Counter(e[1] for e in events.seen if e[0] == "done") == {0: 1, 1: 1}
        assert steps_of(events, 1)[-5:] == [1, 2, 3, 4, 5]  # the short one, run again
        (fault,) = faults.current()
        assert (
            fault.reason == "device process died (exit code -9); engine restarted, 1 jobs re-queued"
        )


def test_a_device_that_cannot_restart_fails_its_jobs_and_leaves_service():
    faults = Faults()
    with running(1, "sjf", faults) as (core, procs, events, stamped):
        procs[0].link.restarts = Restarts(limit=0)
        events.expect = 2
        core.submit([job(1, 30, 1), job(1, 30, 2)])
        while not any(e[1] == "step" for e in stamped):
            time.sleep(0.01)
        procs[0].proc.kill()
        assert events.wait(core, 60)
        assert core.status[:2] == [JobStatus.FAILED, JobStatus.FAILED]
        errors = [e[3]["error"] for e in events.seen if e[0] == "failed"]
        assert errors == ["device engine 0 crashed: device process died (exit code -9)"] * 2
        (fault,) = faults.current()
        assert "2 jobs failed, the device is out of service" in fault.reason
        core.submit([job(1, 5, 3)])  # no device left: refused at once, not queued
        assert core.status[2] == JobStatus.REJECTED
