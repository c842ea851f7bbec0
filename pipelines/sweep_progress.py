"""Progress of a running sweep, on every runner: cells done / total, the current cell and
an ETA.

Beam runners report nothing while a batch pipeline runs, and workers may be other
processes (Dask) or threads (FnApiRunner). So each worker appends one line per finished
cell to `RUN/.progress` (a short O_APPEND write: lines from several processes do not
interleave), and the driver reads the file and reports: a bar redrawn in place every 2 s
on a terminal, plain lines at most every 15 s in logs and CI, and a last line at the end.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

PROGRESS_FILE = ".progress"
PLAIN_EVERY_S = 15.0


def note_progress(path: str, cell) -> None:
    """One finished cell (never the prompt: its id only)."""
    line = json.dumps(
        {
            "model": cell.model,
            "accelerator": cell.accelerator,
            "steps": cell.steps,
            "batch": cell.batch_size,
            "prompt": cell.prompt.id,
        }
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class SweepProgress:
    """Reads the progress file in a thread while the pipeline runs."""

    def __init__(self, path: Path, total: int, out=print, every_s: float = 2.0, tty=None):
        self.path, self.total, self.out = Path(path), total, out
        self.tty = (out is print and sys.stdout.isatty()) if tty is None else tty
        # a bar is redrawn every 2 s; plain lines (logs, CI) come at most every 15 s
        self.every_s = every_s if self.tty else max(every_s, PLAIN_EVERY_S)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said = 0
        self.start_ts = time.monotonic()

    def line(self) -> str | None:
        """The progress line now, or None when nothing new has finished."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return None
        done = len(lines)
        if done == self._said:
            return None
        self._said = done
        last = json.loads(lines[-1])
        elapsed = time.monotonic() - self.start_ts
        left = elapsed / done * (self.total - done)
        cell = f"{last['model']} {last['steps']} steps b{last['batch']} on {last['accelerator']}"
        pct = 100 * done / self.total
        if self.tty:
            bar = "#" * int(pct // 5) + "." * (20 - int(pct // 5))
            return f"[{bar}] {done}/{self.total} cells, last {cell}, ETA {_eta(left)}"
        return f"profiled {done}/{self.total} cells ({pct:.0f} %), last {cell}, ETA {_eta(left)}"

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._report()

    def _report(self) -> None:
        text = self.line()
        if text is None:
            return
        if self.tty:
            sys.stdout.write("\r" + text.ljust(100))
            sys.stdout.flush()
        else:
            self.out(text)

    def start(self) -> None:
        self.start_ts = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="sweep-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._report()
        if self.tty:
            sys.stdout.write("\n")
