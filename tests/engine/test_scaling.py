"""Elastic capacity on an emulated Ray fleet: a burst makes the elastic loop ask the
autoscaler for more engines (a fake backend that counts the requests and adds the node
a real autoscaler would), they join the core and serve, and idle ones leave after."""

from __future__ import annotations

import time

import pytest

from engine.ray_device import RayDevice
from engine.ray_engines import RayEngines
from engine.ray_fleet import LOOPBACK, engine_slots, resource_name
from engine.ray_local import local_fleet, ray_processes
from engine.scaling import Scaling
from models.emulated import EmulatedLoader, StepTiming
from scheduler.cluster import Cluster
from scheduler.elastic import Autoscaler
from scheduler.live import LIVE_CONFIG, LiveCore
from scheduler.policies import make_policy
from sdaas.job_status import JobStatus
from tests.engine.conftest import MODELS, Events, catalog, job, link_of

pytestmark = pytest.mark.slow


class FakeAutoscaler:
    """Counts the requests; asked for more engines than the fleet offers, it adds one
    node offering `per_node` (what Ray's autoscaler would launch)."""

    def __init__(self, cluster, per_node: int):
        self.cluster, self.per_node, self.requests, self.nodes = cluster, per_node, [], 0

    def request(self, engines: dict[str, int]) -> None:
        self.requests.append(dict(engines))
        if engines["cpu"] > len(engine_slots(["cpu"])):
            self.cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK,
                                  resources={resource_name("cpu"): self.per_node})  # fmt: skip
            self.cluster.wait_for_nodes()
            self.nodes += 1


class Later:
    """The loop's clock, which the test can move past the signal's window."""

    def __init__(self):
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


def test_a_burst_brings_engines_that_serve_and_idle_ones_leave():
    with local_fleet([{"cpu": 1}]) as cluster:
        core = LiveCore(catalog(), Cluster.parse("3xcpu"), make_policy("orca"), LIVE_CONFIG)
        events, faults = Events(), []
        links = [link_of(core, i, events, on_fault=lambda *a, **k: faults.append(a))
                 for i in range(3)]  # fmt: skip
        core.attach(links)
        timing = StepTiming(fixed_s=0.0, step_s=0.05, batch_factor=(1.0, 1.3, 1.6, 1.9))
        loader = EmulatedLoader({m: timing for m in MODELS}, size=(8, 8))
        engines = RayEngines(core, links, ["cpu"] * 3,
                             lambda link, slot: RayDevice(link, slot, loader, MODELS))  # fmt: skip
        engines.start(engine_slots(["cpu"]))
        assert engines.in_service("cpu") == [0]
        backend, clock = FakeAutoscaler(cluster, per_node=2), Later()
        scaler = Autoscaler(start=1, tick_s=0.5, window_s=5.0, models_window_s=5.0,
                            target_util=0.5, queue_s=1.0, idle_s=0.5)  # fmt: skip
        scaling = Scaling(engines, ["cpu"], scaler, backend, clock)
        try:
            events.expect = 16
            # 40 steps each: about 15 s on the first engine alone, time enough for the
            # new ones to start and load on a busy host (20 steps, 7 s, was not, at a
            # load average of 4)
            core.submit([job(j % 2, 40, seed=j) for j in range(16)])
            assert scaling.tick() == {"cpu": 3}  # 26 s of work in a 5 s window, capped
            end = time.monotonic() + 120
            while len(engines.in_service("cpu")) < 3:
                assert time.monotonic() < end, "the new engines never joined"
                time.sleep(0.1)
            assert events.wait(core, 120)
            assert [core.status[j] for j in range(16)] == [JobStatus.DONE] * 16
            ran_on = {e[3]["device"] for e in events.seen if e[0] == "started"}
            assert ran_on & {1, 2}, "the engines that joined served nothing"
            clock.ahead = 60.0  # the burst is out of the window: one engine is wanted
            scaling.tick()
            assert scaling.tick() == {"cpu": 1}
            assert len(engines.in_service("cpu")) == 1
            assert backend.requests[0] == {"cpu": 3} and backend.requests[-1] == {"cpu": 1}
            assert backend.nodes == 1 and not faults
            assert sum(isinstance(d, RayDevice) and d.state == "serving"
                       for d in engines.devices) == 1  # fmt: skip
        finally:
            engines.stop()
    assert not ray_processes()
