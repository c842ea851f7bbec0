"""An elastic cluster: instances added and removed while the run goes on.

Production text-to-image traffic has nights with no requests and peak hours at 9x the
mean hour (scheduler/production.py): a fixed cluster sized for the peak idles most of
the day. Here a pool (the cluster spec: the most instances of each kind) starts with
`Autoscaler.start` instances of each kind and, every `tick_s`, follows one signal per
kind: the work that arrived in the last `window_s` (predicted seconds), as instances
busy `target_util` of the time, plus the queue above `queue_s` per instance, and at
least enough instances to hold every model asked for in the window (their checkpoint
sizes summed over a kind's memory budget, `Catalog.hold`): with a long tail of
checkpoints, loads, not work, decide how many are needed. Instances
asked for come up after a provisioning delay drawn uniformly from `delay_s` (a cloud
VM and its container; the first job's model load is charged as usual); an instance
idle for `idle_s` goes away while the signal asks for fewer. GPU-hours count every
instance from the moment it is asked for until it goes away.

The policies are the same objects on the same simulator (`ElasticSimulator` only adds
the scaling events), so a policy's decisions are what it decides on a fixed cluster.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from scheduler.capacity_planning import gpus_needed, scaled
from scheduler.catalog import Catalog
from scheduler.metrics import summarize
from scheduler.options import ClassOptions
from scheduler.policies import make_policy
from scheduler.simulator import SimResult, Simulator
from scheduler.workload import Workload


@dataclass(frozen=True)
class Autoscaler:
    start: int = 1  # instances of each kind at t=0 (and the least kept)
    tick_s: float = 30.0
    window_s: float = 120.0
    # the models to hold: those asked in this window. 30 min held too few: a checkpoint
    # of the long tail is asked about once an hour, and 6.5 % of requests found theirs
    # unasked for 30 min (1.0 % for 4 h); slack-sjf got 0.920 goodput at 373 GPU-h with
    # 30 min, 0.955 at 695 with 4 h (2 days of production-like requests, 95 % target)
    models_window_s: float = 14400.0
    target_util: float = 0.5
    queue_s: float = 5.0
    delay_s: tuple[float, float] = (60.0, 180.0)
    idle_s: float = 300.0
    seed: int = 0


def wanted(sc: Autoscaler, recent, t: float, backlog: float, instances: int,
           catalog: Catalog, kind: int) -> int:  # fmt: skip
    """The instances of one kind (`catalog`'s kind `kind`) the signal asks for at t: the
    work that arrived in the last `window_s` (`recent`: (arrival, predicted seconds,
    model) of the jobs placed on the kind, oldest first) as instances busy `target_util`
    of the time, plus the queue above `queue_s` per instance, and at least enough to hold
    every model asked for in `models_window_s` (`Catalog.hold`: their GB over the kind's
    budget, or their count over `max_resident`). The simulator's pool and serving's
    (`engine/scaling.py`) both decide by it."""
    rate = sum(w for a, w, _ in recent if a >= t - sc.window_s) / sc.window_s
    queued = max(0.0, backlog - sc.queue_s * instances)
    hold = catalog.hold({m for a, _, m in recent if a >= t - sc.models_window_s}, kind)
    work = math.ceil(rate / sc.target_util + queued / sc.window_s)
    return max(sc.start, work, hold)


class ElasticSimulator(Simulator):
    """The simulator on a pool whose instances come and go (see the module's text)."""

    def __init__(self, catalog, cluster, policy, config=None, scaler: Autoscaler = Autoscaler()):
        super().__init__(catalog, cluster, policy, config)
        self.scaler = scaler

    def begin(self, w: Workload, options: ClassOptions | None = None) -> None:
        super().begin(w, options)
        sc, K = self.scaler, len(self.kind_names)
        self.active = [False] * len(self.inst_kind)
        self.pending: list[int] = [0] * K
        self.since = [-1.0] * len(self.inst_kind)  # billed since (-1: not provisioned)
        self.last_busy = [0.0] * len(self.inst_kind)
        self.gpu_s = 0.0
        # per kind: (arrival, predicted seconds, model) of the jobs placed there
        self.arrived_work: list[deque[tuple[float, float, int]]] = [deque() for _ in range(K)]
        self.rng = np.random.default_rng(sc.seed)
        self._scale: list[tuple[float, int, int]] = []  # (time, kind, instance) ups
        self.timeline: list[tuple[float, int]] = []  # (time, instances up or pending)
        for k in range(K):
            self.idle[k] = []
            self.n_inst[k] = 0
            for i in self.instances_of[k][: max(1, sc.start)]:
                self._up(i, 0.0)

    # ----------------------------------------------------------- instances up and down
    def _up(self, i: int, t: float) -> None:
        k = self.inst_kind[i]
        self.active[i] = True
        self.unload(i)  # it comes up empty
        self.n_inst[k] += 1
        self.idle[k].append(i)
        self.last_busy[i] = t
        if self.since[i] < 0:
            self.since[i] = t

    def _down(self, i: int, t: float) -> None:
        k = self.inst_kind[i]
        self.active[i] = False
        self.unload(i)  # its models go with it
        self.idle[k].remove(i)
        self.n_inst[k] -= 1
        self.gpu_s += t - self.since[i]
        self.since[i] = -1.0

    def _provisioned(self) -> int:
        return sum(self.active) + sum(self.pending)

    def _tick(self, t: float) -> None:
        sc = self.scaler
        for k in range(len(self.kind_names)):
            recent = self.arrived_work[k]
            while recent and recent[0][0] < t - max(sc.window_s, sc.models_window_s):
                recent.popleft()
            want = wanted(sc, recent, t, self.backlog[k], self.n_inst[k], self.catalog,
                          self.ck[k])  # fmt: skip
            have = self.n_inst[k] + self.pending[k]
            free = [i for i in self.instances_of[k] if self.since[i] < 0]
            for i in free[: max(0, want - have)]:
                self.pending[k] += 1
                self.since[i] = t  # billed from the request
                up = t + float(self.rng.uniform(*sc.delay_s))
                heapq.heappush(self._scale, (up, k, i))
            if have > want:
                idle = [i for i in self.idle[k] if t - self.last_busy[i] >= sc.idle_s]
                for i in idle[: min(have - want, self.n_inst[k] - max(1, sc.start))]:
                    self._down(i, t)
        self.timeline.append((t, self._provisioned()))
        self._dispatch_idle(t)

    # ------------------------------------------------------------- simulator hooks
    def arrive(self, j: int, t: float, tie: bool = False) -> bool:
        ok = super().arrive(j, t, tie)
        if ok:
            self.arrived_work[self.kind[j]].append((t, self.pred[j], self.model[j]))
        return ok

    def _dispatch(self, i: int, t: float, carry: list[int]) -> None:
        super()._dispatch(i, t, carry)
        self.last_busy[i] = t

    # ---------------------------------------------------------------------- the run
    def run(self, w: Workload, options: ClassOptions | None = None) -> SimResult:
        self.begin(w, options)
        n, arrival, events, scale = w.n, self.arrival, self._events, self._scale
        gather = self.config.gather_ties
        tick = self.scaler.tick_s
        ai, count = 0, 0
        while ai < n or events or scale:
            nxt = min(
                arrival[ai] if ai < n else math.inf,
                events[0][0] if events else math.inf,
                scale[0][0] if scale else math.inf,
                tick,
            )
            if scale and scale[0][0] == nxt:
                _, k, i = heapq.heappop(scale)
                self.pending[k] -= 1
                self._up(i, nxt)
                self._dispatch_idle(nxt)
            elif nxt == tick:
                self._tick(tick)
                tick += self.scaler.tick_s
            elif ai < n and arrival[ai] == nxt:
                j = ai
                ai += 1
                if self.arrive(j, nxt, tie=gather and ai < n and arrival[ai] == nxt):
                    count += 1
            else:
                t, _, i, ver = heapq.heappop(events)
                if ver != self.seg_version[i]:
                    continue
                self._segment_end(i, t)
                count += 1
        end = float(np.nanmax(self.finish)) if n else 0.0
        for up in self.since:
            if up >= 0:
                self.gpu_s += max(0.0, end - up)
        return self._result(w, count)

    @property
    def gpu_hours(self) -> float:
        return self.gpu_s / 3600.0


def elastic_vs_fixed(
    catalog, unit, policies: list[str], w: Workload, config, scaler: Autoscaler,
    max_units: int = 128,
) -> list[dict]:  # fmt: skip
    """Per policy: the elastic pool's attainment and GPU-hours, and the GPU-hours of the
    smallest fixed cluster that reaches the same attainment and 95 %."""
    rows = []
    for p in policies:
        sim = ElasticSimulator(catalog, scaled(unit, max_units), make_policy(p), config, scaler)
        m = summarize(sim.run(w))
        same, p95 = gpus_needed(catalog, unit, [p], w, config,
                                (m["both_slo_met"], 0.95), max_units)  # fmt: skip
        rows.append({
            "policy": p,
            "elastic_goodput": m["both_slo_met"],
            "elastic_lost_share": m["lost_share"],
            "elastic_gpu_hours": sim.gpu_hours,
            "elastic_peak_gpus": max(x for _, x in sim.timeline) if sim.timeline else 0,
            "fixed_same_goodput_gpus": same.gpus,
            "fixed_same_goodput_gpu_hours": same.gpu_hours,
            "fixed_95_gpus": p95.gpus,
            "fixed_95_gpu_hours": p95.gpu_hours,
        })  # fmt: skip
    return rows
