"""What the serving transform hands its jobs to: one per serving spec and process, shared
by every bundle, window and micro-batch pipeline (the model-manager pattern of Beam's
RunInference: loaded once, kept, reused).

    ServeWindow ──submit──► LiveCore (scheduler/live.py: the simulator's core, policy P)
                                │ segments                  ▲ segment ends
                                ▼                           │
                            DeviceEngine per device instance (engine/device_engine.py)
                                │ events: started, step i/N, done, failed
                                ▼
                            the sinks here: every outcome stored the moment it exists

No window barrier: a window's jobs join the queues and batches of jobs already running.
Each outcome (done, failed, rejected, dropped, cancelled) is stored once, keyed by
(tenant, job_id) and by source, so the driver commits a window's offsets exactly when
its jobs all have outcomes, and a replay after a crash runs only what has none.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from adapters.result_store import ResultStore, StoreError
from engine.device_engine import DeviceEngine, ImageRequest
from models.accelerators import Accelerator
from models.card import ModelCard
from pipelines.serving_events import CANCEL_MAX_AGE_S
from predictor.latency_correction import Observation, factor_at
from scheduler.catalog import Catalog
from scheduler.cluster import Cluster
from scheduler.live import CANCELLED, LIVE_CONFIG, LiveCore, LiveJob
from scheduler.policy import make_policy
from scheduler.simulator import DROPPED, PENDING, REJECTED
from sdaas.health import Faults
from sdaas.records import Job, JobResult, model_key

log = logging.getLogger(__name__)
PROBES = 2  # runs that prove a (model, accelerator) profile before jobs are decided on it
PROBE_PROMPT = "a calibration probe"  # the system's own prompt, never a tenant's
BATCH_PROBE_STEPS = 8  # step count batch costs are measured at (capped by the profile's)
_PROBE_FAILED: set = set()  # (model, accelerator) whose probe raised: not retried here


@dataclass
class Admitted:
    """A job handed to the core: its record, its options per kind, the corrections it
    was planned with, its window; filled in as it runs."""

    job: Job
    options: list
    scale: dict
    window: str
    run_order: int = -1


@dataclass
class _Waiters:
    cv: threading.Condition = field(default_factory=threading.Condition)
    answered: set[int] = field(default_factory=set)


class ServingRuntime:
    """The scheduling core, a device engine per device instance, the loaded models and
    the sinks that store outcomes, for one `ServingSpec` (pipelines/serving.py)."""

    def __init__(self, spec, clock=time.time):
        from pipelines.serving import observed_corrections_in

        self.spec, self.clock = spec, clock
        # what is wrong now (a store gone, an engine restarted): the heartbeat carries it
        # to the API's /readyz, and a fatal one stops the driver taking work
        self.faults = Faults()
        self._observed = lambda: observed_corrections_in(self.store, spec.planner.predictor_version)
        self.store = ResultStore(spec.store_path)
        self.models = process_models(spec.cards, spec.clip_path)
        self.models.preload(spec.devices, keep=spec.max_resident is None)
        self.kinds = spec.accelerators
        # instances in the core's order: kind by kind, devices in spec order
        self.instances = [d for k in self.kinds for d in spec.devices if d.name == k]
        cluster = Cluster(tuple((k, sum(d.name == k for d in spec.devices)) for k in self.kinds))
        options = spec.planner.options
        self.model_keys = [model_key(o.name, o.version) for o in options]
        self.runs_on = sorted(
            (m, k)
            for m, o in enumerate(options)
            for k, a in enumerate(self.kinds)
            if a in o.accelerators
        )
        self.catalog = live_catalog(spec.planner, self.model_keys, self.kinds, self.runs_on,
                                    self.models.load_s, spec.max_resident)  # fmt: skip
        # a residency bound: switching a device to a model that is not resident costs
        # its load, in the core's predictions as on the device
        config = replace(LIVE_CONFIG, max_backlog_s=spec.max_backlog_s,
                         cold_start=spec.max_resident is not None)  # fmt: skip
        self.core = LiveCore(self.catalog, cluster, make_policy(spec.policy), config,
                             clock, self._settled)  # fmt: skip
        self._w = _Waiters()
        # finished images are saved, CLIP-scored and stored here, off the devices' path:
        # a device's next segment must not wait for the last one's sinks
        self._sinks: queue.Queue = queue.Queue()
        self._sink_thread = threading.Thread(target=self._sink_loop, name="sdaas-sinks",
                                             daemon=True)  # fmt: skip
        self._sink_thread.start()
        self.by_key: dict[tuple[str, str], int] = {}  # in flight: (tenant, job_id) -> index
        # progress out (pipelines/serving_events.py: EventPublisher.emit); None: not sent
        self.events = None
        # cancel requests for jobs not handed over yet: answered when their record is read
        self.cancel_early: dict[tuple[str, str], float] = {}  # -> when asked
        self._orders: dict[tuple[str, str], int] = {}  # (window, device) -> next run order
        processes = spec.device_processes
        if processes is None:
            processes = len(self.instances) > 1
        self.engines = [self._engine(i, d, processes) for i, d in enumerate(self.instances)]
        self.core.attach(self.engines)
        for e in self.engines:
            e.start()
        if spec.correct_latency:  # on the devices, before any job is decided
            self._probe_unproven()
            self._measure_batches()

    def _engine(self, i: int, d: Accelerator, process: bool):
        if process:
            from engine.device_process import DeviceProcess

            return DeviceProcess(
                i, self.core, self.spec.cards, self.model_keys, self._request_of, self._event,
                device=d.device, name=d.id, threads=self.spec.threads,
                max_resident=self.spec.max_resident, on_fault=self.faults.report,
            )  # fmt: skip
        return DeviceEngine(
            i, self.core, self.model_keys, lambda key: self.models.backend(key, d.device),
            self._request_of, self._event, name=d.id, threads=self.spec.threads,
            clock=self.clock, max_resident=self.spec.max_resident,
            release=lambda key: self.models.release(key, d.device),
            on_fault=self.faults.report,
        )  # fmt: skip

    # -- the front's side ---------------------------------------------------------------
    def in_flight(self, keys) -> set[tuple[str, str]]:
        """Of these (tenant, job_id)s, those handed over and not answered yet."""
        with self._w.cv:
            return {k for k in keys if k in self.by_key}

    def submit(self, fresh: list[tuple[Job, list]], scale: dict, wname: str) -> list[int]:
        """Hand a window's new jobs to the core; rejections are stored before this
        returns, the rest as they end."""
        room = 1.0 - self.spec.planner.headroom  # plan against SLO x (1 - headroom)
        now = self.clock()  # an arrival is never later than now (a test's lead may be)
        jobs = []
        for p, opts in fresh:
            planned = [o[:3] if o else None for o in opts]
            r = p.request
            deadline = min(p.arrival_ts, now) + r.latency_slo_s * room
            jobs.append(LiveJob(r.style, deadline, r.min_clip, planned, planned,
                                Admitted(p, opts, scale, wname)))  # fmt: skip
        with self.core.lock:  # no device may end one of them before it is registered
            first = len(self.core.arrival)
            with self._w.cv:
                for x, (p, _) in enumerate(fresh):
                    self.by_key[(p.request.tenant, p.request.job_id)] = first + x
                # a cancel that came after its window checked, before it was registered
                keys = [(p.request.tenant, p.request.job_id) for p, _ in fresh]
                early = [first + x for x, k in enumerate(keys)
                         if self.cancel_early.pop(k, None) is not None]  # fmt: skip
            indices = self.core.submit(jobs)
            if self.events is not None:  # before any device can report a start
                for j in indices:
                    if self.core.status[j] == PENDING:
                        self._emit_planned(j)
            for j in early:
                self.core.cancel(j)
            return indices

    def _emit_planned(self, j: int) -> None:
        try:
            self._send_planned(j)
        except Exception:  # noqa: BLE001 - progress is best effort; the job is in the core
            log.exception("serving: the planned event of job %d was not sent", j)

    def _send_planned(self, j: int) -> None:
        p = self._planned(j)
        r = p.request
        model, _, version = p.model_key.rpartition("@")
        self.events(r.tenant, r.job_id, "planned", model=model, model_version=version,
                    accelerator=p.accelerator, steps=p.steps,
                    predicted_latency_s=round(p.predicted_s, 4),
                    predicted_clip=round(p.predicted_clip, 3))  # fmt: skip

    def wait(self, indices, timeout: float | None = None) -> bool:
        """Until every one of these jobs has its outcome stored."""
        want = set(indices)
        end = None if timeout is None else time.monotonic() + timeout
        with self._w.cv:
            while not want <= self._w.answered:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._w.cv.wait(left)
        return True

    def pending_sources(self) -> set[str]:
        """Sources of jobs handed over and not answered yet (the driver's ledger check)."""
        with self._w.cv:
            return {self.core.payload[j].job.source for j in self.by_key.values()}

    def idle(self) -> bool:
        with self._w.cv:
            return not self.by_key

    def drain(self, timeout: float | None = None) -> bool:
        """Until nothing is in flight (shutdown: finish what was admitted)."""
        with self._w.cv:
            return self._w.cv.wait_for(lambda: not self.by_key, timeout)

    def cancel(self, tenant: str, job_id: str) -> bool:
        with self._w.cv:
            j = self.by_key.get((tenant, job_id))
        return j is not None and self.core.cancel(j)

    def cancel_request(self, tenant: str, job_id: str) -> None:
        """A tenant's cancel: in flight, cancelled in the core; not handed over yet (or
        already answered), remembered: `ServeWindow` answers it `cancelled` if its
        record comes (a job with a result is never run again anyway)."""
        if self.events is not None:  # when serving got it: "within one step" counts from here
            self.events(tenant, job_id, "cancelling")
        if not self.cancel(tenant, job_id):
            with self._w.cv:
                now = self.clock()
                if len(self.cancel_early) >= 10_000:  # forget requests too old to count
                    self.cancel_early = {k: t for k, t in self.cancel_early.items()
                                         if now - t < CANCEL_MAX_AGE_S}  # fmt: skip
                self.cancel_early[(tenant, job_id)] = now

    def close(self) -> None:
        for e in self.engines:
            e.stop(timeout=5.0)
        self._sinks.put(None)  # after what is queued: every finished job is stored
        self._sink_thread.join(timeout=60.0)

    def _sink_loop(self) -> None:
        while (item := self._sinks.get()) is not None:
            try:
                self._store_done(*item)
            except StoreError as exc:  # after the job's answer (its observation): fatal
                self.faults.report("result-store", str(exc), fatal=True)
            except Exception:  # noqa: BLE001 - one job's sink, not the others'
                log.exception("serving: storing the result of job %d failed", item[0].index)

    # -- the sinks ----------------------------------------------------------------------
    def _answer(self, j: int, result: JobResult | None, failed: StoreError | None = None) -> bool:
        """Store job j's outcome. A store that vanished or takes no writes (`failed`: it
        already failed) is a fatal fault: the job is let go unanswered (never in a new
        store; its record, not committed, is read again on the next start). Whether
        it was stored."""
        a: Admitted = self.core.payload[j]
        if failed is None:
            try:
                self.store.put([result], [a.job.source])
            except StoreError as exc:
                failed = exc
        r = a.job.request
        if failed is not None:
            if self.faults.report("result-store", str(failed), fatal=True) is None:
                log.warning("job %s of %s not stored (the result store failed): it runs "
                            "again after a restart", r.job_id, r.tenant)  # fmt: skip
        with self._w.cv:
            if failed is None:
                self._w.answered.add(j)
            self.by_key.pop((r.tenant, r.job_id), None)
            self.core.payload[j] = None  # the prompt is not kept past its answer
            self._w.cv.notify_all()
        return failed is None

    def _request_of(self, sj) -> ImageRequest:
        card = self.spec.cards[self.model_keys[sj.model]]
        r = sj.payload.job.request
        w, h = r.resolution or card.resolution_pairs[0]
        return ImageRequest(card.styled_prompt(r.prompt, r.style), r.seed, w, h,
                            card.guidance_scale)  # fmt: skip

    def _event(self, kind: str, sj, **data) -> None:
        """A device's event for one job: never raises into the device loop."""
        try:
            a: Admitted = sj.payload
            r = a.job.request
            if kind == "started":
                key = (a.window, self.instances[data["device"]].id)
                a.run_order = self._orders.get(key, 0)
                self._orders[key] = a.run_order + 1
                if self.events is not None:
                    self.events(r.tenant, r.job_id, "started",
                                device=self.instances[data["device"]].id)  # fmt: skip
            elif kind == "step":
                if self.events is not None:
                    self.events(r.tenant, r.job_id, "step", step=data["step"], of=data["of"])
            elif kind == "done":
                self._done(sj, a, data["device"], data["image"], data["run"], data["run_s"])
            elif kind == "failed":
                p = self._planned(sj.index)
                why = data["error"]
                log.warning("job %s failed on %s: %s", p.request.job_id, p.model_key,
                            why.split(":")[0])  # fmt: skip
                self._answer(sj.index, p.result("failed", self.spec.policy, error=why,
                                                run_order=a.run_order))  # fmt: skip
        except Exception:  # noqa: BLE001 - a sink bug must not stop a device
            log.exception("serving: handling %s of job %d failed", kind, sj.index)

    def _done(self, sj, a: Admitted, device: int, image, run, run_s: float) -> None:
        """A job's image exists: its JCT ends now; the sink thread stores it."""
        self._sinks.put((sj, a, device, image, run, run_s, self.clock()))

    def _store_done(self, sj, a: Admitted, device: int, image, run, run_s, end) -> None:
        j = sj.index
        p = self._planned(j, self.instances[device].id)
        r = p.request
        path = self.store.image_path(r.tenant, r.job_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
        except OSError as exc:  # the store's folder: its images are the store too
            why = StoreError(f"the result image {path} cannot be written ({exc}): make "
                             f"{self.store.images_dir} writable, then restart `sdaas serve`: "
                             "the jobs it could not store are read again from Kafka")  # fmt: skip
            self._answer(j, None, failed=why)
            return
        scorer = self.models.scorer(self.spec.device(p.device).device)
        clip = scorer.score([image], [r.prompt])[0] if scorer else None
        jct = end - p.arrival_ts
        result = p.result(
            "done",
            self.spec.policy,
            queued_s=run.started - p.arrival_ts,
            run_s=run_s,
            jct_s=jct,
            clip_score=clip,
            latency_slo_met=jct <= r.latency_slo_s,
            clip_slo_met=clip is not None and clip >= r.min_clip,
            image_uri=path.as_uri(),
            run_order=a.run_order,
            batch_size=run.max_batch,
        )
        stored = self._answer(j, result)
        if stored and run.max_batch == 1 and run.segments == 1:  # alone, whole: comparable
            base = p.predicted_s / (p.latency_correction or 1.0)
            obs = Observation((p.model_key, p.accelerator, 1), base, run_s, p.steps)
            self.store.observe([obs], "job", self.spec.planner.predictor_version)

    def _settled(self, j: int, status: int, t: float) -> None:
        """The core refused, dropped or cancelled job j (under its lock)."""
        try:
            a: Admitted = self.core.payload[j]
            p = a.job
            if status == CANCELLED:
                result = self._planned(j).result(
                    "cancelled", self.spec.policy, jct_s=t - p.arrival_ts,
                    error="cancelled at the tenant's request",
                )  # fmt: skip
            else:
                why = self._refusal(j, a, status)
                result = self._planned(j).result("rejected", self.spec.policy,
                                                 jct_s=t - p.arrival_ts, error=why)  # fmt: skip
            self._answer(j, result)
        except Exception:  # noqa: BLE001 - the core must go on
            log.exception("serving: storing the refusal of job %d failed", j)

    def _refusal(self, j: int, a: Admitted, status: int) -> str:
        """Why the policy rejected job j at admission or dropped it at dispatch."""
        core, job, pol = self.core, a.job.request, self.spec.policy
        k = core.kind[j]
        if all(o is None for o in a.options):
            return self._plan_reason(job, a.scale)
        if status == REJECTED and j in core.overloaded:
            return (
                f"overloaded: {self.kinds[k]} already has more predicted work queued per "
                f"device than allowed (bound {self.spec.max_backlog_s:g} s); resubmit later"
            )
        if status == DROPPED:
            return (
                f"dropped by {pol} after {core.finish[j] - core.arrival[j]:.2f} s in the "
                f"queue: with {core.pred[j]:.2f} s to run it could no longer meet its "
                f"{job.latency_slo_s:g} s SLO"
            )
        fastest = min(o[2] for o in a.options if o)
        queued = core.arrival[j] - a.job.arrival_ts
        room = self.spec.planner.headroom
        return (
            f"rejected by {pol} at admission: queued {queued:.2f} s, "
            f"{core.latency_slo_s[core.cls[j]]:.2f} s of its {job.latency_slo_s:g} s SLO left"
            f"{f' with {room:.0%} headroom' if room else ''}; the fastest option needs "
            f"{fastest:.2f} s to run, before any queue"
        )

    def _plan_reason(self, job, scale) -> str:
        from sdaas.privacy import prompt_tokens

        plan = self.spec.planner.plan(job.style, job.latency_slo_s, job.min_clip,
                                      resolution=job.resolution,
                                      prompt_tokens=prompt_tokens(job.prompt),
                                      latency_scale=scale)  # fmt: skip
        return plan.reason or "no accelerator can serve it"

    def _planned(self, j: int, device: str = "") -> Job:
        """The job record with what the core decided for it: model, kind, steps and
        predictions (none where the policy never placed it)."""
        core, a = self.core, self.core.payload[j]
        p, k = a.job, core.kind[j]
        if k < 0:
            return replace(p, window=a.window)
        key, kind = self.model_keys[core.model[j]], self.kinds[k]
        return replace(
            p,
            model_key=key,
            accelerator=kind,
            device=device or (self.instances[core.dev_of[j]].id if core.dev_of[j] >= 0 else ""),
            steps=core.steps[j],
            predicted_s=core.pred[j],
            predicted_clip=a.options[k][3] if a.options[k] else 0.0,
            latency_correction=factor_at(a.scale.get((key, kind)), core.steps[j]),
            window=a.window,
        )

    # -- probes -------------------------------------------------------------------------
    def _probe_unproven(self) -> None:
        """A (model, accelerator) whose profile serving has no evidence for yet is
        measured before any job is decided on it: `PROBES` runs of a fixed prompt at the
        fewest and most steps it was profiled at. Without this, a profile that is too
        slow gets every job rejected, and rejected jobs never produce the observations
        that would correct it. Each key is probed once for the life of the store."""
        corr = self._observed()
        for m, k in self.runs_on:
            key, kind = self.model_keys[m], self.kinds[k]
            have = corr.by_key.get((key, kind, 1))
            missing = PROBES - (have.n if have else 0)
            if missing > 0 and (key, kind) not in _PROBE_FAILED:
                steps = self.spec.planner.probe_steps(self.spec.planner.options[m])[:missing]
                try:
                    observed = self._probe(key, kind, steps)
                except Exception as exc:  # noqa: BLE001 - a failing model fails its jobs, not serving
                    _PROBE_FAILED.add((key, kind))
                    log.warning("probing %s on %s failed (%s): its profile stays unproven",
                                key, kind, type(exc).__name__)  # fmt: skip
                    continue
                self.store.observe(observed, "probe", self.spec.planner.predictor_version)
                log.info("probed %s on %s: %s", key, kind,
                         ", ".join(f"{o.observed_s:.3f} s (predicted {o.predicted_s:.3f} s)"
                                   for o in observed))  # fmt: skip

    def _probe_where(self, key: str, kind: str):
        """(the first device engine of `kind`, the probe's request for model `key`)."""
        card = self.spec.cards[key]
        engine = self.engines[next(i for i, d in enumerate(self.instances) if d.name == kind)]
        w, h = card.resolution_pairs[0]
        req = ImageRequest(card.styled_prompt(PROBE_PROMPT, card.styles[0]), 0, w, h,
                           card.guidance_scale)  # fmt: skip
        return engine, req

    def _measure_batches(self) -> None:
        """What a batch of b costs against one job, measured on a device engine of each
        kind (b probe jobs stepped together vs one, at the batch sizes the model was
        profiled at) instead of read off the latency predictor, whose batches are
        whole-pipeline calls of the sweep: the step engine's batches cost more than
        those (the sim-to-real bench measured 2.3-2.9x the busy time the predictor's
        factors gave), and the core's batching and the simulator's replay rest on it."""
        planner = self.spec.planner
        for m, k in self.runs_on:
            key, kind = self.model_keys[m], self.kinds[k]
            sizes = [b for b in planner.profiled_batches.get(key, []) if b > 1]
            if not sizes or (key, kind) in _PROBE_FAILED:
                continue
            steps = min(BATCH_PROBE_STEPS, planner.probe_steps(planner.options[m])[1])
            engine, req = self._probe_where(key, kind)
            try:
                one = min(engine.time_job(key, req, steps) for _ in range(2))
                cost = [min(engine.time_job(key, req, steps, b) for _ in range(2)) / one
                        for b in sizes]  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - the predictor's factors stay
                log.warning("measuring batches of %s on %s failed (%s)", key, kind,
                            type(exc).__name__)  # fmt: skip
                continue
            f = self.catalog.batch_factor[(m, k)]
            f[1 : max(sizes) + 1] = np.interp(np.arange(1, max(sizes) + 1), [1, *sizes],
                                              [1.0, *cost])  # fmt: skip
            said = ", ".join(f"{b}: {c:.2f}x" for b, c in zip(sizes, cost, strict=True))
            log.info("batch cost of %s on %s at %d steps: %s", key, kind, steps, said)

    def _probe(self, key: str, kind: str, steps: tuple[int, ...]) -> list[Observation]:
        """Timed runs on the first device of `kind`, through its engine: where and as
        jobs run (a thread, or a device process)."""
        engine, req = self._probe_where(key, kind)
        w, h = req.width, req.height
        engine.time_job(key, req, steps[0])  # untimed: the first call pays warm-up
        planner = self.spec.planner
        return [
            Observation(
                (key, kind, 1),
                planner.predicted_s(key, kind, n, (w, h)),
                engine.time_job(key, req, n),
                n,
            )  # fmt: skip
            for n in steps
        ]


def live_catalog(
    planner,
    models: list[str],
    kinds: list[str],
    runs_on,
    load_s: dict[str, float] | None = None,
    max_resident: int | None = None,
) -> Catalog:
    """What the core needs of the served models beyond the planner's options: which
    model may run on which kind, and what a batch costs there. A batch of b costs
    factor(b) x one job, from the latency predictor at the model's most profiled steps,
    for the batch sizes it was profiled at (interpolated between them, none beyond):
    a model profiled at batch 1 only is never batched. Load times as measured here
    (`load_s`, model key -> s), charged only under a residency bound (`max_resident`
    per device; None: every model resident); price 1 per kind (INFaaS's cost rule then
    picks the fastest)."""
    steps = max(o.steps_max for o in planner.options)
    grid = np.arange(1, steps + 1)
    factors = {}
    for m, k in runs_on:
        key, kind = models[m], kinds[k]
        option = planner.options[m]
        sizes = sorted({1, *planner.profiled_batches.get(key, [1])})
        at = planner.probe_steps(option)[1]
        res = option.resolutions[0]
        try:
            one = planner.predicted_s(key, kind, at, res)
            known = [planner.predicted_s(key, kind, at, res, b) / one for b in sizes]
        except Exception:  # noqa: BLE001 - a planner without those batch sizes: batch 1
            sizes, known = [1], [1.0]
        f = np.full(max(sizes) + 1, np.inf)
        f[1:] = np.interp(np.arange(1, max(sizes) + 1), sizes, known)
        f[1] = 1.0
        factors[(m, k)] = f
    return Catalog(
        models=models,
        kinds=kinds,
        styles={m: () for m in models},
        steps=grid,
        latency={mk: np.zeros(steps) for mk in runs_on},
        batch_factor=factors,
        clip={m: np.zeros(steps) for m in range(len(models))},
        load_s={m: (load_s or {}).get(key, 0.0) for m, key in enumerate(models)},
        price_per_hour={k: 1.0 for k in range(len(kinds))},
        max_resident={k: max_resident or max(1, len(models)) for k in range(len(kinds))},
    )


# -- models and runtimes, one per process -------------------------------------------------

_PROCESS_MODELS: dict[tuple, Any] = {}  # models stay loaded for the life of the process
_RUNTIMES: dict[tuple, tuple[ServingRuntime, int]] = {}  # key -> (runtime, users)
_RUNTIMES_LOCK = threading.Lock()


class ServingModels:
    """Backends loaded on first use and kept until released: one per (model, device),
    plus the scorer. `load_s`: seconds of each model's first load (the core charges it
    when a residency bound makes a device load a model)."""

    def __init__(self, cards: dict[str, ModelCard], clip_path: str | None):
        from models.backend import quiet_model_libraries

        quiet_model_libraries()
        self.cards = cards
        self.clip_path = clip_path
        self.backends: dict[tuple[str, str], Any] = {}
        self.scorers: dict[str, Any] = {}
        self.load_s: dict[str, float] = {}
        self._lock = threading.Lock()

    def backend(self, model_key: str, device: str):
        key = (model_key, device)
        with self._lock:
            if key not in self.backends:
                from models.backend import load_backend

                t0 = time.perf_counter()
                self.backends[key] = load_backend(self.cards[model_key], device)
                self.load_s.setdefault(model_key, time.perf_counter() - t0)
                log.info("loaded %s on %s", model_key, device)
            return self.backends[key]

    def release(self, model_key: str, device: str) -> None:
        with self._lock:
            self.backends.pop((model_key, device), None)

    def preload(self, devices: tuple[Accelerator, ...], keep: bool = True) -> None:
        """Every registered model on every serving device (timed), and the scorer: the
        first jobs must not pay model loads. keep=False (a residency bound): each is
        loaded once for its load time, then released; devices load them as needed."""
        for device in dict.fromkeys(d.device for d in devices):
            for key in self.cards:
                self.backend(key, device)
                if not keep:
                    self.release(key, device)
            self.scorer(device)

    def scorer(self, device: str):
        if not self.clip_path:
            return None
        with self._lock:
            if device not in self.scorers:
                from models.clip_score import ClipScorer

                self.scorers[device] = ClipScorer.from_path(self.clip_path, device)
            return self.scorers[device]


def process_models(cards: dict[str, ModelCard], clip_path: str | None) -> ServingModels:
    key = (tuple(sorted(cards)), clip_path)
    if key not in _PROCESS_MODELS:
        _PROCESS_MODELS[key] = ServingModels(cards, clip_path)
    return _PROCESS_MODELS[key]


def _runtime_key(spec) -> tuple:
    return (spec.store_path, spec.policy, spec.devices, spec.max_backlog_s,
            spec.planner.predictor_version, spec.correct_latency, spec.threads,
            spec.max_resident)  # fmt: skip


def acquire_runtime(spec, clock=time.time) -> ServingRuntime:
    """The process's runtime for `spec`, started on first use; `release_runtime` when
    done (the last user stops its devices)."""
    key = _runtime_key(spec)
    with _RUNTIMES_LOCK:
        rt, users = _RUNTIMES.get(key, (None, 0))
        if rt is None:
            rt = ServingRuntime(spec, clock)
        _RUNTIMES[key] = (rt, users + 1)
        return rt


def release_runtime(spec) -> None:
    key = _runtime_key(spec)
    with _RUNTIMES_LOCK:
        rt, users = _RUNTIMES.get(key, (None, 0))
        if rt is None:
            return
        if users > 1:
            _RUNTIMES[key] = (rt, users - 1)
            return
        del _RUNTIMES[key]
    rt.drain(timeout=600)
    rt.close()
