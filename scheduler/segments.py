"""Who runs a segment: the contract between the scheduling core and what executes its
segments. The simulator computes when a segment ends (`Arithmetic`); the live core
hands it to a device, which reports the end itself (`scheduler/live.py`). The core keeps
the rest (queues, batches, the event heap), so a policy decides the same under both."""

from __future__ import annotations

import math
from typing import Protocol

from scheduler.job_table import Core


class SegmentRunner(Protocol):
    def run(self, i: int, batch: list[int], work_start: float, work: float, factor: float) -> float:
        """Start instance i's segment (its jobs `batch`, work starting at `work_start`, the
        smallest batch-1 work to run `work`, the batch's slow-down `factor`); return when
        it ends, or math.inf when the runner reports the end itself (serving: the device
        calls the core back)."""

    def cut(self, i: int, t: float) -> None:
        """End instance i's running segment at its next denoising-step boundary after t
        (the core asks only while i runs a segment and preemption is on)."""


class Arithmetic:
    """The simulator's runner: the batch runs its smallest work at 1/factor speed; a cut
    lands on the next step boundary of the batch's shortest step."""

    def __init__(self, core: Core):
        self.core = core

    def run(self, i: int, batch: list[int], work_start: float, work: float, factor: float) -> float:
        return work_start + work * factor

    def cut(self, i: int, t: float) -> None:
        core = self.core
        ws = core.seg_work_start[i]
        if t <= ws:
            cut = ws
        else:
            batch = core.seg_jobs[i]
            step_wall = min(core.work[j] / core.steps[j] for j in batch) / core.seg_speed[i]
            # max(): the 1e-9 slack that stops float noise adding a whole step must
            # never put the cut before now
            cut = max(t, ws + math.ceil((t - ws) / step_wall - 1e-9) * step_wall)
        if cut < core.seg_end[i] - 1e-12:
            core.schedule_end(i, cut)
