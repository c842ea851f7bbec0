"""Device engines as Ray actors on a 2-node cluster on loopback: the core's jobs run on
both nodes, and a node that dies loses no job and runs none twice."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from engine.ray_fleet import LOOPBACK, engine_slots
from engine.ray_local import local_fleet, off_loopback, ray_processes
from models.card import load_card
from scheduler.cluster import Cluster
from scheduler.live import LIVE_CONFIG, LiveCore
from scheduler.policies import make_policy
from sdaas.config import SHIPPED_TOYWORLD
from sdaas.job_status import JobStatus
from tests.engine.conftest import MODELS, Events, catalog, job, link_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet():
    with local_fleet([{"cpu": 1}, {"cpu": 1}]) as cluster:
        yield cluster
    assert not ray_processes(), "a Ray process outlived its cluster"


def ray_core(faults: list, policy: str = "orca"):
    """A live core over the fleet's two engines, one per node, running the toy models."""
    from engine.ray_device import CardLoader, RayDevice, start_all

    slots = engine_slots(["cpu"])
    core = LiveCore(catalog(), Cluster.parse(f"{len(slots)}xcpu"), make_policy(policy),
                    LIVE_CONFIG)  # fmt: skip
    events = Events()
    cards = {m: load_card(SHIPPED_TOYWORLD / "cards" / f"{m}.yaml") for m in MODELS}
    links = [link_of(core, i, events, name=s.name,
                     on_fault=lambda part, why, fatal=False: faults.append((part, why)))
             for i, s in enumerate(slots)]  # fmt: skip
    devices = [RayDevice(link, s, CardLoader(cards, "cpu"), MODELS, threads=1)
               for link, s in zip(links, slots, strict=True)]  # fmt: skip
    for link, d in zip(links, devices, strict=True):
        link.connect(d)
    core.attach(links)
    start_all(devices)
    return core, devices, events


def test_the_fleet_is_two_nodes_on_loopback_only(fleet):
    slots = engine_slots(["cpu"])
    assert len(slots) == 2 and len({s.node_id for s in slots}) == 2
    assert {s.node_ip for s in slots} == {LOOPBACK}
    assert not off_loopback(ray_processes())


def test_jobs_run_on_both_nodes_once_each(fleet):
    faults: list = []
    core, devices, events = ray_core(faults)
    try:
        events.expect = 6
        core.submit([job(j % 2, 4, seed=j) for j in range(6)])
        assert events.wait(core, 240)
        assert [core.status[j] for j in range(6)] == [JobStatus.DONE] * 6
        done = Counter(e[1] for e in events.seen if e[0] == "done")
        assert done == Counter(range(6))
        assert all(events.images[j].size == (32, 32) for j in range(6))
        ran_on = {e[3]["device"] for e in events.seen if e[0] == "started"}
        assert ran_on == {0, 1}  # both nodes served
        assert all(d.dispatch_s for d in devices) and not faults
        assert not off_loopback(ray_processes())
    finally:
        for d in devices:
            d.stop(5)


def test_a_node_that_dies_mid_burst_loses_no_job(fleet):
    faults: list = []
    core, devices, events = ray_core(faults)
    worker = next(n for n in fleet.worker_nodes)
    victim = next(d for d in devices if d.slot.node_id == worker.node_id)
    try:
        events.expect = 8
        core.submit([job(1, 12, seed=j) for j in range(8)])
        end = time.monotonic() + 120
        while not any(e[0] == "step" and e[3]["device"] == victim.index for e in events.seen):
            assert time.monotonic() < end, "the worker node never ran a step"
            time.sleep(0.01)
        fleet.remove_node(worker)  # its raylet and its engine die
        assert events.wait(core, 240)
        statuses = [core.status[j] for j in range(8)]
        assert statuses == [JobStatus.DONE] * 8, statuses
        done = Counter(e[1] for e in events.seen if e[0] == "done")
        assert done == Counter(range(8))  # each once: none lost, none twice
        assert victim.index in core.out_of_service and victim.state == "left"
        assert any("left the cluster" in why or "re-queued" in why for _, why in faults)
        after = [e for e in events.seen if e[0] == "done"][-1]
        assert after[3]["device"] != victim.index
    finally:
        for d in devices:
            d.stop(5)
