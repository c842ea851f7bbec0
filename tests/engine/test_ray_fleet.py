"""`--ray auto`: a one-node Ray instance started here offers the spec's engines, on
loopback only, and leaves no process behind."""

from __future__ import annotations

import os
import time

import pytest

from engine.ray_fleet import LOOPBACK, connect, engine_slots, offered, resource_name
from engine.ray_local import off_loopback, ray_processes

pytestmark = pytest.mark.slow


def test_resource_names_are_safe_for_any_kind():
    assert resource_name("cpu-amd epyc/7B13") == "sdaas:cpu-amd_epyc_7B13"
    assert offered(["a", "b", "a"]) == {"a": 2, "b": 1}


def test_auto_starts_a_local_instance_offering_the_devices_on_loopback():
    import ray

    assert not ray.is_initialized()
    try:
        connect("auto", {"cpu-x": 2, "cuda-y": 1})
        slots = engine_slots(["cpu-x", "cuda-y", "absent"])
        assert [(s.kind, s.n) for s in slots] == [("cpu-x", 0), ("cpu-x", 1), ("cuda-y", 0)]
        assert {s.node_ip for s in slots} == {LOOPBACK}
        assert not off_loopback(ray_processes())
        assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"  # no report to ray.io
    finally:
        ray.shutdown()
    end = time.monotonic() + 20
    while ray_processes() and time.monotonic() < end:
        time.sleep(0.2)
    assert not ray_processes()
