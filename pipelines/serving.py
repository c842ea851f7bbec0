"""The serving pipeline: one composite Beam transform from jobs-topic records to results.

    records ─► ParseJobs ─┬─► dead letters (reason; stored, then published)
                          └─► jobs ─► window ─► PlanWindow (planner + backlog, admission,
                              dedupe by job_id) ─┬─► rejected results (stored at once)
                                                 └─► key by accelerator ─► GroupByKey ─►
                              RunOnAccelerator (policy order, diffusers via a ModelHandler)
                              ─► results (stored as each job finishes)

The same transform runs in a streaming pipeline (Flink / Dataflow with ReadFromKafka or
Pub/Sub; tested here with TestStream) and, as the local default, once per micro-batch on
FnApiRunner (`pipelines/serving_driver.py`). Side effects go to the result store, keyed by
(tenant, job_id) (results) and by source offset (dead letters, the ledger), so a replayed
record can never yield a second result. Every input record gets one ledger row: result,
dead_letter or duplicate; the driver checks they add up before committing offsets.

Isolation: whatever one record holds, it ends as a dead letter or a result; an exception
while parsing or planning it is caught for that record alone and never fails the window.
Time is the server's: a job's arrival is its broker timestamp, never later than when the
server received it; the client's `submitted_ts` only has to be within a stated skew.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from adapters.kafka_io import RawRecord
from adapters.result_store import ResultStore
from models.accelerators import Accelerator
from models.card import ModelCard
from pipelines.latency_correction import latency_scale
from predictor.planner import Planner
from sdaas.errors import SdaasError
from sdaas.job_request import JobRefused, JobRequest, parse_job
from sdaas.privacy import prompt_tokens
from sdaas.records import JobResult, model_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingSpec:
    """Everything the transform needs; picklable (the planner holds only its curves)."""

    planner: Planner
    cards: dict[str, ModelCard]  # model_key -> card
    devices: tuple[Accelerator, ...]  # device instances; identical ones share a profile name
    store_path: str
    clip_path: str | None = None
    policy: str = "sjf"
    window_s: float = 2.0
    max_backlog_s: float = 30.0  # admission: most predicted work per accelerator per window
    source_topic: str = "sdaas.jobs"
    correct_latency: bool = True  # scale predictions by observed run time (EWMA)

    @property
    def accelerators(self) -> list[str]:
        """The profile names of the devices (each once): what the planner costs."""
        return list(dict.fromkeys(d.name for d in self.devices))

    def device(self, instance: str) -> Accelerator:
        return next(d for d in self.devices if d.id == instance)


@dataclass(frozen=True)
class ParsedJob:
    job: JobRequest
    source: str  # topic/partition/offset
    arrival_ts: float  # server-side: broker timestamp, at most the receive time


@dataclass(frozen=True)
class PlannedJob:
    job: JobRequest
    source: str
    arrival_ts: float
    deadline_ts: float
    model_key: str  # name@version
    accelerator: str
    steps: int
    predicted_s: float
    predicted_clip: float
    window: str
    latency_correction: float = 1.0
    device: str = ""  # the device instance it runs on (`Accelerator.id`)
    order: int = -1  # its place in the policy's order over the window (admission order)


def source_of(topic: str, r: RawRecord) -> str:
    """A record's identity: topic/partition/offset, plus its broker timestamp, because an
    embedded (memory) broker that restarts hands out the same offsets again."""
    return f"{topic}/{r.partition}/{r.offset}@{round(r.ts * 1000)}"


def dead_letter(source: str, reason: str, r: RawRecord | None = None, job_id="", tenant=""):
    """A dead letter: where the record came from, the ids it could be read with (only
    legal ones), and why it was refused. Never the prompt."""
    size = len(r.value) if r is not None and isinstance(r.value, bytes | bytearray) else 0
    return {
        "source": source,
        "job_id": job_id,
        "tenant": tenant,
        "reason": reason,
        "bytes": size,
        "ts": r.ts if r is not None else time.time(),
    }


def arrival_time(r: RawRecord, now: float) -> tuple[float, float]:
    """(arrival, window timestamp) of a record, both server-side. Arrival is the broker
    timestamp, but never later than when the record was received (a producer may set a
    record's timestamp); the window is the receive time where the reader stamped one, so
    no timestamp a client writes spreads its jobs over windows."""
    received = r.received_ts if r.received_ts is not None else now
    ts = r.ts if isinstance(r.ts, float | int) and math.isfinite(r.ts) and r.ts > 0 else received
    arrival = min(float(ts), received)
    return arrival, (received if r.received_ts is not None else arrival)


class ParseJobs(beam.DoFn):
    """Valid requests out; each bad one to the dead-letter output with its reason."""

    DEAD = "dead_letters"

    def __init__(self, spec: ServingSpec, clock=time.time):
        self.spec = spec
        self.clock = clock

    def setup(self):
        self.store = ResultStore(self.spec.store_path)
        self.resolutions = self.spec.planner.resolutions

    def process(self, r: RawRecord):
        source = source_of(self.spec.source_topic, r)
        try:
            arrival, window_ts = arrival_time(r, self.clock())
            job = parse_job(
                r.value, self.spec.planner.styles, resolutions=self.resolutions, broker_ts=r.ts
            )
        except JobRefused as exc:
            letter = dead_letter(source, exc.reason, r, exc.job_id, exc.tenant)
        except Exception as exc:  # noqa: BLE001 - one record must never fail the window
            letter = dead_letter(source, f"message: unreadable ({type(exc).__name__})", r)
        else:
            yield TimestampedValue(ParsedJob(job, source, arrival), window_ts)
            return
        self.store.put_dead_letters([letter])
        log.info("dead letter %s: %s", source, letter["reason"])
        yield beam.pvalue.TaggedOutput(self.DEAD, letter)


class PlanWindow(beam.DoFn):
    """One window's jobs: skip (tenant, job_id)s already answered; plan each on its own
    and reject what no order could save; then admit in the order the policy will run
    them (its `serving_key`), charging each job the predicted work of the jobs ahead of
    it on its device, so a short job is not refused for long jobs it would run before.
    Placement is on a device instance: the least-loaded device of the accelerator the
    planner picks. Too much predicted work on a device (`max_backlog_s`) is rejected
    with the reason. A job whose planning raises becomes a dead letter; the rest go on."""

    REJECTED = "rejected"
    DEAD = "dead_letters"

    def __init__(self, spec: ServingSpec, clock=time.time):
        self.spec = spec
        self.clock = clock

    def setup(self):
        from scheduler.policy import make_policy

        self.store = ResultStore(self.spec.store_path)
        self.policy = make_policy(self.spec.policy)

    def process(self, keyed, window=beam.DoFn.WindowParam):
        _, jobs = keyed
        jobs = sorted(jobs, key=lambda p: (p.arrival_ts, p.source))
        known = self.store.known((p.job.tenant, p.job.job_id) for p in jobs)
        self.scale = latency_scale(self.store) if self.spec.correct_latency else {}
        self.wname = _window_name(window)
        seen: set[tuple[str, str]] = set()
        alone: list[PlannedJob] = []
        for p in jobs:
            j = p.job
            key = (j.tenant, j.job_id)
            if key in known or key in seen:
                self.store.record([(p.source, j.tenant, j.job_id, "duplicate")])
                log.info("duplicate job %s/%s from %s skipped", j.tenant, j.job_id, p.source)
                continue
            seen.add(key)
            out = self._isolated(p, lambda p=p: self._plan_alone(p))
            if isinstance(out, PlannedJob):
                alone.append(out)
            else:
                yield out
        load = {d.id: 0.0 for d in self.spec.devices}
        for order, pj in enumerate(sorted(alone, key=self.policy.serving_key)):
            yield self._isolated(pj, lambda pj=pj, order=order: self._admit(pj, load, order))

    def _isolated(self, p, decide):
        """`decide()` for one job; an exception makes that job a dead letter."""
        try:
            return decide()
        except Exception as exc:  # noqa: BLE001 - one job must never fail the window
            j = p.job
            why = str(exc) if isinstance(exc, SdaasError) else type(exc).__name__
            letter = dead_letter(p.source, f"plan: {why}"[:500], None, j.job_id, j.tenant)
            self.store.put_dead_letters([letter])
            log.info("dead letter %s: %s", p.source, letter["reason"])
            return beam.pvalue.TaggedOutput(self.DEAD, letter)

    def _plan(self, p: ParsedJob | PlannedJob, backlog: dict[str, float]):
        j = p.job
        return self.spec.planner.plan(
            j.style,
            j.latency_slo_s,
            j.min_clip,
            resolution=j.resolution,
            prompt_tokens=prompt_tokens(j.prompt),
            backlog_s=backlog,
            latency_scale=self.scale,
            job_id=j.job_id,
        )

    def _plan_alone(self, p: ParsedJob):
        """The job's plan with only its own waiting time ahead of it: its place in the
        policy's order, or a rejection that no order could avoid."""
        waited = max(0.0, self.clock() - p.arrival_ts)
        plan = self._plan(p, {a: waited for a in self.spec.accelerators})
        if not plan.feasible:
            return self._reject(p, plan, plan.reason)
        return self._planned(p, plan, "")

    def _admit(self, pj: PlannedJob, load: dict[str, float], order: int):
        """Admit in the policy's order: the backlog of each accelerator is that of its
        least-loaded device so far in this window."""
        waited = max(0.0, self.clock() - pj.arrival_ts)
        best = {
            a: min((d.id for d in self.spec.devices if d.name == a), key=load.__getitem__)
            for a in self.spec.accelerators
        }
        plan = self._plan(pj, {a: waited + load[d] for a, d in best.items()})
        if not plan.feasible:
            return self._reject(pj, plan, plan.reason)
        device = best[plan.accelerator]
        if load[device] > self.spec.max_backlog_s:
            reason = (
                f"overloaded: {device} ({plan.accelerator}) already has {load[device]:.1f} s "
                f"of predicted work in this window (bound {self.spec.max_backlog_s:g} s); "
                "resubmit later"
            )
            return self._reject(pj, plan, reason)
        load[device] += plan.predicted_latency_s  # the job's own; the backlog only gated it
        return device, replace(self._planned(pj, plan, device), order=order)

    def _factor(self, plan) -> float:
        return self.scale.get((model_key(plan.model, plan.model_version), plan.accelerator), 1.0)

    def _planned(self, p, plan, device: str) -> PlannedJob:
        j = p.job
        return PlannedJob(
            j,
            p.source,
            p.arrival_ts,
            p.arrival_ts + j.latency_slo_s,
            model_key(plan.model, plan.model_version),
            plan.accelerator,
            plan.steps,
            plan.predicted_latency_s,
            plan.predicted_clip,
            self.wname,
            self._factor(plan),
            device=device,
        )

    def _reject(self, p, plan, reason: str):
        j = p.job
        result = JobResult(
            j.job_id,
            j.tenant,
            "rejected",
            plan.model,
            plan.model_version,
            plan.accelerator,
            plan.steps,
            plan.predicted_latency_s,
            plan.predicted_clip,
            j.latency_slo_s,
            j.min_clip,
            jct_s=self.clock() - p.arrival_ts,
            error=reason,
            policy=self.spec.policy,
            window=self.wname,
            latency_correction=self._factor(plan),
        )
        self.store.put([result], [p.source])
        return beam.pvalue.TaggedOutput(self.REJECTED, result)


def _window_name(window) -> str:
    start = getattr(window, "start", None)
    return "global" if start is None else f"{float(start):.3f}"


# -- the GPU side -------------------------------------------------------------------------

_PROCESS_MODELS: dict[tuple, Any] = {}  # models stay loaded for the life of the process


def quiet_model_libraries() -> None:
    """diffusers and transformers warn with the truncated part of a long prompt: that
    is prompt text in a log. Serving keeps them at error level."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


class ServingModels:
    """Backends loaded on first use and kept: one per (model, device), plus the scorer."""

    def __init__(self, cards: dict[str, ModelCard], clip_path: str | None):
        quiet_model_libraries()
        self.cards = cards
        self.clip_path = clip_path
        self.backends: dict[tuple[str, str], Any] = {}
        self.scorers: dict[str, Any] = {}

    def backend(self, model_key: str, device: str):
        key = (model_key, device)
        if key not in self.backends:
            from models.backend import load_backend

            self.backends[key] = load_backend(self.cards[model_key], device)
            log.info("loaded %s on %s", model_key, device)
        return self.backends[key]

    def preload(self, devices: tuple[Accelerator, ...]) -> None:
        """Every registered model on every serving device, and the scorer: the first
        jobs must not pay model loads (cold starts are for the simulator to study)."""
        for device in dict.fromkeys(d.device for d in devices):
            for key in self.cards:
                self.backend(key, device)
            self.scorer(device)

    def scorer(self, device: str):
        if not self.clip_path:
            return None
        if device not in self.scorers:
            from models.clip_score import ClipScorer

            self.scorers[device] = ClipScorer.from_path(self.clip_path, device)
        return self.scorers[device]


class ServingModelHandler(ModelHandler[PlannedJob, JobResult, ServingModels]):
    """Beam's ModelHandler for serving: `load_model` returns the process's model set
    (loaded once, reused across bundles, windows and micro-batch pipelines);
    `run_inference` runs jobs one at a time, in the order given."""

    def __init__(self, spec: ServingSpec, clock=time.time):
        super().__init__()
        self.spec = spec
        self.clock = clock

    def load_model(self) -> ServingModels:
        self.store = ResultStore(self.spec.store_path)  # where images go, opened once
        key = (tuple(sorted(self.spec.cards)), self.spec.clip_path)
        if key not in _PROCESS_MODELS:
            _PROCESS_MODELS[key] = ServingModels(self.spec.cards, self.spec.clip_path)
        return _PROCESS_MODELS[key]

    def run_inference(
        self, batch: Iterable[PlannedJob], model: ServingModels, inference_args=None
    ) -> Iterable[JobResult]:
        return [self._run(p, model) for p in batch]

    def _run(self, p: PlannedJob, models: ServingModels) -> JobResult:
        from models.backend import GenerationRequest

        j = p.job
        card = self.spec.cards[p.model_key]
        device = self.spec.device(p.device).device
        w, h = j.resolution or card.resolution_pairs[0]
        base = JobResult(
            j.job_id,
            j.tenant,
            "done",
            card.name,
            card.version,
            p.accelerator,
            p.steps,
            p.predicted_s,
            p.predicted_clip,
            j.latency_slo_s,
            j.min_clip,
            policy=self.spec.policy,
            window=p.window,
            latency_correction=p.latency_correction,
            device=p.device,
        )
        start = self.clock()
        try:
            backend = models.backend(p.model_key, device)
            req = GenerationRequest(
                (j.prompt,), (j.seed,), p.steps, w, h, card.guidance_scale, j.style
            )
            res = backend.generate(req)
            end = self.clock()
            path = self.store.image_path(j.tenant, j.job_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            res.images[0].save(path)
            scorer = models.scorer(device)
            clip = scorer.score(res.images, [j.prompt])[0] if scorer else None
        except Exception as exc:  # noqa: BLE001 - a failing model fails its job, not the window
            end = self.clock()
            log.warning("job %s failed on %s: %s", j.job_id, p.model_key, type(exc).__name__)
            return replace(
                base,
                status="failed",
                queued_s=start - p.arrival_ts,
                run_s=end - start,
                jct_s=end - p.arrival_ts,
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
            )
        jct = end - p.arrival_ts
        return replace(
            base,
            queued_s=start - p.arrival_ts,
            run_s=end - start,
            jct_s=jct,
            clip_score=clip,
            latency_slo_met=jct <= j.latency_slo_s,
            clip_slo_met=clip is not None and clip >= j.min_clip,
            image_uri=path.as_uri(),
        )


class RunOnAccelerator(beam.DoFn):
    """One device's jobs of one window, in the order they were admitted (the policy's
    order, in which their waits were charged), one at a time. Each result is stored the
    moment it exists, so it is published without waiting for the rest of the window."""

    def __init__(self, spec: ServingSpec, clock=time.time):
        self.spec = spec
        self.handler = ServingModelHandler(spec, clock)

    def setup(self):
        self.models = self.handler.load_model()
        self.store = ResultStore(self.spec.store_path)

    def process(self, keyed):
        _, jobs = keyed
        ordered = sorted(jobs, key=lambda p: (p.order, p.source))
        for i, p in enumerate(ordered):
            (result,) = self.handler.run_inference([p], self.models)
            result = replace(result, run_order=i)
            self.store.put([result], [p.source])
            yield result


class ServeJobs(beam.PTransform):
    """RawRecords in; a dict of PCollections out: `results` (done, failed and rejected)
    and `dead_letters`. Event time: the server-side arrival (see `arrival_time`)."""

    def __init__(self, spec: ServingSpec, clock=time.time):
        super().__init__()
        self.spec = spec
        self.clock = clock

    def expand(self, records):
        parsed = records | "Parse" >> beam.ParDo(ParseJobs(self.spec, self.clock)).with_outputs(
            ParseJobs.DEAD, main="jobs"
        )
        planned = (
            parsed.jobs
            | "Window" >> beam.WindowInto(FixedWindows(self.spec.window_s))
            | "OneKeyPerWindow" >> beam.Map(lambda p: ("window", p))
            | "GatherWindow" >> beam.GroupByKey()
            | "Plan"
            >> beam.ParDo(PlanWindow(self.spec, self.clock)).with_outputs(
                PlanWindow.REJECTED, PlanWindow.DEAD, main="planned"
            )
        )
        done = (
            planned.planned
            | "ByAccelerator" >> beam.GroupByKey()
            | "Run" >> beam.ParDo(RunOnAccelerator(self.spec, self.clock))
        )
        results = (done, planned[PlanWindow.REJECTED]) | "Results" >> beam.Flatten()
        dead = (parsed[ParseJobs.DEAD], planned[PlanWindow.DEAD]) | "Dead" >> beam.Flatten()
        return {"results": results, "dead_letters": dead}
