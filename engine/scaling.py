"""Elastic capacity for real: serving's engines follow the same signal the simulator's
elastic pool follows (`scheduler.elastic.wanted`, issue 15's rule), decided over the
live core's recent jobs.

Every `tick_s`, per kind: the engines wanted are asked of the cluster's autoscaler
(`ScaleBackend.request`: on Ray, `ray.autoscaler.sdk.request_resources`, which makes
the autoscaler, or KubeRay, launch nodes that offer them; on a static cluster nothing
happens); engines the cluster offers and no engine uses join (`RayEngines.grow`: they
join the core once placed and loaded); while fewer are wanted, engines idle for
`idle_s` leave (drained: only idle ones), never below `Autoscaler.start`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from engine.ray_engines import RayEngines
from engine.ray_fleet import resource_name
from scheduler.elastic import Autoscaler, wanted
from sdaas.job_status import JobStatus

log = logging.getLogger(__name__)


class ScaleBackend(Protocol):
    def request(self, engines: dict[str, int]) -> None:
        """The cluster should offer this many engines of each kind, in all."""


class RayAutoscaler:
    """Ray's autoscaler: asked for bundles of one engine resource each (a request
    replaces the previous one, so it is the whole set every time)."""

    def request(self, engines: dict[str, int]) -> None:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{resource_name(kind): 1}
                                   for kind, n in engines.items() for _ in range(n)])  # fmt: skip


class Scaling:
    """The elastic loop over a core's Ray engines; `tick` once, or `start` a thread."""

    def __init__(self, engines: RayEngines, kinds: list[str], scaler: Autoscaler,
                 backend: ScaleBackend, clock: Callable[[], float] = time.time):  # fmt: skip
        self.engines, self.core, self.kinds = engines, engines.core, kinds
        self.scaler, self.backend, self.clock = scaler, backend, clock
        self.last_busy: dict[int, float] = {}
        self.log: list[tuple[float, dict[str, int], dict[str, int]]] = []  # (t, want, have)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def recent(self, k: int, t: float) -> list[tuple[float, float, int]]:
        """(arrival, predicted s, model) of the jobs placed on kind k in the signal's
        window, oldest first (the core's arrivals are in time order)."""
        core, sc = self.core, self.scaler
        since = t - max(sc.window_s, sc.models_window_s)
        out = []
        for j in range(len(core.arrival) - 1, -1, -1):
            if core.arrival[j] < since:
                break
            if core.kind[j] == k and core.status[j] != JobStatus.REJECTED:
                out.append((core.arrival[j], core.pred[j], core.model[j]))
        return out[::-1]

    def tick(self) -> dict[str, int]:
        """Decide once: ask for the engines wanted, let offered ones join, idle ones go."""
        t, core, sc = self.clock(), self.core, self.scaler
        want, have = {}, {}
        with core.lock:
            for i in range(len(core.inst_kind)):
                queued = core.dev_queues is not None and len(core.dev_queues[i])
                if core.seg_jobs[i] or queued or i not in self.last_busy:
                    self.last_busy[i] = t  # busy now (or just joined: not idle yet)
            for k, kind in enumerate(self.kinds):
                live = self.engines.in_service(kind)
                cap = self.engines.capacity(kind)
                n = wanted(sc, self.recent(k, t), t, core.backlog[k], max(1, len(live)),
                           core.catalog, core.ck[k])  # fmt: skip
                want[kind], have[kind] = min(cap, n), len(live)
        self.backend.request(want)
        for kind in self.kinds:
            self._follow(kind, want[kind], t)
        self.log.append((t, want, have))
        return want

    def _follow(self, kind: str, want: int, t: float) -> None:
        live = self.engines.in_service(kind)
        coming = sum(self.engines.kinds_of[i] == kind for i in self.engines.starting)
        if want > len(live) + coming:
            self.engines.grow(kind, want - len(live) - coming)
        elif len(live) > want:
            k = self.kinds.index(kind)
            with self.core.lock:
                idle = [i for i in self.core.idle[k] if i in live
                        and t - self.last_busy.get(i, t) >= self.scaler.idle_s]  # fmt: skip
            for i in idle[: min(len(live) - want, len(live) - max(1, self.scaler.start))]:
                self.engines.shrink(i)

    def start(self) -> Scaling:
        self._thread = threading.Thread(target=self._run, name="sdaas-scaling", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.scaler.tick_s):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - scaling is best effort; serving goes on
                log.exception("the elastic loop's tick failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
