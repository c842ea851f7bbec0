"""The Ray cluster sdaas serves on: joining it (or starting one on this machine), and
the engine slots it offers.

A node offers device engines through a custom resource per accelerator kind,
`sdaas:<kind>` (`resource_name`), counted in engines: on a real cluster the operator
starts each host with, for example,

    ray start --address HEAD:6379 --resources '{"sdaas:nvidia-a100-sxm4-40gb": 4}'

and `sdaas serve --ray HEAD:6379` places one engine actor per unit of it
(`engine/ray_device.py`). Ray does the membership, placement and failure detection.

`--ray auto` starts a one-node Ray instance here offering the serving spec's devices,
the embedded default as the embedded broker is. Ray registers a node at the machine's
interface address unless told otherwise, so a local instance (and every test's
cluster) is kept on loopback: `loopback_only` before Ray starts.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass

RESOURCE_PREFIX = "sdaas:"
LOOPBACK = "127.0.0.1"


def resource_name(kind: str) -> str:
    """The Ray resource a node offers one engine of accelerator `kind` with."""
    return RESOURCE_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", kind)


@dataclass(frozen=True)
class EngineSlot:
    """One engine a node offers: its kind (a profile name), the node, the n-th there."""

    kind: str
    node_id: str
    node_ip: str
    n: int

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.node_ip}/{self.node_id[:6]}#{self.n}"


def loopback_only() -> None:
    """Keep every Ray process this one starts on 127.0.0.1 (a local instance, tests):
    Ray would otherwise find the interface address and serve on it. Must run before
    Ray starts a node; the environment carries it to Ray's own processes."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # get_node_ip_address: loopback
    no_usage_reports()
    import ray._private.ray_constants as constants

    constants.ENABLE_RAY_CLUSTER = False


def no_usage_reports() -> None:
    """Ray's dashboard reports usage to usage-stats.ray.io unless told not to: no
    process sdaas starts sends anything off the machine (set before Ray starts)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


def connect(address: str, offer: dict[str, int] | None = None) -> str:
    """Join the Ray cluster at `address`, or with "auto" start one on this machine, on
    loopback, offering `offer` ({kind: engines}). Returns what `ray.init` connected to."""
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    no_usage_reports()
    if address == "auto":
        loopback_only()
        resources = {resource_name(k): float(n) for k, n in (offer or {}).items()}
        ctx = ray.init(
            address="local", _node_ip_address=LOOPBACK, resources=resources,
            include_dashboard=False, log_to_driver=False, configure_logging=False,
        )  # fmt: skip
    else:
        ctx = ray.init(address=address, log_to_driver=False, configure_logging=False)
    return ctx.address_info["gcs_address"]


def engine_slots(kinds: list[str]) -> list[EngineSlot]:
    """The engines the cluster's live nodes offer for these kinds, kind by kind, nodes
    in a stable order (node id)."""
    import ray

    slots = []
    nodes = sorted((n for n in ray.nodes() if n.get("Alive")), key=lambda n: n["NodeID"])
    for kind in kinds:
        res = resource_name(kind)
        for node in nodes:
            for n in range(int(node["Resources"].get(res, 0))):
                slots.append(EngineSlot(kind, node["NodeID"], node["NodeManagerAddress"], n))
    return slots


def offered_resources() -> set[str]:
    """The engine resources (`sdaas:<kind>`) the cluster's live nodes offer."""
    import ray

    return {r for n in ray.nodes() if n.get("Alive") for r in n["Resources"]
            if r.startswith(RESOURCE_PREFIX)}  # fmt: skip


def alive(node_id: str) -> bool:
    """Whether Ray still counts the node in (a node that died is out within seconds)."""
    import ray

    return any(n["NodeID"] == node_id and n.get("Alive") for n in ray.nodes())


def offered(kinds_of_devices: list[str]) -> dict[str, int]:
    """{kind: engines} for a one-node instance serving these device kinds."""
    return dict(Counter(kinds_of_devices))
