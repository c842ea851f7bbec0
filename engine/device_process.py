"""A device engine in a process of its own: what makes several devices run at once.

Measured on this host (toy-m, 20 steps): two device engines as threads of one process
run 0.94x the jobs/s of one (the GIL serialises the Python between torch calls), and a
torch call with 2 intra-op threads is about 3x slower from a non-main thread than from
the main thread (two OpenMP teams on 2 cores). So each device engine here runs in the
main thread of a spawned process that loads the models itself; the serving process
keeps a proxy (`DeviceProcess`) that sends the core's commands down a pipe and hands
the worker's events to the device's `DeviceLink`, in order. Both ways the pipe carries
only the seam's records, as `scheduler.seam.encode` writes them. GPU servers run one
process per GPU for the same reasons.

A crash is loud and recovered, never a silent hang: if the worker dies, or the pipe
reader fails to handle one of its events (a bug in the core or an event handler), the
reader logs it with its traceback, starts a fresh worker and tells the link, which
gives the core the jobs the old one held (they run again from step 0; one whose `Done`
went out is never re-run) and reports the fault (`/readyz`). A device that cannot
restart (or crashed `Restarts.limit` times in its window) leaves service: its jobs
fail ("device engine X crashed: ..."), serving goes on on the other devices.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import traceback

from engine.device_engine import DeviceEngine
from engine.link import DeviceLink
from scheduler.seam import Command, Ready, StartSegment, Stop, decode, encode
from sdaas.errors import brief

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 300.0  # importing torch and loading the models, on a busy host


class DeviceProcess:
    """The serving process's side of one device engine process."""

    def __init__(self, link: DeviceLink, cards: dict, models: list[str], *, device: str,
                 threads: int | None = None, max_resident: int | None = None):  # fmt: skip
        self.link, self.index, self.name = link, link.index, link.name
        self._worker_args = (self.index, {k: cards[k] for k in models}, models, device,
                             threads, max_resident)  # fmt: skip
        self.conn, self.proc = self._spawn()
        self.stopping = False
        self.restarting = False  # segments wait for the fresh worker (`_crashed`)
        self.crash_cause = ""  # why this side killed the worker, for its crash report
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"sdaas-device-{self.index}-pipe",
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
            ready = decode(self.conn.recv_bytes())
        except EOFError:
            self.proc.join(5)
            raise RuntimeError(
                f"device process {self.index} exited before it was ready (exit code "
                f"{self.proc.exitcode}); a script that starts serving needs the "
                "`if __name__ == '__main__':` guard (processes are spawned)"
            ) from None
        if not isinstance(ready, Ready) or ready.error:
            raise RuntimeError(f"device process {self.index} failed to start: {ready}")

    def stop(self, timeout: float | None = None) -> None:
        self.stopping = True
        self.send(Stop(self.index))
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()

    def send(self, command: Command) -> None:
        """To the worker; lost when it is gone (its reader restarts it, and the link gives
        the core its jobs back)."""
        if self.restarting and isinstance(command, StartSegment):
            return  # the core gives it back with the others (`requeue_device`)
        try:
            data = encode(command)
            with self._send_lock:
                self.conn.send_bytes(data)
        except (OSError, EOFError, ValueError):  # ValueError: the pipe is closed
            log.debug("device engine %s: %s not sent: its process is gone", self.name,
                      command.kind)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the reader restarts the worker
            log.exception("device engine %s: sending %s failed", self.name, command.kind)
            self.crash_cause = f"sending a command failed ({brief(exc)})"
            self.proc.kill()

    def _read(self) -> None:
        while not self.link.out_of_service:
            try:
                event = decode(self.conn.recv_bytes())
            except (EOFError, OSError):
                if self.stopping:
                    break
                self.proc.join(1.0)
                self._crashed(self.crash_cause or
                              f"device process died (exit code {self.proc.exitcode})")  # fmt: skip
                continue
            try:
                self.link.handle(event)
            except Exception as exc:  # noqa: BLE001 - loud and recovered, never a dead reader
                log.exception("device engine %s: handling %s from its process failed",
                              self.name, event.kind)  # fmt: skip
                if self.stopping:
                    break
                self._crashed(f"pipe reader crashed ({brief(exc)})")

    def _crashed(self, what: str) -> None:
        """The worker died, or its events could not be handled: what it holds is out of
        step with the core. A fresh worker, and the link gives the core the jobs back."""
        running, self.restarting = list(self.link.segment), True
        why_not = self._restart()
        self.restarting, self.crash_cause = False, ""
        self.link.crashed(what, why_not, running)

    def _restart(self) -> str:
        """Kill the worker and start a fresh one; "" when it is ready, else why not."""
        why_not = self.link.may_restart()
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


def worker_main(conn, index: int, cards: dict, models: list[str], device: str,
                threads: int | None, max_resident: int | None = None) -> None:  # fmt: skip
    """A device process: load the models (with a residency bound: none, each is loaded
    when a segment needs it), then run the engine loop in this main thread."""
    lock = threading.Lock()

    def emit(event) -> None:
        data = encode(event)
        with lock:
            conn.send_bytes(data)

    try:
        import torch

        from models.backend import quiet_model_libraries
        from models.loader import load_backend

        if threads:
            torch.set_num_threads(threads)
        quiet_model_libraries()
        backends = {} if max_resident else {k: load_backend(cards[k], device) for k in models}
    except Exception as exc:  # noqa: BLE001 - said to the parent, which refuses to start
        emit(Ready(index, error=brief(exc)))
        return

    def backend_for(key: str):
        if key not in backends:
            backends[key] = load_backend(cards[key], device)
        return backends[key]

    # a crash of the engine's loop ends this process (no on_crash): the parent restarts it
    engine = DeviceEngine(index, models, backend_for, emit, max_resident=max_resident,
                          release=lambda key: backends.pop(key, None))  # fmt: skip

    def read() -> None:
        """The parent's commands, until `Stop`; a crash here ends the process, never a
        silent hang (the parent sees the pipe close and restarts it)."""
        try:
            while True:
                try:
                    command = decode(conn.recv_bytes())
                except (EOFError, OSError):
                    command = Stop(index)
                engine.send(command)
                if isinstance(command, Stop):
                    return
        except BaseException:  # noqa: BLE001 - any crash: the parent restarts this process
            traceback.print_exc()
            os._exit(70)

    threading.Thread(target=read, daemon=True).start()
    emit(Ready(index))
    engine.run_loop()
