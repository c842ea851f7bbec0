"""The serving side of one device: what the core sent it, what came back, and what to do
when it crashed. One `DeviceLink` per device instance, whatever runs the device (a
thread, a device process, a remote engine): the core sends it commands, the device
hands it its events (`scheduler/seam.py`).

    LiveCore ──send(StartSegment | Cut | Forget)──► DeviceLink ──send──► device
             ◄──segment_end(SegmentEnded)───────── DeviceLink ◄──handle(event)──┘
                                                      │ Started, Stepped, Done, Failed
                                                      ▼
                                                  the runtime (progress, outcomes)

The link fills in each job's image request (the core knows only indices), remembers the
segment it sent and the jobs whose `Done`/`Failed` went out before the core settled them,
and answers `probe` from the device's `Probed`. A crash (`crashed`) gives the device's
jobs back to the core from step 0 (never one whose outcome went out), or fails them and
takes the device out of service when it cannot come back; either way the fault is
reported (`sdaas.health.Faults.report`, which `/readyz` shows).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from scheduler.live import MAX_CRASHES, LiveCore
from scheduler.seam import (
    Command,
    Done,
    Event,
    Failed,
    ImageRequest,
    Probe,
    Probed,
    SegmentEnded,
    SegmentJob,
    StartSegment,
)
from sdaas.errors import brief
from sdaas.health import Faults
from sdaas.job_status import JobStatus

log = logging.getLogger(__name__)
OnFault = Callable[..., object]  # (part, reason, fatal=False): `sdaas.health.Faults.report`
JobEvents = Callable[[Event], None]  # Started / Stepped / Done / Failed, to the runtime


@dataclass
class Restarts:
    """A device that keeps crashing leaves service instead of restarting for ever: at
    most `limit` restarts in any `window_s`."""

    limit: int = 5
    window_s: float = 600.0
    at: list[float] = field(default_factory=list)

    def allow(self, now: float) -> str:
        """Count a restart now; "" when allowed, else why not."""
        self.at = [t for t in self.at if now - t < self.window_s]
        if len(self.at) >= self.limit:
            return f"it crashed {self.limit} times in {self.window_s:.0f} s"
        self.at.append(now)
        return ""


class DeviceLink:
    """Implements `scheduler.live.Device` for the core; `handle` takes the device's
    events. `request_of(job)`: the job's image request; `on_job_event`: the runtime."""

    def __init__(self, index: int, core: LiveCore, request_of: Callable[[SegmentJob], ImageRequest],
                 on_job_event: JobEvents, *, name: str = "",
                 on_fault: OnFault | None = None):  # fmt: skip
        self.index, self.core, self.name = index, core, name or str(index)
        self.request_of, self.on_job_event = request_of, on_job_event
        self.on_fault = on_fault or Faults().report
        self.device = None  # what runs it: anything with send(command); set by `connect`
        self.segment: list[int] = []  # the jobs of the segment it was sent last
        self.ended: dict[int, JobStatus] = {}  # outcome out, not yet settled by the core
        self.restarts = Restarts()
        self.out_of_service = False
        self._probe_lock = threading.Lock()
        self._probed: tuple[threading.Event, list[Probed]] = (threading.Event(), [])

    def connect(self, device) -> DeviceLink:
        self.device = device
        return self

    # -- the core's side ----------------------------------------------------------------
    def send(self, command: Command) -> None:
        if isinstance(command, StartSegment):
            jobs = tuple(replace(sj, request=self.request_of(sj)) for sj in command.jobs)
            command = replace(command, jobs=jobs)
            self.segment = [sj.index for sj in jobs]
            if self.out_of_service:  # answered from another thread: the core's lock is held
                threading.Thread(target=self._refuse, args=(command,), daemon=True).start()
                return
        self.device.send(command)

    def _refuse(self, command: StartSegment) -> None:
        """The device is out of service: the jobs of a segment it is given fail."""
        why = f"device engine {self.name} is out of service"
        for sj in command.jobs:
            self.handle(Failed(self.index, sj.index, why))
        self.handle(SegmentEnded(self.index, 0, tuple(sj.index for sj in command.jobs)))

    def probe(self, model_key: str, request: ImageRequest, steps: int, batch: int = 1) -> float:
        """Run one job alone (or `batch` copies stepped together) on the device, as jobs
        run there, and return its seconds: what a profile probe measures (the thread or
        process jobs run in changes their speed). Call while no segment runs."""
        with self._probe_lock:
            done, box = self._probed
            done.clear()
            box.clear()
            self.device.send(Probe(self.index, model_key, request, steps, batch))
            done.wait()
            if box[0].error:
                raise RuntimeError(box[0].error)
            return box[0].seconds

    # -- the device's side ----------------------------------------------------------------
    def handle(self, event: Event) -> None:
        """An event from the device, in the order it sent them."""
        if isinstance(event, SegmentEnded):
            self.core.segment_end(self.index, event.steps_run, failed=event.failed)
            self.ended.clear()
        elif isinstance(event, Probed):
            self._answer_probe(event)
        else:
            if isinstance(event, Done | Failed):  # out before the core settles it: not re-run
                done = isinstance(event, Done)
                self.ended[event.job] = JobStatus.DONE if done else JobStatus.FAILED
            self.on_job_event(event)

    def _answer_probe(self, event: Probed) -> None:
        done, box = self._probed
        box[:] = [event]
        done.set()

    def may_restart(self) -> str:
        """Count a restart now: "" when the device may restart, else why not."""
        return self.restarts.allow(time.monotonic())

    def reset(self, what: str) -> bool:
        """A device that crashed and reset itself in place (a thread engine's loop)."""
        return self.crashed(what, self.may_restart())

    def crashed(self, what: str, why_not: str = "", running: list[int] | None = None) -> bool:
        """The device crashed and was restarted or reset (`why_not` "": it was; else why
        not): its jobs go back to the core's queue from step 0, or fail, and the fault is
        reported. `running`: the segment it was running when it crashed (default: the
        last one sent). A probe waiting on it fails. Whether the device serves on."""
        self._answer_probe(Probed(self.index, error=f"device engine {self.name} crashed: {what}"))
        with self.core.lock:  # no segment may start in between
            running = list(self.segment) if running is None else running
            ended = dict(self.ended)
            self.segment, self.ended = [], {}
            self.out_of_service = not self._recover(what, running, ended, why_not)
        return not self.out_of_service

    def lost(self, what: str, ran: bool = True) -> None:
        """The device is gone while others serve on (a remote engine whose actor or node
        died): it leaves service at once and its jobs finish on other devices of its
        kind, from step 0 (`LiveCore.leave`); a probe waiting on it fails. `ran`: its
        last segment reached it (its jobs count a crash; MAX_CRASHES: they fail)."""
        self._answer_probe(Probed(self.index, error=f"device engine {self.name} is gone: {what}"))
        with self.core.lock:
            running, ended = list(self.segment), dict(self.ended)
            self.segment, self.ended, self.out_of_service = [], {}, True
            try:
                rec = self.core.leave(self.index, ended, crashed=running if ran else ())
            except Exception as exc:  # noqa: BLE001 - the core itself is broken: stop serving
                log.exception("device engine %s: the core could not take its jobs", self.name)
                self.on_fault(f"engine {self.name}", f"{what}; its jobs are lost ({brief(exc)})",
                              fatal=True)  # fmt: skip
                return
        self._fail(rec.failed, f"device engine {self.name} is gone: {what}")
        lost = f", {len(rec.failed)} failed" if rec.failed else ""
        self.on_fault(f"engine {self.name}", f"{what}; out of service, {len(rec.requeued)} "
                                             f"jobs re-queued on other engines{lost}")  # fmt: skip

    def rejoined(self) -> None:
        """The device serves again (a fresh remote engine is ready): jobs may go to it."""
        self.out_of_service = False
        self.core.join(self.index)
        log.warning("device engine %s serves again", self.name)

    def _recover(self, what: str, running: list[int], ended: dict[int, JobStatus],
                 why_not: str) -> bool:  # fmt: skip
        part, error = f"engine {self.name}", f"device engine {self.name} crashed: {what}"
        if not why_not:
            try:
                rec = self.core.requeue_device(self.index, running, ended)
            except Exception as exc:  # noqa: BLE001 - then its jobs fail, below
                log.exception("device engine %s: its jobs could not be re-queued", self.name)
                why_not = f"re-queueing its jobs failed ({brief(exc)})"
            else:
                self._fail(rec.failed, f"{error} (crash {MAX_CRASHES} running this job)")
                lost = f", {len(rec.failed)} failed (crash {MAX_CRASHES})" if rec.failed else ""
                self.on_fault(part, f"{what}; engine restarted, {len(rec.requeued)} jobs "
                                    f"re-queued{lost}")  # fmt: skip
                return True
        try:
            failed = self.core.fail_device(self.index, ended)
        except Exception as exc:  # noqa: BLE001 - the core itself is broken: stop serving
            log.exception("device engine %s: the core could not fail its jobs", self.name)
            self.on_fault(part, f"{what}; {why_not}; its jobs are lost ({brief(exc)})",
                          fatal=True)  # fmt: skip
            return False
        self._fail(failed, error)
        self.on_fault(part, f"{what}; not restarted: {why_not}; {len(failed)} jobs failed, "
                            "the device is out of service")  # fmt: skip
        return False

    def _fail(self, jobs: list[SegmentJob], error: str) -> None:
        for sj in jobs:
            try:
                self.on_job_event(Failed(self.index, sj.index, error))
            except Exception:  # noqa: BLE001 - one job's answer, not the others'
                log.exception("device engine %s: reporting job %d failed did not work",
                              self.name, sj.index)  # fmt: skip
