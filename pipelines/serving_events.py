"""Serving's side of the front door: progress events out, cancel requests in.

Events (`Topics.events`, internal): one JSON message per step of a job's life, keyed by
tenant/job_id: `planned` (model, accelerator, steps, predictions), `started`, `step`
(i of N), and the outcome (`done`, `rejected`, `failed`, `cancelled`, with the result),
which the publisher sends from the result store once the result is durable. Progress
events are best effort: a lost `step` costs a progress bar a tick, never a result.
A `ready` event says a serving process has its models loaded; it repeats every
`every_s` while the process lives, and `stopping` says it is going (the API's readiness
follows both: a process that died without a word is not ready after 3 beats missed).

Control (`Topics.control`, internal): `{"op": "cancel", "tenant", "job_id"}`. A job in
flight is cancelled in the core (queued: at once; running: at its next step boundary);
one not handed over yet is remembered and answered `cancelled` when its record is read.
No prompt is ever part of either topic.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict

from adapters import kafka_io
from adapters.kafka_io import Topics, TopicTail
from engine.runtime import CANCEL_MAX_AGE_S
from sdaas.limits import id_problem
from sdaas.records import JobResult

log = logging.getLogger(__name__)


class EventPublisher:
    """Produces job events; thread-safe (the devices' threads call it)."""

    def __init__(self, bootstrap: str, topics: Topics):
        self.topic = topics.events  # made by the driver with its other topics
        self.producer = kafka_io.producer(bootstrap)

    def emit(self, tenant: str, job_id: str, event: str, **data) -> None:
        msg = {"tenant": tenant, "job_id": job_id, "event": event, "ts": time.time(), **data}
        try:
            self.producer.produce(self.topic, key=f"{tenant}/{job_id}", value=json.dumps(msg))
            self.producer.poll(0)
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            log.warning("event %s of a job not sent: %s", event, type(exc).__name__)

    def flush(self, timeout: float = 5.0) -> None:
        self.producer.flush(timeout)


def outcome_event(r: JobResult) -> dict:
    """The outcome of a stored result as an event message."""
    return {"tenant": r.tenant, "job_id": r.job_id, "event": r.status, "ts": time.time(),
            "result": asdict(r)}  # fmt: skip


def dead_letter_event(letter: dict) -> dict | None:
    """A dead letter that names its tenant and job: the job was refused (`rejected`)."""
    tenant, job_id = letter.get("tenant") or "", letter.get("job_id") or ""
    if not tenant or not job_id:
        return None
    return {"tenant": tenant, "job_id": job_id, "event": "rejected", "ts": time.time(),
            "error": letter.get("reason", "")}  # fmt: skip


class Heartbeat:
    """`ready` every `every_s` from a thread of its own (a window that runs for minutes
    must not look like a dead process), `stopping` when stopped; `server` tells several
    serving processes apart."""

    def __init__(self, emit, accelerators: list[str], every_s: float = 5.0, faults=None,
                 fleet=None):  # fmt: skip
        import os
        import socket
        import threading

        self.emit, self.accelerators, self.every_s = emit, list(accelerators), every_s
        self.faults = faults  # sdaas.health.Faults: what is wrong now rides on each beat
        self.fleet = fleet  # () -> the engines' rows (ServingRuntime.fleet): the operator view
        self.server = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="serving-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _beat(self) -> None:
        while True:
            self.beat()
            if self._stop.wait(self.every_s):
                return

    def beat(self) -> None:
        """One `ready` now (a fault reported in between is sent at once, not 5 s later)."""
        faults = [f.to_json() for f in self.faults.current()] if self.faults else []
        fleet = self.fleet() if self.fleet else []
        self.emit("", "", "ready", accelerators=self.accelerators, server=self.server,
                  every_s=self.every_s, faults=faults, engines=fleet)  # fmt: skip

    def stop(self, reason: str = "") -> None:
        """`reason`: why it stops, when not asked to (the API's /readyz shows it)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.emit("", "", "stopping", server=self.server, reason=reason)


class CancelListener:
    """Reads cancel requests from the control topic and hands each valid (tenant, job_id)
    to `cancel`. From the topic's start, so that a cancel sent while serving was down
    (or restarting) still counts; requests older than `max_age_s` (by the API's clock in
    `ts`) are passed over."""

    def __init__(self, bootstrap: str, topics: Topics, cancel,
                 max_age_s: float = CANCEL_MAX_AGE_S, clock=time.time):  # fmt: skip
        self.cancel, self.max_age_s, self.clock = cancel, max_age_s, clock
        self.tail = TopicTail(bootstrap, topics.control, self._on)

    def start(self) -> CancelListener:
        self.tail.start()
        return self

    def _on(self, msgs: list) -> None:
        for msg in msgs:
            if not isinstance(msg, dict) or msg.get("op") != "cancel":
                continue
            tenant, job_id, ts = msg.get("tenant"), msg.get("job_id"), msg.get("ts")
            if id_problem(tenant) or id_problem(job_id):
                continue
            if not isinstance(ts, int | float) or not self.clock() - ts < self.max_age_s:
                continue  # too old to matter (or no time: not from the API)
            self.cancel(tenant, job_id)

    def stop(self) -> None:
        self.tail.stop()
