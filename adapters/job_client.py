"""A small Python client for the user API: submit jobs, read a tenant's results."""

from __future__ import annotations

import json
import time
import uuid

from adapters import kafka_io
from adapters.kafka_io import Topics
from sdaas.job_request import JobRequest, parse_job
from sdaas.records import JobResult


class JobClient:
    def __init__(self, bootstrap: str, topics: Topics | None = None):
        self.bootstrap = bootstrap
        self.topics = topics or Topics()
        kafka_io.ensure_topics(bootstrap, [self.topics.jobs, self.topics.dead_letters])
        self.producer = kafka_io.producer(bootstrap)

    def submit(
        self,
        *,
        tenant: str,
        prompt: str,
        style: str,
        latency_slo_s: float,
        min_clip: float,
        job_id: str | None = None,
        seed: int | None = None,
        resolution: tuple[int, int] | None = None,
    ) -> JobRequest:
        """Validate locally (same rules as the server, bar the style list), then send."""
        job = JobRequest(
            job_id or uuid.uuid4().hex[:16],
            tenant,
            prompt,
            style,
            latency_slo_s,
            min_clip,
            seed,
            resolution,
            time.time(),
        )
        parse_job(job.to_json())  # raises JobRefused naming every problem
        self.send_raw(job.to_json(), key=job.job_id)
        return job

    def send_raw(self, value: bytes, key: str | None = None) -> None:
        """Any bytes, as they are: for tests and tools that must send malformed jobs."""
        self.producer.produce(self.topics.jobs, value, key=key)

    def flush(self, timeout: float = 30) -> None:
        left = self.producer.flush(timeout)
        if left:
            raise RuntimeError(f"{left} jobs not delivered to {self.bootstrap}")

    def results(
        self, tenant: str, *, expect: int | None = None, timeout: float = 10
    ) -> list[JobResult]:
        """The tenant's results topic from the start, deduplicated by job_id (the topic is
        at-least-once). Waits until `expect` distinct results or the timeout."""
        from confluent_kafka import TopicPartition

        topic = self.topics.results(tenant)
        kafka_io.ensure_topics(self.bootstrap, [topic])
        c = kafka_io.consumer(self.bootstrap, group=f"reader-{uuid.uuid4().hex[:8]}")
        c.assign([TopicPartition(topic, 0, 0)])
        seen: dict[str, JobResult] = {}
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                m = c.poll(0.1)
                if m is None:
                    if expect is None and seen:
                        break
                    if expect is not None and len(seen) >= expect:
                        break
                    continue
                if m.error():
                    continue
                r = JobResult(**json.loads(m.value()))
                seen.setdefault(r.job_id, r)
        finally:
            c.close()
        return list(seen.values())
