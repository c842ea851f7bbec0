"""The serving runtime: the scheduling core, a device engine per device instance, and the
ledger of jobs in flight, for one `ServingSpec`. The Beam front (`pipelines/serving.py`)
is handed one and calls `submit`; the local driver owns it.

    submit ──► LiveCore.submit (scheduler/live.py: the simulator's core, policy P):
                 admit or refuse (`Simulator.arrive` → `policy.place`), queue, batch
                   │ StartSegment / Cut / Forget (scheduler/seam.py)
                   ▼
               DeviceLink ──► device engine (engine/device_engine.py: a step batch,
                   ▲            in a thread or a device process)
                   │ Started / Stepped / Done / Failed / SegmentEnded
               progress events out; outcomes to the sink (engine/outcomes.py)

No window barrier: a window's jobs join the queues and batches of jobs already running.
Before any job is decided, the calibrator (engine/calibrator.py) measures what serving
has no evidence for yet; while serving is idle, it now and then times a reference probe
(the host drift's evidence when no job brings any).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

from adapters.result_store import ResultStore
from engine.calibrator import Calibrator, IdleProbes
from engine.device_engine import DeviceEngine
from engine.device_process import DeviceProcess
from engine.link import DeviceLink
from engine.live_catalog import live_catalog
from engine.models import ServingModels
from engine.outcomes import Admitted, OutcomeSink
from engine.spec import ServingSpec
from models.accelerators import Accelerator
from scheduler.cluster import Cluster
from scheduler.elastic import Autoscaler
from scheduler.live import LIVE_CONFIG, LiveCore, LiveJob
from scheduler.policies import make_policy
from scheduler.seam import Done, Event, Failed, ImageRequest, SegmentJob, Started, Stepped
from sdaas.health import Faults
from sdaas.job_status import JobStatus
from sdaas.records import Job, model_key

log = logging.getLogger(__name__)
# a cancel request counts this long: read from the control topic, or remembered by the
# runtime for a job not handed over yet
CANCEL_MAX_AGE_S = 3600.0


@dataclass
class InFlight:
    """The jobs handed to the core and not answered yet, by (tenant, job_id); and those
    answered, for `wait`."""

    cv: threading.Condition = field(default_factory=threading.Condition)
    by_key: dict[tuple[str, str], int] = field(default_factory=dict)
    answered: set[int] = field(default_factory=set)


class ServingRuntime:
    def __init__(self, spec: ServingSpec, clock=time.time):
        self.spec, self.clock = spec, clock
        # what is wrong now (a store gone, an engine restarted): the heartbeat carries it
        # to the API's /readyz, and a fatal one stops the driver taking work
        self.faults = Faults()
        self.store = ResultStore(spec.store_path)
        self.models = ServingModels(spec.cards, spec.clip_path)
        if spec.emulate is not None:  # engines time steps from the profile: nothing to load
            self.models.load_s.update({k: t.load_s for k, t in spec.emulate.timings.items()})
        else:  # remote engines load their own: these only time the loads (and score)
            self.models.preload(spec.devices, keep=spec.max_resident is None and not spec.ray)
        self.kinds = spec.accelerators
        # instances in the core's order: kind by kind, devices in spec order (on a Ray
        # cluster: the engines its nodes offer, kind by kind, node by node, then room
        # for more up to `max_engines`)
        self.ray = self.scaling = None
        if spec.ray:
            from engine.ray_engines import fleet_instances

            slots, self.instances = fleet_instances(spec, self.kinds)
        else:
            self.instances = [d for k in self.kinds for d in spec.devices if d.name == k]
        cluster = Cluster(tuple((k, sum(d.name == k for d in self.instances)) for k in self.kinds))
        options = spec.planner.options
        self.model_keys = [model_key(o.name, o.version) for o in options]
        runs_on = sorted((m, k) for m, o in enumerate(options)
                         for k, a in enumerate(self.kinds) if a in o.accelerators)  # fmt: skip
        self.catalog = live_catalog(spec.planner, self.model_keys, self.kinds, runs_on,
                                    self.models.load_s, spec.max_resident)  # fmt: skip
        # a residency bound: switching a device to a model that is not resident costs
        # its load, in the core's predictions as on the device
        config = replace(LIVE_CONFIG, max_backlog_s=spec.max_backlog_s,
                         cold_start=spec.max_resident is not None)  # fmt: skip
        self.core = LiveCore(self.catalog, cluster, make_policy(spec.policy), config, clock)
        self.flight = InFlight()
        self.sink = OutcomeSink(spec, self.store, self.core, self.models, self.faults,
                                self._answered, model_keys=self.model_keys, kinds=self.kinds,
                                devices=self.instances, clock=clock)  # fmt: skip
        self.core.on_settled = self.sink.settled
        # progress out (pipelines/serving_events.py: EventPublisher.emit); None: not sent
        self.events = None
        # cancel requests for jobs not handed over yet: answered when their record is read
        self.cancel_early: dict[tuple[str, str], float] = {}  # -> when asked
        self._orders: dict[tuple[str, str], int] = {}  # (window, device) -> next run order
        processes = spec.device_processes
        if processes is None:
            processes = len(self.instances) > 1
        self.links = [DeviceLink(i, self.core, self._request_of, self._event, name=d.id,
                                 on_fault=self.faults.report)
                      for i, d in enumerate(self.instances)]  # fmt: skip
        self.core.attach(self.links)
        if spec.ray:
            from engine.ray_engines import RayEngines

            self.ray = RayEngines(self.core, self.links, [d.name for d in self.instances],
                                  self._ray_device, self._renamed)  # fmt: skip
            self.engines = self.ray.devices  # filled and emptied in place
            self.ray.start(slots)  # in parallel: each loads its models on its node
            if spec.max_engines:  # room to grow: follow the elastic signal
                from engine.scaling import RayAutoscaler, Scaling

                self.scaling = Scaling(self.ray, self.kinds, Autoscaler(), RayAutoscaler(),
                                       clock).start()  # fmt: skip
        else:
            pairs = zip(self.links, self.instances, strict=True)
            self.engines = [self._engine(link, d, processes) for link, d in pairs]
            for e in self.engines:
                e.start()
        first = {}
        for link, d in zip(self.links, self.instances, strict=True):
            if not link.out_of_service:
                first.setdefault(d.name, link)
        self.calibrator = Calibrator(spec, self.store, self.catalog, runs_on, self.model_keys,
                                     self.kinds, first)  # fmt: skip
        if spec.correct_latency:  # on the devices, before any job is decided
            self.calibrator.run()
        # reference probes while idle, when asked for: not under a residency bound (a probe
        # would load or reorder models behind the core's back) nor on a Ray fleet
        self.idle_probes = IdleProbes(time.monotonic())
        self._stopping = threading.Event()
        self._prober = None
        if (spec.idle_probe and spec.correct_latency and spec.max_resident is None
                and not spec.ray):  # fmt: skip
            self._prober = threading.Thread(target=self._probe_when_idle, daemon=True,
                                            name="sdaas-idle-probe")  # fmt: skip
            self._prober.start()

    def _probe_when_idle(self) -> None:
        """A reference probe whenever `IdleProbes` says one is due; skipped as soon as a
        job is in flight."""
        sched = self.idle_probes
        while not self._stopping.wait(min(max(sched.wait_s(time.monotonic()), 0.5), 5.0)):
            try:
                if sched.due(time.monotonic(), self.idle()):
                    sched.probed(time.monotonic())
                    self.calibrator.reference_probe(self.idle)
            except Exception:  # noqa: BLE001 - the drift goes without it, serving goes on
                log.exception("serving: the idle reference probe failed")

    def _ray_device(self, link: DeviceLink, slot):
        """The engine actor for one of the cluster's engine slots (not started)."""
        from engine.ray_device import CardLoader, RayDevice

        spec, d = self.spec, self.instances[link.index]
        loader = spec.emulate or CardLoader({k: spec.cards[k] for k in self.model_keys},
                                            ray_device(d.device))  # fmt: skip
        return RayDevice(link, slot, loader, self.model_keys, threads=spec.threads,
                         max_resident=spec.max_resident,
                         gpus=0.0 if d.device == "cpu" or spec.emulate else 1.0)  # fmt: skip

    def _renamed(self, i: int, slot) -> None:
        """Core slot i got an engine (or lost it): results name where they ran."""
        d = self.instances[i]
        name = slot.name if slot is not None else f"{d.name}#vacant{i}"
        self.instances[i] = replace(d, instance=name)
        self.links[i].name = name

    def _engine(self, link: DeviceLink, d: Accelerator, process: bool):
        spec = self.spec
        if process:
            device = DeviceProcess(link, spec.cards, self.model_keys, device=d.device,
                                   threads=spec.threads,
                                   max_resident=spec.max_resident)  # fmt: skip
        else:
            device = DeviceEngine(
                link.index, self.model_keys, lambda key: self.models.backend(key, d.device),
                link.handle, name=d.id, threads=spec.threads, clock=self.clock,
                max_resident=spec.max_resident,
                release=lambda key: self.models.release(key, d.device), on_crash=link.reset,
            )  # fmt: skip
        link.connect(device)
        return device

    def fleet(self) -> list[dict]:
        """The operator's view of the engines: where each runs, what it holds and runs,
        and how fast the core's commands reach it."""
        rows = []
        with self.core.lock:
            for i, (d, e) in enumerate(zip(self.instances, self.engines, strict=True)):
                queue = self.core.dev_queues[i] if self.core.dev_queues is not None else None
                rows.append({
                    "engine": d.id, "kind": d.name,
                    "node": getattr(getattr(e, "slot", None), "node_ip", "local"),
                    "state": getattr(e, "state", "serving"),
                    "in_service": i not in self.core.out_of_service,
                    "resident": list(getattr(e, "resident", None) or []),
                    "running": len(self.core.seg_jobs[i] or ()),
                    "queued": len(queue) if queue is not None else None,
                    "dispatch_p99_ms": _p99_ms(getattr(e, "dispatch_s", ())),
                })  # fmt: skip
        return rows

    # -- the front's side ---------------------------------------------------------------
    def in_flight(self, keys) -> set[tuple[str, str]]:
        """Of these (tenant, job_id)s, those handed over and not answered yet."""
        with self.flight.cv:
            return {k for k in keys if k in self.flight.by_key}

    def submit(self, fresh: list[tuple[Job, list]], scale: dict, wname: str) -> list[int]:
        """Hand a window's new jobs to the core, which admits or refuses each; refusals
        are stored before this returns, the rest as they end."""
        room = 1.0 - self.spec.planner.headroom  # plan against SLO x (1 - headroom)
        self.idle_probes.busy(time.monotonic())  # no reference probe right after these
        now = self.clock()  # an arrival is never later than now (a test's lead may be)
        jobs = []
        for p, opts in fresh:
            planned = list(opts)  # Option records: the core reads model, steps, pred_s
            r = p.request
            deadline = min(p.arrival_ts, now) + r.latency_slo_s * room
            jobs.append(LiveJob(r.style, deadline, r.min_clip, planned, planned,
                                Admitted(p, opts, scale, wname)))  # fmt: skip
        with self.core.lock:  # no device may end one of them before it is registered
            first = len(self.core.arrival)
            keys = [job.payload.key for job in jobs]
            with self.flight.cv:
                for x, k in enumerate(keys):
                    self.flight.by_key[k] = first + x
                # a cancel that came after its window checked, before it was registered
                early = [first + x for x, k in enumerate(keys)
                         if self.cancel_early.pop(k, None) is not None]  # fmt: skip
            try:
                indices = self.core.submit(jobs)
            except Exception:  # before the core registered them (it answers the rest):
                with self.flight.cv:  # not in flight, so the window fails them
                    for x, k in enumerate(keys):
                        if first + x >= len(self.core.status):
                            self.flight.by_key.pop(k, None)
                raise
            if self.events is not None:  # before any device can report a start
                for j in indices:
                    if self.core.status[j] == JobStatus.PENDING:
                        self._emit_planned(j)
            for j in early:
                self.core.cancel(j)
            return indices

    def _emit_planned(self, j: int) -> None:
        try:
            p = self.sink.planned(j)
            r = p.request
            model, _, version = p.model_key.rpartition("@")
            self.events(r.tenant, r.job_id, "planned", model=model, model_version=version,
                        accelerator=p.accelerator, steps=p.steps,
                        predicted_latency_s=round(p.predicted_s, 4),
                        predicted_clip=round(p.predicted_clip, 3))  # fmt: skip
        except Exception:  # noqa: BLE001 - progress is best effort; the job is in the core
            log.exception("serving: the planned event of job %d was not sent", j)

    def wait(self, indices, timeout: float | None = None) -> bool:
        """Until every one of these jobs has its outcome stored."""
        want = set(indices)
        end = None if timeout is None else time.monotonic() + timeout
        with self.flight.cv:
            while not want <= self.flight.answered:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.flight.cv.wait(left)
        return True

    def pending_sources(self) -> set[str]:
        """Sources of jobs handed over and not answered yet (the driver's ledger check)."""
        with self.flight.cv:
            return {self.core.payload[j].job.source for j in self.flight.by_key.values()}

    def idle(self) -> bool:
        with self.flight.cv:
            return not self.flight.by_key

    def drain(self, timeout: float | None = None) -> bool:
        """Until nothing is in flight (shutdown: finish what was admitted)."""
        with self.flight.cv:
            return self.flight.cv.wait_for(lambda: not self.flight.by_key, timeout)

    def cancel(self, tenant: str, job_id: str) -> bool:
        with self.flight.cv:
            j = self.flight.by_key.get((tenant, job_id))
        return j is not None and self.core.cancel(j)

    def cancel_request(self, tenant: str, job_id: str) -> None:
        """A tenant's cancel: in flight, cancelled in the core; not handed over yet (or
        already answered), remembered: `ServeWindow` answers it `cancelled` if its
        record comes (a job with a result is never run again anyway)."""
        if self.events is not None:  # when serving got it: "within one step" counts from here
            self.events(tenant, job_id, "cancelling")
        if not self.cancel(tenant, job_id):
            with self.flight.cv:
                now = self.clock()
                if len(self.cancel_early) >= 10_000:  # forget requests too old to count
                    self.cancel_early = {k: t for k, t in self.cancel_early.items()
                                         if now - t < CANCEL_MAX_AGE_S}  # fmt: skip
                self.cancel_early[(tenant, job_id)] = now

    def close(self) -> None:
        self._stopping.set()
        if self._prober is not None:
            self._prober.join(timeout=5.0)
        if self.scaling is not None:
            self.scaling.stop()
        for e in self.engines:
            e.stop(timeout=5.0)
        self.sink.close()
        if self.ray is not None:
            import ray

            ray.shutdown()  # a local instance ends; from a cluster, this process leaves

    # -- the devices' side ----------------------------------------------------------------
    def _answered(self, j: int, key: tuple[str, str], stored: bool) -> None:
        """The sink has job j's outcome (stored, or let go after a store fault)."""
        with self.flight.cv:
            if stored:
                self.flight.answered.add(j)
            self.flight.by_key.pop(key, None)
            self.core.payload[j] = None  # the prompt is not kept past its answer
            self.flight.cv.notify_all()

    def _request_of(self, sj: SegmentJob) -> ImageRequest:
        card = self.spec.cards[self.model_keys[sj.model]]
        r = self.core.payload[sj.index].job.request
        w, h = r.resolution or card.resolution_pairs[0]
        return ImageRequest(card.styled_prompt(r.prompt, r.style), r.seed, w, h,
                            card.guidance_scale)  # fmt: skip

    def _event(self, event: Event) -> None:
        """A device's event for one job: never raises into the device's loop."""
        try:
            a: Admitted | None = self.core.payload[event.job]
            if a is None:  # answered already (a cancel raced its last step)
                return
            tenant, job_id = a.key
            device = self.instances[event.device].id
            if isinstance(event, Started):
                key = (a.window, device)
                a.run_order = self._orders.get(key, 0)
                self._orders[key] = a.run_order + 1
                if self.events is not None:
                    self.events(tenant, job_id, "started", device=device)
            elif isinstance(event, Stepped):
                if self.events is not None:
                    self.events(tenant, job_id, "step", step=event.step, of=event.of)
            elif isinstance(event, Done):
                self.sink.done(event)
            elif isinstance(event, Failed):
                self.sink.failed(event, a)
        except Exception:  # noqa: BLE001 - a sink bug must not stop a device
            log.exception("serving: handling %s of job %d failed", event.kind, event.job)


def ray_device(device: str) -> str:
    """The torch device an engine uses on its node: Ray gives a GPU engine its GPU as
    the only one it sees."""
    return "cpu" if device == "cpu" else "cuda:0"


def _p99_ms(values) -> float | None:
    xs = sorted(values)
    return round(xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1e3, 2) if xs else None
