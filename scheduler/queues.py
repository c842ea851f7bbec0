"""Job queues the policies order work with. Priorities are fixed when a job is pushed
(a preempted job is pushed again with its new key), so a binary heap suffices."""

from __future__ import annotations

import heapq
from collections.abc import Callable


class HeapQueue:
    """Pops the smallest key; ties go to the earlier push (FIFO)."""

    __slots__ = ("_heap", "_key", "_seq")

    def __init__(self, key: Callable[[int], float]):
        self._heap: list[tuple[float, int, int]] = []
        self._key = key
        self._seq = 0

    def push(self, j: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self._key(j), self._seq, j))

    def pop(self) -> int | None:
        return heapq.heappop(self._heap)[2] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)


class PerModelQueue:
    """One heap per model, so a batch can be filled with jobs of the running model.
    `pop()` takes the smallest key over all models."""

    __slots__ = ("_heaps", "_key", "_model", "_seq", "_n")

    def __init__(self, key: Callable[[int], float], model_of: list[int]):
        self._heaps: dict[int, list[tuple[float, int, int]]] = {}
        self._key = key
        self._model = model_of
        self._seq = 0
        self._n = 0

    def push(self, j: int) -> None:
        self._seq += 1
        self._n += 1
        heapq.heappush(self._heaps.setdefault(self._model[j], []), (self._key(j), self._seq, j))

    def pop(self) -> int | None:
        best = None
        for h in self._heaps.values():
            if h and (best is None or h[0] < best[0]):
                best = h
        if best is None:
            return None
        self._n -= 1
        return heapq.heappop(best)[2]

    def pop_model(self, model: int) -> int | None:
        h = self._heaps.get(model)
        if not h:
            return None
        self._n -= 1
        return heapq.heappop(h)[2]

    def __len__(self) -> int:
        return self._n
