"""Tenants and their API keys. A key is shown once, when it is made; only a salted
scrypt hash is stored, so a copy of the database gives nobody a key.

A key reads `sdaas_<key id>.<secret>`: the key id finds the row without trying every
hash, the secret (32 random bytes) is what scrypt checks. Checking costs tens of
milliseconds by design, so a key that was checked once is remembered in this process
(by its SHA-256, never the key itself) for CACHE_S, so later requests cost a dictionary
look-up. Revocation is immediate all the same: every look-up first asks sqlite whether
another process wrote the tenants table since (`PRAGMA data_version`, a counter read
without touching the table), and a write (`sdaas tenants revoke` in another process)
empties the cache, so the next request of a revoked key is checked afresh.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from sdaas.errors import InvalidInputError
from sdaas.limits import id_problem, show

PREFIX = "sdaas_"
CACHE_S = 60.0  # how long a checked key is remembered (a revocation empties the cache)
MAX_CACHED = 100_000  # keys remembered (right and wrong) before the cache starts over
# scrypt cost: n=2**14, r=8, p=1 (16 MiB, ~50 ms here): the interactive-login figure of
# the scrypt paper; keys are random, so this guards against a stolen database only
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    created_ts REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    operator INTEGER NOT NULL DEFAULT 0
);
"""


def _digest(key: str | None) -> bytes | None:
    """The cache's name for a key (its SHA-256); None for one that cannot be a key."""
    if not key or not key.startswith(PREFIX) or "." not in key or len(key) > 200:
        return None
    return hashlib.sha256(key.encode()).digest()


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **SCRYPT)


class TenantKeys:
    """The tenants table (sqlite): create a tenant's key, check a presented key."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(tenants)")}
        if "operator" not in columns:  # a tenants table from before operator keys
            self._db.execute("ALTER TABLE tenants ADD COLUMN operator INTEGER NOT NULL DEFAULT 0")
        self._lock = threading.Lock()
        # sha256(key) -> (tenant or None for a wrong key, operator key?, when checked)
        self._checked: dict[bytes, tuple[str | None, bool, float]] = {}
        self._flights: dict[bytes, threading.Lock] = {}
        self._version = self._db.execute("PRAGMA data_version").fetchone()[0]

    def create(self, tenant: str, operator: bool = False) -> str:
        """A new key for `tenant` (a tenant may hold several); returned once, never stored.
        An operator key also reads what spans tenants (/metrics names them)."""
        why = id_problem(tenant)
        if why:
            raise InvalidInputError(f"tenant: {show(tenant)}: {why}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._lock:
            self._db.execute(
                "INSERT INTO tenants(key_id, tenant, salt, hash, created_ts, operator) "
                "VALUES (?,?,?,?,?,?)",
                (key_id, tenant, salt, _hash(secret, salt), time.time(), int(operator)),
            )
        return f"{PREFIX}{key_id}.{secret}"

    def cached(self, key: str | None) -> tuple[bool, str | None]:
        """(known, tenant) from the cache alone: (True, None) for a malformed key or one
        that failed within CACHE_S; (False, None) when only `tenant_of` (an scrypt) can
        tell. Cheap enough for the event loop."""
        digest = _digest(key)
        if digest is None:
            return True, None
        with self._lock:
            hit = self._fresh(digest)
        return (True, hit[0]) if hit else (False, None)

    def is_operator(self, key: str) -> bool:
        """Whether a key is a valid operator's."""
        return self._check(key)[1]

    def tenant_of(self, key: str | None) -> str | None:
        """The tenant a presented key belongs to, or None (unknown, malformed, revoked).
        Both answers are cached for CACHE_S: a wrong key presented again and again costs
        one scrypt, not one per request."""
        return self._check(key)[0]

    def _fresh(self, digest: bytes) -> tuple[str | None, bool, float] | None:
        """A cached check, unless another process wrote the tenants table since (a key
        revoked there stops working at its next request here)."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._version, self._checked = version, {}
            return None
        hit = self._checked.get(digest)
        return hit if hit and time.monotonic() - hit[2] < CACHE_S else None

    def _check(self, key: str | None) -> tuple[str | None, bool]:
        """(tenant or None, operator key?), from the cache or by scrypt."""
        digest = _digest(key)
        if digest is None:
            return None, False
        with self._lock:
            if hit := self._fresh(digest):
                return hit[0], hit[1]
            # one check per key at a time: 200 clients presenting a new key at once pay
            # one scrypt, not 200
            flight = self._flights.setdefault(digest, threading.Lock())
        with flight:
            with self._lock:
                if hit := self._fresh(digest):
                    return hit[0], hit[1]
                key_id, _, secret = key[len(PREFIX) :].partition(".")
                row = self._db.execute(
                    "SELECT tenant, salt, hash, operator FROM tenants "
                    "WHERE key_id = ? AND revoked = 0",
                    (key_id,),
                ).fetchone()
            ok = row is not None and hmac.compare_digest(_hash(secret, row[1]), row[2])
            tenant, operator = (row[0], bool(row[3])) if ok else (None, False)
            with self._lock:
                self._flights.pop(digest, None)
                if len(self._checked) >= MAX_CACHED:  # many distinct wrong keys: start over
                    self._checked = {}
                self._checked[digest] = (tenant, operator, time.monotonic())
        return tenant, operator

    def tenants(self) -> list[tuple[str, int, float, int]]:
        """(tenant, active keys, first created, of them operator keys) for `sdaas tenants
        list`."""
        with self._lock:
            return self._db.execute(
                "SELECT tenant, COUNT(*), MIN(created_ts), SUM(operator) FROM tenants "
                "WHERE revoked = 0 GROUP BY tenant ORDER BY tenant"
            ).fetchall()

    def revoke(self, tenant: str) -> int:
        """Revoke every key of `tenant`; how many."""
        with self._lock:
            n = self._db.execute(
                "UPDATE tenants SET revoked = 1 WHERE tenant = ? AND revoked = 0", (tenant,)
            ).rowcount
            self._checked = {d: v for d, v in self._checked.items() if v[0] != tenant}
        return n
