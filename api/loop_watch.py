"""A watchdog on the API's event loop: every request waits while the loop is blocked,
so a stall is worth a log line saying where the loop was (code frames only: no request
data) and a histogram of how late the loop ticked (`sdaas_api_loop_lag_seconds`)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

log = logging.getLogger(__name__)


class LoopWatch:
    """A task ticks every `tick_s`; a thread looks every `tick_s` and, when the last tick
    is older than `stall_s`, logs the loop thread's stack once per stall."""

    def __init__(self, lag_histogram=None, tick_s: float = 0.01, stall_s: float = 0.1):
        self.lag, self.tick_s, self.stall_s = lag_histogram, tick_s, stall_s
        self._last = time.monotonic()
        self._cpu = time.process_time()  # this process's CPU time at the last tick
        self._stop = threading.Event()
        self._task: asyncio.Task | None = None
        self._ident: int | None = None
        self.stalls = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._ident = threading.get_ident()  # called on the loop's thread
        self._task = loop.create_task(self._ticks())
        threading.Thread(target=self._watch, name="api-loop-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()

    async def _ticks(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            self._cpu = time.process_time()
            self._last = now
            if self.lag is not None:
                self.lag.observe(max(0.0, now - t - self.tick_s))

    def _watch(self) -> None:
        reported = None
        while not self._stop.wait(self.tick_s):
            last, cpu = self._last, self._cpu
            behind = time.monotonic() - last
            if behind < self.stall_s or reported == last:
                continue
            reported = last
            self.stalls += 1
            frame = sys._current_frames().get(self._ident)
            where = "".join(traceback.format_stack(frame, limit=12)) if frame else "?"
            # CPU time well below the stall: the process waited for a core (a busy host)
            # or for the GIL, rather than working
            used = time.process_time() - cpu
            log.warning("API event loop blocked for %.0f ms so far (the process used %.0f ms of "
                        "CPU meanwhile), at:\n%s", behind * 1e3, used * 1e3, where)  # fmt: skip
