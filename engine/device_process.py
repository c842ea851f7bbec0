"""A device engine in a process of its own: what makes several devices run at once.

Measured on this host (toy-m, 20 steps): two device engines as threads of one process
run 0.94x the jobs/s of one (the GIL serialises the Python between torch calls), and a
torch call with 2 intra-op threads is about 3x slower from a non-main thread than from
the main thread (two OpenMP teams on 2 cores). So each device engine here runs in the
main thread of a spawned process that loads the models itself; the serving process
keeps a proxy (`DeviceProcess`, a `scheduler.live.DeviceSlot`) that forwards segments
and interrupts over a pipe and hands the worker's events and segment ends to the core,
in order. GPU servers run one process per GPU for the same reasons.

A crash is loud and recovered, never a silent hang: if the worker dies, or the pipe
reader fails to handle one of its messages (a bug in the core or an event handler), the
reader logs it with its traceback, starts a fresh worker, gives the core the jobs the
old one held (they run again from step 0; one whose "done" went out is never re-run)
and reports the fault (`on_fault`: the runtime's `sdaas.health.Faults.report`, shown by
`/readyz`). A job in `scheduler.live.MAX_CRASHES` crashes fails instead, and a device
that cannot restart (or crashed `Restarts.limit` times in its window) leaves service:
its jobs fail ("device engine X crashed: ..."), serving goes on on the other devices.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
import traceback
from dataclasses import replace

from engine.device_engine import Crash, DeviceEngine, OnFault, Restarts, brief, recover
from scheduler.live import FAILED, LiveCore, SegmentJob, SegmentOutcome
from scheduler.simulator import DONE
from sdaas.health import Faults

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 300.0  # importing torch and loading the models, on a busy host


class DeviceProcess:
    """The serving process's side of one device engine process."""

    def __init__(self, index: int, core: LiveCore, cards: dict, models: list[str],
                 request_of, on_event, *, device: str, name: str = "",
                 threads: int | None = None, max_resident: int | None = None,
                 on_fault: OnFault | None = None):  # fmt: skip
        self.index, self.core, self.request_of, self.on_event = index, core, request_of, on_event
        self.name, self.on_fault = name or str(index), on_fault or Faults().report
        self._worker_args = (index, {k: cards[k] for k in models}, models, device, threads,
                             max_resident)  # fmt: skip
        self.conn, self.proc = self._spawn()
        self.jobs: dict[int, SegmentJob] = {}
        self.segment: list[int] = []  # what the worker runs
        self.ended: dict[int, int] = {}  # jobs whose done/failed went out, not yet settled
        self.dead = False  # out of service: it crashed and could not restart
        self.stopping = False
        self.restarting = False  # segments wait for the fresh worker (`_crashed`)
        self.restarts = Restarts()
        self.crash_cause = ""  # why this side killed the worker, for its crash report
        self._send_lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._probe_box: dict = {}
        self._probe_done = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"sdaas-device-{index}-pipe",
                                        daemon=True)  # fmt: skip

    def _spawn(self):
        """A pipe and a worker process on its other end, not started."""
        ctx = mp.get_context("spawn")  # never fork a process with torch's threads running
        conn, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(child, *self._worker_args),
                           name=f"sdaas-device-{self.name}", daemon=True)  # fmt: skip
        return conn, proc

    def start(self) -> DeviceProcess:
        self._boot()
        self._reader.start()
        return self

    def _boot(self) -> None:
        """Start the worker; return when it has loaded its models."""
        self.proc.start()
        if not self.conn.poll(READY_TIMEOUT_S):
            raise RuntimeError(f"device process {self.index} did not start")
        try:
            msg = self.conn.recv()
        except EOFError:
            self.proc.join(5)
            raise RuntimeError(
                f"device process {self.index} exited before it was ready (exit code "
                f"{self.proc.exitcode}); a script that starts serving needs the "
                "`if __name__ == '__main__':` guard (processes are spawned)"
            ) from None
        if msg[0] != "ready":
            raise RuntimeError(f"device process {self.index} failed to start: {msg[1]}")

    def stop(self, timeout: float | None = None) -> None:
        self.stopping = True
        self._send(("stop",))
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()

    # -- DeviceSlot ---------------------------------------------------------------------
    def start_segment(self, jobs: list[SegmentJob], steps: int) -> None:
        for sj in jobs:
            self.jobs[sj.index] = sj
        self.segment = [sj.index for sj in jobs]
        if self.restarting:  # the core gives it back with the others (requeue_device)
            return
        if self.dead:  # answer from another thread: we hold the core's lock here
            threading.Thread(target=self._fail_segment, daemon=True).start()
            return
        try:
            sent = [SegmentJob(sj.index, sj.model, sj.steps, self.request_of(sj)) for sj in jobs]
            self._send(("segment", sent, steps))
        except Exception as exc:  # noqa: BLE001 - the reader restarts the worker
            log.exception("device engine %s: sending a segment failed", self.name)
            self.crash_cause = f"sending a segment failed ({brief(exc)})"
            self.proc.kill()

    def interrupt(self) -> None:
        self._send(("cut",))

    def time_job(self, model_key: str, request, steps: int, batch: int = 1) -> float:
        """`DeviceEngine.time_job`, in the device's process."""
        with self._probe_lock:
            self._probe_box.clear()
            self._probe_done.clear()
            self._send(("probe", model_key, request, steps, batch))
            self._probe_done.wait()
            if "error" in self._probe_box:
                raise RuntimeError(self._probe_box["error"])
            return self._probe_box["s"]

    # -- the pipe -----------------------------------------------------------------------
    def _send(self, msg) -> None:
        """To the worker; lost when it is gone (its reader restarts it)."""
        if self.dead:
            return
        try:
            with self._send_lock:
                self.conn.send(msg)
        except (OSError, EOFError, ValueError):  # ValueError: the pipe is closed
            log.debug("device engine %s: %s not sent: its process is gone", self.name, msg[0])

    def _read(self) -> None:
        while not self.dead:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                if self.stopping:
                    break
                self.proc.join(1.0)
                what = self.crash_cause or f"device process died (exit code {self.proc.exitcode})"
                self._crashed(what)
                continue
            try:
                self._handle(msg)
            except Exception as exc:  # noqa: BLE001 - loud and recovered, never a dead reader
                log.exception("device engine %s: handling %r from its process failed",
                              self.name, msg[0])  # fmt: skip
                if self.stopping:
                    break
                self._crashed(f"pipe reader crashed ({brief(exc)})")
        self._probe_box.setdefault("error", "device process died")
        self._probe_done.set()

    def _handle(self, msg) -> None:
        if msg[0] == "probe_result":
            self._probe_box.update(msg[1])
            self._probe_done.set()
        elif msg[0] == "event":
            _, kind, j, data = msg
            sj = self.jobs.get(j)
            if sj is not None:
                if kind in ("done", "failed"):  # out before the core settles it: not re-run
                    self.ended[j] = DONE if kind == "done" else FAILED
                self.on_event(kind, sj, device=self.index, **data)
        elif msg[0] == "segment_end":
            _, ran, failed = msg
            out = self.core.segment_end(self.index, ran, failed=failed)
            self.ended.clear()
            for j in [*out.done, *out.cancelled, *failed]:
                self.jobs.pop(j, None)
            if out.cancelled:
                self._send(("forget", out.cancelled))

    def _crashed(self, what: str) -> None:
        """The worker died, or its messages could not be handled: what it holds is out
        of step with the core. A fresh worker gets the jobs back from step 0 (or, when
        none starts, they fail and the device leaves service)."""
        running, ended = list(self.segment), dict(self.ended)
        self.restarting = True
        self._probe_box.setdefault("error", f"device engine {self.name} crashed: {what}")
        self._probe_done.set()
        crash = Crash(what, running, ended, self._restart())
        with self.core.lock:  # from here on a segment the core starts goes to the new worker
            self.jobs, self.segment, self.ended = {}, [], {}
            self.restarting, self.crash_cause = False, ""
            self.dead = not recover(self.core, self.index, self.name, crash, self._emit,
                                    self.on_fault)  # fmt: skip

    def _restart(self) -> str:
        """Kill the worker and start a fresh one; "" when it is ready, else why not."""
        why_not = self.restarts.allow(time.monotonic())
        old_conn, old_proc = self.conn, self.proc
        old_proc.kill()
        old_proc.join(5)
        with self._send_lock:  # what is sent from here on waits in the new pipe
            old_conn.close()
            if why_not:
                return why_not
            self.conn, self.proc = self._spawn()
        try:
            self._boot()
        except Exception as exc:  # noqa: BLE001 - then the device leaves service
            log.exception("device engine %s: a fresh device process did not start", self.name)
            self.proc.kill()
            return f"a fresh device process did not start ({brief(exc)})"
        return ""

    def _emit(self, kind: str, sj: SegmentJob, **data) -> None:
        self.on_event(kind, sj, device=self.index, **data)

    def _fail_segment(self) -> None:
        """The device is out of service: the jobs of a segment it is given fail."""
        failed = list(self.segment)
        for j in failed:
            sj = self.jobs.pop(j, None)
            if sj is not None:
                self.on_event("failed", sj, device=self.index,
                              error=f"device engine {self.name} is out of service")  # fmt: skip
        self.core.segment_end(self.index, 0, failed=failed)


class _PipeCore:
    """The core as a worker process sees it: segment ends go back over the pipe."""

    def __init__(self, conn, lock: threading.Lock):
        self.conn, self.lock = conn, lock

    def segment_end(self, i: int, steps_run: int, failed=()) -> SegmentOutcome:
        with self.lock:
            self.conn.send(("segment_end", steps_run, list(failed)))
        return SegmentOutcome([], [])  # cancellations arrive as "forget"


def worker_main(conn, index: int, cards: dict, models: list[str], device: str,
                threads: int | None, max_resident: int | None = None) -> None:  # fmt: skip
    """A device process: load the models (with a residency bound: none, each is loaded
    when a segment needs it), then run the engine loop in this main thread."""
    lock = threading.Lock()
    try:
        import torch

        from models.backend import load_backend, quiet_model_libraries

        if threads:
            torch.set_num_threads(threads)
        quiet_model_libraries()
        backends = {} if max_resident else {k: load_backend(cards[k], device) for k in models}
    except Exception as exc:  # noqa: BLE001 - said to the parent, which refuses to start
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return

    def send_event(kind, sj, **data):
        data.pop("device", None)
        if "run" in data:
            data["run"] = replace(data["run"], state=None)
        with lock:
            conn.send(("event", kind, sj.index, data))

    def backend_for(key: str):
        if key not in backends:
            backends[key] = load_backend(cards[key], device)
        return backends[key]

    # a crash of the engine's loop ends this process: the parent restarts it
    engine = DeviceEngine(index, _PipeCore(conn, lock), models, backend_for,
                          lambda sj: sj.payload, send_event, max_resident=max_resident,
                          release=lambda key: backends.pop(key, None),
                          reset_on_crash=False)  # fmt: skip

    def read() -> None:
        """The parent's messages; a crash here ends the process, never a silent hang
        (the parent sees the pipe close and restarts it)."""
        try:
            serve_pipe(conn, lock, engine)
        except BaseException:  # noqa: BLE001 - any crash: the parent restarts this process
            traceback.print_exc()
            os._exit(70)

    threading.Thread(target=read, daemon=True).start()
    conn.send(("ready",))
    engine.run_loop()


def serve_pipe(conn, lock: threading.Lock, engine: DeviceEngine) -> None:
    """In a device process: hand the parent's messages to the engine, until "stop"."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            msg = ("stop",)
        if msg[0] == "segment":
            engine.start_segment(msg[1], msg[2])
        elif msg[0] == "cut":
            engine.interrupt()
        elif msg[0] == "probe":
            try:
                result = {"s": engine.time_job(msg[1], msg[2], msg[3], msg[4])}
            except Exception as exc:  # noqa: BLE001 - said to the parent
                result = {"error": f"{type(exc).__name__}: {exc}"}
            with lock:
                conn.send(("probe_result", result))
        elif msg[0] == "forget":
            for j in msg[1]:
                engine.runs.pop(j, None)
        elif msg[0] == "stop":
            engine.request_stop()
            return
