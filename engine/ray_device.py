"""A device engine on a Ray node: the same `DeviceEngine` a device process runs, in a
Ray actor placed on the node that offers its accelerator (`engine/ray_fleet.py`).

    DeviceLink ──send──► RayDevice ──command(seq, bytes)──► EngineActor (on its node)
        ▲                   │ reader thread                     DeviceEngine: a step batch
        └──handle(event)────┴◄──events(wait_s): [bytes], acks───┘

Both ways only the seam's records travel, as `scheduler.seam.encode` writes them (Done
carries its image: it comes back through Ray's object store). Commands carry a
sequence number and the actor applies them in that order whatever thread Ray runs a
call on; its events come back in batches, one long poll in flight at a time. Each
batch also acknowledges the commands applied since the last, with the engine's wall
clock: the core-to-engine dispatch time (`dispatch_s`; on one machine, or clocks in
sync).

The engine runs in a thread of the actor (Ray runs an actor's calls on its threads),
not in a process's main thread as a device process does: on CPU engines torch is
slower so (`engine/device_process.py`); a GPU kernel is not.

A dead actor (its node left the cluster, it crashed, or it was killed) never holds
jobs back: its jobs go at once to the other engines of its kind, from step 0 (`link.
lost`: the core's `leave`), and the device leaves service. If its node is still in
the cluster a fresh actor starts there, in the background, and the device joins again
when it is ready (`link.rejoined`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from engine.device_engine import DeviceEngine
from engine.link import DeviceLink
from engine.ray_fleet import EngineSlot, alive, resource_name
from models.card import ModelCard
from scheduler.seam import Command, Ready, StartSegment, Stop, decode, encode
from sdaas.errors import brief

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 300.0  # importing torch and loading the models on a busy node
POLL_S = 0.5  # an events call returns after this long with nothing to say
DISPATCH_KEPT = 10_000  # dispatch times kept per engine (the operator view's p99)


@dataclass(frozen=True)
class CardLoader:
    """Loads a registered model on the engine's node (picklable: it travels there)."""

    cards: dict[str, ModelCard]
    device: str

    def __call__(self, key: str):
        from models.loader import load_backend

        return load_backend(self.cards[key], self.device)


@ray.remote(num_cpus=0, max_restarts=0, concurrency_groups={"commands": 1, "events": 1})
class EngineActor:
    """One device engine on its node. Built by `RayDevice`; its constructor loads the
    models (none with a residency bound: each when a segment needs it)."""

    def __init__(self, index: int, models: list[str], loader, threads: int | None,
                 max_resident: int | None):  # fmt: skip
        self.index = index
        self._cv = threading.Condition()
        self._events: deque[bytes] = deque()
        self._acks: list[tuple[int, float]] = []
        self._next_seq, self._early = 1, {}
        self.error = ""
        try:
            from models.backend import quiet_model_libraries

            if threads:
                import torch

                torch.set_num_threads(threads)
            quiet_model_libraries()
            backends = {} if max_resident else {k: loader(k) for k in models}
        except Exception as exc:  # noqa: BLE001 - said by `ready`; the proxy refuses it
            self.error = brief(exc)
            return

        def backend_for(key: str):
            if key not in backends:
                backends[key] = loader(key)
            return backends[key]

        self.engine = DeviceEngine(index, models, backend_for, self._emit, threads=threads,
                                   max_resident=max_resident,
                                   release=lambda key: backends.pop(key, None),
                                   on_crash=self._die)  # fmt: skip
        self.engine.start()

    def ready(self) -> bytes:
        return encode(Ready(self.index, error=self.error))

    def _emit(self, event) -> None:
        data = encode(event)
        with self._cv:
            self._events.append(data)
            self._cv.notify_all()

    def _die(self, what: str) -> None:
        """The engine's loop crashed: this actor ends (never a silent hang), and its
        proxy gives the core its jobs back."""
        log.error("engine actor %d: %s; exiting", self.index, what)
        os._exit(70)

    @ray.method(concurrency_group="commands")
    def command(self, seq: int, data: bytes) -> None:
        """Apply commands in the order they were sent (`seq`), whatever order Ray
        delivers them in."""
        try:
            with self._cv:
                self._early[seq] = data
                ready = []
                while self._next_seq in self._early:
                    ready.append((self._next_seq, self._early.pop(self._next_seq)))
                    self._next_seq += 1
            for s, d in ready:
                self.engine.send(decode(d))
                with self._cv:
                    self._acks.append((s, time.time()))
                    self._cv.notify_all()  # an ack goes back at once: the segment started
        except BaseException:  # noqa: BLE001 - a broken command channel ends the actor
            traceback.print_exc()
            os._exit(70)

    @ray.method(concurrency_group="events")
    def events(self, wait_s: float) -> tuple[list[bytes], list[tuple[int, float]], list[str]]:
        """The events since the last call (waiting up to `wait_s` for one), the commands
        applied since, and the models resident now."""
        with self._cv:
            if not self._events and not self._acks:
                self._cv.wait(wait_s)
            out, acks = list(self._events), self._acks
            self._events.clear()
            self._acks = []
        return out, acks, self.engine.resident


class RayDevice:
    """The serving process's side of one engine actor: `send` for the link, a reader
    thread for its events, and the restart of a dead actor."""

    def __init__(self, link: DeviceLink, slot: EngineSlot, loader, models: list[str], *,
                 threads: int | None = None, max_resident: int | None = None,
                 gpus: float = 0.0):  # fmt: skip
        self.link, self.slot, self.index = link, slot, link.index
        self._args = (self.index, models, loader, threads, max_resident)
        self._gpus = gpus
        self.actor = None
        self.state = "starting"  # serving / restarting / left / stopped
        self.resident: list[str] = []
        self.dispatch_s: deque[float] = deque(maxlen=DISPATCH_KEPT)
        self._seq = self._segment_seq = self._acked = 0  # last sent, last segment's, acked
        self._sent_at: dict[int, float] = {}
        self._send_lock = threading.Lock()
        self._stopping = False
        self._reader: threading.Thread | None = None

    # -- life --------------------------------------------------------------------------
    def start(self) -> RayDevice:
        """Place the actor on its node; return when it has loaded its models."""
        self._boot()
        self.state = "serving"
        return self

    def _boot(self) -> None:
        actor = EngineActor.options(
            name=None, num_gpus=self._gpus, resources={resource_name(self.slot.kind): 1},
            scheduling_strategy=NodeAffinitySchedulingStrategy(self.slot.node_id, soft=False),
        ).remote(*self._args)  # fmt: skip
        try:
            ready = decode(ray.get(actor.ready.remote(), timeout=READY_TIMEOUT_S))
        except Exception as exc:
            ray.kill(actor)
            raise RuntimeError(f"engine {self.slot.name} did not start ({brief(exc)})") from exc
        if not isinstance(ready, Ready) or ready.error:
            ray.kill(actor)
            raise RuntimeError(f"engine {self.slot.name} failed to start: {ready.error}")
        with self._send_lock:
            self.actor, self._seq, self._sent_at = actor, 0, {}
            self._segment_seq, self._acked = 0, 0
        self._reader = threading.Thread(target=self._read, args=(actor,), daemon=True,
                                        name=f"sdaas-ray-engine-{self.index}")  # fmt: skip
        self._reader.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stopping, self.state = True, "stopped"
        actor = self.actor
        if actor is None:
            return
        self.send(Stop(self.index))
        try:
            ray.kill(actor)
        except Exception:  # noqa: BLE001 - gone already
            pass
        if self._reader is not None:
            self._reader.join(timeout)

    # -- the link's side ---------------------------------------------------------------
    def send(self, command: Command) -> None:
        """To the actor, numbered; lost when it is gone (its jobs went elsewhere)."""
        with self._send_lock:
            actor = self.actor
            if actor is None:
                return
            self._seq += 1
            self._sent_at[self._seq] = time.time()
            if isinstance(command, StartSegment):
                self._segment_seq = self._seq
            try:
                actor.command.remote(self._seq, encode(command))
            except Exception:  # noqa: BLE001 - the reader sees the actor die
                log.debug("engine %s: %s not sent", self.slot.name, command.kind)

    # -- the actor's side --------------------------------------------------------------
    def _read(self, actor) -> None:
        while not self._stopping:
            try:
                batch, acks, resident = ray.get(actor.events.remote(POLL_S))
            except Exception as exc:  # noqa: BLE001 - the actor died (or its node)
                if not self._stopping:
                    self._gone(actor, brief(exc).splitlines()[0])
                return
            self.resident = resident
            with self._send_lock:
                sent = self._sent_at
                for seq, at in acks:
                    self._acked = max(self._acked, seq)
                    t0 = sent.pop(seq, None)
                    if t0 is not None:
                        self.dispatch_s.append(max(0.0, at - t0))
            for data in batch:
                event = decode(data)
                try:
                    self.link.handle(event)
                except Exception as exc:  # noqa: BLE001 - loud: the engine starts afresh
                    log.exception("engine %s: handling %s failed", self.slot.name, event.kind)
                    ray.kill(actor)
                    self._gone(actor, f"reader crashed ({brief(exc)})")
                    return

    def _gone(self, actor, what: str) -> None:
        """The actor is dead: its jobs go to other engines now; a fresh one starts on
        the node if the node is still in the cluster."""
        with self._send_lock:
            if self.actor is not actor:
                return
            self.actor, self.state = None, "left"
            # a segment counts as run on it (a crash its jobs may have caused) only once
            # the actor took it: one sent to an actor already dead (a sibling on a node
            # that went) did not crash anything
            took = 0 < self._segment_seq <= self._acked
        node_up = alive(self.slot.node_id)
        where = "" if node_up else f"; node {self.slot.node_ip} left the cluster"
        self.link.lost(f"{what}{where}", ran=took)
        why_not = self.link.may_restart() if node_up else "its node is gone"
        if why_not:
            log.error("engine %s left service: %s", self.slot.name, why_not)
            return
        self.state = "restarting"
        threading.Thread(target=self._restart, daemon=True).start()

    def _restart(self) -> None:
        try:
            self._boot()
        except Exception as exc:  # noqa: BLE001 - it stays out of service, loudly
            log.exception("engine %s: a fresh actor did not start", self.slot.name)
            self.state = "left"
            why = f"a fresh actor did not start ({brief(exc)}); out of service"
            self.link.on_fault(f"engine {self.link.name}", why)
            return
        self.state = "serving"
        self.link.rejoined()


def start_all(devices: list[RayDevice]) -> None:
    """Place every engine at once (each loads its models on its node in parallel)."""
    for d in devices:
        d.state = "starting"
    errors = []
    threads = [threading.Thread(target=lambda d=d: _start(d, errors)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for d in devices:
            d.stop(5.0)
        raise RuntimeError("; ".join(errors))


def _start(d: RayDevice, errors: list[str]) -> None:
    try:
        d.start()
    except Exception as exc:  # noqa: BLE001 - gathered, raised once
        errors.append(brief(exc))
