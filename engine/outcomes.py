"""Where every job's outcome is written: the image saved, CLIP-scored and stored; a failure,
refusal or cancel stored with its reason. Each outcome is stored once, keyed by (tenant,
job_id) and by source, so the driver commits a window's offsets exactly when its jobs
all have outcomes, and a replay after a crash runs only what has none.

Finished images are saved, scored and stored on the sink's own thread, off the devices'
path: a device's next segment must not wait for the last one's sinks.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, replace

from adapters.result_store import ResultStore, StoreError
from engine.models import ServingModels
from engine.spec import ServingSpec
from models.accelerators import Accelerator
from predictor.latency_correction import Observation, factor_at
from scheduler.live import LiveCore, Refusal
from scheduler.seam import Done, Failed
from sdaas.errors import brief
from sdaas.health import Faults
from sdaas.job_status import JobStatus
from sdaas.privacy import prompt_tokens
from sdaas.records import Job, JobResult

log = logging.getLogger(__name__)


@dataclass
class Admitted:
    """A job handed to the core (its payload): its record, its options per kind, the
    latency corrections it was planned with, its window; its run order once started."""

    job: Job
    options: list
    scale: dict
    window: str
    run_order: int = -1

    @property
    def key(self) -> tuple[str, str]:
        return (self.job.request.tenant, self.job.request.job_id)


class OutcomeSink:
    """Stores outcomes for one runtime. `answered(j, key, stored)` is the runtime's
    in-flight ledger, told after each one. `devices`: the core's device instances (the
    runtime's own list: an engine that joins a Ray slot renames its instance)."""

    def __init__(self, spec: ServingSpec, store: ResultStore, core: LiveCore,
                 models: ServingModels, faults: Faults, answered, *, model_keys: list[str],
                 kinds: list[str], devices: list[Accelerator], clock):  # fmt: skip
        self.spec, self.store, self.core, self.models = spec, store, core, models
        self.faults, self.answered, self.clock = faults, answered, clock
        self.model_keys, self.kinds, self.devices = model_keys, kinds, devices
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="sdaas-sinks", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._queue.put(None)  # after what is queued: every finished job is stored
        self._thread.join(timeout=60.0)

    # -- what happens to jobs ---------------------------------------------------------------
    def done(self, event: Done) -> None:
        """A job's image exists: its JCT ends now; the sink thread stores it."""
        self._queue.put((event, self.clock()))

    def failed(self, event: Failed, a: Admitted) -> None:
        p = self.planned(event.job)
        log.warning("job %s failed on %s: %s", p.request.job_id, p.model_key,
                    event.error.split(":")[0])  # fmt: skip
        self._answer(event.job, p.result("failed", self.spec.policy, error=event.error,
                                         run_order=a.run_order))  # fmt: skip

    def settled(self, j: int, status: int, t: float) -> None:
        """The core refused, dropped, cancelled or failed job j (a policy error while
        placing it: `internal`); called under its lock."""
        try:
            p = self.core.payload[j].job
            if status == JobStatus.CANCELLED:
                why = "cancelled at the tenant's request"
            else:
                why = self._refusal_text(j, self.core.refusals[j])
            status = JobStatus(status).answer.word
            result = self.planned(j).result(status, self.spec.policy, jct_s=t - p.arrival_ts,
                                            error=why)  # fmt: skip
            self._answer(j, result)
        except Exception as exc:  # noqa: BLE001 - the core must go on
            log.exception("serving: storing the refusal of job %d failed", j)
            self._answer_failed(j, f"storing its refusal failed ({brief(exc)})")

    def planned(self, j: int, device: str = "") -> Job:
        """The job record with what the core decided for it: model, kind, device, steps
        and predictions (none where the policy never placed it)."""
        core, a = self.core, self.core.payload[j]
        p, k = a.job, core.kind[j]
        if k < 0:
            return replace(p, window=a.window)
        key, kind = self.model_keys[core.model[j]], self.kinds[k]
        return replace(
            p,
            model_key=key,
            accelerator=kind,
            device=device or (self.devices[core.dev_of[j]].id if core.dev_of[j] >= 0 else ""),
            steps=core.steps[j],
            predicted_s=core.pred[j],
            predicted_clip=a.options[k].clip if a.options[k] else 0.0,
            latency_correction=factor_at(a.scale.get((key, kind)), core.steps[j]),
            window=a.window,
        )

    # -- storing ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            event, end = item
            try:
                self._store_done(event, end)
            except StoreError as exc:  # after the job's answer (its observation): fatal
                self.faults.report("result-store", str(exc), fatal=True)
            except Exception as exc:  # noqa: BLE001 - one job's sink, not the others'
                log.exception("serving: storing the result of job %d failed", event.job)
                self._answer_failed(event.job, f"storing its result failed ({brief(exc)})")

    def _answer_failed(self, j: int, why: str) -> None:
        """A bug between a job's end and its stored outcome must not leave it in flight
        for ever: it is answered failed (unless its answer went out before the bug)."""
        if self.core.payload[j] is None:
            return
        try:
            self._answer(j, self.planned(j).result("failed", self.spec.policy, error=why))
        except Exception as exc:  # noqa: BLE001 - the store takes no outcome for it (a
            # sqlite error that is no StoreError: 'database is locked' past its 30 s wait)
            log.exception("serving: job %d could not be answered failed either", j)
            if self.core.payload[j] is not None:  # not answered: a fatal store fault, so
                # it is not left in flight for ever; its record is read again on restart
                self._answer(j, None, failed=StoreError(
                    f"the result store {self.store.path} takes no outcome for job "
                    f"{j} ({brief(exc)}): restart `sdaas serve` once it does"))  # fmt: skip

    def _answer(self, j: int, result: JobResult | None, failed: StoreError | None = None) -> bool:
        """Store job j's outcome. A store that vanished or takes no writes (`failed`: it
        already failed) is a fatal fault: the job is let go unanswered (never in a new
        store; its record, not committed, is read again on the next start). Whether it
        was stored."""
        a: Admitted = self.core.payload[j]
        if failed is None:
            try:
                self.store.put([result], [a.job.source])
            except StoreError as exc:
                failed = exc
        if failed is not None:
            if self.faults.report("result-store", str(failed), fatal=True) is None:
                log.warning("job %s of %s not stored (the result store failed): it runs "
                            "again after a restart", a.key[1], a.key[0])  # fmt: skip
        self.answered(j, a.key, failed is None)
        return failed is None

    def _store_done(self, event: Done, end: float) -> None:
        j, run = event.job, event.stats
        a: Admitted = self.core.payload[j]
        device = self.devices[event.device]
        p = self.planned(j, device.id)
        r = p.request
        path = self.store.image_path(r.tenant, r.job_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            event.image.save(path)
        except OSError as exc:  # the store's folder: its images are the store too
            why = StoreError(f"the result image {path} cannot be written ({exc}): make "
                             f"{self.store.images_dir} writable, then restart `sdaas serve`: "
                             "the jobs it could not store are read again from Kafka")  # fmt: skip
            self._answer(j, None, failed=why)
            return
        scorer = self.models.scorer(device.device)
        clip = scorer.score([event.image], [r.prompt])[0] if scorer else None
        jct = end - p.arrival_ts
        result = p.result(
            "done",
            self.spec.policy,
            queued_s=run.started - p.arrival_ts,
            run_s=run.run_s,
            jct_s=jct,
            clip_score=clip,
            latency_slo_met=jct <= r.latency_slo_s,
            clip_slo_met=clip is not None and clip >= r.min_clip,
            image_uri=path.as_uri(),
            run_order=a.run_order,
            batch_size=run.max_batch,
            restarts=self.core.restarts[j],
        )
        stored = self._answer(j, result)
        if stored and run.max_batch == 1 and run.segments == 1:  # alone, whole: comparable
            base = p.predicted_s / (p.latency_correction or 1.0)
            obs = Observation((p.model_key, p.accelerator, 1), base, run.run_s, p.steps)
            self.store.observe([obs], "job", self.spec.planner.predictor_version)

    # -- why ----------------------------------------------------------------------------
    def _refusal_text(self, j: int, why: Refusal) -> str:
        """The core's reason for refusing job j, as the tenant reads it."""
        a: Admitted = self.core.payload[j]
        r, pol = a.job.request, self.spec.policy
        if why.why == "unservable":
            plan = self.spec.planner.plan(r.style, r.latency_slo_s, r.min_clip,
                                          resolution=r.resolution,
                                          prompt_tokens=prompt_tokens(r.prompt),
                                          latency_scale=a.scale)  # fmt: skip
            return plan.reason or "no accelerator can serve it"
        if why.why == "overloaded":
            return (
                f"overloaded: {self.kinds[self.core.kind[j]]} already has more predicted work "
                f"queued per device than allowed (bound {self.spec.max_backlog_s:g} s); "
                "resubmit later"
            )
        if why.why.startswith("internal"):
            return (
                f"{why.why}: the scheduler ({pol}) failed while placing this window's jobs; "
                "it was not run: resubmit it"
            )
        if why.why == "dropped":
            return (
                f"dropped by {pol} after {why.waited_s:.2f} s in the queue: with "
                f"{why.pred_s:.2f} s to run it could no longer meet its {r.latency_slo_s:g} s SLO"
            )
        queued = self.core.arrival[j] - a.job.arrival_ts
        room = self.spec.planner.headroom
        return (
            f"rejected by {pol} at admission: it reached the scheduler {queued:.2f} s after "
            f"it arrived (in Kafka until serving read it, then its window), "
            f"{why.slo_left_s:.2f} s of its {r.latency_slo_s:g} s SLO left"
            f"{f' with {room:.0%} headroom' if room else ''}; the fastest option needs "
            f"{why.fastest_s:.2f} s to run, before any queue"
        )
