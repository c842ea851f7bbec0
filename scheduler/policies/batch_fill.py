"""Filling a step batch with more jobs of its model: the one rule slack-sjf and the fair
bound share (they differ in the times they fill by, predicted or true, and in the order
their queues offer candidates: most urgent first, or shortest first)."""

from __future__ import annotations

import math

# candidates looked at per fill: a batch holds at most 8, and a job that cannot join is
# skipped, so a few times the limit finds the ones that can without scanning a long queue
SCAN = 16


def fill_batch(sim, queue, batch: list[int], kind: int, start: float, size, waiting: int,
               shortest: bool = False) -> list[int]:  # fmt: skip
    """`batch` plus queued jobs of its model in the queue's fill order
    (`queue.candidates_of`: most urgent first, or shortest first when `shortest`), up to
    the profiled batch limit and one more than the `waiting` jobs per instance, each
    joining only if the slower batch, started at `start`, still meets every member's
    deadline (one that cannot is passed over, not the end of the fill). `size[j]`: the
    work a job brings (predicted or true seconds at batch 1)."""
    m, ck = sim.model[batch[0]], sim.ck[kind]
    need = len(batch) + math.ceil(waiting / sim.n_inst[kind])
    limit = min(sim.catalog.batch_limit(m, ck), need)
    if len(batch) >= limit:
        return batch
    deadline = sim.deadline_ts
    factor = sim.catalog.batch_factor[(m, ck)]
    due = min(deadline[j] for j in batch)
    longest = max(size[j] for j in batch)
    for x in queue.candidates_of(m, SCAN, shortest):
        most = max(longest, size[x])
        if start + most * factor[len(batch) + 1] > min(due, deadline[x]):
            continue
        queue.take(x)
        batch.append(x)
        due, longest = min(due, deadline[x]), most
        if len(batch) >= limit:
            break
    return batch
