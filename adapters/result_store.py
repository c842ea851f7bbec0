"""The durable, per-tenant result store: sqlite (WAL) + image files under
`data/results/<tenant>/`. A job is (tenant, job_id): two tenants may use the same job id
and neither learns of the other. Writes are keyed by it, so a redelivered or
resubmitted job can never produce a second result: the first one wins (INSERT OR IGNORE).

It also holds the dead letters (keyed by their source offset) and which rows have been
published to Kafka, so a crash between "stored" and "published" is repaired on restart.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, fields
from pathlib import Path

from predictor.latency_correction import Observation
from sdaas.errors import NotFoundError, SdaasError
from sdaas.records import JobResult

# 2: results and ledger keyed by (tenant, job_id), not job_id; 3: observations
SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    tenant TEXT NOT NULL,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    stored_ts REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    PRIMARY KEY (tenant, job_id)
);
CREATE TABLE IF NOT EXISTS ledger (   -- one row per jobs-topic record: what became of it
    source TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    job_id TEXT NOT NULL,
    outcome TEXT NOT NULL             -- result | dead_letter | duplicate
);
CREATE TABLE IF NOT EXISTS dead_letters (
    source TEXT PRIMARY KEY,          -- topic/partition/offset of the refused record
    body TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS observations (  -- run time vs the uncorrected prediction
    model_key TEXT NOT NULL,
    accelerator TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    predicted_s REAL NOT NULL,
    observed_s REAL NOT NULL,
    steps INTEGER NOT NULL,           -- 0: unknown
    kind TEXT NOT NULL,               -- job | probe
    predictor TEXT NOT NULL,          -- the latency predictor version that predicted it
    ts REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
"""


# v1 (job_id alone) -> v2: the same rows, now under their tenant
_MIGRATE_V1 = """
ALTER TABLE results RENAME TO results_v1;
ALTER TABLE ledger RENAME TO ledger_v1;
{schema}
INSERT INTO results(tenant, job_id, status, body, published, stored_ts)
    SELECT tenant, job_id, status, body, published, stored_ts FROM results_v1;
INSERT INTO ledger(source, tenant, job_id, outcome)
    SELECT l.source, COALESCE(r.tenant, ''), l.job_id, l.outcome
    FROM ledger_v1 l LEFT JOIN results_v1 r ON r.job_id = l.job_id;
DROP TABLE results_v1;
DROP TABLE ledger_v1;
"""


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Statement by statement: `executescript` would commit the open transaction."""
    for stmt in script.split(";"):
        if stmt.strip():
            db.execute(stmt)


class StoreError(SdaasError):
    """The result store cannot be used as it is; the message says what to do."""


class ResultStore:
    """`create=False`: refuse to make a new, empty store where none is (a reader, or a
    server that has reason to think one existed)."""

    def __init__(self, path: Path, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"no result store at {self.path}: nothing has been served here")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._db() as db:
                db.execute("BEGIN IMMEDIATE")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
                if version == 0 and "results" in tables:
                    _run_script(db, _MIGRATE_V1.format(schema=_SCHEMA))
                elif version > SCHEMA_VERSION:
                    raise StoreError(
                        f"result store {self.path} has schema {version}, newer than this "
                        f"sdaas ({SCHEMA_VERSION}): upgrade sdaas"
                    )
                _run_script(db, _SCHEMA)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"result store {self.path} cannot be opened ({exc}). Restore it from a "
                f"backup, or move it aside (mv {self.path} {self.path}.broken) to start an "
                "empty one: the results and job ids in it are then forgotten"
            ) from None

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
        rows = [(r.tenant, r.job_id, r.status, json.dumps(asdict(r))) for r in results]
        ledger = [(s, r.tenant, r.job_id, "result") for s, r in zip(sources, results, strict=False)]
        with self._db() as db:
            db.execute("BEGIN")
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO results(tenant, job_id, status, body) VALUES (?,?,?,?)",
                rows,
            )
            new = db.total_changes - before
            db.executemany(_LEDGER_INSERT, ledger)
            db.execute("COMMIT")
            return new

    def known(self, jobs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (tenant, job_id)s already have a result."""
        keys = set(jobs)
        if not keys:
            return set()
        with self._db() as db:
            q = "SELECT 1 FROM results WHERE tenant=? AND job_id=?"
            return {k for k in keys if db.execute(q, k).fetchone()}

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

    # -- observed run times (the latency correction's evidence) ---------------------------
    def observe(
        self, observations: Iterable[Observation], kind: str = "job", predictor: str = ""
    ) -> None:
        """`predictor`: the version of the latency predictor whose predictions these are;
        a retrained predictor starts from no evidence."""
        rows = [
            (*o.key, o.predicted_s, o.observed_s, o.steps, kind, predictor) for o in observations
        ]
        with self._db() as db:
            db.executemany(
                "INSERT INTO observations(model_key, accelerator, batch_size, predicted_s, "
                "observed_s, steps, kind, predictor) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def observations(self, predictor: str = "", limit: int = 5000) -> list[Observation]:
        """The last `limit` observations of `predictor`'s predictions, oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT model_key, accelerator, batch_size, predicted_s, observed_s, steps "
                "FROM observations WHERE predictor = ? ORDER BY rowid DESC LIMIT ?",
                (predictor, limit),
            ).fetchall()
        return [Observation((m, a, int(b)), p, o, int(n)) for m, a, b, p, o, n in reversed(rows)]

    def count(self) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    # -- dead letters ----------------------------------------------------------------
    def put_dead_letters(self, letters: Iterable[dict]) -> int:
        """Store dead letters and, in the same transaction, their ledger rows."""
        letters = list(letters)
        rows = [(d["source"], json.dumps(d)) for d in letters]
        ledger = [
            (d["source"], d.get("tenant", ""), d.get("job_id", ""), "dead_letter") for d in letters
        ]
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
    def record(self, entries: Iterable[tuple[str, str, str, str]]) -> None:
        """(source, tenant, job_id, outcome) per input record; the first outcome stands."""
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
                "SELECT r.body FROM ledger l "
                "JOIN results r ON r.tenant = l.tenant AND r.job_id = l.job_id "
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

    def mark_published(self, jobs: list[tuple[str, str]], sources: list[str]) -> None:
        """jobs: (tenant, job_id) of the results published; sources: of the dead letters."""
        with self._db() as db:
            db.executemany("UPDATE results SET published=1 WHERE tenant=? AND job_id=?", jobs)
            db.executemany(
                "UPDATE dead_letters SET published=1 WHERE source=?", [(s,) for s in sources]
            )


_LEDGER_INSERT = "INSERT OR IGNORE INTO ledger(source, tenant, job_id, outcome) VALUES (?,?,?,?)"
_FIELDS = {f.name for f in fields(JobResult)}


def _result(body: str) -> JobResult:
    d = json.loads(body)
    return JobResult(**{k: v for k, v in d.items() if k in _FIELDS})
