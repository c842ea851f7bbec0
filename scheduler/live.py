"""The served system's scheduler: the simulator's core in wall-clock time.

`LiveCore` is the `Simulator` with time and segments made real. Placement, admission,
queue order, batching, preemption at step boundaries and drops are the policy's and the
simulator's code, unchanged, so `sdaas serve --policy P` decides as `sdaas bench` does.
What differs is who says when a segment ends: the simulator computes it from the work;
the core's segment runner sends each segment to its device instance as a typed command
(`scheduler/seam.py`: a device engine in `engine/`), which runs the segment's jobs a
denoising step at a time and reports back with `segment_end`. Jobs
arrive with `submit` at any time (no window barrier: a window's jobs join the queues and
batches of jobs already running), and `cancel` ends a queued job at once and a running
one at its next step boundary.

A device whose engine crashed and was restarted gives its jobs back (`requeue_device`):
they run again from step 0, through the policy's own next batch, as a segment's
unfinished jobs do; a job in the segments of `MAX_CRASHES` crashes fails instead (it may
be what kills the device). A device that cannot come back leaves service
(`fail_device`): its jobs fail and no job is queued on it again.

Thread-safe: every entry point takes one lock; devices call back from their threads.
Progress is counted in steps (`steps_left`); the remaining seconds the policies read are
the prediction scaled by the steps left.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from scheduler.catalog import Catalog
from scheduler.cluster import Cluster
from scheduler.options import ClassOptions, Option
from scheduler.policy import Policy
from scheduler.seam import Command, Cut, Forget, SegmentJob, StartSegment
from scheduler.simulator import SimConfig, Simulator
from scheduler.workload import Workload
from sdaas.job_status import JobStatus

log = logging.getLogger(__name__)
PENDING, DONE, FAILED, CANCELLED = (JobStatus.PENDING, JobStatus.DONE, JobStatus.FAILED,
                                    JobStatus.CANCELLED)  # fmt: skip
MAX_CRASHES = 2  # a job running when its device crashed this often fails, not re-runs

# serving: exact options (no CLIP margin: the planner's curves are the trained ones), no
# cold starts (models are preloaded), a window's jobs seen at once, every device its own
# queue (identical devices share a profile, not a queue), preemption at step boundaries
LIVE_CONFIG = SimConfig(
    clip_margin=0.0,
    relaxed_margin=0.0,
    clip_noise=0.0,
    cold_start=False,
    preempt=True,
    gather_ties=True,
    queue_per_device=True,
)


class Device(Protocol):
    def send(self, command: Command) -> None:
        """Take a command (`scheduler/seam.py`). Must not block: the core sends with its
        lock held. A `StartSegment` is answered, later, by the device's `SegmentEnded`,
        which its owner hands to `LiveCore.segment_end`."""


@dataclass(frozen=True)
class LiveJob:
    """What the core needs of an arriving job: its class, its options per kind (the
    planner's `planned`, down-shifted `relaxed` and the step counts `between` them per
    kind, none by default), and the caller's payload."""

    style: str
    deadline_ts: float  # the latency SLO as a point in the core's clock
    min_clip: float
    planned: list[Option | None]
    relaxed: list[Option | None]
    payload: Any = None
    between: list[tuple[Option, ...]] | None = None


@dataclass(frozen=True)
class Refusal:
    """Why the core refused a job, recorded when and where it decided: `unservable` (no
    accelerator has an option for it), `overloaded` (over the admission bound),
    `admission` (the policy refused it on arrival), `dropped` (the policy gave up on
    it in its queue) or `internal: <error>` (the policy raised placing its window: it
    failed). Seconds as the core saw them then."""

    why: str
    waited_s: float  # in the core, arrival to the decision
    slo_left_s: float  # of its latency SLO at arrival
    fastest_s: float  # its fastest option's predicted run (inf: none)
    pred_s: float  # the run of the option it was placed on (0: never placed)


@dataclass(frozen=True)
class SegmentOutcome:
    """What a segment's end settled: jobs done and jobs cancelled while running."""

    done: list[int]
    cancelled: list[int]


@dataclass(frozen=True)
class Recovery:
    """What a device's crash did to its jobs: those queued again from step 0, and those
    failed (the engine reports "failed" for them: the core has no one to answer)."""

    requeued: list[int]
    failed: list[SegmentJob]


# what the live core keeps per job beyond the simulator's table (`scheduler/job_table.py`),
# and what a new job holds: the steps it has left (-1: not started, set at its first
# start), the device seconds its segments took (a batch's time shared by the jobs'
# predicted shares) and the steps they ran (`measured_speed`), the device holding its
# step state (-1: none), the crashes of segments it was running in, and the times it
# started again from step 0 (its device crashed or left holding its state)
_LIVE_NEW = {"steps_left": -1, "took_s": 0.0, "steps_run": 0, "ran_on": -1, "crashes": 0,
             "restarts": 0}  # fmt: skip

Settled = Callable[[int, int, float], None]  # (job, status, t): rejected/dropped/cancelled


class _Devices:
    """The live core's segment runner (`scheduler/segments.py`): a segment is a
    `StartSegment` to its device, which reports the end itself (`segment_end`); a cut
    is a `Cut`. The simulator's runner computes both instead."""

    def __init__(self, core: LiveCore):
        self.core = core

    def run(self, i: int, batch: list[int], work_start: float, work: float, factor: float):
        """Until its first job finishes, or the policy's quantum (in whole steps) is used."""
        core = self.core
        batch[:] = [j for j in batch if core.status[j] == PENDING]  # cancelled in queue
        n = min((core.steps_to_run(j) for j in batch), default=0)
        if core.config.preempt:
            for j in batch:
                q = core.policy.segment_work(j)
                if q < math.inf:
                    n = min(n, max(1, math.ceil(q / (core.pred[j] / core.steps[j]) - 1e-9)))
        core.seg_steps[i] = n
        for j in batch:
            core.ran_on[j] = i
        jobs = tuple(SegmentJob(j, core.model[j], core.steps[j]) for j in batch)
        core.devices[i].send(StartSegment(i, jobs, n))
        return math.inf

    def cut(self, i: int, t: float) -> None:
        self.core.devices[i].send(Cut(i))


class LiveCore(Simulator):
    def __init__(
        self,
        catalog: Catalog,
        cluster: Cluster,
        policy: Policy,
        config: SimConfig = LIVE_CONFIG,
        clock: Callable[[], float] = time.time,
        on_settled: Settled | None = None,
    ):
        super().__init__(catalog, cluster, policy, config, runner=_Devices(self))
        self.clock = clock
        self.lock = threading.RLock()
        self.on_settled = on_settled or (lambda j, status, t: None)
        self.devices: list[Device] = []
        self.refusals: dict[int, Refusal] = {}  # job -> why it was refused
        self.payload: list[Any] = []  # per job: the caller's, until its outcome
        for name in _LIVE_NEW:  # per job, grown by `submit`
            setattr(self, name, [])
        self.cancelled: set[int] = set()
        empty = Workload("serving", np.zeros(0), np.zeros(0, int), (), np.ones(0), np.zeros(0))
        self.begin(empty, ClassOptions([], []))
        self.seg_steps = [0] * len(self.inst_kind)

    def attach(self, devices: list[Device]) -> None:
        """One device per instance, in the cluster's order (`inst_kind`)."""
        if len(devices) != len(self.inst_kind):
            raise ValueError(f"{len(devices)} devices for {len(self.inst_kind)} instances")
        self.devices = list(devices)

    # -------------------------------------------------------------------- the entry points
    def submit(self, jobs: list[LiveJob]) -> list[int]:
        """Jobs arriving now: placed, admitted or rejected (status REJECTED at return),
        queued, started on an idle device. Returns their indices."""
        with self.lock:
            t = self.clock()
            first, cls = len(self.arrival), []
            for job in jobs:
                cls.append(len(self.latency_slo_s))
                self.latency_slo_s.append(job.deadline_ts - t)
                self.min_clip.append(job.min_clip)
                self.options.planned.append(job.planned)
                self.options.relaxed.append(job.relaxed)
                self.options.between.append(job.between or [()] * len(job.planned))
                self.payload.append(job.payload)
            n = len(jobs)
            for name, new in _LIVE_NEW.items():
                getattr(self, name).extend([new] * n)
            self.add_jobs([t] * n, cls, [1.0] * n)
            tie = self.config.gather_ties
            for x in range(n):
                backlog = tuple(self.backlog)  # whether a failed arrival was counted
                try:
                    admitted = self.arrive(first + x, t, tie=tie and x < n - 1)
                except Exception as exc:  # noqa: BLE001 - a policy bug fails jobs, not serving
                    log.exception("scheduler: placing job %d failed", first + x)
                    self._fail_unplaced(range(first + x, first + n), t, exc,
                                        counted=tuple(self.backlog) != backlog)  # fmt: skip
                    if tie and x < n - 1:  # the jobs before it wait for the window's
                        self._dispatch_idle(t)  # last arrival, which is not coming
                    break
                if not admitted:
                    self.refusals[first + x] = self._refusal(first + x, t)
                    self.on_settled(first + x, JobStatus.REJECTED, t)
            return list(range(first, first + n))

    def _fail_unplaced(self, jobs: range, t: float, exc: Exception, counted: bool) -> None:
        """The policy raised placing jobs[0]: it and the window's jobs after it fail here,
        each answered once with the reason (`internal`), none left pending for ever.
        jobs[0] may have been queued (`counted`: its work is in the backlog) and is then
        settled as a queued job is (the dispatch skips it); one a device already runs is
        left to finish."""
        for j in jobs:
            if self.status[j] != PENDING or any(b and j in b for b in self.seg_jobs):
                continue
            if j == jobs[0] and counted:
                self._settle(j, FAILED, t)
            else:
                self.status[j], self.finish[j] = FAILED, t
            self.refusals[j] = Refusal(f"internal: {type(exc).__name__}", 0.0,
                                       self.latency_slo_s[self.cls[j]], math.inf, 0.0)  # fmt: skip
            self.on_settled(j, FAILED, t)

    def segment_end(self, i: int, steps_run: int, failed=()) -> SegmentOutcome:
        """Device i ran its segment's jobs `steps_run` steps: settle the finished, the
        failed and the cancelled ones, and start its next segment (the policy's next
        batch)."""
        with self.lock:
            t = self.clock()
            carry, done, cancelled = [], [], []
            self._account(i, t, steps_run)
            for j in self.seg_jobs[i] or ():
                self.steps_left[j] -= steps_run
                if j in failed:
                    self._settle(j, FAILED, t)
                elif self.steps_left[j] <= 0:  # before a cancel: its last step ran, so the
                    self._settle(j, DONE, t)  # device sent its image (one outcome: done)
                    self.cancelled.discard(j)
                    done.append(j)
                elif j in self.cancelled:
                    self._settle(j, CANCELLED, t)
                    cancelled.append(j)
                    self.on_settled(j, CANCELLED, t)
                else:
                    self.remaining[j] = self.pred[j] * self.steps_left[j] / self.steps[j]
                    carry.append(j)
            self.busy[i] += t - self.seg_start[i]
            if cancelled:  # their step states are not needed any more
                self.devices[i].send(Forget(i, tuple(cancelled)))
            self._dispatch(i, t, carry)
            return SegmentOutcome(done, cancelled)

    def _account(self, i: int, t: float, steps_run: int) -> None:
        """Share device i's segment time among its jobs, each by its predicted time for
        the steps run (the batch's predicted time is the catalog's factor times that)."""
        jobs = self.seg_jobs[i] or ()
        if not jobs or steps_run <= 0:
            return
        share = [self.pred[j] * steps_run / self.steps[j] for j in jobs]
        if sum(share) <= 0:  # every prediction 0 (a warm-up job): by the steps run
            share = [steps_run / self.steps[j] for j in jobs]
        took = max(0.0, t - self.seg_work_start[i]) * self.seg_speed[i]  # at batch 1
        ratio = took / (sum(share) / len(share))
        for j, s in zip(jobs, share, strict=True):
            self.took_s[j] += s * ratio
            self.steps_run[j] += steps_run

    def measured_speed(self) -> np.ndarray:
        """Per job: what its steps took on the device over what its option predicted
        (1 for a job that never ran, or was predicted to take no time). A replay at these
        speeds (`scheduler/replay.py`) gives the simulator each job's real work, so what
        still differs is the model of queues, batches and dispatch, not the latency
        predictor's error."""
        with self.lock:
            out = np.ones(len(self.took_s))
            for j, (took, n) in enumerate(zip(self.took_s, self.steps_run, strict=True)):
                if n > 0 and self.pred[j] > 0:
                    out[j] = took / (self.pred[j] * n / self.steps[j])
            return out

    def cancel(self, j: int) -> bool:
        """Cancel job j: a queued job at once, a running one at its next step boundary.
        False when it has already ended."""
        with self.lock:
            if not (0 <= j < len(self.status)) or self.status[j] != PENDING:
                return False
            running = [i for i, b in enumerate(self.seg_jobs) if b and j in b]
            if running:
                self.cancelled.add(j)
                self.devices[running[0]].send(Cut(running[0]))
            else:  # still in its queue: the dispatch skips it
                t = self.clock()
                self._settle(j, CANCELLED, t)
                self.on_settled(j, CANCELLED, t)
            return True

    # ------------------------------------------------------------- a device that crashed
    def requeue_device(self, i: int, crashed=(), ended: dict[int, int] | None = None) -> Recovery:
        """Device i's engine was restarted (or reset): the step states it held are gone.
        A job whose terminal event already went out (`ended`: job -> DONE or FAILED)
        settles so, never runs twice; the rest of its segment go back to the policy as a
        segment's unfinished jobs do, and every job it held runs again from step 0.
        `crashed`: the jobs it was running when it crashed (MAX_CRASHES: they fail)."""
        with self.lock:
            t, ended = self.clock(), ended or {}
            carry, failed = [], []
            for j in dict.fromkeys([*(self.seg_jobs[i] or ()), *ended, *crashed]):
                if self._settle_ended(j, ended, t) or self._crashed_out(j, crashed, t, failed):
                    continue
                carry.append(j)
            held = [j for j, d in enumerate(self.ran_on) if d == i and self.status[j] == PENDING]
            for j in {*carry, *held}:  # from step 0: the restarted engine has no state
                self.restarts[j] += 1
            for j in held:
                self.steps_left[j], self.remaining[j], self.ran_on[j] = -1, self.work[j], -1
            self._requeue(i, carry)
            self._release(i, t)
            self._dispatch(i, t, carry)
            return Recovery(sorted({*carry, *held}), failed)

    def fail_device(self, i: int, ended: dict[int, int] | None = None) -> list[SegmentJob]:
        """Device i crashed and cannot come back: it leaves service (no job is queued on
        it again), and every job it ran or had queued fails, unless its terminal event
        already went out (`ended`). Returns the failed jobs, for the engine to report."""
        with self.lock:
            t, ended = self.clock(), ended or {}
            self.out_of_service.add(i)
            mine = {*(self.seg_jobs[i] or ()), *ended}
            mine |= {j for j, s in enumerate(self.status)
                     if s == PENDING and i in (self.ran_on[j], self.dev_of[j])}  # fmt: skip
            self._release(i, t)
            self.seg_jobs[i] = None
            return [self._fail(j, t) for j in sorted(mine) if not self._settle_ended(j, ended, t)]

    # ------------------------------------------------- devices that leave and join (a fleet)
    def leave(self, i: int, ended: dict[int, int] | None = None, crashed=()) -> Recovery:
        """Device i leaves service for good while others serve on (its node left the
        cluster, its engine cannot come back, or an idle engine scales in): no job is
        placed on it again, and every job it held (its segment, the step states it kept,
        its own queue) goes back to its kind's queue from step 0 and finishes on another
        device. A job whose terminal event already went out (`ended`) settles so; when no
        device of its kind is left in service, a job fails (the caller reports it), as
        does one of `crashed` (the segment it ran when it died) at its MAX_CRASHES-th."""
        with self.lock:
            t, ended = self.clock(), ended or {}
            k = self.inst_kind[i]
            seg = list(self.seg_jobs[i] or ())
            self._release(i, t)
            self.seg_jobs[i] = None
            if i not in self.out_of_service:
                self.out_of_service.add(i)
                self.n_inst[k] -= 1
            self.unload(i)
            held = [j for j, d in enumerate(self.ran_on) if d == i and self.status[j] == PENDING]
            queued = []
            if self.dev_queues is not None:
                queued = [j for j, s in enumerate(self.status)
                          if s == PENDING and self.dev_of[j] == i]  # fmt: skip
                self.dev_queues[i] = self.policy.make_queue(k)
            back, failed = [], []
            for j in dict.fromkeys([*seg, *ended, *held, *queued]):
                if self._settle_ended(j, ended, t) or self._crashed_out(j, crashed, t, failed):
                    continue
                if self.ran_on[j] >= 0:  # it had started: it starts again from step 0
                    self.restarts[j] += 1
                self.steps_left[j], self.remaining[j], self.ran_on[j] = -1, self.work[j], -1
                back.append(j)
            live = [x for x in self.instances_of[k] if x not in self.out_of_service]
            if not live:
                return Recovery([], failed + [self._fail(j, t) for j in back])
            if self.dev_queues is not None:  # each to the device with the least queued
                for j in back:
                    self.dev_backlog[i] -= self.pred[j]
                    x = min(live, key=self.dev_backlog.__getitem__)
                    self.dev_of[j] = x
                    self.dev_queues[x].push(j)
                    self.dev_backlog[x] += self.pred[j]
            else:  # the segment's jobs were out of the queue; held ones are in it
                for j in back:
                    if j in seg or j in ended:
                        self.queues[k].push(j)
            self._dispatch_idle(t)
            return Recovery(back, failed)

    def join(self, i: int) -> None:
        """Device i (out of service: not started yet, or left) serves from now: empty,
        idle, and given work at once."""
        with self.lock:
            if i not in self.out_of_service:
                return
            t, k = self.clock(), self.inst_kind[i]
            self.out_of_service.discard(i)
            self.n_inst[k] += 1
            self.unload(i)
            self.seg_jobs[i] = None
            self.idle[k].append(i)
            if self.dev_queues is not None:
                self._rebalance(i, k)
            self._dispatch_idle(t)

    def _rebalance(self, i: int, k: int) -> None:
        """Device i joined with per-device queues: it takes the latest jobs queued on
        the others (not started anywhere) while that evens their queued work out."""
        others = [x for x in self.instances_of[k] if x != i and x not in self.out_of_service]
        running = {j for x in others for j in self.seg_jobs[x] or ()}
        waiting = [j for j, s in enumerate(self.status) if s == PENDING and self.ran_on[j] < 0
                   and self.dev_of[j] in others and j not in running]  # fmt: skip
        backlog, moved = self.dev_backlog, set()
        for j in reversed(waiting):
            x = self.dev_of[j]
            if backlog[x] - self.pred[j] >= backlog[i] + self.pred[j]:
                backlog[x] -= self.pred[j]
                backlog[i] += self.pred[j]
                self.dev_of[j] = i
                moved.add(x)
        rebuilt = {*moved, i}  # their queues, built again from every job queued there
        for x in rebuilt:
            self.dev_queues[x] = self.policy.make_queue(k)
        for j, s in enumerate(self.status):
            if s == PENDING and self.dev_of[j] in rebuilt and j not in running:
                self.dev_queues[self.dev_of[j]].push(j)

    def in_service(self) -> list[int]:
        """The devices jobs may be placed on."""
        return [i for i in range(len(self.inst_kind)) if i not in self.out_of_service]

    def _requeue(self, i: int, carry: list[int]) -> None:
        """Device i's queue, built again from its waiting jobs: the crash may have come
        in the middle of the policy's `next_batch`, with the queue half-popped (per-device
        queues only: a shared queue is the other devices' too)."""
        if self.dev_queues is None:
            return
        q = self.dev_queues[i] = self.policy.make_queue(self.inst_kind[i])
        running = set(carry)
        for j, s in enumerate(self.status):
            if s == PENDING and self.dev_of[j] == i and j not in running:
                q.push(j)

    def _crashed_out(self, j: int, crashed, t: float, failed: list[SegmentJob]) -> bool:
        """A job of a segment its device crashed running counts the crash; at its
        MAX_CRASHES-th it fails (into `failed`), never to crash another. Whether it did."""
        if j not in crashed:
            return False
        self.crashes[j] += 1
        if self.crashes[j] < MAX_CRASHES:
            return False
        failed.append(self._fail(j, t))
        return True

    def _settle_ended(self, j: int, ended: dict[int, int], t: float) -> bool:
        """Settle job j if it has ended: answered already (`ended`) or cancelled. False
        when it is still to run."""
        if self.status[j] != PENDING:
            return True
        if j in ended:
            self._settle(j, ended[j], t)
        elif j in self.cancelled:
            self._settle(j, CANCELLED, t)
            self.on_settled(j, CANCELLED, t)
        else:
            return False
        return True

    def _fail(self, j: int, t: float) -> SegmentJob:
        self._settle(j, FAILED, t)
        return SegmentJob(j, self.model[j], self.steps[j])

    def _release(self, i: int, t: float) -> None:
        """Device i's segment is over (it crashed): its time counts busy, and it is not
        idle until the core dispatches to it again."""
        if self.seg_jobs[i]:
            self.busy[i] += t - self.seg_start[i]
        idle = self.idle[self.inst_kind[i]]
        if i in idle:
            idle.remove(i)

    # ----------------------------------------------------------- the simulator's hooks
    def drop(self, j: int, t: float) -> None:
        self.refusals[j] = self._refusal(j, t, dropped=True)
        super().drop(j, t)
        self.on_settled(j, JobStatus.DROPPED, t)

    def _refusal(self, j: int, t: float, dropped: bool = False) -> Refusal:
        """Why job j is refused now, from what the core knows at this decision."""
        opts = [o for o in self.options.planned[self.cls[j]] if o is not None]
        fastest = min((o.pred_s for o in opts), default=math.inf)
        if dropped:
            why = "dropped"
        elif not opts:
            why = "unservable"
        else:
            why = "overloaded" if j in self.overloaded else "admission"
        slo = self.latency_slo_s[self.cls[j]]
        return Refusal(why, t - self.arrival[j], slo, fastest, self.pred[j])

    def steps_to_run(self, j: int) -> int:
        """The steps job j has left (set at its first start: they are final then)."""
        if self.steps_left[j] < 0:
            self.steps_left[j] = self.steps[j]
        return self.steps_left[j]

    def in_flight(self) -> int:
        """Jobs admitted and not yet settled."""
        with self.lock:
            return sum(1 for s in self.status if s == PENDING)
