"""The internal topics' reader, against the real broker: every partition, and a topic
that a restarted broker made anew (with 4 partitions of its own choosing)."""

from __future__ import annotations

import json
import threading
import time

from adapters import kafka_io
from adapters.kafka_broker import EmbeddedBroker
from adapters.kafka_io import TopicTail


class Got:
    def __init__(self):
        self.msgs: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, batch):
        with self.lock:
            self.msgs += batch

    def wait_for(self, n: int, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.msgs) >= n:
                    return list(self.msgs)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.msgs)} of {n} messages arrived")


def _produce(bootstrap: str, topic: str, tag: str, n: int) -> set[int]:
    """n messages keyed apart (so they spread over the partitions); their partitions."""
    parts: set[int] = set()
    p = kafka_io.producer(bootstrap)

    def delivered(err, m):
        if err is None:
            parts.add(m.partition())

    for i in range(n):
        p.produce(topic, json.dumps({"tag": tag, "i": i}), key=f"k{i}", on_delivery=delivered)
    assert p.flush(20) == 0
    return parts


def test_every_partition_is_read_and_a_topic_made_anew_is_read_from_its_start():
    topic = "tail.test"
    got = Got()
    with EmbeddedBroker() as broker:
        port = broker.port
        kafka_io.ensure_topics(broker.bootstrap, [topic], partitions=4)
        tail = TopicTail(broker.bootstrap, topic, got).start()
        try:
            parts = _produce(broker.bootstrap, topic, "before", 40)
            assert len(parts) > 1  # the messages really are spread over partitions
            first = got.wait_for(40)
            assert sorted(m["i"] for m in first) == list(range(40))
            broker.stop()
            # the same port, an empty memory broker: the producer's metadata request
            # makes the topic anew, with the partitions the broker chooses (4 on Tansu)
            with EmbeddedBroker(port=port) as again:
                parts = _produce(again.bootstrap, topic, "after", 30)
                assert len(parts) > 1
                after = [m for m in got.wait_for(70) if m["tag"] == "after"]
                assert sorted(m["i"] for m in after) == list(range(30))  # each exactly once
        finally:
            tail.stop()
