"""edf: earliest deadline (arrival + latency SLO) first, non-preemptive, never drops."""

from __future__ import annotations

from scheduler.policy import Policy, PolicyKey, register
from scheduler.queues import HeapQueue


@register
class Edf(Policy):
    key = PolicyKey.EDF
    stands_for = "earliest deadline first"

    def make_queue(self, kind: int) -> HeapQueue:
        return HeapQueue(self.sim.deadline_ts.__getitem__)
