"""One device instance's engine: a thread that owns the device and runs what the
scheduling core (`scheduler/live.py`) gives it, a denoising step at a time.

The core decides (which jobs, together, for how many steps; preempt; drop); the engine
only executes: jobs of one model share one UNet call per step (`models/step_batch.py`)
whatever their step counts and progress, a preempted job keeps its state here until it
runs again, a cancelled one is forgotten, and every step is reported to the caller
(`on_event`). A model whose backend cannot be stepped runs whole, one job per call.

A failure of the model fails the jobs of that segment (event "failed"), never the
device: the loop goes on with the next segment. A crash of the loop itself (the core or
an event handler raised) is loud and recovered, never a dead thread: it is logged with
its traceback, the engine's job states are dropped, its jobs go back to the core's
queue to run again from step 0 (`recover`), and the fault is reported (`on_fault`, the
runtime's `sdaas.health.Faults.report`, which `/readyz` shows).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scheduler.live import FAILED, MAX_CRASHES, LiveCore, SegmentJob
from scheduler.simulator import DONE
from sdaas.health import Faults

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRequest:
    """What a device needs to make one job's image (the payload's `request`)."""

    prompt: str  # styled already: what the text encoder sees
    seed: int
    width: int
    height: int
    guidance: float

    def generation(self, steps: int):
        """The whole-pipeline request for this image (backends that cannot be stepped)."""
        from models.backend import GenerationRequest

        return GenerationRequest((self.prompt,), (self.seed,), steps, self.width, self.height,
                                 self.guidance)  # fmt: skip


@dataclass
class JobRun:
    """A job's life on a device: when its first step started, its largest batch, how many
    segments it took, and its step state while it is in flight."""

    started: float
    state: Any = None
    max_batch: int = 1
    segments: int = 0
    step_s: list[float] = field(default_factory=list)


Event = Callable[..., None]  # (kind, SegmentJob, **data): started / step / done / failed
OnFault = Callable[..., object]  # (part, reason, fatal=False): `sdaas.health.Faults.report`


def brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


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


@dataclass(frozen=True)
class Crash:
    """What an engine knew when it crashed."""

    what: str  # what happened: for the fault record and the failed jobs' errors
    running: list[int]  # the jobs of the segment it was running
    ended: dict[int, int]  # jobs whose done/failed went out before the core settled them
    why_not: str = ""  # why it was not restarted ("" when it was)


def recover(core: LiveCore, i: int, name: str, crash: Crash, emit: Event,
            on_fault: OnFault) -> bool:  # fmt: skip
    """Device i's engine `name` crashed and was restarted or reset (or could not be):
    its jobs go back to the core's queue, from step 0, and the fault is reported. If it
    could not come back, or the core cannot take the jobs back, they fail ("device
    engine X crashed: ...") and the device leaves service. Returns whether the device
    serves on. Call with the core's lock held: no segment may start in between."""
    part, error = f"engine {name}", f"device engine {name} crashed: {crash.what}"
    why_not = crash.why_not
    if not why_not:
        try:
            rec = core.requeue_device(i, crash.running, crash.ended)
        except Exception as exc:  # noqa: BLE001 - then its jobs fail, below
            log.exception("device engine %s: its jobs could not be re-queued", name)
            why_not = f"re-queueing its jobs failed ({brief(exc)})"
        else:
            _fail(emit, rec.failed, f"{error} (crash {MAX_CRASHES} running this job)")
            lost = f", {len(rec.failed)} failed (crash {MAX_CRASHES})" if rec.failed else ""
            on_fault(part, f"{crash.what}; engine restarted, {len(rec.requeued)} jobs "
                           f"re-queued{lost}")  # fmt: skip
            return True
    try:
        failed = core.fail_device(i, crash.ended)
    except Exception as exc:  # noqa: BLE001 - the core itself is broken: stop serving
        log.exception("device engine %s: the core could not fail its jobs", name)
        on_fault(part, f"{crash.what}; {why_not}; its jobs are lost ({brief(exc)})", fatal=True)
        return False
    _fail(emit, failed, error)
    on_fault(part, f"{crash.what}; not restarted: {why_not}; {len(failed)} jobs failed, "
                   "the device is out of service")  # fmt: skip
    return False


def _fail(emit: Event, jobs: list[SegmentJob], error: str) -> None:
    for sj in jobs:
        try:
            emit("failed", sj, error=error)
        except Exception:  # noqa: BLE001 - one job's answer, not the others'
            log.exception("device engine: reporting job %d failed did not work", sj.index)


class DeviceEngine:
    """Implements `scheduler.live.DeviceSlot` for one device. `backend_for(model_key)`
    returns the loaded `ModelBackend`; `request_of(segment_job)` the job's ImageRequest.
    Events carry `device=index`."""

    def __init__(
        self,
        index: int,
        core: LiveCore,
        models: list[str],
        backend_for: Callable[[str], Any],
        request_of: Callable[[SegmentJob], ImageRequest],
        on_event: Event,
        *,
        name: str = "",
        threads: int | None = None,
        clock: Callable[[], float] = time.time,
        max_resident: int | None = None,
        release: Callable[[str], None] | None = None,
        on_fault: OnFault | None = None,
        reset_on_crash: bool = True,
    ):
        self.index, self.core, self.models = index, core, models
        self.name = name or str(index)
        self.backend_for, self.request_of = backend_for, request_of
        self._on_event = on_event
        self.threads, self.clock = threads, clock
        self.runs: dict[int, JobRun] = {}
        # model key -> (backend, its step batcher or None), least recently used first: at
        # most `max_resident` (None: no bound), the core's residency rule (LRU over the
        # kind's `max_resident`, loads charged), so what it predicts is what runs here
        self.max_resident, self.release = max_resident, release or (lambda key: None)
        self._resident: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self.loads: list[tuple[str, float]] = []  # (model key, seconds) per load here
        self._cv = threading.Condition()
        self._next: tuple[list[SegmentJob], int] | None = None
        self._probes: list[tuple] = []  # time_job requests, run between segments
        self._cut = False
        self._stop = False
        self.busy = False  # a segment is running (tests: two devices busy at once)
        self.segments = 0
        # a crash of the loop: reset and re-queue (a device process instead dies, and
        # its parent restarts it: engine/device_process.py)
        self.on_fault, self.reset_on_crash = on_fault or Faults().report, reset_on_crash
        self.restarts = Restarts()
        self.running: list[int] = []  # the segment's jobs, until the core settled it
        self.ended: dict[int, int] = {}  # jobs whose done/failed went out, not yet settled
        self.out_of_service = False
        self._thread = threading.Thread(
            target=self.run_loop, name=f"sdaas-device-{name or index}", daemon=True
        )

    def start(self) -> DeviceEngine:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def request_stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    def on_event(self, kind: str, sj: SegmentJob, **data) -> None:
        if kind in ("done", "failed"):  # out before the core settles it: never re-run
            self.ended[sj.index] = DONE if kind == "done" else FAILED
        self._on_event(kind, sj, device=self.index, **data)

    # -- DeviceSlot ---------------------------------------------------------------------
    def start_segment(self, jobs: list[SegmentJob], steps: int) -> None:
        with self._cv:
            self._next = (jobs, steps)
            self._cut = False
            self._cv.notify_all()

    def interrupt(self) -> None:
        self._cut = True

    def time_job(self, model_key: str, request: ImageRequest, steps: int, batch: int = 1) -> float:
        """Run one job alone on this device (or `batch` copies of it stepped together),
        as jobs run here, and return its seconds: what a profile probe measures (the
        thread or process jobs run in changes their speed, so a probe must run where
        they do). Call while no segment runs."""
        box: dict = {}
        done = threading.Event()
        with self._cv:
            self._probes.append((model_key, request, steps, batch, box, done))
            self._cv.notify_all()
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["s"]

    def _time_job(self, model_key: str, r: ImageRequest, steps: int, batch: int = 1) -> float:
        backend, stepper = self._backend(model_key)
        t0 = time.perf_counter()
        if stepper is None:
            if batch > 1:
                raise ValueError(f"{model_key} runs whole, one job per call: no batch")
            backend.generate(r.generation(steps))
        else:
            jobs = [stepper.start(r.prompt, r.seed + i, steps, r.width, r.height, r.guidance)
                    for i in range(batch)]  # fmt: skip
            while not jobs[0].finished:
                stepper.step(jobs)
            stepper.finish(jobs)
        return time.perf_counter() - t0

    def _backend(self, model_key: str):
        """(backend, its step batcher or None), made once per residency: a model that is
        not resident is loaded (timed), evicting the least recently used one beyond
        `max_resident` (the core evicts the same one: same rule, same segments)."""
        if model_key in self._resident:
            self._resident.move_to_end(model_key)
            return self._resident[model_key]
        t0 = time.perf_counter()
        backend = self.backend_for(model_key)
        self._resident[model_key] = (backend, backend.stepper())
        self.loads.append((model_key, time.perf_counter() - t0))
        while self.max_resident and len(self._resident) > self.max_resident:
            old, _ = self._resident.popitem(last=False)
            self.release(old)
            log.info("device %s: %s evicted for %s", self.index, old, model_key)
        return self._resident[model_key]

    @property
    def resident(self) -> list[str]:
        """Model keys resident here, least recently used first."""
        return list(self._resident)

    # -- the loop -----------------------------------------------------------------------
    def run_loop(self) -> None:
        """Run segments until stopped: in this engine's thread (`start`), or in the
        calling thread (a device process's main thread, engine/device_process.py)."""
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        while (work := self._wait()) is not None:
            try:
                work[0](work[1])
            except Exception as exc:  # noqa: BLE001 - loud and recovered, never a dead loop
                if not self.reset_on_crash:
                    raise
                log.exception("device engine %s: its loop crashed", self.name)
                self._crashed(exc)

    def _wait(self):
        """(what to run, its argument): the next probe or segment; None when stopped."""
        with self._cv:
            while self._next is None and not self._stop and not self._probes:
                self._cv.wait()
            if self._stop:
                return None
            if self._probes:
                return self._probe, self._probes.pop(0)
            work, self._next = self._next, None
            return self._run_segment, work

    def _probe(self, probe: tuple) -> None:
        key, req, n, b, box, done = probe
        try:
            box["s"] = self._time_job(key, req, n, b)
        except Exception as exc:  # noqa: BLE001 - the caller gets it
            box["error"] = exc
        done.set()

    def _run_segment(self, work: tuple[list[SegmentJob], int]) -> None:
        jobs, steps = work
        self.running, self.busy = [sj.index for sj in jobs], True
        try:
            ran, failed = self._segment(jobs, steps)
        except Exception as exc:  # noqa: BLE001 - a bug here fails jobs, not the device
            log.exception("device %s: segment failed", self.index)
            ran, failed = steps, [(sj, exc) for sj in jobs if sj.index not in self.ended]
        finally:
            self.busy = False
        self.segments += 1
        for sj, exc in failed:
            self.runs.pop(sj.index, None)
            self.on_event("failed", sj, error=brief(exc))
        out = self.core.segment_end(self.index, ran, failed=[sj.index for sj, _ in failed])
        self.running, self.ended = [], {}
        for j in out.cancelled:
            self.runs.pop(j, None)

    def _crashed(self, exc: Exception) -> None:
        """The loop crashed outside the model (the core or an event handler raised):
        what it holds may be out of step with the core, so its job states are dropped
        and its jobs re-queued from step 0 (the models stay loaded)."""
        with self._cv:
            self._next, self._cut = None, False
        self.runs.clear()
        crash = Crash(f"engine loop crashed ({brief(exc)})", self.running, self.ended,
                      self.restarts.allow(time.monotonic()))  # fmt: skip
        self.running, self.ended = [], {}
        with self.core.lock:
            ok = recover(self.core, self.index, self.name, crash, self.on_event, self.on_fault)
        self.out_of_service = not ok

    def _segment(self, jobs: list[SegmentJob], steps: int):
        """Run the segment; returns (steps run, [(job, exception)] that failed)."""
        if not jobs:
            return 0, []
        backend, stepper = self._backend(self.models[jobs[0].model])
        if stepper is None:
            return self._whole(backend, jobs)
        failed = []
        for sj in jobs:
            run = self.runs.get(sj.index)
            if run is None:
                r = self.request_of(sj)
                run = self.runs[sj.index] = JobRun(self.clock())
                try:
                    run.state = stepper.start(r.prompt, r.seed, sj.steps, r.width, r.height,
                                              r.guidance)  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - this job's input, not the batch
                    failed.append((sj, exc))
                    continue
                self.on_event("started", sj)
            run.max_batch = max(run.max_batch, len(jobs))
            run.segments += 1
        bad = {f.index for f, _ in failed}
        live = [sj for sj in jobs if sj.index not in bad]
        ran = 0
        while ran < steps and live:
            t0 = time.perf_counter()
            stepper.step([self.runs[sj.index].state for sj in live])
            dt = time.perf_counter() - t0
            ran += 1
            for sj in live:
                run = self.runs[sj.index]
                run.step_s.append(dt)
                self.on_event("step", sj, step=run.state.done_calls, of=run.state.calls)
            if any(self.runs[sj.index].state.finished for sj in live) or self._cut:
                break
        done = [sj for sj in live if self.runs[sj.index].state.finished]
        if done:
            images = stepper.finish([self.runs[sj.index].state for sj in done])
            for sj, image in zip(done, images, strict=True):
                self._done(sj, image)
        return ran, failed

    def _whole(self, backend, jobs: list[SegmentJob]):
        """A backend without step-level batching: each job runs from noise to image."""
        failed = []
        for sj in jobs:
            r = self.request_of(sj)
            run = self.runs[sj.index] = JobRun(self.clock())
            self.on_event("started", sj)
            try:
                res = backend.generate(
                    r.generation(sj.steps),
                    on_step=lambda i, dt, sj=sj: self.on_event("step", sj, step=i + 1, of=sj.steps),
                )
            except Exception as exc:  # noqa: BLE001 - the model failed this job
                failed.append((sj, exc))
                continue
            run.step_s = list(res.step_times_s)
            self._done(sj, res.images[0])
        return max(sj.steps for sj in jobs), failed

    def _done(self, sj: SegmentJob, image) -> None:
        run = self.runs.pop(sj.index)
        run.state = None  # the step state of a finished job is not needed
        self.on_event("done", sj, image=image, run=run, run_s=self.clock() - run.started)
