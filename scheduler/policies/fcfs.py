"""fcfs: first come, first served, one job at a time, no admission control: the default
queue of Triton, TorchServe and Ray Serve."""

from __future__ import annotations

from scheduler.policy import Policy, PolicyKey, register
from scheduler.queues import HeapQueue


@register
class Fcfs(Policy):
    key = PolicyKey.FCFS
    stands_for = "Triton / TorchServe / Ray Serve default queue"

    def make_queue(self, kind: int) -> HeapQueue:
        arrival = self.sim.arrival
        return HeapQueue(arrival.__getitem__)
