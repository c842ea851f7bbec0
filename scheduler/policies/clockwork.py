"""clockwork: Clockwork-style (OSDI '20) deadline-aware serving. Jobs run earliest
deadline first; a job that can no longer finish by its deadline on its predicted time is
dropped, at admission or when it reaches the head of the queue, instead of wasting the
accelerator on a result nobody waits for."""

from __future__ import annotations

from scheduler.policy import Policy, PolicyKey, register
from scheduler.queues import HeapQueue


@register
class Clockwork(Policy):
    key = PolicyKey.CLOCKWORK
    stands_for = "Clockwork: EDF, drops jobs that cannot meet their deadline"
    completes_all = False

    def place(self, j: int, t: float) -> int | None:
        k = self.sim.place_earliest_finish(j)
        if k is not None and t + self.sim.pred[j] > self.sim.deadline_ts[j]:
            return None  # rejected at admission: cannot make it even if started now
        return k

    def make_queue(self, kind: int) -> HeapQueue:
        return HeapQueue(self.sim.deadline_ts.__getitem__)

    def next_batch(self, queue, inst: int, t: float, carry: list[int]) -> list[int]:
        sim = self.sim
        while (j := queue.pop()) is not None:
            if t + sim.pred[j] <= sim.deadline_ts[j]:
                return [j]
            sim.drop(j, t)
        return []
