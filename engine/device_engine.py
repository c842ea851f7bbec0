"""One device instance's engine: a thread that owns the device and runs what the
scheduling core (`scheduler/live.py`) gives it, a denoising step at a time.

The core decides (which jobs, together, for how many steps; preempt; drop); the engine
only executes: jobs of one model share one UNet call per step (`models/step_batch.py`)
whatever their step counts and progress, a preempted job keeps its state here until it
runs again, a cancelled one is forgotten, and every step is reported to the caller
(`on_event`). A model whose backend cannot be stepped runs whole, one job per call.

A failure of the model fails the jobs of that segment (event "failed"), never the
device: the loop goes on with the next segment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scheduler.live import LiveCore, SegmentJob

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
    ):
        self.index, self.core, self.models = index, core, models
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
        while True:
            with self._cv:
                while self._next is None and not self._stop and not self._probes:
                    self._cv.wait()
                if self._stop:
                    return
                if self._probes:
                    key, req, n, b, box, done = self._probes.pop(0)
                else:
                    key = None
            if key is not None:
                try:
                    box["s"] = self._time_job(key, req, n, b)
                except Exception as exc:  # noqa: BLE001 - the caller gets it
                    box["error"] = exc
                done.set()
                continue
            with self._cv:
                jobs, steps = self._next
                self._next = None
            self.busy = True
            try:
                ran, failed = self._segment(jobs, steps)
            except Exception as exc:  # noqa: BLE001 - a bug here fails jobs, not the device
                log.exception("device %s: segment failed", self.index)
                ran, failed = steps, [(j, exc) for j in jobs]
            self.busy = False
            self.segments += 1
            for sj, exc in failed:
                self.runs.pop(sj.index, None)
                self.on_event("failed", sj, error=f"{type(exc).__name__}: {str(exc)[:200]}")
            out = self.core.segment_end(self.index, ran, failed=[sj.index for sj, _ in failed])
            for j in out.cancelled:
                self.runs.pop(j, None)

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
