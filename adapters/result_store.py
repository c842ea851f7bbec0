"""The durable, per-tenant result store: sqlite (WAL) + image files under
`data/results/<tenant>/`. A job is (tenant, job_id): two tenants may use the same job id
and neither learns of the other. Writes are keyed by it, so a redelivered or
resubmitted job can never produce a second result: the first one wins (INSERT OR IGNORE).

It also holds the dead letters (keyed by their source offset) and which rows have been
published to Kafka, so a crash between "stored" and "published" is repaired on restart.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from urllib.parse import quote

from predictor.latency_correction import Observation
from sdaas.errors import NotFoundError, SdaasError
from sdaas.records import JobResult

# 2: results and ledger keyed by (tenant, job_id), not job_id; 3: observations; 4: batch
# costs (a store at 3 gets the table on open: `CREATE TABLE IF NOT EXISTS`)
SCHEMA_VERSION = 4
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
CREATE TABLE IF NOT EXISTS batch_costs (  -- a batch of b's time over one job's, measured
    predictor TEXT NOT NULL,          -- the latency predictor version serving ran under
    model_key TEXT NOT NULL,
    accelerator TEXT NOT NULL,        -- the device kind (profile name)
    batch_size INTEGER NOT NULL,
    cost REAL NOT NULL,
    steps INTEGER NOT NULL,           -- the step count it was measured at
    PRIMARY KEY (predictor, model_key, accelerator, batch_size)
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


# the stores this process has written to: path -> (st_dev, st_ino) of the file it opened.
# A store that vanishes is never created anew here (a fresh store forgets every answered
# job id), unless the operator says so (`fresh`: --new-store).
_OPENED: dict[str, tuple[int, int]] = {}
_OPENED_LOCK = threading.Lock()
_SIDE_FILES = ("", "-wal", "-shm")
_UNWRITABLE = ("readonly", "disk i/o error", "disk is full", "unable to open database file")
_DAMAGED = ("file is not a database", "malformed", "no such table")


class ResultStore:
    """`create=False`: refuse to make a new, empty store where none is (a reader, or a
    server that has reason to think one existed).

    Once open, a store is that file for good: a connection never creates one
    (`mode=rw`), and one deleted or replaced meanwhile raises StoreError instead of
    starting afresh (an empty store forgets every answered job id). A connection stays
    open for the store's life (`_pin`): it holds the file's inode, so a new file at the
    path cannot reuse its number and pass for it, and the WAL open, so a use neither
    checkpoints and deletes it at its end nor needs to write to read. A store that takes
    no writes raises StoreError too, never a SIGBUS (`_refuse_unwritable`)."""

    def __init__(self, path: Path, *, create: bool = True, fresh: bool = False):
        self.path = Path(path)
        self._key = str(self.path.resolve())
        self._writer = create
        if not self.path.exists():
            if not create:
                raise StoreError(f"no result store at {self.path}: nothing has been served here")
            if self._key in _OPENED and not fresh:
                raise StoreError(self._lost("is gone (deleted or moved)"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if create:
            self._refuse_unwritable()
        try:
            self._pin = self._connect("rwc" if create else "rw")
            st = os.stat(self.path)
            self.identity = (st.st_dev, st.st_ino)
            if create and not fresh:
                self._refuse_replaced()  # before a migration could touch another file
            self._migrate()
            self._pin.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc) or StoreError(
                f"result store {self.path} cannot be opened ({exc}). Restore it from a "
                f"backup, or move it aside (mv {self.path} {self.path}.broken) to start an "
                "empty one: the results and job ids in it are then forgotten"
            ) from None
        if create:
            with _OPENED_LOCK:
                _OPENED[self._key] = self.identity

    def _migrate(self) -> None:
        with self._db() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return  # current: no write (a reader or an unwritable store stays usable)
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

    def _refuse_replaced(self) -> None:
        """Another file where this process had its store: never taken for it."""
        with _OPENED_LOCK:
            known = _OPENED.get(self._key)
        if known is not None and known != self.identity:
            raise StoreError(self._lost("was replaced by another file"))

    def _refuse_unwritable(self) -> None:
        """Before each use: sqlite writes into its WAL index (-shm) through a shared
        mapping, even to read, and a write there to a file made immutable (or on a
        read-only mount) is a SIGBUS, not an error. access(2) sees both, even as root."""
        for end in _SIDE_FILES:
            f = Path(f"{self.path}{end}")
            if f.exists() and not os.access(f, os.W_OK):
                raise self._unwritable(f"{f.name}: not writable")

    def _connect(self, mode: str) -> sqlite3.Connection:
        uri = f"file:{quote(str(self.path.absolute()))}?mode={mode}"
        db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None,
                             check_same_thread=False)  # fmt: skip
        db.execute("PRAGMA mmap_size=0")  # reads by read(2): a failing disk is an error
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _check_identity(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StoreError(self._lost("is gone (deleted or moved)")) from None
        if (st.st_dev, st.st_ino) != self.identity:
            raise StoreError(self._lost("was replaced by another file"))

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection to the file this store opened, never a new one; a store gone,
        replaced or failing raises StoreError. Commits at the end, rolls back on error."""
        self._check_identity()
        if self._writer:
            self._refuse_unwritable()
        try:
            db = self._connect("rw")
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc) or exc from None
        try:
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            failed = self._failed(exc)
            if failed is None:
                raise
            raise failed from None
        finally:
            db.close()

    def check(self) -> None:
        """A real write (one synced page): the store is still the file opened and takes
        writes; raises StoreError if not. Serving checks this before each window."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")

    def _failed(self, exc: sqlite3.DatabaseError) -> StoreError | None:
        """The StoreError a sqlite error means (None: not the store's fault, e.g. busy)."""
        msg = str(exc).lower()
        if not self.path.exists():
            return StoreError(self._lost("is gone (deleted or moved)"))
        if any(m in msg for m in _UNWRITABLE):
            return self._unwritable(str(exc))
        if any(m in msg for m in _DAMAGED):
            return StoreError(
                f"result store {self.path} is damaged ({exc}). Restore it from a backup, "
                f"or move it aside (mv {self.path} {self.path}.broken) and restart "
                "`sdaas serve` with --new-store: the results and job ids in it are then "
                "forgotten"
            )
        return None

    def _unwritable(self, why: str) -> StoreError:
        return StoreError(
            f"the result store {self.path} cannot be written ({why}). Make it writable "
            "again (a full disk? a read-only mount? `lsattr` shows an immutable flag), "
            "then restart `sdaas serve`: the jobs it could not store are read again from "
            "Kafka, none is lost"
        )

    def _lost(self, what: str) -> str:
        return (
            f"the result store {self.path} {what} while in use: serving will not go on "
            "with a new, empty one. Restore it (with its -wal file) and restart `sdaas "
            "serve`; or restart it with --new-store to start empty, knowing that jobs "
            "answered before would then run again"
        )

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
        """The last `limit` observations of `predictor`'s predictions, oldest first, each
        with when it was stored (unix seconds: what the host drift is timed by)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT model_key, accelerator, batch_size, predicted_s, observed_s, steps, ts "
                "FROM observations WHERE predictor = ? ORDER BY rowid DESC LIMIT ?",
                (predictor, limit),
            ).fetchall()
        return [
            Observation((m, a, int(b)), p, o, int(n), t) for m, a, b, p, o, n, t in reversed(rows)
        ]

    def put_batch_costs(self, predictor: str, model_key: str, accelerator: str, steps: int,
                        costs: dict[int, float]) -> None:  # fmt: skip
        """What serving measured a batch of each size to cost on a device kind, kept so
        that the next start under the same predictor need not measure it again."""
        rows = [(predictor, model_key, accelerator, b, c, steps) for b, c in costs.items()]
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO batch_costs VALUES (?, ?, ?, ?, ?, ?)", rows)

    def batch_costs(self, predictor: str) -> dict[tuple[str, str], dict[int, float]]:
        """(model_key, accelerator) -> {batch size: cost} measured under `predictor`."""
        with self._db() as db:
            rows = db.execute(
                "SELECT model_key, accelerator, batch_size, cost FROM batch_costs "
                "WHERE predictor = ?",
                (predictor,),
            ).fetchall()
        out: dict[tuple[str, str], dict[int, float]] = {}
        for m, a, b, c in rows:
            out.setdefault((m, a), {})[int(b)] = c
        return out

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
