"""Ray fleet scale and a node that dies: one live core over the device engines of 1, 2
and 4 Ray nodes (issue 27), each node offering 4 emulated A100s.

Everything that serves is the served system's own code: a `LiveCore` (the policy,
slack-sjf unless --policy says otherwise) over one `DeviceLink` + `RayDevice` per
engine, each engine an `EngineActor` on the node that offers it (`engine/ray_device.py`),
the nodes a local Ray cluster of one raylet each on loopback (`engine/ray_local.py`).
Only the GPUs are emulated (`models/emulated.py`): each step sleeps its time from the
reference catalog's A100 profile (`timing_from_profile`; models preloaded, so load
seconds 0, as serving's core assumes: `LIVE_CONFIG.cold_start` is False), images 8x8.

SCALING. Per size: the `mixed` SLO classes over the catalog's styles (tight 1 s / loose
5 s x min CLIP 25 / 29.5), each job the planner's option for its class on A100;
Poisson arrivals at rate = LOAD x GPUs / mean predicted batch-1 service time, so the
offered load per GPU is the same at every size, for DURATION_S seconds; a driver loop
submits each job at its arrival time (`LiveJob`, deadline = arrival + its SLO). After a
short warm-up (2 jobs per engine, not counted). Measured per size: served jobs/s (jobs
DONE / first arrival to last finish), goodput (jobs DONE within their latency SLO, over
ALL arrived jobs; the lost share, rejected + dropped + failed, beside it), the
core-to-engine dispatch p50/p99 (`RayDevice.dispatch_s` over every engine: a command's
send to its apply on the actor), the driver's lag behind the arrival times, and where
the host's CPU went (the bench process by thread group, Ray's processes by role, and the
rest of the machine: other work on the host). Targets (issue 27): jobs/s at 4 nodes >=
3.6x at 1 node at the same goodput; dispatch p99 <= 10 ms. Reported as they come out.

PROFILE (not with --quick unless --profile). On the 4-node fleet, after its measured
run, with fresh engines: a short run again with every
thread of this process under cProfile timed by each thread's CPU clock (readers, the
driver), so the CPU the serving process spends is split by function (Ray's own native
threads are not Python: they are what the process's CPU minus the profiled sum is).

NODE KILL. On the 2-node fleet's engines, after its measured run: a burst of Poisson
arrivals at KILL_LOAD per GPU (survivors at 2x that after the kill) for
KILL_DURATION_S; at KILL_AT of the burst, once the worker node runs a segment, the
worker node is removed (`Cluster.remove_node`: its raylet and its engines die). Counted
from the core's statuses and the devices' Done/Started events (no ResultStore at this
level): jobs lost (arrived, no outcome), jobs completed twice (Done events > 1), jobs
that had started on the dead node and finished elsewhere, what became of the jobs the
node held at the kill (running, preempted there, queued there), each failed job's
error, and the goodput of the rest.

Writes bench/results/ray_bench.json (the command, the host's load average before and
after, every number above) and bench/results/ray_scaling.png (served jobs/s against
nodes, linear from 1 node for reference); --quick writes ray_bench_quick.json /
ray_scaling_quick.png. Most of the wall time is starting Ray: each engine actor is a
Python worker process of its own (~3 s of CPU each here), and `local_fleet`'s teardown
waits up to 20 s while any Ray process runs on the host, another session's too.
About 7 min on 2 cores; --quick about 2-3 min.
Usage: python bench/ray_bench.py [--quick] [--policy KEY] [--load X] [--duration-s S]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
from bench_host import host_info

from engine.emulated_devices import timing_from_profile
from engine.link import DeviceLink
from engine.ray_fleet import engine_slots, resource_name
from engine.ray_local import local_fleet, ray_processes
from models.emulated import EmulatedLoader
from scheduler.catalog import load_catalog
from scheduler.cluster import Cluster
from scheduler.live import LIVE_CONFIG, LiveCore, LiveJob
from scheduler.options import ClassOptions
from scheduler.policies import make_policy
from scheduler.seam import Done, Failed, ImageRequest, Started, Stepped
from scheduler.workload import poisson_arrivals, slo_mix
from sdaas.job_status import JobStatus

RESULTS = Path(__file__).resolve().parent / "results"
KIND = "A100"  # the reference catalog's A100 (DiffServe's rows: every model, batch sizes)
GPUS_PER_NODE = 4
SIZES = (1, 2, 4)  # Ray nodes
POLICY = "slack-sjf"
SLO_MIX = "mixed"
LOAD = 0.7  # offered load per GPU: arrivals over GPUs / mean predicted service time
DURATION_S, QUICK_DURATION_S = 60.0, 10.0  # of arrivals, per size
PROFILE_S, QUICK_PROFILE_S = 15.0, 6.0
KILL_NODES = 2
KILL_LOAD = 0.4  # per GPU before the kill: the survivors carry 2x, 0.8, after it
KILL_DURATION_S, QUICK_KILL_DURATION_S = 24.0, 10.0
KILL_AT = 0.35  # of the burst's arrivals
IMAGE_SIZE = (8, 8)  # what the emulated engines make: small at scale
REQUEST = (512, 512)  # what jobs ask for (batching groups by it): the profiles' size
GUIDANCE = 7.5
WARMUP_PER_ENGINE = 2
STALL_S = 60.0  # jobs in flight and none settled this long: stop waiting, count them
TARGET_RATIO, TARGET_DISPATCH_P99_S = 3.6, 0.010
SEED = 0
TOP = 25  # profile rows kept


# -------------------------------------------------------------------------------- setup
class Setup:
    """The catalog, the SLO classes and their options on A100, the emulated timings."""

    def __init__(self, policy: str):
        self.policy = policy
        self.catalog = load_catalog([KIND])
        cat = self.catalog
        self.classes = slo_mix(SLO_MIX, cat.all_styles)
        cfg = LIVE_CONFIG
        self.options = ClassOptions.build(cat, self.classes, [0], cfg.clip_margin,
                                          cfg.relaxed_margin)  # fmt: skip
        w = np.array([c.weight for c in self.classes], float)
        self.weights = w / w.sum()
        pred = np.array([o[0].pred_s for o in self.options.planned])
        self.mean_pred_s = float(self.weights @ pred)
        self.timings = {m: replace(timing_from_profile(m, KIND, cat), load_s=0.0)
                        for m in cat.models}  # fmt: skip
        self.loader = EmulatedLoader(self.timings, device=f"emulated-{KIND}", size=IMAGE_SIZE)

    def rate(self, load: float, gpus: int) -> float:
        return load * gpus / self.mean_pred_s

    def jobs(self, rate: float, duration: float, seed: int):
        """(arrival s from 0, class) per job: Poisson at exactly `rate` over ~duration."""
        rng = np.random.default_rng(seed)
        n = max(2, round(rate * duration))
        cls = rng.choice(len(self.classes), size=n, p=self.weights)
        return list(zip(poisson_arrivals(rate, n, rng).tolist(), cls.tolist(), strict=True))

    def live_job(self, c: int, arrival_ts: float, seed: int) -> LiveJob:
        k = self.classes[c]
        req = ImageRequest(f"a lighthouse at dusk, {k.style}", seed, *REQUEST, GUIDANCE)
        return LiveJob(k.style, arrival_ts + k.latency_slo_s, k.min_clip,
                       self.options.planned[c], self.options.relaxed[c], payload=req)  # fmt: skip

    def describe(self) -> dict:
        return {
            "kind": KIND,
            "resource": resource_name(KIND),
            "slo_mix": SLO_MIX,
            "classes": [
                {
                    "style": k.style,
                    "latency_slo_s": k.latency_slo_s,
                    "min_clip": k.min_clip,
                    "model": self.catalog.models[o[0].model],
                    "steps": o[0].steps,
                    "pred_s": o[0].pred_s,
                }  # fmt: skip
                for k, o in zip(self.classes, self.options.planned, strict=True)
            ],
            "mean_pred_s": self.mean_pred_s,
            "emulated_timings": {
                m: {
                    "fixed_s": t.fixed_s,
                    "step_s": t.step_s,
                    "batch_factor": t.batch_factor,
                    "load_s": t.load_s,
                }  # fmt: skip
                for m, t in self.timings.items()
            },
            "image_size": IMAGE_SIZE,
            "request_size": REQUEST,
        }


class Recorder:
    """Every job event from the engines (a DeviceLink's `on_job_event`), kept small: it
    runs in the readers' threads, on the path this bench measures."""

    def __init__(self):
        self.lock = threading.Lock()
        self.done: list[tuple[int, int, float]] = []  # (job, device, t)
        self.max_batch: dict[int, int] = {}  # job -> the largest batch it ran in
        self.started: list[tuple[int, int, float]] = []
        self.failed: list[tuple[int, int, str]] = []
        self.steps = 0
        self.faults: list[tuple[float, str, str, bool]] = []

    def __call__(self, event) -> None:
        t = time.time()
        with self.lock:
            if isinstance(event, Stepped):
                self.steps += 1
            elif isinstance(event, Done):
                self.done.append((event.job, event.device, t))
                self.max_batch[event.job] = event.stats.max_batch
            elif isinstance(event, Started):
                self.started.append((event.job, event.device, t))
            elif isinstance(event, Failed):
                self.failed.append((event.job, event.device, event.error))

    def fault(self, part: str, why: str, fatal: bool = False) -> None:
        with self.lock:
            self.faults.append((time.time(), part, why, fatal))


class Serving:
    """A live core over every engine the fleet offers, one RayDevice each."""

    def __init__(self, setup: Setup):
        from engine.ray_device import RayDevice, start_all

        self.slots = engine_slots([KIND])
        self.core = LiveCore(setup.catalog, Cluster.parse(f"{len(self.slots)}x{KIND}"),
                             make_policy(setup.policy), LIVE_CONFIG)  # fmt: skip
        self.rec = Recorder()
        core = self.core
        self.links = [DeviceLink(i, core, lambda sj: core.payload[sj.index], self.rec,
                                 name=s.name, on_fault=self.rec.fault)
                      for i, s in enumerate(self.slots)]  # fmt: skip
        self.devices = [RayDevice(link, s, setup.loader, setup.catalog.models)
                        for link, s in zip(self.links, self.slots, strict=True)]  # fmt: skip
        for link, d in zip(self.links, self.devices, strict=True):
            link.connect(d)
        core.attach(self.links)
        t0 = time.monotonic()
        start_all(self.devices)
        self.start_s = time.monotonic() - t0

    def stop(self) -> None:
        for d in self.devices:
            d.stop(5.0)


# ------------------------------------------------------------------------------ driving
def pct(xs, q) -> float:
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


def wait_settled(core: LiveCore, first: int = 0) -> bool:
    """Until the core has settled every job from `first` on; False when none settled in
    STALL_S (the rest are counted as without outcome)."""

    def left() -> int:
        with core.lock:
            return sum(1 for s in core.status[first:] if s == JobStatus.PENDING)

    last, n = time.monotonic(), left()
    while n:
        time.sleep(0.02)
        m = left()
        if m < n:
            last, n = time.monotonic(), m
        elif time.monotonic() - last > STALL_S:
            return False
    return True


def warm_up(setup: Setup, serving: Serving) -> None:
    """A few jobs per engine (first calls, first segments), then forget their numbers."""
    now = time.time()
    n = WARMUP_PER_ENGINE * len(serving.devices)
    serving.core.submit([setup.live_job(j % len(setup.classes), now + 60.0, j)
                         for j in range(n)])  # fmt: skip
    wait_settled(serving.core)
    for d in serving.devices:
        d.dispatch_s.clear()


def drive(setup: Setup, core: LiveCore, jobs, t0: float, seed0: int = 0) -> dict:
    """Submit each job at t0 + its arrival (every job due at once in one call, should
    the loop fall behind). Returns per job: its core index, class, arrival, lag."""
    index, arrival, lag = [], [], []
    k, n = 0, len(jobs)
    while k < n:
        now = time.time()
        due_at = t0 + jobs[k][0]
        if now < due_at:
            time.sleep(min(due_at - now, 0.05))
            continue
        batch = []
        while k < n and t0 + jobs[k][0] <= now:
            a, c = jobs[k]
            batch.append(setup.live_job(c, t0 + a, seed0 + k))
            arrival.append(t0 + a)
            lag.append(now - (t0 + a))
            k += 1
        index.extend(core.submit(batch))
    return {"index": index, "cls": [c for _, c in jobs], "arrival": arrival, "lag": lag}


def outcomes(setup: Setup, core: LiveCore, driven: dict, jobs_of=None) -> dict:
    """Served jobs/s, goodput over all arrived, lost share, latencies, of the driven jobs
    (or of `jobs_of`: positions in them)."""
    pos = range(len(driven["index"])) if jobs_of is None else jobs_of
    with core.lock:
        status = [JobStatus(core.status[driven["index"][p]]) for p in pos]
        finish = [core.finish[driven["index"][p]] for p in pos]
    arr = [driven["arrival"][p] for p in pos]
    slo = [setup.classes[driven["cls"][p]].latency_slo_s for p in pos]
    n = len(status)
    done = [x for x in range(n) if status[x] == JobStatus.DONE]
    lat = [finish[x] - arr[x] for x in done]
    met = sum(1 for x, la in zip(done, lat, strict=True) if la <= slo[x])
    counts = Counter(s.word for s in status)
    lost = sum(counts.get(w, 0) for w in ("rejected", "dropped", "failed"))
    span = (max(finish[x] for x in done) - min(arr)) if done else float("nan")
    return {
        "arrived": n,
        "statuses": dict(counts),
        "served_jobs_per_s": len(done) / span if done else 0.0,
        "span_s": span,
        "goodput": met / n if n else float("nan"),
        "lost_share": lost / n if n else float("nan"),
        "no_outcome": counts.get("pending", 0),
        "latency_p50_s": pct(lat, 50),
        "latency_p99_s": pct(lat, 99),
    }


def dispatch(devices) -> dict:
    per = [list(d.dispatch_s) for d in devices]
    every = [x for p in per for x in p]
    return {
        "commands": len(every),
        "p50_ms": 1e3 * pct(every, 50),
        "p99_ms": 1e3 * pct(every, 99),
        "max_ms": 1e3 * max(every) if every else float("nan"),
        "worst_engine_p99_ms": 1e3 * max((pct(p, 99) for p in per if p), default=float("nan")),
    }


# ------------------------------------------------------------------------ CPU accounting
def _role(p: psutil.Process) -> str:
    try:
        text = " ".join([p.name(), *p.cmdline()])
    except psutil.Error:
        return "ray other"
    for key, role in (("EngineActor", "engine actors"), ("raylet", "raylets"),
                      ("gcs_server", "gcs"), ("default_worker", "idle ray workers")):  # fmt: skip
        if key in text:
            return role
    return "ray other"


def my_ray_processes() -> list[psutil.Process]:
    """Ray's processes that this bench started (its descendants): other sessions on the
    host may run Ray clusters of their own."""
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    return [p for p in ray_processes() if p.pid in mine]


def still_running(pids: set[int]) -> list[int]:
    """Those of `pids` that still run (a Ray process of ours that outlived its fleet)."""
    return sorted(p for p in pids if psutil.pid_exists(p))


def cpu_snapshot() -> dict:
    """CPU seconds so far: this process by thread group, Ray's processes by role (pid ->
    (role, s)), and the machine's busy seconds."""
    me = psutil.Process()
    names = {t.native_id: t.name for t in threading.enumerate()}
    main_id = threading.main_thread().native_id
    threads: dict[str, float] = defaultdict(float)
    for t in me.threads():
        name = names.get(t.id)
        if t.id == main_id:
            group = "driver loop (main thread)"
        elif name is None:
            group = "native threads (Ray core worker, gRPC, ...)"
        elif name.startswith("sdaas-ray-engine"):
            group = "reader threads (decode, link, core)"
        else:
            group = "other Python threads"
        threads[group] += t.user_time + t.system_time
    ray = {}
    for p in my_ray_processes():
        try:
            c = p.cpu_times()
            ray[p.pid] = (_role(p), c.user + c.system)
        except psutil.Error:
            pass
    sys_t = psutil.cpu_times()
    busy = sum(sys_t) - sys_t.idle - getattr(sys_t, "iowait", 0.0)
    return {"t": time.monotonic(), "threads": dict(threads), "ray": ray, "busy": busy}


def cpu_used(a: dict, b: dict) -> dict:
    """Cores used between two snapshots, by part (CPU seconds over wall seconds)."""
    wall = b["t"] - a["t"]
    out: dict[str, float] = {}
    for g, s in b["threads"].items():
        out[f"bench process: {g}"] = (s - a["threads"].get(g, 0.0)) / wall
    roles: dict[str, float] = defaultdict(float)
    for pid, (role, s) in b["ray"].items():
        roles[role] += s - a["ray"].get(pid, (role, 0.0))[1]
    for role, s in roles.items():
        out[f"ray: {role}"] = s / wall
    ours = sum(out.values())
    machine = (b["busy"] - a["busy"]) / wall
    out["bench process: total"] = sum(v for k, v in out.items() if k.startswith("bench"))
    out["ray: total"] = sum(v for k, v in out.items() if k.startswith("ray: "))
    out["machine busy"] = machine
    out["rest of the machine (not this bench)"] = max(0.0, machine - ours)
    return {k: round(v, 3) for k, v in out.items()} | {"wall_s": round(wall, 2)}


# ---------------------------------------------------------------------------- the runs
def scaling_run(setup: Setup, nodes: int, args, cluster_start_s: float) -> tuple[dict, Serving]:
    serving = Serving(setup)
    gpus = len(serving.devices)
    if gpus != nodes * GPUS_PER_NODE:
        raise RuntimeError(f"{nodes} nodes offer {gpus} engines, not {nodes * GPUS_PER_NODE}")
    warm_up(setup, serving)
    core = serving.core
    first = len(core.arrival)
    rate = setup.rate(args.load, gpus)
    jobs = setup.jobs(rate, args.duration_s, SEED)
    print(f"  {nodes} node(s), {gpus} engines: {len(jobs)} jobs at {rate:.1f} jobs/s "
          f"for {jobs[-1][0]:.0f} s", flush=True)  # fmt: skip
    steps0 = serving.rec.steps
    cpu0, t_start = cpu_snapshot(), time.time()
    driven = drive(setup, core, jobs, t_start + 0.2)
    settled = wait_settled(core, first)
    cpu1 = cpu_snapshot()
    r = {
        "nodes": nodes,
        "gpus": gpus,
        "offered_jobs_per_s": rate,
        "arrival_window_s": jobs[-1][0],
        "cluster_start_s": cluster_start_s,
        "engines_start_s": serving.start_s,
        **outcomes(setup, core, driven),
        "all_settled": settled,
        "dispatch": dispatch(serving.devices),
        "driver_lag_ms": {
            "p50": 1e3 * pct(driven["lag"], 50),
            "p99": 1e3 * pct(driven["lag"], 99),
            "max": 1e3 * max(driven["lag"]),
        },  # fmt: skip
        "stepped_events_per_s": (serving.rec.steps - steps0) / (cpu1["t"] - cpu0["t"]),
        "mean_max_batch": _mean_max_batch(serving.rec, driven),
        "cpu_cores": cpu_used(cpu0, cpu1),
        "faults": [f"{p}: {w}" for _, p, w, _ in serving.rec.faults],
    }
    d = r["dispatch"]
    print(f"  -> {r['served_jobs_per_s']:.2f} jobs/s served, goodput {r['goodput']:.1%}, "
          f"lost {r['lost_share']:.1%}, dispatch p50 {d['p50_ms']:.1f} ms p99 "
          f"{d['p99_ms']:.1f} ms, driver lag p99 {r['driver_lag_ms']['p99']:.0f} ms; "
          f"bench process {r['cpu_cores']['bench process: total']:.2f} cores, machine "
          f"{r['cpu_cores']['machine busy']:.2f}", flush=True)  # fmt: skip
    return r, serving


def _mean_max_batch(rec: Recorder, driven: dict) -> float:
    """The mean over done jobs of the largest batch each ran in (the engines' stats)."""
    with rec.lock:
        b = [rec.max_batch[j] for j in driven["index"] if j in rec.max_batch]
    return float(np.mean(b)) if b else float("nan")


def profile_run(setup: Setup, args) -> dict:
    """A short run with every thread of this process under cProfile on its own CPU
    clock; the functions that took the process's CPU."""
    profiles: list[tuple[threading.Thread, cProfile.Profile]] = []
    run = threading.Thread.run

    def profiled(self):
        prof = cProfile.Profile(time.thread_time)
        profiles.append((self, prof))
        prof.enable()
        try:
            run(self)
        finally:
            prof.disable()

    threading.Thread.run = profiled
    try:
        serving = Serving(setup)
        warm_up(setup, serving)
        gpus = len(serving.devices)
        rate = setup.rate(args.load, gpus)
        jobs = setup.jobs(rate, args.profile_s, SEED + 1)
        print(f"  profile: {len(jobs)} jobs at {rate:.1f} jobs/s, every thread under cProfile",
              flush=True)  # fmt: skip
        main = cProfile.Profile(time.thread_time)
        cpu0 = cpu_snapshot()
        main.enable()
        driven = drive(setup, serving.core, jobs, time.time() + 0.2)
        wait_settled(serving.core, driven["index"][0])
        main.disable()
        cpu1 = cpu_snapshot()
        res = outcomes(setup, serving.core, driven)
        serving.stop()
    finally:
        threading.Thread.run = run
    stats = pstats.Stats(main)
    running = 0
    for thread, p in profiles:
        if thread.is_alive():  # its profiler is still on: not read from here
            running += 1
            continue
        try:
            stats.add(p)
        except TypeError:  # a thread that never ran a profiled call
            pass
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in stats.stats.values())
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:TOP]
    top = [{"function": f"{Path(f).name}:{line}({fn})", "calls": nc, "cpu_s": round(tt, 3),
            "share": round(tt / total, 4), "cum_cpu_s": round(ct, 3)}
           for (f, line, fn), (_cc, nc, tt, ct, _callers) in rows]  # fmt: skip
    by_cum = {}
    wanted = ("decode", "encode", "handle", "segment_end", "submit", "_read", "send",
              "_dispatch", "get", "remote")  # fmt: skip
    for (f, line, fn), (_cc, nc, _tt, ct, _callers) in stats.stats.items():
        short = f"{Path(f).name}:{line}({fn})"
        if fn in wanted and ct > 0.01 * total:
            by_cum[short] = {"calls": nc, "cum_cpu_s": round(ct, 3),
                             "cum_share": round(ct / total, 4)}  # fmt: skip
    cores = cpu_used(cpu0, cpu1)
    print(f"  profile: {total:.1f} CPU s in Python frames over {cores['wall_s']:.0f} s; "
          f"top: {top[0]['function']} {top[0]['share']:.0%}", flush=True)  # fmt: skip
    return {
        "nodes": len(serving.devices) // GPUS_PER_NODE,
        "jobs": len(jobs),
        "note": "cProfile on each thread's CPU clock (time.thread_time): CPU, not waiting; "
        "its own overhead inflates Python-level costs (roughly 1.5-2x), so compare shares",
        "profiled_cpu_s": round(total, 3),
        "threads_left_out_still_running": running,
        "cpu_cores": cores,
        "outcome_under_profiler": {
            k: res[k] for k in ("served_jobs_per_s", "goodput", "lost_share")
        },  # fmt: skip
        "top_by_own_cpu": top,
        "key_functions_cumulative": dict(
            sorted(by_cum.items(), key=lambda kv: kv[1]["cum_cpu_s"], reverse=True)
        ),
    }


def kill_run(setup: Setup, cluster, serving: Serving, args) -> dict:
    """On the 2-node fleet's engines (its scaling run over, every job settled): a burst,
    the worker node removed mid-burst."""
    core, rec = serving.core, serving.rec
    worker = next(iter(cluster.worker_nodes))
    victims = {d.index for d in serving.devices if d.slot.node_id == worker.node_id}
    gpus = len(serving.devices)
    rate = setup.rate(args.kill_load, gpus)
    jobs = setup.jobs(rate, args.kill_duration_s, SEED + 2)
    first = len(core.arrival)
    rec_started0, rec_done0 = len(rec.started), len(rec.done)
    print(
        f"  node kill: {gpus} engines ({len(victims)} on the worker), {len(jobs)} jobs at "
        f"{rate:.1f} jobs/s; the worker goes at {KILL_AT:.0%} of the burst",
        flush=True,
    )
    t0 = time.time() + 0.2
    kill: dict = {}

    def killer():
        time.sleep(max(0.0, t0 + KILL_AT * jobs[-1][0] - time.time()))
        end = time.monotonic() + 30
        while not any(core.seg_jobs[i] for i in victims) and time.monotonic() < end:
            time.sleep(0.002)
        with core.lock:  # what the node holds, as the node goes
            pending = [j for j in range(first, len(core.status))
                       if core.status[j] == JobStatus.PENDING]  # fmt: skip
            running = sorted({j for i in victims for j in core.seg_jobs[i] or ()})
            held = sorted(j for j in pending if core.ran_on[j] in victims and j not in running)
            queued = sorted(j for j in pending
                            if core.dev_of[j] in victims and core.ran_on[j] < 0)  # fmt: skip
            kill["t"] = time.time()
        cluster.remove_node(worker)
        kill["remove_node_s"] = time.time() - kill["t"]
        kill["running"], kill["held"], kill["queued"] = running, held, queued

    thread = threading.Thread(target=killer, name="bench-killer")
    thread.start()
    driven = drive(setup, core, jobs, t0)
    thread.join()
    settled = wait_settled(core, first)
    states = {d.index: d.state for d in serving.devices}
    time.sleep(1.0)  # late events (a Done after the settle) would be counted
    with rec.lock:
        done = rec.done[rec_done0:]
        started = rec.started[rec_started0:]
        failed = [(j, dev, why) for j, dev, why in rec.failed if j >= first]
        faults = list(rec.faults)
    with core.lock:
        crashes = {j: core.crashes[j] for j, _, _ in failed}
    pos_of = {j: p for p, j in enumerate(driven["index"])}
    done_n = Counter(j for j, _, _ in done if j in pos_of)
    done_dev = defaultdict(set)
    for j, dev, _ in done:
        done_dev[j].add(dev)
    started_dead = {j for j, dev, _ in started if dev in victims and j in pos_of}
    with core.lock:
        status = {j: JobStatus(core.status[j]) for j in driven["index"]}
    moved = sorted(j for j in started_dead if done_dev[j] - victims)
    on_dead = {*kill["running"], *kill["held"], *kill["queued"]}
    rest = [pos_of[j] for j in driven["index"] if j not in on_dead]
    hit = [pos_of[j] for j in driven["index"] if j in on_dead]
    victim_parts = {f"engine {serving.slots[d].name}" for d in victims}
    victim_faults = [t - kill["t"] for t, part, _w, _f in faults
                     if t >= kill["t"] and part in victim_parts]  # fmt: skip
    all_out = outcomes(setup, core, driven)
    r = {
        "nodes": KILL_NODES,
        "gpus": gpus,
        "engines_on_killed_node": len(victims),
        "offered_jobs_per_s": rate,
        "load_per_gpu_before_kill": args.kill_load,
        "killed_at_s_into_burst": kill["t"] - t0,
        "remove_node_s": kill["remove_node_s"],
        "fault_reported_after_kill_s": min(victim_faults) if victim_faults else None,
        "jobs_arrived": len(driven["index"]),
        "all_settled": settled,
        "jobs_lost_no_outcome": sum(1 for s in status.values() if s == JobStatus.PENDING),
        "jobs_core_done_without_done_event": sum(
            1 for j, s in status.items() if s == JobStatus.DONE and not done_n[j]
        ),
        "jobs_completed_twice": sum(1 for n in done_n.values() if n > 1),
        "jobs_on_dead_node_at_kill": {
            "running": len(kill["running"]),
            "preempted_state_there": len(kill["held"]),
            "queued_there_not_started": len(kill["queued"]),
        },
        "jobs_started_on_dead_node": len(started_dead),
        "jobs_started_on_dead_node_finished_elsewhere": len(moved),
        "outcomes_of_jobs_on_dead_node_at_kill": Counter(
            status[j].word for j in on_dead if j in status
        ),  # fmt: skip
        "all_arrived": all_out,
        "jobs_on_dead_node_at_kill_outcome": outcomes(setup, core, driven, hit) if hit else {},
        "the_rest": outcomes(setup, core, driven, rest),
        "failed_jobs": [
            {
                "job": j,
                "device": dev,
                "on_dead_node_at_kill": j in on_dead,
                "crash_count": crashes[j],
                "error": why,
            }  # fmt: skip
            for j, dev, why in failed
        ],
        "engine_states_after": Counter(states.values()),
        "faults": [f"{t - kill['t']:+.2f} s {p}: {w}" for t, p, w, _ in faults],
        "counted_from": "the core's statuses and the Started/Done events the engines sent "
        "(no ResultStore at this level: a Done is counted when the reader hands it on)",
    }
    print(
        f"  -> lost {r['jobs_lost_no_outcome']}, twice {r['jobs_completed_twice']}, "
        f"started on the dead node and finished elsewhere {len(moved)}, goodput "
        f"{all_out['goodput']:.1%} (the rest {r['the_rest']['goodput']:.1%}), fault "
        f"reported {r['fault_reported_after_kill_s']} s after the kill",
        flush=True,
    )
    return r


# --------------------------------------------------------------------------------- main
def plot(sizes: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [s["nodes"] for s in sizes]
    served = [s["served_jobs_per_s"] for s in sizes]
    base = served[0] / nodes[0]
    fig, ax = plt.subplots(figsize=(4.8, 3.4), dpi=110)
    ax.plot(nodes, [base * n for n in nodes], "--", color="grey", label="linear from 1 node")
    ax.plot(nodes, [s["offered_jobs_per_s"] for s in sizes], ":", color="tab:orange",
            label="offered")  # fmt: skip
    ax.plot(nodes, served, "o-", color="tab:blue", label="served (jobs DONE / span)")
    for n, v, s in zip(nodes, served, sizes, strict=True):
        ax.annotate(f"{s['goodput']:.0%}", (n, v), textcoords="offset points", xytext=(4, -12),
                    fontsize=7)  # fmt: skip
    ax.set_xticks(nodes)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"Ray nodes ({GPUS_PER_NODE} emulated {KIND} each)")
    ax.set_ylabel("jobs/s")
    ax.set_title("One live core over Ray engines (labels: goodput)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke run, ~2 min)")
    ap.add_argument("--policy", default=POLICY, help=f"scheduling policy (default {POLICY})")
    ap.add_argument("--load", type=float, default=LOAD,
                    help=f"offered load per GPU in the scaling runs (default {LOAD})")  # fmt: skip
    ap.add_argument("--duration-s", type=float, default=None,
                    help=f"seconds of arrivals per size (default {DURATION_S:g}, "
                         f"--quick {QUICK_DURATION_S:g})")  # fmt: skip
    ap.add_argument(
        "--kill-load",
        type=float,
        default=KILL_LOAD,
        help=f"load per GPU of the node-kill burst (default {KILL_LOAD})",
    )
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                    help="the profiled 4-node run (default: on, off with --quick)")  # fmt: skip
    ap.add_argument("--no-kill", action="store_true", help="skip the node-kill run")
    args = ap.parse_args()
    args.duration_s = args.duration_s or (QUICK_DURATION_S if args.quick else DURATION_S)
    args.profile_s = QUICK_PROFILE_S if args.quick else PROFILE_S
    args.profile = not args.quick if args.profile is None else args.profile
    args.kill_duration_s = QUICK_KILL_DURATION_S if args.quick else KILL_DURATION_S
    load0 = os.getloadavg()
    wall0 = time.monotonic()
    setup = Setup(args.policy)
    print(f"ray bench: {args.policy}, load {args.load} per GPU, {args.duration_s:g} s per "
          f"size; mean predicted service {setup.mean_pred_s * 1e3:.0f} ms; load average "
          f"{load0[0]:.2f}", flush=True)  # fmt: skip
    sizes, kill, prof, left = [], None, None, {}
    for nodes in SIZES:
        t0 = time.monotonic()
        with local_fleet([{KIND: GPUS_PER_NODE}] * nodes) as cluster:
            r, serving = scaling_run(setup, nodes, args, time.monotonic() - t0)
            r["load_avg_after"] = os.getloadavg()
            sizes.append(r)
            if nodes == KILL_NODES and not args.no_kill:
                kill = kill_run(setup, cluster, serving, args)
            serving.stop()
            if nodes == max(SIZES) and args.profile:
                prof = profile_run(setup, args)
            ours = {p.pid for p in my_ray_processes()}
            t_down = time.monotonic()
        r["teardown_s"] = time.monotonic() - t_down
        left[nodes] = still_running(ours)
        print(f"  fleet of {nodes} down in all {time.monotonic() - t0:.0f} s; Ray processes "
              f"left: {left[nodes]}", flush=True)  # fmt: skip
    one, top = sizes[0], sizes[-1]
    ratio = top["served_jobs_per_s"] / one["served_jobs_per_s"]
    p99 = max(s["dispatch"]["p99_ms"] for s in sizes)
    verdict = {
        f"jobs_per_s_{top['nodes']}_over_1_node": ratio,
        "goodput_per_size": {s["nodes"]: s["goodput"] for s in sizes},
        "lost_share_per_size": {s["nodes"]: s["lost_share"] for s in sizes},
        "dispatch_p99_ms_worst_size": p99,
        "target_ratio": f">= {TARGET_RATIO}x at the same goodput",
        "target_dispatch_p99_ms": f"<= {TARGET_DISPATCH_P99_S * 1e3:g}",
        "ratio_met": ratio >= TARGET_RATIO,
        "goodput_held": top["goodput"] >= one["goodput"] - 0.02,
        "dispatch_met": p99 <= TARGET_DISPATCH_P99_S * 1e3,
    }
    print(
        f"\n{'nodes':>5} {'GPUs':>4} {'offered':>8} {'served':>8} {'goodput':>8} "
        f"{'lost':>6} {'disp p50':>9} {'disp p99':>9} {'lag p99':>8} {'bench cores':>11}"
    )
    for s in sizes:
        print(f"{s['nodes']:>5} {s['gpus']:>4} {s['offered_jobs_per_s']:>8.2f} "
              f"{s['served_jobs_per_s']:>8.2f} {s['goodput']:>8.1%} {s['lost_share']:>6.1%} "
              f"{s['dispatch']['p50_ms']:>7.1f}ms {s['dispatch']['p99_ms']:>7.1f}ms "
              f"{s['driver_lag_ms']['p99']:>6.0f}ms "
              f"{s['cpu_cores']['bench process: total']:>11.2f}")  # fmt: skip
    print(f"{top['nodes']} nodes / 1 node: {ratio:.2f}x (target {TARGET_RATIO}x); dispatch "
          f"p99 worst {p99:.1f} ms (target {TARGET_DISPATCH_P99_S * 1e3:g} ms)")  # fmt: skip
    out = {
        "command": " ".join(["python", *sys.argv]),
        "host": host_info(load0),
        "wall_s": time.monotonic() - wall0,
        "what": "one LiveCore over RayDevices on a local multi-node Ray cluster (one raylet "
        "per node, loopback, this host), engines emulated A100s that sleep each step's "
        "profiled time",
        "policy": args.policy,
        "load_per_gpu": args.load,
        "duration_s_per_size": args.duration_s,
        "gpus_per_node": GPUS_PER_NODE,
        "workload": setup.describe(),
        "goodput_means": "jobs DONE within their latency SLO (arrival to the core settling "
        "them) over ALL arrived jobs; arrival = the scheduled arrival time, so a driver "
        "that falls behind counts against it",
        "sizes": sizes,
        "verdict": verdict,
        "profile": prof,
        "node_kill": kill,
        "ray_processes_of_ours_left_after_each_fleet": left,
        "ray_processes_on_host_at_end": len(ray_processes()),
    }
    RESULTS.mkdir(exist_ok=True)
    stem = "_quick" if args.quick else ""
    path = RESULTS / f"ray_bench{stem}.json"
    path.write_text(json.dumps(out, indent=2, default=_json))
    plot(sizes, RESULTS / f"ray_scaling{stem}.png")
    print(
        f"wrote {path} and {RESULTS / f'ray_scaling{stem}.png'} in "
        f"{out['wall_s']:.0f} s; load average {load0} -> {out['host']['load_avg_after']}"
    )


def _json(x):
    if isinstance(x, np.integer | np.floating):
        return x.item()
    if isinstance(x, set | tuple):
        return list(x)
    return str(x)


if __name__ == "__main__":
    main()
