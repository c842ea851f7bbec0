"""The model registry: every validated card version, durable across restarts.

Stored in sqlite so that concurrent writers (two `sdaas models register` at
once, a serving process reading while a developer registers) are serialised by
the database's own locking instead of by hand-rolled file locks. A card is
validated completely before the write transaction opens, so a refused card
never changes the store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from models.card import CardError, ModelCard, Problem, load_card, validate_card
from sdaas.errors import NotFoundError, SdaasError
from sdaas.records import model_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cards (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    registered_at REAL NOT NULL,
    card_json TEXT NOT NULL,
    UNIQUE (name, version)
);
"""


@dataclass(frozen=True)
class RegisteredModel:
    """A card as stored: the card plus when it was registered (registration order = seq)."""

    card: ModelCard
    registered_at: float
    seq: int


class Registry:
    """File-backed store of model cards. Cheap to construct; opens a connection per call."""

    def __init__(self, path: Path, *, model_roots: tuple[Path, ...] = ()):
        self.path = Path(path)
        self.model_roots = model_roots
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            yield conn
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise SdaasError(
                    f"the model registry {self.path} is damaged ({exc}): restore it from a "
                    f"backup, or move it aside (mv {self.path} {self.path}.broken) and "
                    "register the models again"
                ) from None
            raise
        finally:
            conn.close()

    # -- writes ---------------------------------------------------------------------------
    def check_file(self, card_path: Path, *, exist_ok: bool = False) -> ModelCard:
        """Validate a card file as `register_file` would, duplicates included; writes nothing."""
        try:
            card = load_card(card_path, model_roots=self.model_roots)
        except CardError as exc:
            exc.problems.extend(self._duplicate_problems_raw(card_path))
            raise CardError(exc.source, exc.problems) from None
        try:
            existing = self.get(card.name, card.version)
        except NotFoundError:
            return card
        if not (exist_ok and existing == card):
            raise CardError(str(card_path), [self._duplicate_problem(card.name, card.version)])
        return card

    def register_file(self, card_path: Path, *, exist_ok: bool = False) -> RegisteredModel:
        """Validate a card file and register it. Refusals name every problem, duplicates too."""
        card = self.check_file(card_path, exist_ok=exist_ok)
        return self.register(card, exist_ok=exist_ok, source=str(card_path))

    def register(
        self, card: ModelCard, *, exist_ok: bool = False, source: str = "<card>"
    ) -> RegisteredModel:
        """Register a validated card. Re-validates it (the path roots may differ).

        exist_ok: an identical card already under the same name+version is fine (idempotent
        re-registration); a *different* card under the same name+version is always refused.
        """
        card = validate_card(
            card.model_dump(mode="json", exclude_none=True),
            source=source,
            model_roots=self.model_roots,
        )
        payload = card.model_dump_json(exclude_none=True)
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT seq, registered_at, card_json FROM cards WHERE name=? AND version=?",
                    (card.name, card.version),
                ).fetchone()
                if row is not None:
                    conn.execute("ROLLBACK")
                    if exist_ok and json.loads(row[2]) == json.loads(payload):
                        return RegisteredModel(card, row[1], row[0])
                    raise CardError(source, [self._duplicate_problem(card.name, card.version)])
                now = time.time()
                cur = conn.execute(
                    "INSERT INTO cards (name, version, registered_at, card_json) VALUES (?,?,?,?)",
                    (card.name, card.version, now, payload),
                )
                conn.execute("COMMIT")
                return RegisteredModel(card, now, int(cur.lastrowid))
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def remove(self, name: str, version: str | None = None) -> int:
        """Remove one version, or every version of a name. Returns how many were removed."""
        with self._connect() as conn:
            if version is None:
                n = conn.execute("DELETE FROM cards WHERE name=?", (name,)).rowcount
            else:
                n = conn.execute(
                    "DELETE FROM cards WHERE name=? AND version=?", (name, version)
                ).rowcount
        if n == 0:
            what = model_key(name, version) if version else name
            raise NotFoundError(f"no registered model {what}; {self._known_hint()}")
        return n

    # -- reads ----------------------------------------------------------------------------
    def _rows(self, where: str = "", args: tuple = ()) -> list[RegisteredModel]:
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT seq, registered_at, card_json FROM cards {where} ORDER BY seq", args
            ).fetchall()
        return [RegisteredModel(ModelCard.model_validate_json(j), t, s) for s, t, j in rows]

    def versions(self, name: str) -> list[RegisteredModel]:
        """Every registered version of `name`, oldest first."""
        return self._rows("WHERE name=?", (name,))

    def get(self, name: str, version: str | None = None) -> ModelCard:
        """The named version, or the most recently registered one."""
        found = self.versions(name)
        if version is not None:
            found = [r for r in found if r.card.version == version]
        if not found:
            what = model_key(name, version) if version else name
            raise NotFoundError(f"no registered model {what}; {self._known_hint()}")
        return found[-1].card

    def list(self, style: str | None = None) -> list[RegisteredModel]:
        """The latest version of every name (optionally only those serving `style`), by name."""
        latest: dict[str, RegisteredModel] = {}
        for r in self._rows():
            latest[r.card.name] = r
        out = sorted(latest.values(), key=lambda r: r.card.name)
        if style is not None:
            out = [r for r in out if style in r.card.styles]
        return out

    def styles(self) -> list[str]:
        return sorted({s for r in self.list() for s in r.card.styles})

    # -- helpers --------------------------------------------------------------------------
    def _known_hint(self) -> str:
        names = [r.card.name for r in self.list()]
        return f"registered: {', '.join(names)}" if names else "the registry is empty"

    @staticmethod
    def _duplicate_problem(name: str, version: str) -> Problem:
        return Problem(
            "version",
            version,
            f"{model_key(name, version)} is already registered; "
            "bump the version to register a change",
        )

    def _duplicate_problems_raw(self, card_path: Path) -> list[Problem]:
        """Duplicate check on an invalid card, so it is reported alongside the other problems."""
        try:
            data = yaml.safe_load(Path(card_path).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):  # load_card says why
            return []
        if not isinstance(data, dict):
            return []
        name, version = data.get("name"), data.get("version")
        if not (isinstance(name, str) and isinstance(version, str)):
            return []
        with self._connect() as conn:
            hit = conn.execute(
                "SELECT 1 FROM cards WHERE name=? AND version=?", (name, version)
            ).fetchone()
        return [self._duplicate_problem(name, version)] if hit else []
