"""fastserve: FastServe-style (2023) skip-join multi-level feedback queue, preempting
between denoising steps. Level l grants a quantum of q0 * 2^l seconds of work; a new job
skips the levels whose quantum is shorter than its first step; a job that uses up its
quantum drops one level. Short jobs finish in the top levels without knowing job sizes
up front; long ones sink."""

from __future__ import annotations

import math
from collections import deque

from scheduler.policy import Policy, PolicyKey, register

LEVELS = 8


class MlfqQueue:
    """Per-level FIFO queues; pop takes from the highest non-empty level."""

    def __init__(self, level: list[int]):
        self.levels = [deque() for _ in range(LEVELS)]
        self.level = level
        self.n = 0

    def push(self, j: int) -> None:
        self.levels[self.level[j]].append(j)
        self.n += 1

    def pop(self) -> int | None:
        for q in self.levels:
            if q:
                self.n -= 1
                return q.popleft()
        return None

    def __len__(self) -> int:
        return self.n


@register
class FastServe(Policy):
    key = PolicyKey.FASTSERVE
    stands_for = "FastServe: skip-join MLFQ, preempts between steps"

    def __init__(self, q0: float = 0.05):
        self.q0 = q0
        self.quantum = [q0 * 2**lvl for lvl in range(LEVELS)]  # work seconds, per level

    def bind(self, sim) -> None:
        super().bind(sim)
        self.level: list[int] = []

    def jobs_added(self, n: int) -> None:
        self.level += [0] * (n - len(self.level))

    def make_queue(self, kind: int) -> MlfqQueue:
        return MlfqQueue(self.level)

    def next_batch(self, queue, inst: int, t: float, carry: list[int]) -> list[int]:
        for j in carry:
            self.level[j] = min(self.level[j] + 1, LEVELS - 1)
            queue.push(j)
        j = queue.pop()
        return [] if j is None else [j]

    def place(self, j: int, t: float) -> int | None:
        k = self.sim.place_earliest_finish(j)
        if k is not None:
            first_step = self.sim.pred[j] / self.sim.steps[j]
            lvl = 0
            while lvl < LEVELS - 1 and self.quantum[lvl] < first_step:
                lvl += 1
            self.level[j] = lvl
        return k

    def segment_work(self, j: int) -> float:
        sim = self.sim
        unit = sim.work[j] / sim.steps[j]  # preempt only at step boundaries
        return math.ceil(self.quantum[self.level[j]] / unit) * unit
