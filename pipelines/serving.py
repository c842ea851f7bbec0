"""The serving pipeline: one composite Beam transform from jobs-topic records to results.

    records ─► ParseJobs ─┬─► dead letters (reason; stored, then published)
                          └─► jobs ─► window ─► ServeWindow: dedupe by (tenant, job_id),
                              the planner's option per accelerator, then the scheduling
                              core (`scheduler/live.py`, the simulator's loop and policies:
                              admit/reject, place on a device, order, drop) running each
                              job through diffusers (a ModelHandler) when it starts
                              ─► results (stored as each job finishes or is refused)

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
import numpy as np
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.transforms.window import FixedWindows, GlobalWindows, TimestampedValue

from adapters.kafka_io import RawRecord
from adapters.result_store import ResultStore
from models.accelerators import Accelerator
from models.card import ModelCard
from predictor.latency_correction import Corrections, Observation, factor_at
from predictor.planner import Planner
from scheduler.cluster import Cluster
from scheduler.live import LIVE_CONFIG, LiveEngine, live_catalog
from scheduler.options import ClassOptions
from scheduler.policy import make_policy
from scheduler.simulator import DROPPED
from scheduler.workload import SloClass, Workload
from sdaas.errors import SdaasError
from sdaas.job_request import JobRefused, JobRequest, parse_job
from sdaas.privacy import prompt_tokens
from sdaas.records import Job, JobResult, model_key

log = logging.getLogger(__name__)
DEAD = "dead_letters"  # the tagged output of refused records, from parsing and planning
PROBES = 2  # runs that prove a (model, accelerator) profile before jobs are decided on it
PROBE_PROMPT = "a calibration probe"  # the system's own prompt, never a tenant's
STALE_PROFILES = beam.metrics.Metrics.gauge("sdaas_serving", "stale_latency_profiles")
_STALE_SAID: set = set()  # stale keys already logged by this process
_PROBE_FAILED: set = set()  # (model, accelerator) whose probe raised: not retried here


@dataclass(frozen=True)
class ServingSpec:
    """Everything the transform needs; picklable (the planner holds only its curves)."""

    planner: Planner
    cards: dict[str, ModelCard]  # model_key -> card
    devices: tuple[Accelerator, ...]  # device instances; identical ones share a profile name
    store_path: str
    clip_path: str | None = None
    policy: str = "slack-sjf"  # the serving default: ours
    window_s: float = 2.0
    max_backlog_s: float = 30.0  # admission, every policy: most queued predicted s per device
    source_topic: str = "sdaas.jobs"
    correct_latency: bool = True  # probe unproven profiles, scale by observed run time

    @property
    def accelerators(self) -> list[str]:
        """The profile names of the devices (each once): what the planner costs."""
        return list(dict.fromkeys(d.name for d in self.devices))

    def device(self, instance: str) -> Accelerator:
        return next(d for d in self.devices if d.id == instance)


def observed_corrections_in(store: ResultStore, predictor_version: str) -> Corrections:
    """The latency corrections the runs stored in `store` give for that predictor."""
    return Corrections.from_observations(store.observations(predictor_version))


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


def emit_dead_letter(store: ResultStore, letter: dict):
    """Store a dead letter (and its ledger row), log it, and tag it for the output."""
    store.put_dead_letters([letter])
    log.info("dead letter %s: %s", letter["source"], letter["reason"])
    return beam.pvalue.TaggedOutput(DEAD, letter)


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
            yield TimestampedValue(Job(job, source, arrival), window_ts)
            return
        yield emit_dead_letter(self.store, letter)


class ServeWindow(beam.DoFn):
    """One window's jobs through the scheduling core: skip (tenant, job_id)s already
    answered; give each job the planner's option per accelerator (each job is its own
    SLO class); then the policy admits or rejects, places on a device instance, orders,
    drops, in `scheduler/live.LiveEngine`, the simulator's own loop, which runs each job
    on its device when the policy starts it. Each result is stored the moment it exists.
    A job whose planning raises becomes a dead letter; the rest go on."""

    def __init__(self, spec: ServingSpec, clock=time.time):
        self.spec = spec
        self.clock = clock
        self.handler = ServingModelHandler(spec, clock)

    def setup(self):
        self.store = ResultStore(self.spec.store_path)
        self.models = self.handler.load_model()
        self.kinds = self.spec.accelerators
        # instances in the engine's order: kind by kind, devices in spec order
        self.instances = [d for k in self.kinds for d in self.spec.devices if d.name == k]
        self.cluster = Cluster(
            tuple((k, sum(d.name == k for d in self.spec.devices)) for k in self.kinds)
        )
        options = self.spec.planner.options
        self.model_keys = [model_key(o.name, o.version) for o in options]
        runs_on = {
            (m, k)
            for m, o in enumerate(options)
            for k, a in enumerate(self.kinds)
            if a in o.accelerators
        }
        steps = max(o.steps_max for o in options)
        self.runs_on = sorted(runs_on)
        self.catalog = live_catalog(self.model_keys, self.kinds, runs_on, steps)
        self.config = replace(LIVE_CONFIG, max_backlog_s=self.spec.max_backlog_s)
        if self.spec.correct_latency:
            self._probe_unproven()

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
                log.info(
                    "probed %s on %s: %s",
                    key,
                    kind,
                    ", ".join(f"{o.observed_s:.3f} s (predicted {o.predicted_s:.3f} s)"
                              for o in observed),
                )  # fmt: skip

    def _probe(self, key: str, kind: str, steps: tuple[int, ...]) -> list[Observation]:
        from models.backend import GenerationRequest

        card = self.spec.cards[key]
        device = next(d.device for d in self.instances if d.name == kind)
        backend = self.models.backend(key, device)
        w, h = card.resolution_pairs[0]

        def run(n: int) -> float:
            req = GenerationRequest((PROBE_PROMPT,), (0,), n, w, h, card.guidance_scale,
                                    card.styles[0])  # fmt: skip
            start = self.clock()
            backend.generate(req)
            return self.clock() - start

        run(steps[0])  # untimed: the first call after a load pays allocation and warm-up
        planner = self.spec.planner
        return [
            Observation((key, kind, 1), planner.predicted_s(key, kind, n, (w, h)), run(n), n)
            for n in steps
        ]

    def _observed(self) -> Corrections:
        return observed_corrections_in(self.store, self.spec.planner.predictor_version)

    def _corrections(self) -> Corrections:
        """The latency corrections for this window; stale profiles are said once each."""
        if not self.spec.correct_latency:
            return Corrections({})
        corr = self._observed()
        stale = corr.stale()
        for key, c in stale.items():
            if key not in _STALE_SAID:
                _STALE_SAID.add(key)
                log.warning(
                    "stale latency profile: %s on %s (batch %d) %s; re-measure it with "
                    "`sdaas profile --stale`",
                    *key,
                    c.describe(),
                )
        STALE_PROFILES.set(len(stale))
        return corr

    def process(self, keyed, window=beam.DoFn.WindowParam):
        _, jobs = keyed
        jobs = sorted(jobs, key=lambda p: (p.arrival_ts, p.source))
        known = self.store.known((p.request.tenant, p.request.job_id) for p in jobs)
        scale = self._corrections().scale(batch_size=1)  # serving runs batch size 1
        seen: set[tuple[str, str]] = set()
        fresh: list[tuple[Job, list]] = []
        for p in jobs:
            j = p.request
            key = (j.tenant, j.job_id)
            if key in known or key in seen:
                self.store.record([(p.source, j.tenant, j.job_id, "duplicate")])
                log.info("duplicate job %s/%s from %s skipped", j.tenant, j.job_id, p.source)
                continue
            seen.add(key)
            try:
                fresh.append((p, self._options(p, scale)))
            except Exception as exc:  # noqa: BLE001 - one job must never fail the window
                yield self._dead(p, exc)
        if fresh:
            yield from self._schedule_isolated(fresh, scale, _window_name(window))

    def _schedule_isolated(self, fresh, scale, wname: str):
        """A fault in the scheduler itself must not fail the window either: the jobs it
        had not answered yet fail, with the reason, and the window is committed."""
        answered: set[int] = set()
        try:
            for j, result in self._schedule(fresh, scale, wname):
                answered.add(j)
                yield result
        except Exception as exc:  # noqa: BLE001 - a scheduler bug fails jobs, not serving
            log.exception("scheduler error in window %s", wname)
            for j, (p, _) in enumerate(fresh):
                if j not in answered and not self.store.known(
                    [(p.request.tenant, p.request.job_id)]
                ):
                    why = f"internal: scheduler error ({type(exc).__name__})"
                    result = replace(p, window=wname).result("failed", self.spec.policy, error=why)
                    self.store.put([result], [p.source])
                    yield result

    def _options(self, p: Job, scale) -> list:
        """Per accelerator kind: (model index, steps, predicted s, predicted CLIP) or None."""
        j = p.request
        per = self.spec.planner.per_accelerator(
            j.style,
            j.min_clip,
            resolution=j.resolution,
            prompt_tokens=prompt_tokens(j.prompt),
            latency_scale=scale,
        )
        out = []
        for a in self.kinds:
            if a in per:
                o, steps, pred, clip = per[a]
                out.append((self.model_keys.index(model_key(o.name, o.version)), steps, pred, clip))
            else:
                out.append(None)  # no model on this kind reaches the job's min CLIP
        return out

    def _dead(self, p: Job, exc: Exception):
        j = p.request
        why = str(exc) if isinstance(exc, SdaasError) else type(exc).__name__
        letter = dead_letter(p.source, f"plan: {why}"[:500], None, j.job_id, j.tenant)
        return emit_dead_letter(self.store, letter)

    def _schedule(self, fresh, scale, wname: str):
        t0 = self.clock()
        arrivals = [max(p.arrival_ts, t0) for p, _ in fresh]  # the core sees them now
        room = 1.0 - self.spec.planner.headroom  # plan against SLO x (1 - headroom)
        classes = tuple(
            SloClass(
                p.request.style,
                p.arrival_ts + p.request.latency_slo_s * room - a,
                p.request.min_clip,
            )
            for (p, _), a in zip(fresh, arrivals, strict=True)
        )  # each job its own class: the budget left of its SLO when the core sees it
        n = len(fresh)
        w = Workload("serving", np.asarray(arrivals), np.arange(n), classes, np.ones(n),
                     np.zeros(n))  # fmt: skip
        planned = [[o[:3] if o else None for o in opts] for _, opts in fresh]
        done: dict[int, JobResult] = {}
        runs = dict.fromkeys(range(len(self.instances)), 0)

        def run_job(j: int, i: int, _start: float) -> float:
            p, opts = fresh[j]
            pj = self._planned(engine, j, p, opts, scale, wname, self.instances[i].id)
            (result,) = self.handler.run_inference([pj], self.models)
            result = replace(result, run_order=runs[i])
            runs[i] += 1
            self.store.put([result], [p.source])
            if result.status == "done":
                base = pj.predicted_s / (pj.latency_correction or 1.0)
                key = (pj.model_key, pj.accelerator, 1)
                version = self.spec.planner.predictor_version
                obs = Observation(key, base, result.run_s, pj.steps)
                self.store.observe([obs], "job", version)
            done[j] = result
            return result.run_s

        policy = make_policy(self.spec.policy)
        engine = LiveEngine(self.catalog, self.cluster, policy, run_job, self.config)
        engine.run(w, ClassOptions(planned, planned))
        overloaded = set(engine.overloaded)
        for j, (p, opts) in enumerate(fresh):
            if j in done:
                yield j, done[j]
                continue
            result = self._refused(engine, j, p, opts, j in overloaded, scale, wname)
            self.store.put([result], [p.source])
            yield j, result

    def _refused(self, engine, j, p: Job, opts, overloaded, scale, wname) -> JobResult:
        """A job the policy rejected at admission or dropped at dispatch, with why."""
        job, k = p.request, engine.kind[j]
        pol = self.spec.policy
        if all(o is None for o in opts):
            why = self._plan_reason(job, scale)
        elif overloaded:
            why = (
                f"overloaded: {self.kinds[k]} already has more predicted work queued per "
                f"device than allowed (bound {self.spec.max_backlog_s:g} s); resubmit later"
            )
        elif engine.status[j] == DROPPED:
            why = (
                f"dropped by {pol} after {engine.finish[j] - p.arrival_ts:.2f} s in the queue: "
                f"with {engine.pred[j]:.2f} s to run it could no longer meet its "
                f"{job.latency_slo_s:g} s SLO"
            )
        else:
            fastest = min(o[2] for o in opts if o)
            queued = engine.arrival[j] - p.arrival_ts
            room = self.spec.planner.headroom
            why = (
                f"rejected by {pol} at admission: queued {queued:.2f} s, "
                f"{engine.latency_slo_s[j]:.2f} s of its {job.latency_slo_s:g} s SLO left"
                f"{f' with {room:.0%} headroom' if room else ''}; the fastest option needs "
                f"{fastest:.2f} s to run, before any queue"
            )
        planned = self._planned(engine, j, p, opts, scale, wname)
        return planned.result("rejected", pol, jct_s=self.clock() - p.arrival_ts, error=why)

    def _planned(self, engine, j: int, p: Job, opts, scale, wname: str, device="") -> Job:
        """The job record with what the core decided for it: model, kind, steps and
        predictions (none where the policy never placed it)."""
        k = engine.kind[j]
        if k < 0:
            return replace(p, window=wname)
        key, kind = self.model_keys[engine.model[j]], self.kinds[k]
        return replace(
            p,
            model_key=key,
            accelerator=kind,
            device=device,
            steps=engine.steps[j],
            predicted_s=engine.pred[j],
            predicted_clip=opts[k][3] if opts[k] else 0.0,
            latency_correction=factor_at(scale.get((key, kind)), engine.steps[j]),
            window=wname,
        )

    def _plan_reason(self, job: JobRequest, scale) -> str:
        plan = self.spec.planner.plan(
            job.style,
            job.latency_slo_s,
            job.min_clip,
            resolution=job.resolution,
            prompt_tokens=prompt_tokens(job.prompt),
            latency_scale=scale,
        )
        return plan.reason or "no accelerator can serve it"


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


class ServingModelHandler(ModelHandler[Job, JobResult, ServingModels]):
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
        self, batch: Iterable[Job], model: ServingModels, inference_args=None
    ) -> Iterable[JobResult]:
        return [self._run(p, model) for p in batch]

    def _run(self, p: Job, models: ServingModels) -> JobResult:
        from models.backend import GenerationRequest

        j = p.request
        card = self.spec.cards[p.model_key]
        device = self.spec.device(p.device).device
        w, h = j.resolution or card.resolution_pairs[0]
        base = p.result("done", self.spec.policy)
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


class ServeJobs(beam.PTransform):
    """RawRecords in; a dict of PCollections out: `results` (done, failed and rejected)
    and `dead_letters`. Event time: the server-side arrival (see `arrival_time`)."""

    def __init__(self, spec: ServingSpec, clock=time.time):
        super().__init__()
        self.spec = spec
        self.clock = clock

    def expand(self, records):
        parsed = records | "Parse" >> beam.ParDo(ParseJobs(self.spec, self.clock)).with_outputs(
            DEAD, main="jobs"
        )
        served = (
            parsed.jobs
            | "Window" >> beam.WindowInto(FixedWindows(self.spec.window_s))
            | "OneKeyPerWindow" >> beam.Map(lambda p: ("window", p))
            | "GatherWindow" >> beam.GroupByKey()
            | "Serve"
            >> beam.ParDo(ServeWindow(self.spec, self.clock)).with_outputs(DEAD, main="results")
        )
        late = served[DEAD] | "DeadGlobal" >> beam.WindowInto(GlobalWindows())
        dead = (parsed[DEAD], late) | "Dead" >> beam.Flatten()
        return {"results": served.results, "dead_letters": dead}
