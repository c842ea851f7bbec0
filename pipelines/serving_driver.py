"""The local serving loop: micro-batches of the jobs topic through the serving transform.

Why micro-batches: the Python DirectRunner does not stream from a custom unbounded
source, and Beam's ReadFromKafka needs a Java expansion service that cannot be
downloaded here. So each window: read the records that arrive within `window_s`, run
`ServeJobs` over them as a bounded pipeline on FnApiRunner (in this process, so the
serving runtime, its loaded models and its device engines stay up across windows).
That pipeline only parses, plans and hands the jobs over; it does not wait for them
(no window barrier): the next window is read while they run, and its jobs join the
queues and batches already running. A window's offsets are committed once every one of
its records has an outcome in the ledger (result, dead letter or duplicate), windows in
order; a record with neither an outcome nor a job in flight stops the commit
(`CountsMismatch`). A crash anywhere before the commit replays the window; job_id-keyed
writes make the replay harmless. A publisher thread sends stored results as they land.

At-least-once from Kafka, exactly-once results in effect: a job with a stored result
is never run again (`duplicate` in the ledger). The results topics are at-least-once
(a crash between publish and mark-published republishes); readers dedupe by job_id.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from adapters import kafka_io
from adapters.kafka_broker import reachable
from adapters.kafka_io import JobsReader, RawRecord, Topics
from adapters.result_store import ResultStore, StoreError
from engine.spec import ServingSpec
from pipelines.serving import ServeJobs, SharedRuntime, source_of
from pipelines.serving_events import (
    CancelListener,
    EventPublisher,
    Heartbeat,
    dead_letter_event,
    outcome_event,
)
from sdaas.errors import SdaasError

log = logging.getLogger(__name__)


class CountsMismatch(SdaasError):
    """Some input record has no outcome: the window is not committed."""


@dataclass
class WindowReport:
    index: int
    records: int
    outcomes: dict[str, int]
    statuses: dict[str, int]
    wall_s: float  # from reading the window to its last outcome
    run_s: float  # model time of the jobs that ran (batched jobs share theirs)

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.run_s

    def line(self) -> str:
        st = ", ".join(f"{v} {k}" for k, v in sorted(self.statuses.items()))
        dl = self.outcomes.get("dead_letter", 0)
        dup = self.outcomes.get("duplicate", 0)
        return (
            f"window {self.index}: {self.records} in -> {st or 'no results'}"
            f"{f', {dl} dead letters' if dl else ''}{f', {dup} duplicates' if dup else ''}"
            f" ({self.wall_s:.2f} s, model {self.run_s:.2f} s)"
        )


class Publisher:
    """Publishes stored-but-unpublished results (to the tenant's topic) and dead letters,
    then marks them published. Runs in a thread during a window, so a rejection or a
    finished job reaches its tenant without waiting for the rest of the window."""

    flush_timeout_s = 5.0

    def __init__(self, store: ResultStore, bootstrap: str, topics: Topics, faults=None):
        self.store, self.bootstrap, self.topics = store, bootstrap, topics
        self.faults = faults  # sdaas.health.Faults: a store that fails is fatal
        self.producer = kafka_io.producer(bootstrap)
        self.tenant_topics: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def flush(self) -> int:
        with self._lock:
            results, letters = self.store.unpublished()
            if not results and not letters:
                return 0
            new = {self.topics.results(r.tenant) for r in results} - self.tenant_topics
            if new:
                kafka_io.ensure_topics(self.bootstrap, sorted(new))
                self.tenant_topics |= new
            for r in results:
                self.producer.produce(
                    self.topics.results(r.tenant), key=r.job_id, value=json.dumps(asdict(r))
                )
            for d in letters:
                self.producer.produce(
                    self.topics.dead_letters, key=d["source"], value=json.dumps(d)
                )
            # the API's feed: each outcome once it is durable (pipelines/serving_events.py)
            events = [outcome_event(r) for r in results]
            events += [e for d in letters if (e := dead_letter_event(d)) is not None]
            for e in events:
                key = f"{e['tenant']}/{e['job_id']}"
                self.producer.produce(self.topics.events, key=key, value=json.dumps(e))
            left = self.producer.flush(self.flush_timeout_s)
            if left:
                raise SdaasError(f"{left} messages not delivered to {self.bootstrap}")
            self.store.mark_published(
                [(r.tenant, r.job_id) for r in results], [d["source"] for d in letters]
            )
            return len(results) + len(letters)

    def start(self, every_s: float = 0.2) -> None:
        def loop():
            while not self._stop.wait(every_s):
                try:
                    self.flush()
                except StoreError as exc:  # not retried: serving stops taking work
                    _store_failed(self.faults, exc)
                    return
                except Exception:  # noqa: BLE001 - retried next tick and by the final flush
                    log.exception("publishing failed; will retry")

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="sdaas-publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and publish what is left; if the broker is unreachable the
        results stay stored and unpublished, and go out once it is back."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        try:
            self.flush()
        except StoreError as exc:
            _store_failed(self.faults, exc)
        except Exception as exc:  # noqa: BLE001 - stored results are never lost
            log.warning("publishing deferred (%s): results stay stored until Kafka is back", exc)


def _store_failed(faults, exc: StoreError) -> None:
    """A store gone or unwritable is fatal: reported once (sdaas.health.Faults logs it)."""
    if faults is None:
        log.error("%s", exc)
    else:
        faults.report("result-store", str(exc), fatal=True)


def _close_quietly(reader: JobsReader) -> None:
    try:
        reader.close()
    except Exception:  # noqa: BLE001 - the old client's broker is gone
        pass


@dataclass
class ServingDriver:
    spec: ServingSpec
    bootstrap: str
    topics: Topics = field(default_factory=Topics)
    max_records: int = 256
    idle_s: float = 0.5
    progress: object = print
    reports: list[WindowReport] = field(default_factory=list)
    stopping: bool = False
    # where the broker is now, asked again while it is lost (the embedded broker's state
    # file: a restarted one may listen on another port); None: only `bootstrap`
    resolve: Callable[[], str | None] | None = None
    allow_new_store: bool = False  # start an empty store although other state exists
    health_every_s: float = 2.0  # how often the broker's port (and the store) is checked
    max_backoff_s: float = 8.0
    # the runtime's faults (sdaas.health.Faults); a fatal one stops this driver taking work
    faults: object = field(default=None, init=False, repr=False)
    halted: str = field(default="", init=False)  # why it stopped on a fatal fault

    def __post_init__(self):
        # records are named by the topic this driver reads, whatever the spec said; its
        # windows hand their jobs over and do not wait for them
        self.spec = replace(self.spec, source_topic=self.topics.jobs, await_results=False)
        # read, not yet committed: (records, when read, the jobs topic's id they came from)
        self.pending: list[tuple[list[RawRecord], float, str | None]] = []
        self.windows_read = 0
        path = Path(self.spec.store_path)
        existed = path.exists()
        kafka_io.ensure_topics(self.bootstrap, self._own_topics)
        self.reader = JobsReader(self.bootstrap, self.topics.jobs)
        self.admin = kafka_io.admin(self.bootstrap)
        self.topic_id = kafka_io.topic_id(self.admin, self.topics.jobs)
        if not existed and not self.allow_new_store:
            self._refuse_vanished_store(path)
        self.store = ResultStore(path, fresh=self.allow_new_store)
        self.publisher = Publisher(self.store, self.bootstrap, self.topics)
        self.publisher.flush()  # what a crashed run stored but never published
        # models loaded, profiles probed, a device engine per device instance started
        self.shared = SharedRuntime(self.spec)
        self.runtime = self.shared.acquire()  # held until `close`: the windows share it
        self.faults = self.publisher.faults = self.runtime.faults
        self._front_door(self.bootstrap)  # progress out, cancel requests in

    @property
    def _own_topics(self) -> list[str]:
        """The topics serving makes where missing (its cancel listener makes the control topic)."""
        return [self.topics.jobs, self.topics.dead_letters, self.topics.events]

    def _refuse_vanished_store(self, path: Path) -> None:
        """No store, but images or committed offsets: it was deleted or moved, and an
        empty one would forget every answered job id (they would run again)."""
        traces = []
        if any(path.parent.glob("*/*.png")):
            traces.append(f"result images under {path.parent}")
        if self.reader.has_committed:
            traces.append(f"committed offsets on {self.topics.jobs}")
        if traces:
            self.reader.close()
            raise StoreError(
                f"the result store {path} is missing, but {' and '.join(traces)} exist: it "
                "was deleted or moved. Restore it, or pass --new-store to start an empty "
                "one (jobs answered before would then run again)"
            )

    # -- the broker going away and coming back -------------------------------------------
    def _broker_lost(self, give_up_s: float | None) -> None:
        """Retry with backoff until the broker (at its old address, or where `resolve`
        says it is now) answers, then reconnect; stopping or `give_up_s` ends the wait."""
        lost = time.monotonic()
        self.progress(
            f"lost the Kafka broker at {self.bootstrap}: retrying with backoff "
            "(jobs wait in Kafka; results are kept and published when it is back)"
        )
        delay = 0.5
        while not self.stopping:
            found = self.resolve() if self.resolve else None
            for b in dict.fromkeys([found, self.bootstrap]):
                if b and reachable(b):
                    try:
                        self._reconnect(b)
                    except Exception as exc:  # noqa: BLE001 - not ready yet: keep trying
                        log.warning("broker at %s answers but is not ready: %s", b, exc)
                        break
                    self.progress(
                        f"Kafka broker at {b} is back after {time.monotonic() - lost:.1f} s; "
                        "resuming"
                    )
                    return
            if give_up_s is not None and time.monotonic() - lost > give_up_s:
                raise SdaasError(
                    f"the Kafka broker at {self.bootstrap} has been unreachable for "
                    f"{time.monotonic() - lost:.0f} s (--idle-exit {give_up_s:g}); stopping. "
                    "Start it again and rerun `sdaas serve`: no job is lost"
                )
            end = time.monotonic() + delay
            while not self.stopping and time.monotonic() < end:
                time.sleep(0.1)
            delay = min(delay * 2, self.max_backoff_s)

    def _topic_recreated(self) -> bool:
        """The broker answers, but the jobs topic is not the one we read: it restarted
        (a memory broker loses its topics) between two health checks, or while a window
        ran. Its committed offsets then mean nothing: read the new topic from the start
        (jobs already answered are skipped by their record identity)."""
        now = kafka_io.topic_id(self.admin, self.topics.jobs) if self.topic_id else None
        return now is not None and now != self.topic_id

    def _reconnect(self, bootstrap: str, *, from_start: bool = False) -> None:
        kafka_io.ensure_topics(bootstrap, self._own_topics)
        admin = kafka_io.admin(bootstrap)
        tid = kafka_io.topic_id(admin, self.topics.jobs)
        from_start = from_start or (tid is not None and tid != self.topic_id)
        reader = JobsReader(bootstrap, self.topics.jobs, from_start=from_start)
        self.admin = admin
        if tid is not None:  # not known this moment: keep the last (a recreated topic is
            self.topic_id = tid  # still told apart at the next health check)
        old, self.reader, self.bootstrap = self.reader, reader, bootstrap
        # closing a consumer whose broker went away can block for its session timeout:
        # never on the serving loop
        threading.Thread(target=_close_quietly, args=(old,), daemon=True).start()
        running = self.publisher._thread is not None and not self.publisher._stop.is_set()
        if running:
            self.publisher.stop()
        self.publisher = Publisher(self.store, bootstrap, self.topics, self.faults)
        self.publisher.flush()
        if running:
            self.publisher.start()
        self._front_door(bootstrap)

    def _front_door(self, bootstrap: str) -> None:
        """Progress events out and cancel requests in, on this broker (again after a
        reconnect: the old clients point at the old address)."""
        old = getattr(self, "cancels", None)
        if getattr(self, "heartbeat", None) is not None:
            self.heartbeat.stop()  # its "stopping" goes to the old broker, if anywhere
        self.events = EventPublisher(bootstrap, self.topics)
        self.runtime.events = self.events.emit
        self.cancels = CancelListener(bootstrap, self.topics, self.runtime.cancel_request)
        self.cancels.start()
        self.heartbeat = Heartbeat(
            self.events.emit,
            self.spec.accelerators,
            faults=self.runtime.faults,
            fleet=self.runtime.fleet,
        ).start()
        if old is not None:
            threading.Thread(target=old.stop, daemon=True).start()

    def install_signal_handlers(self) -> None:
        """SIGINT / SIGTERM / SIGHUP: say so, finish the jobs in flight, commit, then stop
        (a closed terminal's SIGHUP must not kill serving without a line)."""

        def handler(signum, _frame):
            if self.stopping:
                raise KeyboardInterrupt
            self.stopping = True
            self.progress(
                f"{signal.Signals(signum).name}: finishing the jobs in flight, then stopping"
            )

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, handler)

    def run(
        self, *, max_windows: int | None = None, idle_exit_s: float | None = None
    ) -> list[WindowReport]:
        """Serve until stopped, `max_windows` windows were read, or nothing arrived and
        nothing was in flight for `idle_exit_s`; then finish what is in flight. A store
        that vanishes or takes no writes is an outage, not a fresh start: `_halt`."""
        idle_since = checked = time.monotonic()
        self.publisher.start()
        try:
            while not self.stopping and (max_windows is None or self.windows_read < max_windows):
                if self._fatal() is not None:
                    break
                if time.monotonic() - checked > self.health_every_s:
                    checked = time.monotonic()
                    if not reachable(self.bootstrap):
                        self._broker_lost(idle_exit_s)
                        idle_since = checked = time.monotonic()
                        continue
                    try:
                        if self._topic_recreated():
                            self.progress(
                                f"the jobs topic {self.topics.jobs} on {self.bootstrap} is "
                                "new (the broker restarted?): reading it from the start"
                            )
                            self._reconnect(self.bootstrap, from_start=True)
                    except Exception as exc:  # noqa: BLE001 - it went away while we asked
                        log.warning("broker at %s stopped answering: %s", self.bootstrap, exc)
                        self._broker_lost(idle_exit_s)
                        idle_since = checked = time.monotonic()
                        continue
                    if not self._store_ok():  # seen while idle, before a job needs it
                        break
                records = self.reader.read(self.spec.window_s, self.max_records, self.idle_s)
                if records:
                    if not self._store_ok():  # not handed over, not committed: read again
                        break
                    self.hand_over(records)
                    idle_since = time.monotonic()
                if self.commit_ready():
                    idle_since = time.monotonic()
                if self.pending or not self.runtime.idle():
                    idle_since = time.monotonic()
                elif idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    break
            if self._fatal() is None:
                self.finish()
        except StoreError as exc:
            _store_failed(self.faults, exc)
        except Exception:
            if self._store_ok():  # not the store's doing
                raise
        finally:
            self.publisher.stop()
        if (fault := self._fatal()) is not None:
            self._halt(fault)
        return self.reports

    # -- the result store failing ------------------------------------------------------
    def _fatal(self):
        """The fatal fault that stops this driver taking work, if any."""
        return self.faults.fatal if self.faults is not None else None

    def _store_ok(self) -> bool:
        """A real write to the store; one that vanished, was replaced or takes no writes
        is reported, fatal."""
        try:
            self.store.check()
        except StoreError as exc:
            _store_failed(self.faults, exc)
            return False
        return True

    def _halt(self, fault) -> None:
        """Stop on a fatal fault: no window is read or committed from here (what was not
        stored is read again on the next start, nothing is lost); the API hears why;
        raises, so `sdaas serve` exits 1 with the reason. The jobs in flight end in
        `close`, stored if the store takes them, else let go."""
        self.halted = fault.reason
        self.heartbeat.stop(reason=fault.reason)
        if fault.part == "result-store":
            raise StoreError(fault.reason)
        raise SdaasError(f"{fault.part}: {fault.reason}")

    def hand_over(self, records: list[RawRecord]) -> None:
        """Run the serving transform over one window's records: parse, plan, hand the
        jobs to the runtime. Every record must now have an outcome or a job in flight."""
        t0 = time.perf_counter()
        self.windows_read += 1
        options = PipelineOptions(["--runner=FnApiRunner"])
        with beam.Pipeline(runner=FnApiRunner(), options=options) as p:
            records_in = p | "Records" >> beam.Create(records, reshuffle=False)
            _ = records_in | ServeJobs(self.spec, runtime=self.shared)
        sources = [source_of(self.topics.jobs, r) for r in records]
        flying = self.runtime.pending_sources()  # first: a job answered since is stored
        outcomes = self.store.outcomes(sources)
        missing = [s for s in sources if s not in outcomes and s not in flying]
        if missing:
            raise CountsMismatch(
                f"{len(missing)} of {len(records)} records have no outcome (first: "
                f"{missing[0]}); offsets not committed, the window will be replayed"
            )
        self.pending.append((records, t0, self.topic_id))

    def finish(self, timeout_s: float | None = None) -> None:
        """Wait for the jobs in flight, then commit every window that is complete."""
        self.runtime.drain(timeout_s)
        self.commit_ready()

    def commit_ready(self) -> int:
        """Commit, in order, the read windows whose records all have outcomes; a report
        per window. Returns how many were committed."""
        n = 0
        while self.pending and self._fatal() is None:  # after a fatal fault: replayed
            records, t0, topic = self.pending[0]
            sources = [source_of(self.topics.jobs, r) for r in records]
            outcomes = self.store.outcomes(sources)
            if len(outcomes) < len(set(sources)):
                break
            self.pending.pop(0)
            # read from a jobs topic the broker has since lost: its offsets are not this
            # topic's (committing them would skip the new topic's records up to there)
            gone = topic is not None and self.topic_id is not None and topic != self.topic_id
            self._commit(records, sources, outcomes, t0, offsets=not gone)
            n += 1
        return n

    def _commit(self, records, sources, outcomes, t0: float, offsets: bool = True) -> None:
        try:
            if offsets:
                self.reader.commit(records)
            else:
                log.info("a window read from the jobs topic before the broker lost it is "
                         "answered; its offsets are not committed on the new topic")  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the results are stored; a replay is harmless
            log.warning("offsets not committed (%s): the window is read again and skipped", exc)
        counts: dict[str, int] = {}
        for o in outcomes.values():
            counts[o] = counts.get(o, 0) + 1
        results = self.store.results_for_sources(sources)
        statuses: dict[str, int] = {}
        for r in results:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        report = WindowReport(
            len(self.reports) + 1,
            len(records),
            counts,
            statuses,
            time.perf_counter() - t0,
            sum(r.run_s for r in results if r.status in ("done", "failed")),
        )
        self.reports.append(report)
        self.progress(report.line())

    def close(self) -> None:
        if not self.halted:  # halted: its stopping, with the reason, is sent
            self.heartbeat.stop()  # the API withdraws readiness now, not 3 beats later
        self.cancels.stop()
        self.runtime.events = None
        self.events.flush()
        self.shared.release()  # the last holder: it drains and closes the runtime
        self.reader.close()


@contextmanager
def serving_in_background(
    spec: ServingSpec, bootstrap: str, topics: Topics
) -> Iterator[ServingDriver]:
    """A serving loop in a thread for the block (the demo's front door and the API tests
    put the API in front of it); at the end it finishes what is in flight and stops."""
    driver = ServingDriver(spec, bootstrap, topics, progress=lambda *_: None,
                           allow_new_store=True, idle_s=0.1)  # fmt: skip
    thread = threading.Thread(target=driver.run, name="sdaas-serving", daemon=True)
    thread.start()
    try:
        yield driver
    finally:
        driver.stopping = True
        thread.join(timeout=120)
        driver.close()
