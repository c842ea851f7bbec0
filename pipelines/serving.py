"""The serving pipeline: one composite Beam transform from jobs-topic records to results.

    records ─► ParseJobs ─┬─► dead letters (reason; stored, then published)
                          └─► jobs ─► window ─► ServeWindow: dedupe by (tenant, job_id),
                              the planner's option per accelerator, then hand them to
                              the serving runtime it is handed (`engine/runtime.py`):
                              the scheduling core (`scheduler/live.py`, the simulator's
                              loop and policies: admit/reject, place on a device, order,
                              batch, preempt, drop) and a device engine per device
                              instance running diffusers a denoising step at a time
                              ─► results (stored as each job finishes or is refused)

The same transform runs in a streaming pipeline (Flink / Dataflow with ReadFromKafka or
Pub/Sub; tested here with TestStream) and, as the local default, once per micro-batch on
FnApiRunner (`pipelines/serving_driver.py`). There `await_results` is off: a window's
jobs are handed over and the next window is read while they run (no window barrier);
the driver commits offsets as outcomes arrive. With it on (the default), the window's
results are also the transform's output. Side effects go to the result store, keyed by
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
import threading
import time
from dataclasses import replace

import apache_beam as beam
from apache_beam.transforms.window import FixedWindows, GlobalWindows, TimestampedValue
from apache_beam.utils import shared

from adapters.kafka_io import RawRecord
from adapters.result_store import ResultStore
from engine.calibrator import observed_corrections_in
from engine.runtime import ServingRuntime
from engine.spec import ServingSpec
from pipelines.serving_events import outcome_event
from predictor.latency_correction import Corrections
from scheduler.options import Option
from sdaas.errors import NotFoundError, SdaasError
from sdaas.job_request import JobRefused, parse_job
from sdaas.privacy import prompt_tokens
from sdaas.records import Job, model_key

log = logging.getLogger(__name__)
DEAD = "dead_letters"  # the tagged output of refused records, from parsing and planning
STALE_PROFILES = beam.metrics.Metrics.gauge("sdaas_serving", "stale_latency_profiles")
_STALE_SAID: set = set()  # stale keys already logged by this process


class _Slot:
    """What Beam's `Shared` keeps per process: the runtime and how many hold it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.runtime: ServingRuntime | None = None
        self.users = 0


class SharedRuntime:
    """How the serving transform gets its runtime: Beam's `Shared`, as RunInference
    shares its model: one runtime per process, made by the first that acquires it and
    closed (drained first) when the last one releases it. The local driver acquires it
    first and releases it last, so its windows share one; a pipeline run on its own
    (a streaming runner's worker) makes its own. Picklable: a worker gets a copy."""

    def __init__(self, spec: ServingSpec, clock=time.time):
        self.spec, self.clock = spec, clock
        self._shared = shared.Shared()
        self._slot: _Slot | None = None  # held while acquired (Shared keeps weak refs)

    def acquire(self) -> ServingRuntime:
        slot = self._slot = self._shared.acquire(_Slot)
        with slot.lock:
            if slot.runtime is None:
                slot.runtime = ServingRuntime(self.spec, self.clock)
            slot.users += 1
            return slot.runtime

    def release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is None:
            return
        with slot.lock:
            slot.users -= 1
            if slot.users > 0 or slot.runtime is None:
                return
            runtime, slot.runtime = slot.runtime, None
        runtime.drain(timeout=600)
        runtime.close()

    def __getstate__(self):
        return {"spec": self.spec, "clock": self.clock, "_shared": self._shared, "_slot": None}


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
            # the client's clock is checked against the arrival, the record's timestamp
            # where it is one (a record without: -0.001 here) and never after receipt
            job = parse_job(
                r.value, self.spec.planner.styles, resolutions=self.resolutions,
                broker_ts=arrival,
            )  # fmt: skip
        except JobRefused as exc:
            letter = dead_letter(source, exc.reason, r, exc.job_id, exc.tenant)
        except Exception as exc:  # noqa: BLE001 - one record must never fail the window
            letter = dead_letter(source, f"message: unreadable ({type(exc).__name__})", r)
        else:
            yield TimestampedValue(Job(job, source, arrival), window_ts)
            return
        yield emit_dead_letter(self.store, letter)


class ServeWindow(beam.DoFn):
    """One window's jobs into the serving runtime: skip (tenant, job_id)s already
    answered or in flight; give each job the planner's option per accelerator (each job
    is its own SLO class), with the latency corrections observed so far; hand them to
    the scheduling core, which admits or rejects, places, orders, batches and drops, as
    in the simulator. A job whose planning raises becomes a dead letter; the rest go on."""

    def __init__(self, spec: ServingSpec, runtime: SharedRuntime):
        self.spec = spec
        self.handle = runtime

    def setup(self):
        self.store = ResultStore(self.spec.store_path)
        self.runtime = self.handle.acquire()
        self.kinds = self.spec.accelerators
        self.model_keys = self.runtime.model_keys

    def teardown(self):
        if getattr(self, "runtime", None) is not None:
            self.runtime = None
            self.handle.release()

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
        keys = [(p.request.tenant, p.request.job_id) for p in jobs]
        in_flight = self.runtime.in_flight(keys)
        known = self.store.known(keys) | in_flight
        running = self.runtime.pending_sources() if in_flight else set()
        scale = self._corrections().scale(batch_size=1)  # corrections of batch-1 runs
        seen: set[tuple[str, str]] = set()
        fresh: list[tuple[Job, list]] = []
        for p in jobs:
            j = p.request
            key = (j.tenant, j.job_id)
            if p.source in running:  # its own record read again (a reader rebuilt from
                # the committed offsets): no row of its own, so its offset waits for the
                # job's outcome; a "duplicate" row would let it commit before the result
                log.info("job %s/%s read again from %s while it runs", *key, p.source)
                continue
            if key in known or key in seen:
                self.store.record([(p.source, j.tenant, j.job_id, "duplicate")])
                log.info("duplicate job %s/%s from %s skipped", j.tenant, j.job_id, p.source)
                self._say_outcome_again(key)
                continue
            seen.add(key)
            if self.runtime.cancel_early.pop(key, None) is not None:  # cancelled unread
                why = "cancelled at the tenant's request before it was scheduled"
                self.store.put([replace(p, window=_window_name(window)).result(
                    "cancelled", self.spec.policy, error=why)], [p.source])  # fmt: skip
                continue
            try:
                fresh.append((p, self._options(p, scale)))
            except Exception as exc:  # noqa: BLE001 - one job must never fail the window
                yield self._dead(p, exc)
        if fresh:
            yield from self._hand_over(fresh, scale, _window_name(window))

    def _say_outcome_again(self, key: tuple[str, str]) -> None:
        """A resubmitted job that already has a result: its outcome event again, so a
        front door that accepted it (and waits for an outcome) gets one."""
        if self.runtime.events is None:
            return
        try:
            e = outcome_event(self.store.get(*key))
            self.runtime.events(e.pop("tenant"), e.pop("job_id"), e.pop("event"), **e)
        except NotFoundError:  # in flight: its outcome comes when it ends
            pass
        except Exception:  # noqa: BLE001 - best effort, like all progress
            log.exception("the outcome of a duplicate job was not sent again")

    def _hand_over(self, fresh, scale, wname: str):
        """A fault in the scheduler itself must not fail the window either: the jobs it
        had not answered fail, with the reason, and the window is committed."""
        try:
            indices = self.runtime.submit(fresh, scale, wname)
        except Exception as exc:  # noqa: BLE001 - a scheduler bug fails jobs, not serving
            log.exception("scheduler error in window %s", wname)
            for p, _ in fresh:
                if not self.store.known([(p.request.tenant, p.request.job_id)]):
                    why = f"internal: scheduler error ({type(exc).__name__})"
                    result = replace(p, window=wname).result("failed", self.spec.policy, error=why)
                    self.store.put([result], [p.source])
                    yield result
            return
        if self.spec.await_results:
            self.runtime.wait(indices)
        for p, _ in fresh:  # without await_results, only those answered already
            try:
                yield self.store.get(p.request.tenant, p.request.job_id)
            except NotFoundError:
                continue

    def _options(self, p: Job, scale) -> list[Option | None]:
        """Per accelerator kind: the planner's option there, or None."""
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
                out.append(Option(self.model_keys.index(model_key(o.name, o.version)), steps,
                                  pred, clip))  # fmt: skip
            else:
                out.append(None)  # no model on this kind reaches the job's min CLIP
        return out

    def _dead(self, p: Job, exc: Exception):
        j = p.request
        why = str(exc) if isinstance(exc, SdaasError) else type(exc).__name__
        letter = dead_letter(p.source, f"plan: {why}"[:500], None, j.job_id, j.tenant)
        return emit_dead_letter(self.store, letter)


def _window_name(window) -> str:
    start = getattr(window, "start", None)
    return "global" if start is None else f"{float(start):.3f}"


class ServeJobs(beam.PTransform):
    """RawRecords in; a dict of PCollections out: `results` (done, failed and rejected)
    and `dead_letters`. Event time: the server-side arrival (see `arrival_time`).
    `runtime`: the runtime to hand jobs to (default: one made for this transform)."""

    def __init__(self, spec: ServingSpec, clock=time.time, runtime: SharedRuntime | None = None):
        super().__init__()
        self.spec = spec
        self.clock = clock
        self.runtime = runtime or SharedRuntime(spec, clock)

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
            >> beam.ParDo(ServeWindow(self.spec, self.runtime)).with_outputs(DEAD, main="results")
        )
        late = served[DEAD] | "DeadGlobal" >> beam.WindowInto(GlobalWindows())
        dead = (parsed[DEAD], late) | "Dead" >> beam.Flatten()
        return {"results": served.results, "dead_letters": dead}
