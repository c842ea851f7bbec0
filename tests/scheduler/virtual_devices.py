"""Devices on a virtual clock for the live core: a segment of n steps at batch size b
takes n * (seconds per step) * factor(b), as the simulator computes it (times the first
job's `speed`, its real run over its prediction: 1 unless a test says), and an interrupt
ends it at its next step boundary. Lets a test run `LiveCore` (the served system's
core) as the simulator runs, event by event, with no threads and no sleeping. They take
the core's commands as a device engine does (`scheduler/seam.py`)."""

from __future__ import annotations

import heapq
import math

from scheduler.live import LiveCore, LiveJob
from scheduler.seam import Command, Cut, SegmentJob, StartSegment


class VirtualDevice:
    def __init__(self, harness: VirtualCluster, i: int):
        self.h, self.i = harness, i
        self.version = 0
        self.jobs: tuple[SegmentJob, ...] = ()
        self.start = self.step_s = 0.0
        self.steps = 0
        self.ran: list[tuple[tuple[int, ...], int]] = []  # (jobs, steps) per segment

    def send(self, command: Command) -> None:
        """A `StartSegment` or a `Cut`; a `Forget` is nothing here (no step states)."""
        if isinstance(command, StartSegment):
            self.start_segment(command.jobs, command.steps)
        elif isinstance(command, Cut):
            self.interrupt()

    def start_segment(self, jobs: tuple[SegmentJob, ...], steps: int) -> None:
        self.version += 1
        self.jobs, self.steps, self.start = jobs, steps, self.h.now
        core = self.h.core
        if jobs:
            kind = core.ck[core.inst_kind[self.i]]
            m = jobs[0].model
            factor = core.catalog.batch_factor[(m, kind)][len(jobs)] if len(jobs) > 1 else 1.0
            j = jobs[0].index
            self.step_s = core.pred[j] / core.steps[j] * factor * self.h.speed.get(j, 1.0)
            self.ran.append((tuple(x.index for x in jobs), steps))
        self.h.push(self.start + steps * self.step_s, self, self.version, steps)

    def interrupt(self) -> None:
        if not self.jobs:
            return
        now = self.h.now
        n = math.ceil((now - self.start) / self.step_s - 1e-9) if now > self.start else 0
        if n >= self.steps:
            return
        self.version += 1
        self.h.push(self.start + n * self.step_s, self, self.version, n)


class VirtualCluster:
    """Runs a list of (arrival time, LiveJob) through a LiveCore; same-time arrivals are
    one submit (a window). Returns the core after every job has settled."""

    def __init__(self, core: LiveCore, speed: dict[int, float] | None = None):
        self.core = core
        self.speed = speed or {}  # job index -> its real run time over its prediction
        self.now = 0.0
        self.events: list = []
        self.seq = 0
        core.clock = lambda: self.now
        self.devices = [VirtualDevice(self, i) for i in range(len(core.inst_kind))]
        core.attach(self.devices)

    def push(self, t: float, dev: VirtualDevice, version: int, steps: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, dev, version, steps))

    def run(self, arrivals: list[tuple[float, LiveJob]]) -> LiveCore:
        ai = 0
        while ai < len(arrivals) or self.events:
            if ai < len(arrivals) and (not self.events or arrivals[ai][0] <= self.events[0][0]):
                t = arrivals[ai][0]
                group = []
                while ai < len(arrivals) and arrivals[ai][0] == t:
                    group.append(arrivals[ai][1])
                    ai += 1
                self.now = t
                self.core.submit(group)
                continue
            t, _, dev, version, steps = heapq.heappop(self.events)
            if version != dev.version:
                continue
            self.now = t
            dev.jobs = ()
            self.core.segment_end(dev.i, steps)
        return self.core
