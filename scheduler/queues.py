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


class SlackQueue:
    """A kind's queued jobs in the orders slack-sjf and the fair bound decide by: by size
    (`shortest`), by latest start, deadline minus size (`most_urgent`), and per model by
    size (`shortest_of`) and in the orders a batch is filled from (`candidates_of`: most
    urgent first, or shortest first). Keys are fixed when a job is
    pushed (`size`: predicted, or true remaining seconds). A job may be pushed again
    after it was taken (set aside, or its segment cut): each push holds a token, and an
    entry whose token is not its job's latest is skipped (lazy deletion); a push into an
    empty queue first clears the heaps (every entry in them is stale then), so they hold
    only what was pushed since the queue last ran dry.

    `live` (read it, never write it): queued job -> its latest token; `len(queue.live)`
    is `len(queue)` without a Python call (policies ask at every dispatch)."""

    __slots__ = ("_size", "_deadline", "_model", "_by_size", "_by_slack", "_by_model",
                 "_fill_of", "live", "_seq")  # fmt: skip

    def __init__(self, size: list[float], deadline_ts: list[float], model: list[int]):
        self._size, self._deadline, self._model = size, deadline_ts, model
        self._by_size: list[tuple[float, int, int]] = []
        self._by_slack: list[tuple[float, int, int]] = []
        self._by_model: dict[int, list[tuple[float, int, int]]] = {}
        # per model, by latest start (the most urgent fill order)
        self._fill_of: dict[int, list[tuple[float, int, int]]] = {}
        self.live: dict[int, int] = {}  # queued job -> its latest push
        self._seq = 0

    def push(self, j: int) -> None:
        live = self.live
        if not live and self._by_size:  # ran dry: every entry is stale
            self._by_size.clear()
            self._by_slack.clear()
            self._by_model.clear()
            self._fill_of.clear()
        self._seq += 1
        tok, size, m = self._seq, self._size[j], self._model[j]
        slack = self._deadline[j] - size
        live[j] = tok
        heappush = heapq.heappush
        heappush(self._by_size, (size, tok, j))
        heappush(self._by_slack, (slack, tok, j))
        heap = self._by_model.get(m)
        if heap is None:
            self._by_model[m] = [(size, tok, j)]
        else:
            heappush(heap, (size, tok, j))
        heap = self._fill_of.get(m)
        if heap is None:
            self._fill_of[m] = [(slack, tok, j)]
        else:
            heappush(heap, (slack, tok, j))

    def shortest(self) -> int | None:
        return self._first(self._by_size)

    def most_urgent(self) -> int | None:
        """The job with the earliest latest start (deadline minus size)."""
        return self._first(self._by_slack)

    def shortest_of(self, model: int) -> int | None:
        heap = self._by_model.get(model)
        return self._first(heap) if heap else None

    def candidates_of(self, model: int, n: int, shortest: bool = False) -> list[int]:
        """Up to `n` queued jobs of `model` in fill order, the heap left holding them:
        most urgent first (a batch takes on the jobs that can least afford to wait for
        the next one), or with `shortest` shortest first (the most jobs per batch)."""
        heaps = self._by_model if shortest else self._fill_of
        heap, live = heaps.get(model), self.live
        got: list[tuple[float, int, int]] = []
        while heap and len(got) < n:
            entry = heapq.heappop(heap)
            if live.get(entry[2]) == entry[1]:
                got.append(entry)
        for entry in got:
            heapq.heappush(heap, entry)
        return [entry[2] for entry in got]

    def take(self, j: int) -> None:
        del self.live[j]

    def _first(self, heap: list[tuple[float, int, int]]) -> int | None:
        live = self.live
        while heap and live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def __len__(self) -> int:
        return len(self.live)
