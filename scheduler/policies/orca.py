"""orca: LLM-style iteration-level scheduling (Orca, OSDI '22) applied to denoising
steps. FCFS; a running batch keeps going step after step, and queued jobs of the same
model join it between steps (continuous batching) up to the profiled batch limit. A
batch of b runs each step in factor(b) = L(b)/L(1) of the batch-1 time, from the
profiles' batch sizes; running jobs are never preempted."""

from __future__ import annotations

from scheduler.policy import Policy, PolicyKey, register
from scheduler.queues import PerModelQueue


@register
class Orca(Policy):
    key = PolicyKey.ORCA
    stands_for = "Orca / vLLM: FCFS with continuous batching of denoising steps"
    batching = True

    def make_queue(self, kind: int) -> PerModelQueue:
        return PerModelQueue(self.sim.arrival.__getitem__, self.sim.model)

    def _limit(self, m: int, inst: int) -> int:
        sim = self.sim
        return sim.catalog.batch_limit(m, sim.ck[sim.inst_kind[inst]])

    def next_batch(self, queue, inst: int, t: float, carry: list[int]) -> list[int]:
        batch = list(carry)
        if not batch:
            j = queue.pop()
            if j is None:
                return []
            batch.append(j)
        m = self.sim.model[batch[0]]
        limit = self._limit(m, inst)
        while len(batch) < limit and (j := queue.pop_model(m)) is not None:
            batch.append(j)
        return batch

    def on_busy_arrival(self, j: int, kind: int, t: float) -> None:
        sim = self.sim
        m = sim.model[j]
        for i in sim.instances_of[kind]:
            b = sim.seg_jobs[i]
            if b and sim.model[b[0]] == m and len(b) < self._limit(m, i):
                sim.interrupt(i, t)  # it re-forms its batch at the next step, with j
                return
