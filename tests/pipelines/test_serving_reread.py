"""A record read again while its own job still runs (the reader rebuilt from the committed
offsets after a lost broker): it must not get an outcome row of its own, or the driver
commits its offset before the job has a result, and a kill then loses the job."""

from __future__ import annotations

from types import SimpleNamespace as NS

from adapters.kafka_io import RawRecord, Topics
from adapters.result_store import ResultStore
from pipelines.serving import ServeWindow, source_of
from pipelines.serving_driver import ServingDriver

KEY = ("acme", "job-1")


class RunningJob:
    """The runtime as ServeWindow sees it while job KEY, read from `source`, runs."""

    cancel_early: dict = {}
    events = None

    def __init__(self, source: str):
        self.source = source

    def in_flight(self, keys):
        return {k for k in keys if k == KEY}

    def pending_sources(self):
        return {self.source}


def window(store, runtime):
    sw = ServeWindow.__new__(ServeWindow)  # the DoFn without Beam's setup: its process()
    sw.spec = NS(correct_latency=False, policy="sjf")
    sw.store, sw.runtime = store, runtime
    return sw


def read(record, topics):
    return NS(request=NS(tenant=KEY[0], job_id=KEY[1]), arrival_ts=record.ts,
              source=source_of(topics.jobs, record))  # fmt: skip


def driver(store, topics, pending, committed):
    d = ServingDriver.__new__(ServingDriver)
    d.topics, d.store, d.faults, d.reports, d.progress = topics, store, None, [], lambda s: None
    d.reader = NS(commit=committed.extend)
    d.pending, d.topic_id = pending, "topic-a"
    return d


def test_its_own_record_read_again_waits_for_the_jobs_outcome(tmp_path):
    store, topics = ResultStore(tmp_path / "results.db"), Topics()
    rec = RawRecord(0, 7, b"{}", 1.7e9, 1.7e9)
    src = source_of(topics.jobs, rec)
    runtime = RunningJob(src)
    assert list(window(store, runtime).process(("w", [read(rec, topics)]))) == []
    assert store.outcomes([src]) == {}  # no row: not "duplicate" of itself

    committed: list = []
    d = driver(
        store, topics, [([rec], 0.0, "topic-a"), ([rec], 0.0, "topic-a")], committed
    )  # first read, re-read
    assert d.commit_ready() == 0 and committed == []  # the offset waits for the result


def test_another_record_of_a_running_job_is_still_a_duplicate(tmp_path):
    store, topics = ResultStore(tmp_path / "results.db"), Topics()
    first, again = RawRecord(0, 7, b"{}", 1.7e9, 1.7e9), RawRecord(0, 9, b"{}", 1.7e9, 1.7e9)
    runtime = RunningJob(source_of(topics.jobs, first))
    list(window(store, runtime).process(("w", [read(again, topics)])))
    src = source_of(topics.jobs, again)
    assert store.outcomes([src]) == {src: "duplicate"}  # a resubmission: answered, committed


def test_a_window_read_from_a_lost_topic_is_not_committed_on_the_new_one(tmp_path):
    """The memory broker restarted while old windows ran: the new topic is read from its
    start. The old windows' offsets (up to 120, say) committed on the new topic would
    skip its records below 121 after the next restart."""
    store, topics = ResultStore(tmp_path / "results.db"), Topics()
    old, new = RawRecord(0, 120, b"{}", 1.7e9, 1.7e9), RawRecord(0, 3, b"{}", 1.7e9, 1.7e9)
    for r in (old, new):
        store.record([(source_of(topics.jobs, r), *KEY, "duplicate")])  # both answered
    committed: list = []
    d = driver(store, topics, [([old], 0.0, "topic-a"), ([new], 0.0, "topic-b")], committed)
    d.topic_id = "topic-b"  # the broker came back with a new jobs topic
    assert d.commit_ready() == 2 and len(d.reports) == 2  # both windows reported
    assert [(r.partition, r.offset) for r in committed] == [(0, 3)]  # the new one's alone
