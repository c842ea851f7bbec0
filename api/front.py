"""What the routes stand on: the tenants' keys, the job book, Kafka in and out.

`Front` sends a job onto the jobs topic and waits for the broker's acknowledgement (a
202 means the job is in Kafka and in the job book, not just in this process), and
follows the events topic into the job book, waking whoever streams a job's events.

A broker that restarts empty (the embedded one keeps topics in memory) makes its jobs
topic anew, with a new topic id: the broker watch sees it and sends every job the book
holds without an outcome again (serving answers a (tenant, job_id) once, so a job that
was not lost after all is a duplicate, not a second run).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adapters import kafka_io
from adapters.kafka_broker import reachable
from adapters.kafka_io import Topics, TopicTail
from api.job_book import JobBook
from api.keys import TenantKeys
from api.limits import TokenBuckets
from api.loop_watch import LoopWatch
from api.metrics import ApiMetrics
from sdaas.config import TENANTS_DB
from sdaas.job_status import OUTCOMES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiConfig:
    """bootstrap: the (internal) Kafka broker. data_dir: where the tenants' keys and the
    job book live. styles: the served styles, checked at the door (None: serving checks).
    rate_per_s / burst: submissions per tenant; max_in_flight: jobs per tenant without an
    outcome; results_dir: where serving stores images (only files under it are served);
    keep_progress_s: how long the book keeps the progress events of an ended job."""

    bootstrap: str
    data_dir: Path
    results_dir: Path
    topics: Topics = Topics()
    styles: tuple[str, ...] | None = None
    rate_per_s: float = 20.0
    burst: float = 40.0
    max_in_flight: int = 100
    salt: bytes = b""
    # style -> the resolutions it is served at, checked at the door (None: serving checks)
    resolutions: dict[str, tuple[tuple[int, int], ...]] | None = None
    send_timeout_s: float = 5.0  # a record the broker has not acked by then is withdrawn
    watch_every_s: float = 2.0  # how often the broker's jobs topic is looked at
    keep_progress_s: float = 86400.0  # an ended job's progress events; its outcome stays

    @property
    def keys_path(self) -> Path:
        return Path(self.data_dir) / TENANTS_DB

    @property
    def book_path(self) -> Path:
        return Path(self.data_dir) / "api" / "jobs.db"


class Front:
    def __init__(self, cfg: ApiConfig):
        self.cfg = cfg
        self.keys = TenantKeys(cfg.keys_path)
        self.book = JobBook(cfg.book_path)
        self.metrics = ApiMetrics(self.book, engines=self.fleet)
        self.buckets = TokenBuckets(cfg.rate_per_s, cfg.burst)
        # serving processes by their heartbeats: server -> (last seen, beat every_s)
        self.servers: dict[str, tuple[float, float]] = {}
        self.clock = time.time
        self._waiters: dict[tuple[str, str], set[asyncio.Event]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self.watch = LoopWatch(self.metrics.loop_lag)
        self.jobs_topic = ""  # the jobs topic's id now ('' until known)
        self.resent = 0  # jobs sent again after a broker lost them
        # serving processes' faults by server (their heartbeats carry them), and why the
        # last one that stopped on its own said it stopped
        self.faults: dict[str, list[dict]] = {}
        self.last_stop = ""
        # each live serving process's engines, as its last beat listed them (sanitised:
        # `_engine_rows`), by server; the operator's view (/v1/ops, /metrics)
        self.engines: dict[str, list[dict]] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        t = self.cfg.topics
        kafka_io.ensure_topics(self.cfg.bootstrap, self._topics)
        # no lingering: each 202 waits on its own acknowledgement (5 ms saved per submit);
        # a record not acked within the send timeout is dropped, never delivered later
        self.producer = kafka_io.producer(self.cfg.bootstrap, linger_ms=0,
                                          timeout_s=self.cfg.send_timeout_s)  # fmt: skip
        self._poller = threading.Thread(target=self._poll, name="api-producer", daemon=True)
        self._poller.start()
        self._admin = kafka_io.admin(self.cfg.bootstrap)
        self._watch_broker()  # the topic's id before the first job is sent
        self._watcher = threading.Thread(target=self._watch_loop, name="api-broker-watch",
                                         daemon=True)  # fmt: skip
        self._watcher.start()
        self.feed = TopicTail(self.cfg.bootstrap, t.events, self._on_events)
        self.feed.start()
        self._pruner = loop.create_task(self._prune_every(60.0))

    async def _prune_every(self, every_s: float) -> None:
        """The book's events table would grow by a row per step of every job, forever."""
        while True:
            await asyncio.sleep(every_s)
            while self.book.prune(self.cfg.keep_progress_s, limit=500) == 500:
                await asyncio.sleep(0)  # a turn of the loop between batches

    def stop(self) -> None:
        self._stop.set()
        self.watch.stop()
        self._pruner.cancel()
        self.book.close()
        self.feed.stop()
        self._poller.join(timeout=5)
        self._watcher.join(timeout=10)
        self.producer.flush(5)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.02)  # delivery callbacks run here

    # -- Kafka out ------------------------------------------------------------------------
    @property
    def _topics(self) -> list[str]:
        t = self.cfg.topics
        return [t.jobs, t.events, t.control]

    async def send(self, topic: str, key: str, value: bytes) -> None:
        """Produce and wait for the broker's answer; raises on failure. The producer
        drops a record it could not deliver within the send timeout, so a failure here
        means the record will not reach the topic later (the 503 it becomes is true).
        The wait is the delivery report itself, with a margin over that timeout."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def delivered(err, _msg):
            def settle():
                if done.done():
                    return
                if err is None:
                    done.set_result(None)
                else:
                    done.set_exception(ConnectionError(str(err)))

            loop.call_soon_threadsafe(settle)

        t0 = time.perf_counter()
        self.producer.produce(topic, value, key=key, on_delivery=delivered)
        await asyncio.wait_for(done, self.cfg.send_timeout_s + 30.0)
        self.metrics.ack_s.observe(time.perf_counter() - t0)

    async def send_job(self, tenant: str, job_id: str) -> None:
        """The job's request from the book onto the jobs topic, stamped now (serving
        refuses a submitted_ts far from the broker's time; a job sent again after an
        outage is timed from then); marked sent on the topic acknowledged."""
        topic = self.jobs_topic
        value = _stamped(self.book.request_of(tenant, job_id))
        await self.send(self.cfg.topics.jobs, job_id, value)
        self.book.sent(tenant, job_id, topic)

    # -- the broker losing its topics ------------------------------------------------------
    def _watch_loop(self) -> None:
        while not self._stop.wait(self.cfg.watch_every_s):
            try:
                self._watch_broker()
            except Exception:  # noqa: BLE001 - the watch must outlive a bad turn
                log.exception("broker watch: a turn failed; next in %.0f s",
                              self.cfg.watch_every_s)  # fmt: skip

    def _watch_broker(self) -> None:
        """Look at the jobs topic's id; when it is not the one jobs were acknowledged on,
        make the topics (explicit partitions) and send those jobs again."""
        if not reachable(self.cfg.bootstrap):
            return
        tid = kafka_io.topic_id(self._admin, self.cfg.topics.jobs)
        if tid is None or tid != self.jobs_topic:  # missing (a restarted broker) or new
            kafka_io.ensure_topics(self.cfg.bootstrap, self._topics)
            tid = tid or kafka_io.topic_id(self._admin, self.cfg.topics.jobs)
            if tid is None:
                return
        if tid != self.jobs_topic:
            if self.jobs_topic:
                log.warning("the jobs topic %s is new (id %s; was %s): the broker "
                            "restarted; sending the accepted jobs it lost again",
                            self.cfg.topics.jobs, tid, self.jobs_topic)  # fmt: skip
            self.jobs_topic = tid
        self._resend(tid)

    def _resend(self, tid: str) -> None:
        """Every job acknowledged on another jobs topic and still without an outcome,
        500 at a time; each marked sent once this broker acknowledged it."""
        while rows := self.book.to_resend(tid):
            acked: list[tuple[str, str]] = []
            for tenant, job_id, request in rows:
                self.producer.produce(self.cfg.topics.jobs, _stamped(request), key=job_id,
                                      on_delivery=_collect(acked, (tenant, job_id)))  # fmt: skip
            self.producer.flush(self.cfg.send_timeout_s + 5.0)
            for tenant, job_id in acked:
                self.book.sent(tenant, job_id, tid)
            self.resent += len(acked)
            log.warning("sent %d accepted job(s) again to the new jobs topic (%d not "
                        "acknowledged: next turn)", len(acked), len(rows) - len(acked))  # fmt: skip
            if len(acked) < len(rows) or self._stop.is_set():
                return

    def fingerprint(self, request: str) -> str:
        """A keyed hash of a request as the book stores it (prompt included, never stored
        as such): the parsed job's JSON without `submitted_ts` (the API stamps its own; a
        client may stamp each retry), so 10 and 10.0, key order or a `tenant` the key
        already says make no other job."""
        return hashlib.sha256(self.cfg.salt + request.encode()).hexdigest()[:32]

    # -- Kafka in ---------------------------------------------------------------------------
    # events applied (and their streams woken) per turn of the loop: a submit arriving
    # meanwhile waits for one chunk's streams, not a window's
    CHUNK = 16

    def _on_events(self, msgs: list[dict]) -> None:
        """Events as they arrived together (the feed's thread): applied on the event loop,
        which does every other sqlite call too. Applied here, in a second Python thread,
        a batch of 200 held the book's lock (every submit waited on it) and fought the
        loop for the GIL: submits stalled for 0.25-0.5 s in the API load bench. The feed
        waits until the batch is in, so the loop is never handed more than one batch."""
        if self._loop is None:
            return
        done = asyncio.run_coroutine_threadsafe(self._apply(msgs), self._loop)
        while not self._stop.is_set():
            try:
                return done.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                continue

    async def _apply(self, msgs: list[dict]) -> None:
        """Into the book CHUNK events per transaction, a turn of the loop between chunks
        (a submit waits for one chunk, not for the batch); then the metrics, then
        whoever streams those jobs is woken."""
        for m in msgs:
            if m.get("event") in ("ready", "stopping"):
                self._heartbeat(m)
        for i in range(0, len(msgs), self.CHUNK):
            if i:
                await asyncio.sleep(0)
            keys = set()
            for msg in self.book.apply_many(msgs[i : i + self.CHUNK]):
                event = msg.get("event")
                if event in OUTCOMES:
                    self.metrics.outcome(msg["tenant"], event, msg.get("result") or {})
                keys.add((msg["tenant"], msg["job_id"]))
            self._wake(keys)

    def _wake(self, keys) -> None:
        for key in keys & self._waiters.keys():
            for e in self._waiters.get(key, ()):
                e.set()

    @contextmanager
    def subscribe(self, key: tuple[str, str]):
        """An asyncio.Event set whenever an event of this job is in the book."""
        e = asyncio.Event()
        self._waiters[key].add(e)
        try:
            yield e
        finally:
            self._waiters[key].discard(e)
            if not self._waiters[key]:
                del self._waiters[key]

    # -- health ---------------------------------------------------------------------------
    def _heartbeat(self, m: dict) -> None:
        """A serving process's `ready` (models loaded, alive) or `stopping`. The events
        topic is read from its start: a beat counts only if it is recent by its own time."""
        server = str(m.get("server", ""))
        if m["event"] == "stopping":
            self.servers.pop(server, None)
            self.faults.pop(server, None)
            self.engines.pop(server, None)
            if isinstance(m.get("reason"), str) and m["reason"]:
                self.last_stop = m["reason"][:500]
            return
        every = min(60.0, max(0.5, _number(m.get("every_s"), 5.0)))
        now = self.clock()
        if now - _number(m.get("ts"), 0.0) < MISSED_BEATS * every:
            self.servers[server] = (now, every)
            faults = m.get("faults")
            self.faults[server] = [f for f in faults if isinstance(f, dict)][:20] if isinstance(
                faults, list) else []  # fmt: skip
            self.engines[server] = _engine_rows(m.get("engines"))
        for gone in [s for s in self.engines if not self._alive(s, now)]:
            del self.engines[gone]  # taken for gone: its engines are no one's view now

    def _alive(self, server: str, now: float) -> bool:
        if server not in self.servers:
            return False
        seen, every = self.servers[server]
        return now - seen < MISSED_BEATS * every

    def fleet(self) -> list[dict]:
        """The engines of every live serving process (one that beat lately), each row with
        its `server`: ordered by node, server, engine."""
        now = self.clock()
        rows = [{"server": server[:TEXT_MAX], **row}
                for server, engines in list(self.engines.items()) if self._alive(server, now)
                for row in engines]  # fmt: skip
        return sorted(rows, key=lambda r: (r["node"], r["server"], r["engine"]))

    def serving_ready(self) -> tuple[bool, str]:
        """Whether some serving process beat lately and has no fatal fault; the faults
        every live one reports are named either way."""
        now = self.clock()
        alive = [s for s in self.servers if self._alive(s, now)]
        faults = [f for s in alive for f in self.faults.get(s, [])]
        said = "; ".join(f"{f.get('part', '?')}: {f.get('reason', '')}" for f in faults)
        healthy = [s for s in alive if not any(f.get("fatal") for f in self.faults.get(s, []))]
        if healthy:
            why = f"ready: {len(healthy)} serving process(es)"
            return True, f"{why}; recent faults: {said}" if said else why
        if alive:
            return False, f"serving cannot take work: {said}"
        stopped = f" (the last one stopped: {self.last_stop})" if self.last_stop else ""
        if self.servers:
            last = now - max(seen for seen, _ in self.servers.values())
            return False, f"no serving process has sent a heartbeat for {last:.0f} s{stopped}"
        return False, f"no serving process has said it is ready (models loaded){stopped}"

    def ready(self) -> tuple[bool, str]:
        if self.book.check():
            return False, self.book.fault
        if not reachable(self.cfg.bootstrap):
            return False, f"the Kafka broker at {self.cfg.bootstrap} does not answer"
        return self.serving_ready()


MISSED_BEATS = 3  # heartbeats a serving process may miss before it is taken for gone
# bounds on what a heartbeat's `engines` may put in memory (and in /v1/ops, /metrics)
ENGINES_MAX = 1024  # rows kept per serving process
RESIDENT_MAX = 64  # model keys kept per engine
TEXT_MAX = 200  # characters kept of any string


def fleet_by_node(rows: list[dict]) -> dict[str, dict[str, int]]:
    """node -> engines in service, engines in all, jobs running there."""
    nodes: dict[str, dict[str, int]] = {}
    for r in rows:
        n = nodes.setdefault(r["node"], {"in_service": 0, "engines": 0, "running": 0})
        n["engines"] += 1
        n["in_service"] += r["in_service"]
        n["running"] += r["running"] or 0
    return nodes


def _engine_rows(rows) -> list[dict]:
    """A heartbeat's `engines` as rows of the known keys only (ServingRuntime.fleet's):
    strings cut to TEXT_MAX, numbers finite or None, at most ENGINES_MAX rows of at most
    RESIDENT_MAX resident models; a row that is no dict or names no engine is left out."""
    if not isinstance(rows, list):
        return []
    out = []
    for r in rows[:ENGINES_MAX]:
        if not isinstance(r, dict) or not isinstance(r.get("engine"), str) or not r["engine"]:
            continue
        resident = r.get("resident")
        out.append({
            "engine": _text(r["engine"]),
            "kind": _text(r.get("kind")),
            "node": _text(r.get("node")) or "local",
            "state": _text(r.get("state")) or "unknown",
            "in_service": r.get("in_service") is True,
            "resident": [_text(k) for k in resident[:RESIDENT_MAX] if isinstance(k, str)]
            if isinstance(resident, list) else [],
            "running": _count(r.get("running")),
            "queued": _count(r.get("queued")),
            "dispatch_p99_ms": _finite(r.get("dispatch_p99_ms")),
        })  # fmt: skip
    return out


def _text(x) -> str:
    return x[:TEXT_MAX] if isinstance(x, str) else ""


def _finite(x) -> float | None:
    """A number >= 0 and under 1e12 (no bool, NaN or infinity), else None."""
    ok = isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x < 1e12
    return float(x) if ok else None


def _count(x) -> int | None:
    x = _finite(x)
    return int(x) if x is not None and x == int(x) else None


def _collect(into: list, key):
    """A delivery callback that adds `key` to `into` once the broker acknowledged."""

    def delivered(err, _msg):
        if err is None:
            into.append(key)

    return delivered


def _stamped(request: str) -> bytes:
    """A stored request with submitted_ts set to now."""
    return json.dumps({**json.loads(request), "submitted_ts": time.time()}).encode()


def _number(x, default: float) -> float:
    return float(x) if isinstance(x, int | float) and x == x and abs(x) < 1e12 else default
