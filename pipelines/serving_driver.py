"""The local serving loop: micro-batches of the jobs topic through the serving transform.

Why micro-batches: the Python DirectRunner does not stream from a custom unbounded
source, and Beam's ReadFromKafka needs a Java expansion service that cannot be
downloaded here. So each window: read the records that arrive within `window_s`, run
`ServeJobs` over them as a bounded pipeline on FnApiRunner (in this process, so loaded
models stay loaded), check that every record is accounted for in the ledger, publish
what the store holds unpublished, and only then commit the offsets. A crash anywhere
before the commit replays the window; job_id-keyed writes make the replay harmless.

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines import kafka_io
from pipelines.kafka_io import JobsReader, RawRecord, Topics
from pipelines.result_store import ResultStore
from pipelines.serving import ServeJobs, ServingModelHandler, ServingSpec, source_of
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
    wall_s: float
    run_s: float  # model time of the jobs that ran

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

    def __init__(self, store: ResultStore, bootstrap: str, topics: Topics):
        self.store, self.bootstrap, self.topics = store, bootstrap, topics
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
            left = self.producer.flush(30)
            if left:
                raise SdaasError(f"{left} messages not delivered to {self.bootstrap}")
            self.store.mark_published([r.job_id for r in results], [d["source"] for d in letters])
            return len(results) + len(letters)

    def start(self, every_s: float = 0.2) -> None:
        def loop():
            while not self._stop.wait(every_s):
                try:
                    self.flush()
                except Exception:  # noqa: BLE001 - retried next tick and by the final flush
                    log.exception("publishing failed; will retry")

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="sdaas-publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.flush()


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

    def __post_init__(self):
        # records are named by the topic this driver reads, whatever the spec said
        self.spec = replace(self.spec, source_topic=self.topics.jobs)
        kafka_io.ensure_topics(self.bootstrap, [self.topics.jobs, self.topics.dead_letters])
        self.store = ResultStore(Path(self.spec.store_path))
        self.reader = JobsReader(self.bootstrap, self.topics.jobs)
        self.publisher = Publisher(self.store, self.bootstrap, self.topics)
        self.publisher.flush()  # what a crashed run stored but never published
        ServingModelHandler(self.spec).load_model().preload(self.spec.devices)

    def install_signal_handlers(self) -> None:
        """SIGINT / SIGTERM: finish the window in flight, commit, then stop."""

        def handler(signum, _frame):
            if self.stopping:
                raise KeyboardInterrupt
            self.stopping = True
            self.progress(
                f"{signal.Signals(signum).name}: finishing the current window, then stopping"
            )

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def run(
        self, *, max_windows: int | None = None, idle_exit_s: float | None = None
    ) -> list[WindowReport]:
        idle_since = time.monotonic()
        while not self.stopping and (max_windows is None or len(self.reports) < max_windows):
            records = self.reader.read(self.spec.window_s, self.max_records, self.idle_s)
            if not records:
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    break
                continue
            report = self.run_window(records)
            self.progress(report.line())
            idle_since = time.monotonic()
        return self.reports

    def run_window(self, records: list[RawRecord]) -> WindowReport:
        t0 = time.perf_counter()
        self.publisher.start()
        try:
            options = PipelineOptions(["--runner=FnApiRunner"])
            with beam.Pipeline(runner=FnApiRunner(), options=options) as p:
                _ = p | "Records" >> beam.Create(records, reshuffle=False) | ServeJobs(self.spec)
        finally:
            self.publisher.stop()
        sources = [source_of(self.topics.jobs, r) for r in records]
        outcomes = self.store.outcomes(sources)
        missing = [s for s in sources if s not in outcomes]
        if missing:
            raise CountsMismatch(
                f"{len(missing)} of {len(records)} records have no outcome (first: "
                f"{missing[0]}); offsets not committed, the window will be replayed"
            )
        self.reader.commit(records)
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
            sum(r.run_s for r in results if r.status != "rejected"),
        )
        self.reports.append(report)
        return report

    def close(self) -> None:
        self.reader.close()
