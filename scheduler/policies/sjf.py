"""sjf: the paper's scheduler. Non-preemptive shortest-job-first on the planner's
predicted run time of the chosen (model, accelerator, steps)."""

from __future__ import annotations

from scheduler.policy import Policy, PolicyKey, register
from scheduler.queues import HeapQueue


@register
class Sjf(Policy):
    key = PolicyKey.SJF
    stands_for = "SDaaS paper: SJF on predicted job time"

    def make_queue(self, kind: int) -> HeapQueue:
        return HeapQueue(self.sim.pred.__getitem__)
