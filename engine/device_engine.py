"""One device instance's engine: a thread that owns the device and runs the commands the
scheduling core sends it (`scheduler/seam.py`), a denoising step at a time.

The core decides (which jobs, together, for how many steps; preempt; drop); the engine
only executes: jobs of one model share one UNet call per step (`models/step_batch.py`)
whatever their step counts and progress, a preempted job keeps its state here until it
runs again, a forgotten one is dropped, and every step is an event to `emit` (the
serving side's `engine.link.DeviceLink.handle`, directly or over a device process's
pipe). A model whose backend cannot be stepped runs whole, one job per call.

A failure of the model fails the jobs of that segment (`Failed`), never the device: the
loop goes on with the next segment. A crash of the loop itself (an event handler, or
the core behind it, raised) is loud and recovered, never a dead thread: it is logged
with its traceback, the engine's job states are dropped and `on_crash` is told (the
link re-queues its jobs from step 0 and reports the fault). In a device process the
crash ends the process instead, and its parent restarts it (`engine/device_process.py`).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.backend import GenerationRequest
from scheduler.seam import (
    Command,
    Cut,
    Done,
    Event,
    Failed,
    Forget,
    ImageRequest,
    Probe,
    Probed,
    RunStats,
    SegmentEnded,
    SegmentJob,
    Started,
    StartSegment,
    Stepped,
    Stop,
)
from sdaas.errors import brief

log = logging.getLogger(__name__)


def generation(r: ImageRequest, steps: int) -> GenerationRequest:
    """The whole-pipeline request for one image (backends that cannot be stepped)."""
    return GenerationRequest((r.prompt,), (r.seed,), steps, r.width, r.height, r.guidance)


@dataclass
class JobRun:
    """A job on this device while it is in flight: its step state and what its `Done`
    will say."""

    started: float
    state: Any = None
    max_batch: int = 1
    segments: int = 0
    step_s: list[float] = field(default_factory=list)

    def stats(self, run_s: float) -> RunStats:
        return RunStats(self.started, run_s, self.max_batch, self.segments, tuple(self.step_s))


def by_shape(items: list, key=lambda state: state.shape) -> list[list]:
    """Items grouped by their latents' shape, in first-seen order: the core batches jobs
    of one model, which may be asked for different resolutions, and one UNet (or VAE)
    call takes latents of one shape; a mixed batch runs as one call per shape."""
    groups: dict = {}
    for x in items:
        groups.setdefault(key(x), []).append(x)
    return list(groups.values())


class DeviceEngine:
    """Runs one device. `backend_for(model_key)` returns the loaded `ModelBackend`;
    `emit(event)` takes every event, in order; `on_crash(what)` is told when the loop
    crashed and this engine reset (None: the crash propagates, a device process dies)."""

    def __init__(
        self,
        index: int,
        models: list[str],
        backend_for: Callable[[str], Any],
        emit: Callable[[Event], None],
        *,
        name: str = "",
        threads: int | None = None,
        clock: Callable[[], float] = time.time,
        max_resident: int | None = None,
        release: Callable[[str], None] | None = None,
        on_crash: Callable[[str], object] | None = None,
    ):
        self.index, self.models, self.backend_for, self.emit = index, models, backend_for, emit
        self.name = name or str(index)
        self.threads, self.clock = threads, clock
        self.runs: dict[int, JobRun] = {}
        # model key -> (backend, its step batcher or None), least recently used first: at
        # most `max_resident` (None: no bound), the core's residency rule (LRU over the
        # kind's `max_resident`, loads charged), so what it predicts is what runs here
        self.max_resident, self.release = max_resident, release or (lambda key: None)
        self._resident: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self.loads: list[tuple[str, float]] = []  # (model key, seconds) per load here
        self._cv = threading.Condition()
        self._next: StartSegment | None = None
        self._probes: list[Probe] = []  # run between segments
        self._cut = False
        self._stop = False
        self.busy = False  # a segment is running (tests: two devices busy at once)
        self.segments = 0
        self._answered: set[int] = set()  # this segment's jobs whose Done went out
        self.on_crash = on_crash
        self._thread = threading.Thread(
            target=self.run_loop, name=f"sdaas-device-{name or index}", daemon=True
        )

    def start(self) -> DeviceEngine:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self.send(Stop(self.index))
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the commands -----------------------------------------------------------------------
    def send(self, command: Command) -> None:
        """Take a command; never blocks (the core sends with its lock held)."""
        if isinstance(command, Cut):
            self._cut = True
            return
        with self._cv:
            if isinstance(command, StartSegment):
                self._next, self._cut = command, False
            elif isinstance(command, Forget):
                for j in command.jobs:
                    self.runs.pop(j, None)
            elif isinstance(command, Probe):
                self._probes.append(command)
            elif isinstance(command, Stop):
                self._stop = True
            else:
                raise TypeError(f"device engine {self.name}: not a command: {command!r}")
            self._cv.notify_all()

    def _time_job(self, p: Probe) -> float:
        backend, stepper = self._backend(p.model_key)
        r = p.request
        t0 = time.perf_counter()
        if stepper is None:
            if p.batch > 1:
                raise ValueError(f"{p.model_key} runs whole, one job per call: no batch")
            backend.generate(generation(r, p.steps))
        else:
            jobs = [stepper.start(r.prompt, r.seed + i, p.steps, r.width, r.height, r.guidance)
                    for i in range(p.batch)]  # fmt: skip
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
        """Run segments and probes until stopped: in this engine's thread (`start`), or
        in the calling thread (a device process's main thread)."""
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        while (work := self._wait()) is not None:
            try:
                if isinstance(work, Probe):
                    self._probe(work)
                else:
                    self._run_segment(work)
            except Exception as exc:  # noqa: BLE001 - loud and recovered, never a dead loop
                if self.on_crash is None:
                    raise
                log.exception("device engine %s: its loop crashed", self.name)
                self._crashed(exc)

    def _wait(self) -> Probe | StartSegment | None:
        """The next probe or segment; None when stopped."""
        with self._cv:
            while self._next is None and not self._stop and not self._probes:
                self._cv.wait()
            if self._stop:
                return None
            if self._probes:
                return self._probes.pop(0)
            work, self._next = self._next, None
            return work

    def _probe(self, p: Probe) -> None:
        try:
            said = Probed(self.index, seconds=self._time_job(p))
        except Exception as exc:  # noqa: BLE001 - the caller gets it
            said = Probed(self.index, error=brief(exc))
        self.emit(said)

    def _run_segment(self, work: StartSegment) -> None:
        jobs, steps = list(work.jobs), work.steps
        self.busy, self._answered = True, set()
        # a batch holds several tenants' jobs and its error goes to each and to the log:
        # none of their prompts in it
        prompts = [getattr(sj.request, "prompt", "") for sj in jobs]
        try:
            ran, failed = self._segment(jobs, steps)
        except Exception as exc:  # noqa: BLE001 - a bug here fails jobs, not the device
            tb = "".join(traceback.format_tb(exc.__traceback__))  # frames, no values
            log.error("device %s: segment failed: %s\n%s", self.index, brief(exc, prompts), tb)
            ran, failed = steps, [(sj, exc) for sj in jobs if sj.index not in self._answered]
        finally:
            self.busy = False
        self.segments += 1
        for sj, exc in failed:
            self.runs.pop(sj.index, None)
            self.emit(Failed(self.index, sj.index, brief(exc, prompts)))
        self.emit(SegmentEnded(self.index, ran, tuple(sj.index for sj, _ in failed)))

    def _crashed(self, exc: Exception) -> None:
        """The loop crashed outside the model (an event handler or the core raised): what
        it holds may be out of step with the core, so its job states are dropped and its
        owner re-queues its jobs from step 0 (the models stay loaded)."""
        with self._cv:
            self._next, self._cut = None, False
        self.runs.clear()
        self.on_crash(f"engine loop crashed ({brief(exc)})")

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
                r = sj.request
                run = self.runs[sj.index] = JobRun(self.clock())
                try:
                    run.state = stepper.start(r.prompt, r.seed, sj.steps, r.width, r.height,
                                              r.guidance)  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - this job's input, not the batch
                    failed.append((sj, exc))
                    continue
                self.emit(Started(self.index, sj.index))
            run.max_batch = max(run.max_batch, len(jobs))
            run.segments += 1
        bad = {f.index for f, _ in failed}
        live = [sj for sj in jobs if sj.index not in bad]
        ran = 0
        while ran < steps and live:
            t0 = time.perf_counter()
            for group in by_shape([self.runs[sj.index].state for sj in live]):
                stepper.step(group)  # one call per resolution: latents of one shape
            dt = time.perf_counter() - t0
            ran += 1
            for sj in live:
                run = self.runs[sj.index]
                run.step_s.append(dt)
                self.emit(Stepped(self.index, sj.index, run.state.done_calls, run.state.calls))
            if any(self.runs[sj.index].state.finished for sj in live) or self._cut:
                break
        done = [sj for sj in live if self.runs[sj.index].state.finished]
        for group in by_shape(done, key=lambda sj: self.runs[sj.index].state.shape):
            images = stepper.finish([self.runs[sj.index].state for sj in group])
            for sj, image in zip(group, images, strict=True):
                self._done(sj, image)
        return ran, failed

    def _whole(self, backend, jobs: list[SegmentJob]):
        """A backend without step-level batching: each job runs from noise to image."""
        failed = []
        for sj in jobs:
            run = self.runs[sj.index] = JobRun(self.clock())
            self.emit(Started(self.index, sj.index))
            try:
                res = backend.generate(
                    generation(sj.request, sj.steps),
                    on_step=lambda i, dt, j=sj.index, n=sj.steps: self.emit(
                        Stepped(self.index, j, i + 1, n)
                    ),
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
        self.emit(Done(self.index, sj.index, image, run.stats(self.clock() - run.started)))
        self._answered.add(sj.index)  # only once sent: a Done that failed to go out fails
        # the job (Failed), where the core would have settled it done with no image
