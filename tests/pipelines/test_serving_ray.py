"""Serving on a Ray cluster: the toy-world models in engine actors on 2 Ray nodes (on
loopback) serve the end-to-end workload with the outcomes single-host serving gives:
the same status per job, one result each, the same dead letters."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from adapters.job_client import JobClient
from adapters.kafka_io import Topics
from adapters.result_store import ResultStore
from engine.ray_local import local_fleet, off_loopback, ray_processes
from pipelines.serving_driver import ServingDriver
from pipelines.serving_setup import build_spec
from tests.pipelines.test_serving_e2e import malformed, submit_mix, topic_messages

pytestmark = pytest.mark.slow


def serve_mix(spec, broker) -> tuple[dict[str, str], list[str], ServingDriver]:
    """The e2e mix (10 jobs, 9 malformed records) through one serving driver: status per
    job (by its index in the mix), and the dead letters' reasons."""
    topics = Topics(f"t{uuid.uuid4().hex[:6]}")
    spec = replace(spec, source_topic=topics.jobs)
    client = JobClient(broker.bootstrap, topics)
    jobs = submit_mix(client, spec.planner.styles, 10)
    for raw in malformed(spec.planner.styles[0]).values():
        client.send_raw(raw)
    client.flush()
    driver = ServingDriver(spec, broker.bootstrap, topics, progress=lambda *_: None)
    driver.run(idle_exit_s=1.5)
    fleet = driver.runtime.fleet()
    driver.close()
    store = ResultStore(Path(spec.store_path))
    mine = {j.job_id: i for i, j in enumerate(jobs)}
    results = [r for r in store.all() if r.job_id in mine]
    assert len(results) == len({r.job_id for r in results}) == 10  # one result each
    status = {mine[r.job_id]: r.status for r in results}
    letters = sorted(d["reason"] for d in topic_messages(broker.bootstrap, topics.dead_letters))
    return status, letters, fleet


def test_two_ray_nodes_serve_the_e2e_mix_as_one_host_does(serving_settings, broker):
    spec = build_spec(serving_settings, window_s=30.0, max_backlog_s=1e9, threads=1)
    here, here_letters, _ = serve_mix(spec, broker)
    kind = spec.devices[0].name
    with local_fleet([{kind: 1}, {kind: 1}, {"cuda-unprofiled": 1}]) as cluster:
        # no --devices: what the cluster offers of the profiled kinds (the third is not)
        on_ray = build_spec(serving_settings, window_s=30.0, max_backlog_s=1e9, threads=1,
                            ray=cluster.address)  # fmt: skip
        assert [d.name for d in on_ray.devices] == [kind]
        there, there_letters, fleet = serve_mix(on_ray, broker)
        assert not off_loopback(ray_processes())
    assert there == here and there_letters == here_letters
    assert sum(s == "done" for s in there.values()) >= 5
    assert len(fleet) == 2 and len({row["node"] for row in fleet}) == 1  # both on loopback
    assert len({row["engine"] for row in fleet}) == 2
    assert all(row["in_service"] and row["dispatch_p99_ms"] is not None for row in fleet)


def test_a_node_killed_mid_burst_loses_no_job_and_stores_none_twice(serving_settings, broker):
    """Counted from the result store: every job of the burst has one result, done; the
    ones the dead node was running ran again elsewhere and say so (`restarts`)."""
    import threading
    import time

    spec = build_spec(serving_settings, window_s=1.0, max_backlog_s=1e9, threads=1)
    kind = spec.devices[0].name
    topics = Topics(f"t{uuid.uuid4().hex[:6]}")
    with local_fleet([{kind: 1}, {kind: 1}]) as cluster:
        spec = replace(spec, ray=cluster.address, source_topic=topics.jobs)
        client = JobClient(broker.bootstrap, topics)
        jobs = [client.submit(tenant="alice", prompt="two red circles, flat style",
                              style=spec.planner.styles[0], latency_slo_s=120.0, min_clip=0.0,
                              seed=i) for i in range(8)]  # fmt: skip
        client.flush()
        driver = ServingDriver(spec, broker.bootstrap, topics, progress=lambda *_: None)
        worker = next(iter(cluster.worker_nodes))
        runner = threading.Thread(target=driver.run, kwargs={"idle_exit_s": 3.0})
        runner.start()
        core, end = driver.runtime.core, time.monotonic() + 300
        victim = next(i for i, e in enumerate(driver.runtime.engines)
                      if e.slot.node_id == worker.node_id)  # fmt: skip
        while victim not in core.ran_on:  # the worker node holds a job's step state
            assert time.monotonic() < end and runner.is_alive(), "no job ran on the worker"
            time.sleep(0.01)
        cluster.remove_node(worker)
        runner.join(300)
        assert not runner.is_alive()
        fleet = driver.runtime.fleet()
        faults = [f.reason for f in driver.runtime.faults.current()]
        driver.close()
    store = ResultStore(Path(spec.store_path))
    mine = {j.job_id for j in jobs}
    results = [r for r in store.all() if r.job_id in mine]
    assert sorted(r.job_id for r in results) == sorted(mine)  # one each: none lost, none twice
    assert {r.status for r in results} == {"done"}, [(r.status, r.error) for r in results]
    moved = [r for r in results if r.restarts]
    assert moved and all(r.device != fleet[victim]["engine"] for r in moved)
    assert not fleet[victim]["in_service"] and fleet[victim]["state"] == "left"
    assert any("left the cluster" in f for f in faults), faults
