"""The API's own book of the jobs it accepted, and each job's events, in sqlite.

Keyed by (tenant, job_id), like every other store here: two tenants may use the same
job id and neither learns of the other. A job's status only moves forward
(accepted -> planned -> running -> an outcome), whatever order events arrive in; the
outcome, once there, is final.

The book is the record of what was accepted: a job's request (prompt included) is kept
until its outcome arrives, then cleared, so that a broker that lost its topics (the
embedded broker keeps them in memory) can be sent every job still waiting again. The
jobs topic's id at each acknowledgement says which broker has it. The fingerprint (for
idempotency) is a keyed hash of the request.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sdaas.errors import SdaasError
from sdaas.job_status import OUTCOMES, PROGRESS

log = logging.getLogger(__name__)
ACCEPTED, PLANNED, RUNNING = PROGRESS  # where an open job can be, in order
STATUSES = (*PROGRESS, *OUTCOMES)  # the words a job's status can be, in the book's order
_ADDED_COLUMNS = {
    "queued": "INTEGER NOT NULL DEFAULT 1",
    "request": "TEXT NOT NULL DEFAULT ''",
    "sent_topic": "TEXT NOT NULL DEFAULT ''",
}


def _words(words) -> str:
    """Status words as a SQL list: ('a','b')."""
    return "(" + ",".join(f"'{w}'" for w in words) + ")"


# an open job (no outcome yet): `IN`, not `NOT IN`, so the status index is used
_OPEN = f"status IN {_words(PROGRESS)}"
_RANK = {**{w: i for i, w in enumerate(PROGRESS)}, **dict.fromkeys(OUTCOMES, len(PROGRESS))}
# serving's events that move a job on, and where to (an outcome's event is its status)
_MOVES = {"planned": PLANNED, "started": RUNNING, "step": RUNNING}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    tenant TEXT NOT NULL,
    job_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    submitted_ts REAL NOT NULL,
    updated_ts REAL NOT NULL,
    accelerator TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT '',
    plan TEXT NOT NULL DEFAULT '{}',
    step INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    result TEXT NOT NULL DEFAULT '{}',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    queued INTEGER NOT NULL DEFAULT 1,
    request TEXT NOT NULL DEFAULT '',     -- the job as sent to Kafka; '' once it ended
    sent_topic TEXT NOT NULL DEFAULT '',  -- the jobs topic's id when the broker acked it
    PRIMARY KEY (tenant, job_id)
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(tenant, status, submitted_ts);
CREATE INDEX IF NOT EXISTS jobs_by_update ON jobs(updated_ts);
CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL,
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant, job_id, seq)
);
"""


def public_result(job_id: str, result: dict) -> dict:
    """A result as a tenant sees it: the image as this API's URL, not the server's path."""
    if not result or "image_uri" not in result:
        return result
    out = {k: v for k, v in result.items() if k != "image_uri"}
    if result["image_uri"]:
        out["image_url"] = f"/v1/jobs/{job_id}/image"
    return out


@dataclass(frozen=True)
class JobView:
    """What a tenant may see of one of its jobs."""

    job_id: str
    status: str
    submitted_ts: float
    updated_ts: float
    plan: dict
    step: int
    steps: int
    result: dict
    cancel_requested: bool

    def to_json(self) -> dict:
        d = {
            "job_id": self.job_id,
            "status": self.status,
            "submitted_ts": self.submitted_ts,
            "updated_ts": self.updated_ts,
            "plan": self.plan or None,
            "progress": {"step": self.step, "of": self.steps} if self.steps else None,
            "outcome": public_result(self.job_id, self.result) or None,
        }
        if self.cancel_requested and self.status not in OUTCOMES:
            d["cancel_requested"] = True
        return d


class JobBookGone(SdaasError):
    """The book's file was deleted or replaced while the API ran: writing on would
    record accepted jobs where no restart finds them."""


class JobBook:
    """Once open, the book is that file for good: its identity (device, inode) is
    checked before each new job is entered and every 2 s, and a book deleted or
    replaced meanwhile stops new jobs (`JobBookGone`: 503) and the API's readiness,
    saying so, rather than writing on into a file no restart finds."""

    def __init__(self, path: Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not Path(path).exists():
            log.info("no job book at %s: a new, empty one is made", path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)
        self.fault = ""  # why the book cannot take jobs ('' while it can)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
        for name, decl in _ADDED_COLUMNS.items():  # a book from an older sdaas
            if name not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
        # the open jobs alone (the broker watch looks at them every 2 s; ended ones pile up)
        self._db.execute(
            f"CREATE INDEX IF NOT EXISTS jobs_open ON jobs(sent_topic, submitted_ts) WHERE {_OPEN}"
        )
        self._lock = threading.Lock()
        # checkpoints (the WAL copied into the database, with an fsync) run in a thread of
        # their own, on their own connection: inside a commit, under the lock, one stalled
        # every request for 0.65 s in the API load bench
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._path = path
        self._stop = threading.Event()
        threading.Thread(target=self._checkpoints, name="job-book-checkpoint", daemon=True).start()

    def check(self) -> str:
        """Why the book cannot take jobs ('' while it can): its file gone or replaced
        since it was opened. Said once in the log, then kept."""
        if self.fault:
            return self.fault
        try:
            st = os.stat(self._path)
            what = "was replaced by another file" if (
                st.st_dev, st.st_ino) != self._identity else ""  # fmt: skip
        except FileNotFoundError:
            what = "is gone (deleted or moved)"
        if what:
            self.fault = (
                f"the job book {self._path} {what} while the API ran: new jobs are refused. "
                "Put it back and restart the API; a new book forgets every job accepted "
                "before (their status, and their resending should a broker lose them)"
            )
            log.error("%s", self.fault)
        return self.fault

    def _checkpoints(self, every_s: float = 2.0) -> None:
        try:  # mode=rw: never a new, empty file where the book was (it may be gone by now)
            uri = f"file:{quote(str(Path(self._path).absolute()))}?mode=rw"
            db = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error:
            self.check()  # says why
            return
        try:
            while not self._stop.wait(every_s):
                if self.check():
                    return  # a checkpoint would write into whatever is there now
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # busy now: the next one catches up
                    log.warning("job book checkpoint: %s", exc)
        finally:
            db.close()

    def close(self) -> None:
        self._stop.set()

    # -- the API's writes ---------------------------------------------------------------
    def accept(self, tenant: str, job_id: str, fingerprint: str, request: str = "") -> str | None:
        """Enter a new job with its `request` (the JSON sent to Kafka, kept until the
        outcome): None when it is new, else the fingerprint it was entered with (a
        retry: the same request; or the id reused for another one). JobBookGone when
        the book's file is not the one opened."""
        if self.check():
            raise JobBookGone(self.fault)
        now = time.time()
        with self._lock:
            row = self._db.execute(
                "SELECT fingerprint FROM jobs WHERE tenant=? AND job_id=?", (tenant, job_id)
            ).fetchone()
            if row:
                if row[0] == fingerprint and request:  # a retry: fills a book from before
                    self._db.execute(  # requests were kept, for a job still open
                        f"UPDATE jobs SET request=? WHERE tenant=? AND job_id=? AND "
                        f"request='' AND {_OPEN}",
                        (request, tenant, job_id),
                    )
                return row[0]
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO jobs(tenant, job_id, fingerprint, status, submitted_ts, "
                "updated_ts, queued, request) VALUES (?,?,?,?,?,?,0,?)",
                (tenant, job_id, fingerprint, ACCEPTED, now, now, request),
            )
            self._add_event(tenant, job_id, ACCEPTED, {"ts": now})
            self._db.execute("COMMIT")
        return None

    def sent(self, tenant: str, job_id: str, topic: str) -> None:
        """The broker acknowledged this job on the jobs topic whose id is `topic`."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET queued=1, sent_topic=? WHERE tenant=? AND job_id=?",
                (topic, tenant, job_id),
            )

    def needs_send(self, tenant: str, job_id: str, topic: str) -> bool:
        """Whether this job, without an outcome, is not known to be on the jobs topic
        whose id is now `topic`: never acknowledged (the process that entered it stopped
        first), or acknowledged by a broker that has since lost its topics."""
        with self._lock:
            row = self._db.execute(
                f"SELECT queued, sent_topic FROM jobs WHERE tenant=? AND job_id=? AND {_OPEN}",
                (tenant, job_id),
            ).fetchone()
        return bool(row) and (not row[0] or bool(topic) and row[1] != topic)

    def acked(self, tenant: str, job_id: str) -> bool:
        """Whether a broker ever acknowledged this job (or serving saw it): it was
        accepted, and is sent again should that broker have lost it."""
        with self._lock:
            row = self._db.execute(
                "SELECT queued, status FROM jobs WHERE tenant=? AND job_id=?", (tenant, job_id)
            ).fetchone()
        return bool(row and (row[0] or row[1] != ACCEPTED))

    def request_of(self, tenant: str, job_id: str) -> str:
        """The job's request as entered ('' once it has an outcome)."""
        with self._lock:
            row = self._db.execute(
                "SELECT request FROM jobs WHERE tenant=? AND job_id=?", (tenant, job_id)
            ).fetchone()
        return row[0] if row else ""

    def to_resend(self, topic: str, limit: int = 500) -> list[tuple[str, str, str]]:
        """(tenant, job_id, request) of jobs acknowledged on another jobs topic than
        `topic` (the broker lost them) and still without an outcome, oldest first."""
        with self._lock:
            return self._db.execute(
                f"SELECT tenant, job_id, request FROM jobs WHERE {_OPEN} AND queued=1 AND "
                "sent_topic<>? AND request<>'' ORDER BY submitted_ts LIMIT ?",
                (topic, limit),
            ).fetchall()

    def forget(self, tenant: str, job_id: str) -> None:
        """Undo `accept` (the job could not be sent to Kafka)."""
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE tenant=? AND job_id=?", (tenant, job_id))
            self._db.execute("DELETE FROM events WHERE tenant=? AND job_id=?", (tenant, job_id))

    def request_cancel(self, tenant: str, job_id: str) -> str | None:
        """Mark a cancel request; the job's status (None: no such job of this tenant)."""
        with self._lock:
            row = self._db.execute(
                "SELECT status FROM jobs WHERE tenant=? AND job_id=?", (tenant, job_id)
            ).fetchone()
            if row and row[0] not in OUTCOMES:
                self._db.execute(
                    "UPDATE jobs SET cancel_requested=1 WHERE tenant=? AND job_id=?",
                    (tenant, job_id),
                )
        return row[0] if row else None

    # -- serving's events -----------------------------------------------------------------
    def apply(self, msg: dict) -> bool:
        """One event from serving; False when it is not about a job in this book."""
        return bool(self.apply_many([msg]))

    def apply_many(self, msgs: list[dict]) -> list[dict]:
        """Events from serving, in one transaction (the feed hands over what arrived
        together: one commit per batch, not per step); those about jobs in this book."""
        applied = []
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for m in msgs:  # one bad message is skipped, whole; the others count
                    self._db.execute("SAVEPOINT one")
                    try:
                        if self._apply(m):
                            applied.append(m)
                    except Exception:  # noqa: BLE001 - serving's message, not ours to trust
                        self._db.execute("ROLLBACK TO one")
                        log.warning("an event the job book cannot read was skipped")
                    self._db.execute("RELEASE one")
            finally:
                self._db.execute("COMMIT")
        return applied

    def _apply(self, msg: dict) -> bool:
        tenant, job_id, event = msg.get("tenant"), msg.get("job_id"), msg.get("event")
        if not isinstance(tenant, str) or not isinstance(job_id, str) or event is None:
            return False
        data = {k: v for k, v in msg.items() if k not in ("tenant", "job_id", "event")}
        row = self._db.execute(
            "SELECT status FROM jobs WHERE tenant=? AND job_id=?", (tenant, job_id)
        ).fetchone()
        if row is None or row[0] in OUTCOMES:
            return False  # not ours, or already final (an at-least-once repeat)
        if event == "cancelling":  # serving has the cancel request: no new status
            self._add_event(tenant, job_id, event, data)
            return True
        if event == "rejected" and "result" not in data and row[0] != ACCEPTED:
            # a dead letter's rejection (a record serving could not read) naming a job
            # serving already planned from a record it could: another record's claim
            # to this id, never this job's outcome (a dropped job's carries its result)
            return False
        status = _MOVES.get(event, event if event in OUTCOMES else None)
        if status is None:
            return False
        sets, args = ["updated_ts=?"], [time.time()]
        if _RANK[status] >= _RANK[row[0]]:
            sets.append("status=?")
            args.append(status)
        if event == "planned":
            sets += ["plan=?", "accelerator=?", "steps=?"]
            args += [json.dumps(data), data.get("accelerator", ""), data.get("steps", 0)]
        elif event == "started":
            sets.append("device=?")
            args.append(data.get("device", ""))
        elif event == "step":
            sets += ["step=MAX(step, ?)", "steps=?"]
            args += [int(data.get("step", 0)), int(data.get("of", 0))]
        else:
            result = data.get("result") or {"status": event, "error": data.get("error", "")}
            sets.append("request=''")  # ended: nothing left to send again, no prompt kept
            sets.append("result=?")
            args.append(json.dumps(result))
        self._db.execute(
            f"UPDATE jobs SET {', '.join(sets)} WHERE tenant=? AND job_id=?",
            (*args, tenant, job_id),
        )
        self._add_event(tenant, job_id, event, data)
        return True

    def _add_event(self, tenant: str, job_id: str, event: str, data: dict) -> None:
        self._db.execute(
            "INSERT INTO events(tenant, job_id, seq, event, data) SELECT ?, ?, "
            "COALESCE(MAX(seq), -1) + 1, ?, ? FROM events WHERE tenant=? AND job_id=?",
            (tenant, job_id, event, json.dumps(data), tenant, job_id),
        )

    def prune(self, older_than_s: float, limit: int = 500) -> int:
        """Drop the progress events (planned, started, steps) of jobs that ended more than
        `older_than_s` ago, at most `limit` of them per call (short transactions: requests
        wait on none of them for long). The outcome event stays: a stream of an old job
        still ends with it. How many were dropped."""
        cutoff = time.time() - older_than_s
        with self._lock:
            return self._db.execute(
                "DELETE FROM events WHERE rowid IN (SELECT e.rowid FROM jobs j JOIN events e "
                "ON e.tenant = j.tenant AND e.job_id = j.job_id WHERE j.updated_ts < ? AND "
                f"j.status IN {_words(OUTCOMES)} AND e.event NOT IN {_words(OUTCOMES)} LIMIT ?)",
                (cutoff, limit),
            ).rowcount

    # -- reads ------------------------------------------------------------------------------
    def get(self, tenant: str, job_id: str) -> JobView | None:
        with self._lock:
            row = self._db.execute(
                "SELECT job_id, status, submitted_ts, updated_ts, plan, step, steps, result, "
                "cancel_requested FROM jobs WHERE tenant=? AND job_id=?",
                (tenant, job_id),
            ).fetchone()
        return _view(row) if row else None

    def events_after(self, tenant: str, job_id: str, seq: int) -> list[tuple[int, str, dict]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event, data FROM events WHERE tenant=? AND job_id=? AND seq>? "
                "ORDER BY seq",
                (tenant, job_id, seq),
            ).fetchall()
        return [(s, e, json.loads(d)) for s, e, d in rows]

    def list(
        self,
        tenant: str,
        *,
        status: str | None = None,
        limit: int = 50,
        before: float | None = None,
    ) -> list[JobView]:
        """The tenant's jobs, newest first; `before`: submitted before (the next page)."""
        q = (
            "SELECT job_id, status, submitted_ts, updated_ts, plan, step, steps, result, "
            "cancel_requested FROM jobs WHERE tenant=?"
        )
        args: list = [tenant]
        if status:
            q += " AND status=?"
            args.append(status)
        if before is not None:
            q += " AND submitted_ts<?"
            args.append(before)
        q += " ORDER BY submitted_ts DESC, job_id LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        return [_view(r) for r in rows]

    def in_flight(self, tenant: str) -> int:
        """The tenant's jobs really in flight (the in-flight quota): without an outcome,
        and acknowledged by the broker or seen by serving (one entered by a process that
        stopped before the broker acknowledged it was never sent: it does not count)."""
        with self._lock:
            (n,) = self._db.execute(
                f"SELECT COUNT(*) FROM jobs WHERE tenant=? AND {_OPEN} AND "
                f"(queued=1 OR status<>'{ACCEPTED}')",
                (tenant,),
            ).fetchone()
        return n

    def counts(self, tenant: str | None = None) -> dict[str, int]:
        """Jobs per status: one tenant's, or (None) all tenants' (no ids: for metrics
        and the operator view)."""
        return self._grouped("status", "1=1", tenant)

    def queued_by_accelerator(self, tenant: str | None = None) -> dict[str, int]:
        return self._grouped("accelerator", f"status='{PLANNED}'", tenant)

    def running_by_device(self, tenant: str | None = None) -> dict[str, int]:
        return self._grouped("device", f"status='{RUNNING}'", tenant)

    def _grouped(self, column: str, where: str, tenant: str | None) -> dict[str, int]:
        args: tuple = () if tenant is None else (tenant,)
        if tenant is not None:
            where += " AND tenant=?"
        with self._lock:
            rows = self._db.execute(
                f"SELECT {column}, COUNT(*) FROM jobs WHERE {where} GROUP BY {column}", args
            )
            return dict(rows.fetchall())

    def attainment_by_minute(
        self, since_s: float = 3600.0, tenant: str | None = None
    ) -> list[tuple[float, int, int]]:
        """(minute start, outcomes, both SLOs met) for the last hour: one tenant's jobs,
        or (None) all tenants'."""
        q = (
            "SELECT CAST(updated_ts / 60 AS INTEGER) * 60, result FROM jobs "
            f"WHERE NOT {_OPEN} AND updated_ts>?"
        )
        args: list = [time.time() - since_s]
        if tenant is not None:
            q += " AND tenant=?"
            args.append(tenant)
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        out: dict[float, list[int]] = {}
        for minute, body in rows:
            r = json.loads(body)
            c = out.setdefault(float(minute), [0, 0])
            c[0] += 1
            c[1] += bool(r.get("latency_slo_met") and r.get("clip_slo_met"))
        return [(m, n, met) for m, (n, met) in sorted(out.items())]


def _view(row) -> JobView:
    job_id, status, sub, upd, plan, step, steps, result, cancel = row
    return JobView(
        job_id, status, sub, upd, json.loads(plan), step, steps, json.loads(result), bool(cancel)
    )
