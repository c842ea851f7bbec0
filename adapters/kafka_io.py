"""Kafka plumbing for serving: topic names, clients, reading one window of records.

Consumers use `assign()` with the group's committed offsets and commit by hand after a
window's results are durable (no group rebalance: joins take ~23 s on Tansu).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from sdaas.errors import SdaasError

log = logging.getLogger(__name__)
GROUP = "sdaas-serving"


@dataclass(frozen=True)
class Topics:
    prefix: str = "sdaas"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}.jobs"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dead-letters"

    @property
    def events(self) -> str:
        """Progress and outcomes of every job (internal: the API reads it, serving writes)."""
        return f"{self.prefix}.events"

    @property
    def control(self) -> str:
        """Requests to serving about jobs it holds: cancel (internal: the API writes it)."""
        return f"{self.prefix}.control"

    def results(self, tenant: str) -> str:
        """One results topic per tenant: a tenant reads only its own (grant ACLs on it)."""
        return f"{self.prefix}.results.{tenant}"


@dataclass(frozen=True)
class RawRecord:
    """One jobs-topic record as the pipeline sees it."""

    partition: int
    offset: int
    value: bytes
    ts: float  # the record's timestamp (broker's, or the producer's), unix seconds
    received_ts: float | None = None  # when this server read it (the local reader sets it)


def _conf(bootstrap: str, **extra) -> dict:
    return {"bootstrap.servers": bootstrap, "log_level": 2, **extra}


def admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient(_conf(bootstrap))


# partitions of every topic sdaas makes, made before first use (a producer's metadata
# request would otherwise auto-create it: 4 partitions on a restarted Tansu); every
# reader reads all partitions whatever their number
PARTITIONS = 1


def ensure_topics(bootstrap: str, names: list[str], partitions: int = PARTITIONS) -> None:
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    a = admin(bootstrap)
    try:
        existing = set(a.list_topics(timeout=10).topics)
    except Exception as exc:  # noqa: BLE001 - confluent raises KafkaException
        err = exc.args[0] if exc.args else exc
        why = err.str() if hasattr(err, "str") else str(err)
        raise SdaasError(
            f"cannot reach the Kafka broker at {bootstrap} ({why}): check "
            "--bootstrap-servers, or start one with `sdaas broker`"
        ) from None
    todo = [n for n in names if n not in existing]
    if not todo:
        return
    for name, fut in a.create_topics([NewTopic(n, partitions, 1) for n in todo]).items():
        try:
            fut.result(10)
        except Exception as exc:  # noqa: BLE001 - confluent raises KafkaException
            err = exc.args[0] if exc.args else None
            if getattr(err, "code", lambda: None)() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise SdaasError(f"cannot create topic {name} on {bootstrap}: {exc}") from None


def producer(bootstrap: str, linger_ms: float = 5, timeout_s: float | None = None):
    """linger_ms: how long a message waits for others to share its request; 0 where a
    caller waits on each acknowledgement (the API's 202). timeout_s: a message not
    acknowledged by then fails and is dropped from the queue, never sent later (the
    API's answer must be true: a 503 for a job that runs once the broker is back is not);
    None: librdkafka's default (300 s)."""
    from confluent_kafka import Producer

    extra = {"enable.idempotence": False, "linger.ms": linger_ms}
    if timeout_s is not None:
        extra["message.timeout.ms"] = max(1, int(timeout_s * 1000))
    return Producer(_conf(bootstrap, **extra))


def consumer(bootstrap: str, group: str = GROUP):
    from confluent_kafka import Consumer

    return Consumer(
        _conf(
            bootstrap,
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
            },
        )
    )


def topic_id(admin_client, topic: str) -> str | None:
    """The topic's id (KIP-516): a topic deleted and created again, as on a memory broker
    that restarted, gets a new one. None where the cluster does not tell."""
    from confluent_kafka import TopicCollection

    try:
        (fut,) = admin_client.describe_topics(TopicCollection([topic])).values()
        tid = fut.result(5).topic_id
    except Exception:  # noqa: BLE001 - an old cluster, or one that is away: no check
        return None
    return str(tid) if tid is not None else None


class JobsReader:
    """Reads the jobs topic from the group's committed offsets (or, `from_start`, from
    the beginning: the topic is new); `commit()` moves them."""

    def __init__(self, bootstrap: str, topic: str, group: str = GROUP, from_start=False):
        from confluent_kafka import TopicPartition

        self.c = consumer(bootstrap, group)
        meta = self.c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise SdaasError(f"topic {topic} not found on {bootstrap}")
        parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = self.c.committed(parts, timeout=10)
        self.next = {tp.partition: 0 if from_start else max(tp.offset, 0) for tp in committed}
        self.has_committed = any(tp.offset > 0 for tp in committed)
        self.topic = topic
        self.c.assign([TopicPartition(topic, p, o) for p, o in self.next.items()])

    def read(
        self, window_s: float, max_records: int, idle_s: float, quiet_s: float = 0.25
    ) -> list[RawRecord]:
        """Records arriving within `window_s` of the first one (at most max_records),
        ending early once nothing has come for `quiet_s` (a lone job is not held for a
        whole window); an empty list after `idle_s` with nothing."""
        out: list[RawRecord] = []
        start = time.monotonic()
        first = last = None
        while len(out) < max_records:
            now = time.monotonic()
            if first is None and now - start > idle_s:
                break
            if first is not None and (now - first > window_s or now - last > quiet_s):
                break
            m = self.c.poll(0.05)
            if m is None:
                continue
            last = time.monotonic()
            if m.error():
                log.warning("kafka: %s", m.error())
                continue
            if first is None:
                first = last
            ts = m.timestamp()[1] / 1000
            out.append(RawRecord(m.partition(), m.offset(), m.value() or b"", ts, time.time()))
        return out

    def commit(self, records: list[RawRecord]) -> None:
        from confluent_kafka import TopicPartition

        for r in records:
            self.next[r.partition] = max(self.next.get(r.partition, 0), r.offset + 1)
        if records:
            self.c.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in self.next.items()],
                asynchronous=False,
            )

    def close(self) -> None:
        self.c.close()


class TopicTail:
    """Reads every partition of a topic from the start (or its end) in a thread and hands
    the JSON messages that arrived together (up to BATCH) to `on_batch`; a message that
    is not JSON is skipped. For the internal events and control topics, which have no
    consumer group to join (joins take ~23 s on Tansu).

    It follows the topic: partitions added later are read from their start, and a topic
    deleted and made again (a memory broker that restarted makes its topics anew, with 4
    partitions) is read again from its start, all of it."""

    BATCH = 500
    FOLLOW_S = 2.0  # how often the topic's partitions and id are looked at again

    def __init__(self, bootstrap: str, topic: str, on_batch, *, from_end: bool = False):
        import threading

        self.bootstrap, self.topic, self.on_batch = bootstrap, topic, on_batch
        self.from_end = from_end
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"tail-{topic}", daemon=True)
        self.assigned: dict[int, int] = {}  # partition -> the offset it was assigned at
        self.topic_id: str | None = None

    def start(self) -> TopicTail:
        ensure_topics(self.bootstrap, [self.topic])
        self._thread.start()
        return self

    def _follow(self, c, admin_client, first: bool) -> None:
        """Assign the partitions the topic has now; all of them from the start when the
        topic is not the one read before."""
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

        meta = c.list_topics(self.topic, timeout=5).topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return  # not there (yet): the broker is away or making it
        tid = topic_id(admin_client, self.topic)
        parts = set(meta.partitions)
        renewed = tid is not None and self.topic_id is not None and tid != self.topic_id
        if not renewed and parts <= set(self.assigned):
            return
        if renewed:
            log.warning("%s was made anew (the broker restarted?): reading it from its "
                        "start, %d partition(s)", self.topic, len(parts))  # fmt: skip
            self.assigned = {}
        start = OFFSET_END if first and self.from_end else OFFSET_BEGINNING
        for p in parts - set(self.assigned):
            self.assigned[p] = start
        self.topic_id = tid if tid is not None else self.topic_id
        c.assign([TopicPartition(self.topic, p, o) for p, o in sorted(self.assigned.items())])
        log.debug("%s: reading %d partition(s)", self.topic, len(parts))

    def _loop(self) -> None:
        import json

        c = consumer(self.bootstrap, group=f"tail-{self.topic}")
        admin_client = admin(self.bootstrap)
        followed = -math.inf
        first = True
        try:
            while not self._stop.is_set():
                if time.monotonic() - followed > self.FOLLOW_S:
                    followed = time.monotonic()
                    try:
                        self._follow(c, admin_client, first)
                        first = first and not self.assigned
                    except Exception as exc:  # noqa: BLE001 - the broker is away: next time
                        log.debug("%s: partitions not looked up: %s", self.topic, exc)
                if not self.assigned:
                    self._stop.wait(0.1)
                    continue
                batch = []
                for m in c.consume(self.BATCH, 0.1):
                    if m.error():
                        continue
                    try:
                        batch.append(json.loads(m.value()))
                    except ValueError:
                        log.warning("%s: a message that is not JSON at offset %d", self.topic,
                                    m.offset())  # fmt: skip
                try:
                    if batch:
                        self.on_batch(batch)
                except Exception:  # noqa: BLE001 - one bad message must not stop the tail
                    log.exception("%s: handling %d messages failed", self.topic, len(batch))
        finally:
            c.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
