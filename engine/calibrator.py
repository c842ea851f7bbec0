"""What serving measures on its own devices before it decides on a profile: probe runs of
the (model, accelerator) pairs it has no evidence for, and what a batch costs against
one job. Both are stored in the result store per latency-predictor version and device
kind, and reused at the next start: a restart does not measure again what it knows.

While serving runs, the host's speed drifts (`predictor/latency_correction.py`: `Drift`);
jobs measure it as they end, and when there are none (`IdleProbes`: no job for
`IDLE_AFTER_S`, at most once per `IDLE_PROBE_EVERY_S`) a reference probe does: the
fastest model of each kind at `IDLE_PROBE_STEPS` steps, the system's own prompt, on the
device that measures that kind (`Calibrator.reference_probe`).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable

import numpy as np

from adapters.result_store import ResultStore
from engine.link import DeviceLink
from engine.spec import ServingSpec
from predictor.latency_correction import Corrections, Observation
from profiles.timing import timed_repeats
from scheduler.catalog import Catalog
from scheduler.seam import ImageRequest

log = logging.getLogger(__name__)
PROBES = 2  # runs that prove a (model, accelerator) profile before jobs are decided on it
PROBE_PROMPT = "a calibration probe"  # the system's own prompt, never a tenant's
BATCH_PROBE_STEPS = 8  # step count batch costs are measured at (capped by the profile's)
IDLE_AFTER_S = 20.0  # no job for this long: a reference probe may refresh the host drift
IDLE_PROBE_EVERY_S = 30.0  # at most one reference probe this often (idle for long: 1 per 30 s)
IDLE_PROBE_STEPS = 4  # the reference probe's steps (within what the model was profiled at)


def observed_corrections_in(
    store: ResultStore, predictor_version: str, now: float | None = None, drift: bool = True
) -> Corrections:
    """The latency corrections the runs stored in `store` give for that predictor, with
    the host drift as of `now` (default: the wall clock, the store's); `drift=False`: the
    per-model corrections of the runs as observed (what a report says was observed)."""
    now = time.time() if now is None else now
    obs = store.observations(predictor_version)
    return Corrections.from_observations(obs, now=now, drift=drift)


class IdleProbes:
    """When a reference probe is due: only after `idle_after_s` without a job (counted
    from `started`, and from the last time `due` saw work), and at most once per
    `every_s`. Pure: the caller passes the time and whether serving is idle."""

    def __init__(self, started: float, idle_after_s: float = IDLE_AFTER_S,
                 every_s: float = IDLE_PROBE_EVERY_S):  # fmt: skip
        self.idle_after_s, self.every_s = idle_after_s, every_s
        self.last_busy = started
        self.last_probe = -math.inf

    def due(self, now: float, idle: bool) -> bool:
        if not idle:
            self.last_busy = now
            return False
        return now - self.last_busy >= self.idle_after_s and now - self.last_probe >= self.every_s

    def busy(self, now: float) -> None:
        """Work arrived at `now` (between the caller's polls)."""
        self.last_busy = max(self.last_busy, now)

    def probed(self, now: float) -> None:
        self.last_probe = now

    def wait_s(self, now: float) -> float:
        """How long until a probe could next be due (if serving stays idle)."""
        return max(self.last_busy + self.idle_after_s, self.last_probe + self.every_s) - now


class Calibrator:
    """Probes and batch costs for one runtime: `runs_on` are its (model, kind) index
    pairs, `links[kind]` the device that measures for a kind (its first instance)."""

    def __init__(self, spec: ServingSpec, store: ResultStore, catalog: Catalog,
                 runs_on: list[tuple[int, int]], model_keys: list[str], kinds: list[str],
                 links: dict[str, DeviceLink]):  # fmt: skip
        self.spec, self.store, self.catalog = spec, store, catalog
        self.runs_on, self.model_keys, self.kinds, self.links = runs_on, model_keys, kinds, links
        self.version = spec.planner.predictor_version
        self.failed: set[tuple[str, str]] = set()  # (model, kind) whose probe raised

    def run(self) -> None:
        self.probe_unproven()
        self.batch_costs()

    def probe_unproven(self) -> None:
        """A (model, accelerator) whose profile serving has no evidence for yet is
        measured before any job is decided on it: `PROBES` runs of a fixed prompt at the
        fewest and most steps it was profiled at. Without this, a profile that is too
        slow gets every job rejected, and rejected jobs never produce the observations
        that would correct it. Each key is probed once for the life of the store."""
        corr = observed_corrections_in(self.store, self.version)
        planner = self.spec.planner
        for m, k in self.runs_on:
            key, kind = self.model_keys[m], self.kinds[k]
            have = corr.by_key.get((key, kind, 1))
            missing = PROBES - (have.n if have else 0)
            if missing <= 0:
                continue
            steps = planner.probe_steps(planner.options[m])[:missing]
            try:
                observed = self.probe(key, kind, steps)
            except Exception as exc:  # noqa: BLE001 - a failing model fails its jobs, not serving
                self.failed.add((key, kind))
                log.warning("probing %s on %s failed (%s): its profile stays unproven",
                            key, kind, type(exc).__name__)  # fmt: skip
                continue
            self.store.observe(observed, "probe", self.version)
            log.info("probed %s on %s: %s", key, kind,
                     ", ".join(f"{o.observed_s:.3f} s (predicted {o.predicted_s:.3f} s)"
                               for o in observed))  # fmt: skip

    def probe(self, key: str, kind: str, steps: tuple[int, ...]) -> list[Observation]:
        """Timed runs on the first device of `kind`, through its engine: where and as
        jobs run (a thread, or a device process). Each step count is timed as the sweep
        times a cell (`timed_repeats`: 2-5 calls until they agree, their median), so the
        probe and the profile it checks carry the same noise."""
        link, req = self._where(key, kind)
        link.probe(key, req, steps[0])  # untimed: the first call pays warm-up
        planner = self.spec.planner
        size = (req.width, req.height)
        out = []
        for n in steps:
            times, _ = timed_repeats(lambda n=n: (link.probe(key, req, n), None))
            predicted = planner.predicted_s(key, kind, n, size)
            out.append(Observation((key, kind, 1), predicted, statistics.median(times), n))
        return out

    def reference_key(self, kind: str) -> str | None:
        """The model a reference probe of `kind` runs: the fastest predicted at
        `IDLE_PROBE_STEPS` among those that run there and did not fail to probe."""
        planner, best = self.spec.planner, None
        for m, k in self.runs_on:
            key = self.model_keys[m]
            if self.kinds[k] != kind or (key, kind) in self.failed:
                continue
            size = self.spec.cards[key].resolution_pairs[0]
            t = planner.predicted_s(key, kind, self._reference_steps(m), size)
            if best is None or t < best[0]:
                best = (t, key, m)
        return None if best is None else best[1]

    def _reference_steps(self, m: int) -> int:
        lo, hi = self.spec.planner.probe_steps(self.spec.planner.options[m])
        return min(max(IDLE_PROBE_STEPS, lo), hi)

    def reference_probe(self, idle: Callable[[], bool] = lambda: True) -> list[Observation]:
        """One timed run of each kind's reference model, stored as a probe observation
        (the host drift's evidence while no job runs). A kind is skipped once `idle()`
        says work arrived: a probe never starts beside a job. Returns what it stored."""
        out = []
        for kind in self.kinds:
            link = self.links.get(kind)
            key = self.reference_key(kind) if link is not None else None
            if key is None or getattr(link, "out_of_service", False) or not idle():
                continue
            m = self.model_keys.index(key)
            link, req = self._where(key, kind)
            steps = self._reference_steps(m)
            try:
                seconds = link.probe(key, req, steps)
            except Exception as exc:  # noqa: BLE001 - the drift goes without this one
                log.warning("reference probe of %s on %s failed (%s)", key, kind,
                            type(exc).__name__)  # fmt: skip
                continue
            size = (req.width, req.height)
            o = Observation((key, kind, 1), self.spec.planner.predicted_s(key, kind, steps, size),
                            seconds, steps)  # fmt: skip
            self.store.observe([o], "probe", self.version)
            out.append(o)
        return out

    def _where(self, key: str, kind: str) -> tuple[DeviceLink, ImageRequest]:
        """(the device that measures `kind`, the probe's request for model `key`)."""
        card = self.spec.cards[key]
        w, h = card.resolution_pairs[0]
        req = ImageRequest(card.styled_prompt(PROBE_PROMPT, card.styles[0]), 0, w, h,
                           card.guidance_scale)  # fmt: skip
        return self.links[kind], req

    def batch_costs(self) -> None:
        """What a batch of b costs against one job, on a device of each kind (b probe
        jobs stepped together vs one, at the batch sizes the model was profiled at),
        instead of read off the latency predictor, whose batches are whole-pipeline
        calls of the sweep: the step engine's batches cost more than those (the
        sim-to-real bench measured 2.3-2.9x the busy time the predictor's factors
        gave), and the core's batching and the simulator's replay rest on it. Measured
        once per predictor version and kind; a later start reads them back."""
        planner = self.spec.planner
        stored = self.store.batch_costs(self.version)
        for m, k in self.runs_on:
            key, kind = self.model_keys[m], self.kinds[k]
            sizes = [b for b in planner.profiled_batches.get(key, []) if b > 1]
            if not sizes or (key, kind) in self.failed:
                continue
            cost = stored.get((key, kind), {})
            if not all(b in cost for b in sizes):
                cost = self._measure(key, kind, m, sizes)
                if cost is None:
                    continue
            f = self.catalog.batch_factor[(m, k)]
            f[1 : max(sizes) + 1] = np.interp(np.arange(1, max(sizes) + 1), [1, *sizes],
                                              [1.0, *(cost[b] for b in sizes)])  # fmt: skip

    def _measure(self, key: str, kind: str, m: int, sizes: list[int]) -> dict[int, float] | None:
        planner = self.spec.planner
        steps = min(BATCH_PROBE_STEPS, planner.probe_steps(planner.options[m])[1])
        link, req = self._where(key, kind)
        try:
            one = min(link.probe(key, req, steps) for _ in range(2))
            cost = {b: min(link.probe(key, req, steps, b) for _ in range(2)) / one for b in sizes}
        except Exception as exc:  # noqa: BLE001 - the predictor's factors stay
            log.warning("measuring batches of %s on %s failed (%s)", key, kind,
                        type(exc).__name__)  # fmt: skip
            return None
        self.store.put_batch_costs(self.version, key, kind, steps, cost)
        said = ", ".join(f"{b}: {c:.2f}x" for b, c in cost.items())
        log.info("batch cost of %s on %s at %d steps: %s", key, kind, steps, said)
        return cost
