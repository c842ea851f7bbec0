"""The durable, per-tenant result store: sqlite (WAL) + image files under
`data/results/<tenant>/`. Writes are keyed by `job_id`, so a redelivered or resubmitted
job can never produce a second result: the first one wins (INSERT OR IGNORE).

It also holds the dead letters (keyed by their source offset) and which rows have been
published to Kafka, so a crash between "stored" and "published" is repaired on restart.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, fields
from pathlib import Path

from sdaas.errors import NotFoundError
from sdaas.records import JobResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    stored_ts REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE INDEX IF NOT EXISTS results_tenant ON results(tenant);
CREATE TABLE IF NOT EXISTS ledger (   -- one row per jobs-topic record: what became of it
    source TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    outcome TEXT NOT NULL             -- result | dead_letter | duplicate
);
CREATE TABLE IF NOT EXISTS dead_letters (
    source TEXT PRIMARY KEY,          -- topic/partition/offset of the refused record
    body TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
"""


class ResultStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    @property
    def images_dir(self) -> Path:
        return self.path.parent

    def image_path(self, tenant: str, job_id: str) -> Path:
        return self.images_dir / tenant / f"{job_id}.png"

    # -- results ---------------------------------------------------------------------
    def put(self, results: Iterable[JobResult], sources: Iterable[str] = ()) -> int:
        """Store results; returns how many were new (a known job_id is left as it is).
        `sources`: the input record of each result, entered in the ledger in the same
        transaction as the result itself."""
        results = list(results)
        rows = [(r.job_id, r.tenant, r.status, json.dumps(asdict(r))) for r in results]
        ledger = [(s, r.job_id, "result") for s, r in zip(sources, results, strict=False)]
        with self._db() as db:
            db.execute("BEGIN")
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO results(job_id, tenant, status, body) VALUES (?,?,?,?)",
                rows,
            )
            new = db.total_changes - before
            db.executemany(_LEDGER_INSERT, ledger)
            db.execute("COMMIT")
            return new

    def known(self, job_ids: Iterable[str]) -> set[str]:
        ids = list(job_ids)
        if not ids:
            return set()
        with self._db() as db:
            marks = ",".join("?" * len(ids))
            return {
                r[0]
                for r in db.execute(f"SELECT job_id FROM results WHERE job_id IN ({marks})", ids)
            }

    def get(self, tenant: str, job_id: str) -> JobResult:
        """A tenant's own result; another tenant's job is 'not found', never shown."""
        with self._db() as db:
            row = db.execute(
                "SELECT body FROM results WHERE job_id=? AND tenant=?", (job_id, tenant)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"job {job_id!r}: no result for tenant {tenant!r} (yet)")
        return _result(row[0])

    def for_tenant(self, tenant: str) -> list[JobResult]:
        with self._db() as db:
            rows = db.execute(
                "SELECT body FROM results WHERE tenant=? ORDER BY stored_ts, job_id", (tenant,)
            ).fetchall()
        return [_result(r[0]) for r in rows]

    def all(self) -> list[JobResult]:
        with self._db() as db:
            rows = db.execute("SELECT body FROM results ORDER BY stored_ts, job_id").fetchall()
        return [_result(r[0]) for r in rows]

    def recent_done(self, limit: int) -> list[JobResult]:
        """The last `limit` finished jobs, oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT body FROM results WHERE status='done' ORDER BY stored_ts DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_result(r[0]) for r in reversed(rows)]

    def count(self) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    # -- dead letters ----------------------------------------------------------------
    def put_dead_letters(self, letters: Iterable[dict]) -> int:
        """Store dead letters and, in the same transaction, their ledger rows."""
        letters = list(letters)
        rows = [(d["source"], json.dumps(d)) for d in letters]
        ledger = [(d["source"], d.get("job_id", ""), "dead_letter") for d in letters]
        with self._db() as db:
            db.execute("BEGIN")
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO dead_letters(source, body) VALUES (?,?)", rows)
            new = db.total_changes - before
            db.executemany(_LEDGER_INSERT, ledger)
            db.execute("COMMIT")
            return new

    def dead_letters(self) -> list[dict]:
        with self._db() as db:
            return [json.loads(r[0]) for r in db.execute("SELECT body FROM dead_letters")]

    # -- the ledger: every input record accounted for ----------------------------------
    def record(self, entries: Iterable[tuple[str, str, str]]) -> None:
        """(source, job_id, outcome) per input record; the first outcome stands."""
        with self._db() as db:
            db.executemany(_LEDGER_INSERT, entries)

    def outcomes(self, sources: list[str]) -> dict[str, str]:
        if not sources:
            return {}
        with self._db() as db:
            marks = ",".join("?" * len(sources))
            q = f"SELECT source, outcome FROM ledger WHERE source IN ({marks})"
            return dict(db.execute(q, sources).fetchall())

    def results_for_sources(self, sources: list[str]) -> list[JobResult]:
        """The results that the given input records produced (not their duplicates)."""
        if not sources:
            return []
        with self._db() as db:
            marks = ",".join("?" * len(sources))
            rows = db.execute(
                "SELECT r.body FROM ledger l JOIN results r ON r.job_id = l.job_id "
                f"WHERE l.outcome = 'result' AND l.source IN ({marks})",
                sources,
            ).fetchall()
        return [_result(r[0]) for r in rows]

    # -- publishing ------------------------------------------------------------------
    def unpublished(self) -> tuple[list[JobResult], list[dict]]:
        with self._db() as db:
            res = db.execute("SELECT body FROM results WHERE published=0").fetchall()
            dl = db.execute("SELECT body FROM dead_letters WHERE published=0").fetchall()
        return [_result(r[0]) for r in res], [json.loads(r[0]) for r in dl]

    def mark_published(self, job_ids: list[str], sources: list[str]) -> None:
        with self._db() as db:
            db.executemany("UPDATE results SET published=1 WHERE job_id=?", [(j,) for j in job_ids])
            db.executemany(
                "UPDATE dead_letters SET published=1 WHERE source=?", [(s,) for s in sources]
            )


_LEDGER_INSERT = "INSERT OR IGNORE INTO ledger(source, job_id, outcome) VALUES (?,?,?)"
_FIELDS = {f.name for f in fields(JobResult)}


def _result(body: str) -> JobResult:
    d = json.loads(body)
    return JobResult(**{k: v for k, v in d.items() if k in _FIELDS})
