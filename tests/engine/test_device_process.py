"""Device engines in processes of their own: two devices really run at once, every job
ends with its image, and a dead device process fails its jobs without stopping the
others."""

from __future__ import annotations

import time

import numpy as np

from engine.device_process import DeviceProcess
from models.card import load_card
from scheduler.cluster import Cluster
from scheduler.live import DONE, FAILED, LIVE_CONFIG, LiveCore
from scheduler.policy import make_policy
from sdaas.config import SHIPPED_TOYWORLD
from tests.engine.conftest import MODELS, Events, catalog, job


def start(devices: int, policy: str = "sjf"):
    cards = {m: load_card(SHIPPED_TOYWORLD / "cards" / f"{m}.yaml") for m in MODELS}
    core = LiveCore(catalog(), Cluster.parse(f"{devices}xcpu"), make_policy(policy), LIVE_CONFIG)
    events = Events()
    stamped = []

    def on_event(kind, sj, **data):
        stamped.append((time.monotonic(), kind, sj.index, data.get("device")))
        events(kind, sj, **data)

    procs = [
        DeviceProcess(
            i, core, cards, MODELS, lambda sj: sj.payload, on_event, device="cpu", threads=1
        )  # fmt: skip
        for i in range(devices)
    ]
    core.attach(procs)
    for p in procs:
        p.start()
    return core, procs, events, stamped


def test_two_device_processes_run_at_once_and_answer_every_job():
    core, procs, events, stamped = start(2)
    try:
        events.expect = 4
        core.submit([job(1, 30, s) for s in range(4)])
        assert events.wait(core, 120)
        assert core.status[:4] == [DONE] * 4
        spans = {}
        for t, kind, _, dev in stamped:
            if kind == "step":
                lo, hi = spans.get(dev, (t, t))
                spans[dev] = (min(lo, t), max(hi, t))
        (a0, a1), (b0, b1) = spans[0], spans[1]
        assert a0 < b1 and b0 < a1  # both devices stepped during the same interval
        assert len(events.images) == 4
        assert all(np.asarray(im).shape == (32, 32, 3) for im in events.images.values())
    finally:
        for p in procs:
            p.stop(5)


def test_a_dead_device_process_fails_its_jobs_and_the_other_serves_on():
    core, procs, events, stamped = start(2)
    try:
        events.expect = 2
        core.submit([job(1, 50, 1), job(1, 50, 2)])
        while sum(1 for e in stamped if e[1] == "step") < 4:
            time.sleep(0.01)
        procs[0].proc.kill()
        assert events.wait(core, 120)
        assert sorted(core.status[:2]) == sorted([FAILED, DONE])
        failed = [e for e in events.seen if e[0] == "failed"]
        assert failed and "device process died" in failed[0][3]["error"]
        events.expect = 3
        core.submit([job(1, 5, 3)])  # the dead device refuses; the live one serves
        assert events.wait(core, 120)
        assert core.status[2] in (DONE, FAILED)
    finally:
        for p in procs:
            p.stop(5)
