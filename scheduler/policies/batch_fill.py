"""Filling a step batch with more jobs of its model: the one rule slack-sjf and the fair
bound share (they differ only in the times they fill by: predicted, or true)."""

from __future__ import annotations

import math


def fill_batch(sim, queue, batch: list[int], kind: int, start: float, size, waiting: int
               ) -> list[int]:  # fmt: skip
    """`batch` plus the shortest queued jobs of its model (`queue.shortest_of`), up to the
    profiled batch limit and one more than the `waiting` jobs per instance, while the
    slower batch, started at `start`, still meets every member's deadline. `size[j]`:
    the work a job brings (predicted or true seconds at batch 1)."""
    m, ck = sim.model[batch[0]], sim.ck[kind]
    need = len(batch) + math.ceil(waiting / sim.n_inst[kind])
    limit = min(sim.catalog.batch_limit(m, ck), need)
    if len(batch) >= limit:
        return batch
    deadline = sim.deadline_ts
    factor = sim.catalog.batch_factor[(m, ck)]
    due = min(deadline[j] for j in batch)
    longest = max(size[j] for j in batch)
    while len(batch) < limit and (x := queue.shortest_of(m)) is not None:
        most = max(longest, size[x])
        if start + most * factor[len(batch) + 1] > min(due, deadline[x]):
            break
        queue.take(x)
        batch.append(x)
        due, longest = min(due, deadline[x]), most
    return batch
