"""What is wrong with a serving process right now: one record its parts report to and
its heartbeat, its log and the API's `/readyz` read from.

A fault is loud, never a silent fresh start: `report` logs it at ERROR, and the serving
heartbeat carries every current fault to the API, whose `/readyz` names them. A fatal
fault (the result store vanished or cannot be written) means the process must stop
taking work; a recovered one (a device engine restarted, its jobs re-queued) stays
listed for `KEEP_RECOVERED_S` so an operator sees it happened.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)
KEEP_RECOVERED_S = 300.0  # a recovered fault stays visible this long


@dataclass(frozen=True)
class Fault:
    part: str  # what failed: "result-store", "engine cpu:0", ...
    reason: str  # what happened and what to do; never a prompt
    fatal: bool  # the process must stop taking work
    ts: float

    def to_json(self) -> dict:
        return {"part": self.part, "reason": self.reason, "fatal": self.fatal, "ts": self.ts}


class Faults:
    """Thread-safe; one per serving process (the runtime's parts and the driver share it)."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self._lock = threading.Lock()
        self._by_part: dict[str, Fault] = {}
        self.changed = threading.Event()  # set on every report: a waiting loop wakes up

    def report(self, part: str, reason: str, *, fatal: bool = False) -> Fault | None:
        """Record and log a fault; None when `part` already has a fatal one (it stays,
        said once: every later failure of a store that is gone says nothing new)."""
        f = Fault(part, reason, fatal, self.clock())
        with self._lock:
            known = self._by_part.get(part)
            if known is not None and known.fatal:
                return None
            self._by_part[part] = f
        log.error("%s: %s%s", part, reason, " (fatal: serving stops taking work)" if fatal else "")
        self.changed.set()
        return f

    def current(self) -> list[Fault]:
        """Fatal faults, and recovered ones younger than KEEP_RECOVERED_S."""
        now = self.clock()
        with self._lock:
            return [f for f in self._by_part.values()
                    if f.fatal or now - f.ts < KEEP_RECOVERED_S]  # fmt: skip

    @property
    def fatal(self) -> Fault | None:
        return next((f for f in self.current() if f.fatal), None)
