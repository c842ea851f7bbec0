"""A Ray cluster of several nodes on this machine, for tests and benches (a fleet you
can kill a node of without a second host): each node a
raylet of its own (`ray.cluster_utils.Cluster`, how Ray tests itself), all on loopback
(`engine.ray_fleet.loopback_only`); every Ray process it started is gone when it ends."""

from __future__ import annotations

import contextlib
import ipaddress
import time

import psutil

from engine.ray_fleet import LOOPBACK, loopback_only, resource_name

RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "default_worker", "dashboard_agent",
                 "runtime_env_agent", "log_monitor")  # fmt: skip


def ray_processes() -> list[psutil.Process]:
    """Ray's processes on this machine (its daemons and workers)."""
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        text = " ".join([p.info["name"] or "", *(p.info["cmdline"] or [])])
        if any(n in text for n in RAY_PROCESSES) and "pytest" not in text:
            out.append(p)
    return out


def off_loopback(procs: list[psutil.Process]) -> set[str]:
    """Every address other than loopback these processes have a connection to (TCP and
    UDP, IPv4 and IPv6)."""
    seen = set()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            for c in p.net_connections(kind="inet"):
                if c.raddr:
                    ip = ipaddress.ip_address(c.raddr.ip)
                    ip = getattr(ip, "ipv4_mapped", None) or ip
                    if not ip.is_loopback:
                        seen.add(str(ip))
    return seen


@contextlib.contextmanager
def local_fleet(engines_per_node: list[dict[str, int]], cpus: int = 1):
    """A cluster with one node per entry, each offering {kind: engines}; yields the
    `Cluster` (connected: `ray.init` done). Torn down, and its processes gone, after."""
    loopback_only()
    import ray
    from ray.cluster_utils import Cluster

    def args(offer):
        return {"num_cpus": cpus, "node_ip_address": LOOPBACK,
                "resources": {resource_name(k): n for k, n in offer.items()}}  # fmt: skip

    before = {p.pid for p in ray_processes()}  # another cluster's: not ours to wait for
    head, *rest = engines_per_node
    cluster = Cluster(initialize_head=True,
                      head_node_args={**args(head), "include_dashboard": False})  # fmt: skip
    try:
        for offer in rest:
            cluster.add_node(**args(offer))
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        end = time.monotonic() + 20
        while {p.pid for p in ray_processes()} - before and time.monotonic() < end:
            time.sleep(0.2)
