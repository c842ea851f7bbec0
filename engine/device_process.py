"""A device engine in a process of its own: what makes several devices run at once.

Measured on this host (toy-m, 20 steps): two device engines as threads of one process
run 0.94x the jobs/s of one (the GIL serialises the Python between torch calls), and a
torch call with 2 intra-op threads is about 3x slower from a non-main thread than from
the main thread (two OpenMP teams on 2 cores). So each device engine here runs in the
main thread of a spawned process that loads the models itself; the serving process
keeps a proxy (`DeviceProcess`, a `scheduler.live.DeviceSlot`) that forwards segments
and interrupts over a pipe and hands the worker's events and segment ends to the core,
in order. GPU servers run one process per GPU for the same reasons.

If the worker dies, the jobs it held fail ("device process died") and the device
refuses further segments the same way: serving goes on on the other devices.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from dataclasses import replace

from engine.device_engine import DeviceEngine
from scheduler.live import LiveCore, SegmentJob, SegmentOutcome

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 300.0  # importing torch and loading the models, on a busy host


class DeviceProcess:
    """The serving process's side of one device engine process."""

    def __init__(self, index: int, core: LiveCore, cards: dict, models: list[str],
                 request_of, on_event, *, device: str, name: str = "",
                 threads: int | None = None, max_resident: int | None = None):  # fmt: skip
        self.index, self.core, self.request_of, self.on_event = index, core, request_of, on_event
        ctx = mp.get_context("spawn")  # never fork a process with torch's threads running
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=worker_main,
            args=(
                child,
                index,
                {k: cards[k] for k in models},
                models,
                device,
                threads,
                max_resident,
            ),
            name=f"sdaas-device-{name or index}",
            daemon=True,
        )
        self.jobs: dict[int, SegmentJob] = {}
        self.segment: list[int] = []
        self.dead = False
        self.stopping = False
        self._send_lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._probe_box: dict = {}
        self._probe_done = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"sdaas-device-{index}-pipe",
                                        daemon=True)  # fmt: skip

    def start(self) -> DeviceProcess:
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
        self._reader.start()
        return self

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
        if self.dead:  # answer from another thread: we hold the core's lock here
            threading.Thread(target=self._fail_segment, daemon=True).start()
            return
        sent = [SegmentJob(sj.index, sj.model, sj.steps, self.request_of(sj)) for sj in jobs]
        self._send(("segment", sent, steps))

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
        if self.dead:
            return
        try:
            with self._send_lock:
                self.conn.send(msg)
        except (OSError, EOFError):
            self.dead = True

    def _read(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "probe_result":
                self._probe_box.update(msg[1])
                self._probe_done.set()
            elif msg[0] == "event":
                _, kind, j, data = msg
                sj = self.jobs.get(j)
                if sj is not None:
                    self.on_event(kind, sj, device=self.index, **data)
            elif msg[0] == "segment_end":
                _, ran, failed = msg
                out = self.core.segment_end(self.index, ran, failed=failed)
                for j in [*out.done, *out.cancelled, *failed]:
                    self.jobs.pop(j, None)
                if out.cancelled:
                    self._send(("forget", out.cancelled))
        self._probe_box.setdefault("error", "device process died")
        self._probe_done.set()
        if not self.dead and not self.stopping:
            self.dead = True
            log.error("device process %d died: its jobs fail", self.index)
            self._fail_segment()

    def _fail_segment(self) -> None:
        """The worker is gone: the jobs of its segment fail, and the core moves on."""
        failed = list(self.segment)
        for j in failed:
            sj = self.jobs.pop(j, None)
            if sj is not None:
                self.on_event("failed", sj, device=self.index, error="device process died")
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

    engine = DeviceEngine(index, _PipeCore(conn, lock), models, backend_for,
                          lambda sj: sj.payload, send_event, max_resident=max_resident,
                          release=lambda key: backends.pop(key, None))  # fmt: skip

    def read() -> None:
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

    threading.Thread(target=read, daemon=True).start()
    conn.send(("ready",))
    engine.run_loop()
