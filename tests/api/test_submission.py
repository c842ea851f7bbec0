"""The idempotent submit without HTTP: `Submission` over the real `Front` and job book (a
tmp sqlite), with a producer standing in for the broker, the one fake: the edge where
the broker acknowledges a record, or does not."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from confluent_kafka import KafkaError

from api.front import ApiConfig, Front
from api.problem import Problem
from api.submission import Submission

REQUEST = json.dumps({"tenant": "ann", "prompt": "three red circles", "submitted_ts": None})
TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT)  # librdkafka's report of a lost record


class Broker:
    """A producer whose delivery reports the test decides: acknowledged (`error` None),
    failed with `error`, refused at produce (a full queue), or `hold`: kept until
    `release`."""

    def __init__(self):
        self.records: list[tuple[str, str, dict]] = []  # (topic, key, value) produced
        self.error: KafkaError | None = None
        self.refuse = self.hold = False
        self.held: list = []

    def produce(self, topic, value, key=None, on_delivery=None):
        if self.refuse:
            raise BufferError("Local: Queue full")
        self.records.append((topic, key, json.loads(value)))
        if self.hold:
            self.held.append(on_delivery)
        else:
            on_delivery(self.error, None)

    def release(self, error: KafkaError | None) -> None:
        for delivered in self.held:
            delivered(error, None)


@pytest.fixture
def front(tmp_path):
    cfg = ApiConfig(bootstrap="unused:1", data_dir=tmp_path, results_dir=tmp_path,
                    max_in_flight=2)  # fmt: skip
    front = Front(cfg)
    front.producer = Broker()
    front.jobs_topic = "topic-1"  # the jobs topic's id the broker has today
    yield front
    front.book.close()


def submit(front: Front, job_id: str, fingerprint: str = "fp-1") -> bool:
    return asyncio.run(Submission(front).submit("ann", job_id, fingerprint, REQUEST))


def refused(front: Front, job_id: str, fingerprint: str = "fp-1") -> Problem:
    with pytest.raises(Problem) as exc:
        submit(front, job_id, fingerprint)
    return exc.value


def accepted(front: Front) -> float:
    """The accepted jobs counted in the metrics."""
    labels = {"tenant": "ann", "outcome": "accepted"}
    return front.metrics.registry.get_sample_value("sdaas_jobs_total", labels) or 0.0


def test_a_new_job_is_entered_sent_stamped_marked_on_todays_topic_and_counted(front):
    before = time.time()
    assert submit(front, "j1") is False  # new: not a retry
    [(topic, key, value)] = front.producer.records
    assert topic == front.cfg.topics.jobs and key == "j1"
    assert value["prompt"] == "three red circles"
    assert before <= value["submitted_ts"] <= time.time()  # stamped when sent
    book = front.book
    assert book.get("ann", "j1").status == "accepted"
    assert not book.needs_send("ann", "j1", "topic-1") and book.in_flight("ann") == 1
    assert accepted(front) == 1


def test_the_same_key_and_request_again_is_the_same_job_and_not_sent_again(front):
    assert submit(front, "j1") is False
    assert submit(front, "j1") is True  # a retry: the job there already
    assert len(front.producer.records) == 1 and accepted(front) == 1
    assert [v.job_id for v in front.book.list("ann")] == ["j1"]
    assert [e for _, e, _ in front.book.events_after("ann", "j1", -1)] == ["accepted"]


def test_the_same_key_with_another_request_is_a_conflict_and_changes_nothing(front):
    submit(front, "j1", "fp-1")
    problem = refused(front, "j1", "fp-2")
    assert problem.code == 409 and "different request" in problem.error
    assert front.book.accept("ann", "j1", "fp-1") == "fp-1"  # still the first request's
    assert len(front.producer.records) == 1 and accepted(front) == 1


@pytest.mark.parametrize("broker_fails", ["times out", "refuses the record"])
def test_a_job_the_broker_does_not_take_is_withdrawn_and_a_retry_starts_afresh(front, broker_fails):
    front.producer.error = TIMED_OUT
    front.producer.refuse = broker_fails == "refuses the record"
    problem = refused(front, "j1")
    assert problem.code == 503 and "withdrawn" in problem.error
    assert problem.headers == {"Retry-After": "1"}
    assert front.book.get("ann", "j1") is None and front.book.in_flight("ann") == 0
    assert accepted(front) == 0
    front.producer.error, front.producer.refuse = None, False  # the broker is back
    assert submit(front, "j1") is False  # a new job, not a retry of a withdrawn one
    assert accepted(front) == 1


def test_the_in_flight_quota_refuses_a_new_job_but_not_a_retry_and_frees_at_an_outcome(front):
    assert submit(front, "j1") is False and submit(front, "j2") is False  # the quota: 2
    problem = refused(front, "j3")
    assert problem.code == 429 and "in-flight quota" in problem.error
    assert problem.headers == {"Retry-After": "1"}
    assert front.book.get("ann", "j3") is None and len(front.producer.records) == 2
    assert submit(front, "j1") is True  # a retry of a job in flight is no new job
    front.book.apply({"tenant": "ann", "job_id": "j1", "event": "done", "result": {}})
    assert submit(front, "j3") is False  # j1 has its outcome: a slot is free


def test_an_open_job_acknowledged_on_another_topic_is_sent_again_by_a_retry(front):
    submit(front, "j1")
    front.jobs_topic = "topic-2"  # the broker restarted empty: a new jobs topic
    assert submit(front, "j1") is True
    assert [key for _, key, _ in front.producer.records] == ["j1", "j1"]
    assert not front.book.needs_send("ann", "j1", "topic-2")
    assert submit(front, "j1") is True and len(front.producer.records) == 2  # on it now
    # acknowledged once, it stays accepted when sending it again fails (the watch resends)
    front.jobs_topic, front.producer.error = "topic-3", TIMED_OUT
    assert submit(front, "j1") is True
    assert front.book.get("ann", "j1").status == "accepted" and accepted(front) == 1


def test_a_job_entered_by_a_process_that_stopped_before_the_ack_is_sent_by_a_retry(front):
    front.book.accept("ann", "lost", "fp-1", REQUEST)  # entered; never sent, never acked
    front.book.accept("ann", "gone", "fp-1", REQUEST)
    assert front.book.in_flight("ann") == 0  # never acked: not in flight
    assert submit(front, "lost") is True
    assert [key for _, key, _ in front.producer.records] == ["lost"]
    assert front.book.in_flight("ann") == 1
    front.producer.error = TIMED_OUT  # never acked and not taken now: withdrawn
    assert refused(front, "gone").code == 503 and front.book.get("ann", "gone") is None


@pytest.mark.parametrize("error", [None, TIMED_OUT])
def test_a_retry_while_the_first_still_sends_learns_how_that_send_ended(front, error):
    front.producer.hold = True
    submission = Submission(front)

    async def race():
        first = asyncio.create_task(submission.submit("ann", "j1", "fp-1", REQUEST))
        while not front.producer.held:
            await asyncio.sleep(0)
        retry = asyncio.create_task(submission.submit("ann", "j1", "fp-1", REQUEST))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not retry.done()  # it waits on the first's delivery report
        front.producer.release(error)
        return await asyncio.gather(first, retry, return_exceptions=True)

    first, retry = asyncio.run(race())
    assert len(front.producer.records) == 1 and submission.sending == {}
    if error is None:
        assert (first, retry) == (False, True)
        return
    assert first.code == retry.code == 503  # the retry never answers 202 for nothing
    assert "withdrawn" in first.error and "the first request" in retry.error
    assert front.book.get("ann", "j1") is None


def test_a_content_length_that_is_no_number_is_a_400_not_a_500():
    """uvicorn answers such a request 400 before the app; other servers may not."""
    from types import SimpleNamespace

    from api.routes.body import read_body

    for bad in ("abc", "+5", "1_0", "١٠"):
        with pytest.raises(Problem) as e:
            asyncio.run(read_body(SimpleNamespace(headers={"content-length": bad})))
        assert e.value.code == 400 and "Content-Length" in e.value.error
