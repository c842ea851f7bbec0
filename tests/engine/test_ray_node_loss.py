"""A Ray node with several engines that dies: none of its jobs fails, each finishes
once on the engines left (emulated engines: each step's time from a profile)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from engine.ray_fleet import engine_slots
from engine.ray_local import local_fleet
from scheduler.cluster import Cluster
from scheduler.live import LIVE_CONFIG, LiveCore
from scheduler.policies import make_policy
from sdaas.job_status import JobStatus
from tests.engine.conftest import MODELS, Events, catalog, job, link_of

pytestmark = pytest.mark.slow


def test_a_node_of_several_engines_that_dies_fails_no_job():
    """Its engines are noticed gone one by one: a job given back by the first may be
    sent to a sibling already dead but not yet noticed; that does not count as a crash
    of the job (it would fail at MAX_CRASHES), it moves on again and finishes."""
    from engine.ray_device import RayDevice, start_all
    from models.emulated import EmulatedLoader, StepTiming

    with local_fleet([{"cpu": 1}, {"cpu": 3}]) as cluster:
        # the head's engine first: the 3 jobs below go to it and to 2 of the worker's 3
        # engines (least queued work, first index), so a dead worker engine is idle
        slots = sorted(engine_slots(["cpu"]), key=lambda s: s.node_id != cluster.head_node.node_id)
        core = LiveCore(catalog(), Cluster.parse("4xcpu"), make_policy("fcfs"), LIVE_CONFIG)
        events, faults = Events(), []
        links = [link_of(core, i, events, name=s.name,
                         on_fault=lambda part, why, fatal=False: faults.append(why))
                 for i, s in enumerate(slots)]  # fmt: skip
        timing = StepTiming(fixed_s=0.0, step_s=0.05, batch_factor=(1.0,))
        loader = EmulatedLoader({m: timing for m in MODELS}, size=(8, 8))
        devices = [RayDevice(link, s, loader, MODELS) for link, s in zip(links, slots, strict=True)]
        for link, d in zip(links, devices, strict=True):
            link.connect(d)
        core.attach(links)
        start_all(devices)
        worker = cluster.worker_nodes and next(iter(cluster.worker_nodes))
        try:
            events.expect = 3
            core.submit([job(0, 40, seed=j) for j in range(3)])  # 3 of 4 engines busy
            time.sleep(0.5)
            cluster.remove_node(worker)
            assert events.wait(core, 120)
            assert [core.status[j] for j in range(3)] == [JobStatus.DONE] * 3, faults
            assert Counter(e[1] for e in events.seen if e[0] == "done") == Counter(range(3))
            gone = [d.index for d in devices if d.slot.node_id == worker.node_id]
            assert set(gone) <= core.out_of_service and len(gone) == 3
        finally:
            for d in devices:
                d.stop(5)
