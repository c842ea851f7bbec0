"""Benchmark the step-level device engine against one-job-at-a-time serving, and two CPU
device engines against one (issue 14's throughput and concurrency targets).

Same workload for every arm: the shipped toy-world model `toy-m` at 10-30 steps, jobs
arriving as a Poisson stream at 3x what one-at-a-time serving sustains (so a queue
builds and throughput, not arrivals, decides), a latency SLO of 8x a job's own run time,
min CLIP 0. Throughput arms use torch's default threads (both cores); the concurrency
arms 1 thread per device, all jobs at once. Every arm runs the served system's own
parts: the scheduling core (`scheduler/live.LiveCore`, the simulator's policies) and a
`DeviceEngine` per device, on real diffusers models; only Kafka and Beam are left out
(bench/serving_bench.py measures those). Arms:

* one-at-a-time: the backend's whole-pipeline call per job, FCFS, one device (what
  serving did before the engine: `RunOnAccelerator` looping over its jobs);
* engine sjf, 1 device: step engine, no batching (the policy never batches);
* engine slack-sjf / orca, 1 device: step engine, jobs batched at step boundaries;
* engine sjf, 2 CPU devices of 1 thread each, vs 1 device of 1 thread;
* each engine arm as a thread of this process and as a device process
  (engine/device_process.py), the serving default when there are several devices.

Batch factors (what a batch of b costs against one job) are measured first on this host
and given to the core, as serving gets them from the profiled batch sizes. Reported per
arm: sustained jobs/s (done jobs / time from first arrival to last finish), SLO
attainment over all arrived jobs, p50/p95 JCT, the lost share, mean batch size. Each arm
runs twice; a spread between the two of more than 15 % marks the result noisy.

Writes bench/results/engine_bench.json. Usage: python bench/engine_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
from bench_host import host_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "toy-m"
STEPS = (10, 15, 20, 25, 30)
PROMPT = "two small red circles on the left, flat style"
BATCHES = (1, 2, 4, 8)
NOISY = 0.15
STALL_S = 120.0  # jobs in flight and none settled this long: the engine is stuck (issue 25)


def wait_settled(core, what: str) -> None:
    """Until the core has settled every job. A stall is an error that names the arm,
    never a silent wait: issue 25's bench sat at 0 % CPU for 6 minutes on a dead reader."""
    last, left = time.monotonic(), core.in_flight()
    while left:
        time.sleep(0.01)
        n = core.in_flight()
        if n < left:
            last, left = time.monotonic(), n
        elif time.monotonic() - last > STALL_S:
            raise RuntimeError(f"{what}: {n} jobs in flight, none settled in {STALL_S:.0f} s")


def pct(xs, q):
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def load():
    from models.card import load_card
    from models.loader import load_backend
    from sdaas.config import SHIPPED_TOYWORLD

    card = load_card(SHIPPED_TOYWORLD / "cards" / f"{MODEL}.yaml")
    return card, load_backend(card, "cpu")


def measure(backend, card) -> tuple[dict[int, float], dict[int, float]]:
    """Batch-1 job seconds per step count (whole pipeline) and factor(b) from the step
    batcher at 20 steps: what a profile would hold."""
    from models.backend import GenerationRequest

    w, h = card.resolution_pairs[0]
    job_s = {}
    for s in STEPS:
        req = GenerationRequest((PROMPT,), (0,), s, w, h, card.guidance_scale)
        backend.generate(req)
        job_s[s] = min(backend.generate(req).latency_s for _ in range(3))
    st = backend.stepper()
    per_b = {}
    for b in BATCHES:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            jobs = [st.start(PROMPT, i, 20, w, h, card.guidance_scale) for i in range(b)]
            while not jobs[0].finished:
                st.step(jobs)
            st.finish(jobs)
            times.append(time.perf_counter() - t0)
        per_b[b] = min(times)
    return job_s, {b: per_b[b] / per_b[1] for b in BATCHES}


def workload(n: int, rate: float, job_s: dict[int, float], seed: int = 0):
    rng = np.random.default_rng(seed)
    steps = rng.choice(STEPS, n).tolist()
    arrivals = np.cumsum(rng.exponential(1 / rate, n)).tolist()
    return [(a, int(s), 8.0 * job_s[int(s)]) for a, s in zip(arrivals, steps, strict=True)]


def catalog(job_s, factors):
    from scheduler.catalog import Catalog

    grid = np.arange(1, max(STEPS) + 1)
    lat = np.interp(grid, list(job_s), list(job_s.values()))
    f = np.full(max(BATCHES) + 1, np.inf)
    f[1:] = np.interp(np.arange(1, max(BATCHES) + 1), list(factors), list(factors.values()))
    return Catalog(models=[MODEL], kinds=["cpu"], styles={MODEL: ("flat",)}, steps=grid,
                   latency={(0, 0): lat}, batch_factor={(0, 0): f}, clip={0: grid * 1.0},
                   load_s={0: 0.0}, price_per_hour={0: 1.0}, max_resident={0: 1})  # fmt: skip


def run_engine(policy, devices, threads, jobs, job_s, factors, backend, card, process=False):
    from engine.device_engine import DeviceEngine
    from engine.device_process import DeviceProcess
    from engine.link import DeviceLink
    from scheduler.cluster import Cluster
    from scheduler.live import LIVE_CONFIG, LiveCore, LiveJob
    from scheduler.options import Option
    from scheduler.policies import make_policy
    from scheduler.seam import Done, Failed, ImageRequest

    core = LiveCore(catalog(job_s, factors), Cluster.parse(f"{devices}xcpu"),
                    make_policy(policy), LIVE_CONFIG, clock=time.perf_counter)  # fmt: skip
    w, h = card.resolution_pairs[0]
    done, batch = {}, {}
    lock = threading.Lock()

    def event(e):
        if isinstance(e, Done | Failed):
            with lock:
                done[e.job] = time.perf_counter()
                batch[e.job] = e.stats.max_batch if isinstance(e, Done) else 1

    links = [DeviceLink(i, core, lambda sj: core.payload[sj.index], event)
             for i in range(devices)]  # fmt: skip
    if process:
        engines = [DeviceProcess(link, {MODEL: card}, [MODEL], device="cpu", threads=threads)
                   for link in links]  # fmt: skip
    else:
        engines = [DeviceEngine(link.index, [MODEL], lambda _k: backend, link.handle,
                                threads=threads, on_crash=link.reset)
                   for link in links]  # fmt: skip
    for link, e in zip(links, engines, strict=True):
        link.connect(e)
    core.attach(links)
    for e in engines:
        e.start()
    if process:  # warm: the first call in a fresh process pays allocation
        w0 = [Option(0, 10, 0.0)]
        core.submit([LiveJob("flat", 1e12, 0.0, w0, w0,
                             payload=ImageRequest(PROMPT, 0, w, h, card.guidance_scale))
                     for _ in range(devices)])  # fmt: skip
        wait_settled(core, f"{policy} warm-up")
        done.clear()
        batch.clear()
    first = len(core.arrival)
    t0 = time.perf_counter()
    arrived = []
    for k, (a, s, slo) in enumerate(jobs):
        while time.perf_counter() - t0 < a:
            time.sleep(0.001)
        now = time.perf_counter()
        opt = [Option(0, s, job_s[s])]
        req = ImageRequest(PROMPT, k, w, h, card.guidance_scale)
        core.submit([LiveJob("flat", now + slo, 0.0, opt, opt, payload=req)])
        arrived.append(now)
    wait_settled(core, f"{policy}, {devices} device(s)")
    for e in engines:
        e.stop(5.0)
    finish = core.finish[first:]
    batch = {j - first: b for j, b in batch.items()}
    return summarise(jobs, arrived, finish, core.status[first:], batch)


def run_one_at_a_time(jobs, job_s, backend, card, main_thread=False):
    """Before the engine: each job's whole pipeline, in arrival order, one device, in a
    worker thread as the serving DoFn ran it (or in the main thread: its best case)."""
    if main_thread:
        return _one_at_a_time(jobs, backend, card)
    out = {}
    t = threading.Thread(target=lambda: out.update(_one_at_a_time(jobs, backend, card)))
    t.start()
    t.join()
    return out


def _one_at_a_time(jobs, backend, card):
    from models.backend import GenerationRequest

    w, h = card.resolution_pairs[0]
    t0 = time.perf_counter()
    arrived, finish = [], []
    for k, (a, s, _slo) in enumerate(jobs):
        while time.perf_counter() - t0 < a:
            time.sleep(0.001)
        arrived.append(t0 + a)
        backend.generate(GenerationRequest((PROMPT,), (k,), s, w, h, card.guidance_scale))
        finish.append(time.perf_counter())
    return summarise(jobs, arrived, finish, [1] * len(jobs), {})


def summarise(jobs, arrived, finish, status, batch):
    from sdaas.job_status import JobStatus

    ok = [j for j in range(len(jobs)) if status[j] == JobStatus.DONE]
    jct = [finish[j] - arrived[j] for j in ok]
    met = sum(1 for j in ok if finish[j] - arrived[j] <= jobs[j][2])
    span = max(finish[j] for j in ok) - arrived[0]
    return {
        "jobs_per_s": len(ok) / span,
        "slo_attainment_all_arrived": met / len(jobs),
        "lost_share": 1 - len(ok) / len(jobs),
        "jct_mean_s": float(np.mean(jct)),
        "jct_p50_s": pct(jct, 50),
        "jct_p95_s": pct(jct, 95),
        "mean_batch": statistics.mean(batch.values()) if batch else 1.0,
    }


def line(name: str, r: dict) -> str:
    return (f"{name:32s} {r['jobs_per_s']:.2f} jobs/s  SLO {r['slo_attainment_all_arrived']:.0%}"
            f"  p50 {r['jct_p50_s']:.2f} s  batch {r['mean_batch']:.1f}"
            f"{'  NOISY' if r['noisy'] else ''}")  # fmt: skip


def run_arm(arms: dict, name: str, fn) -> None:
    """Run an arm and print it at once: a bench of many minutes shows it is moving."""
    arms[name] = repeat(fn)
    print(line(name, arms[name]), flush=True)


def repeat(fn, times=2):
    runs = [fn() for _ in range(times)]
    out = {k: statistics.mean(r[k] for r in runs) for k in runs[0]}
    tps = [r["jobs_per_s"] for r in runs]
    out["spread"] = (max(tps) - min(tps)) / statistics.mean(tps)
    out["noisy"] = out["spread"] > NOISY
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer jobs (a smoke run)")
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args()
    n = args.jobs or (16 if args.quick else 48)
    card, backend = load()
    load0 = os.getloadavg()
    default = os.cpu_count() or 1
    set_threads(default)
    job_s, factors = measure(backend, card)
    mean_job = statistics.mean(job_s.values())
    rate = 3.0 / mean_job  # 3x one-at-a-time capacity
    jobs = workload(n, rate, job_s)
    print(f"toy-m job seconds {job_s}; batch factors {factors}; rate {rate:.2f} jobs/s",
          flush=True)  # fmt: skip
    arms = {}
    run_arm(arms, "one-at-a-time", lambda: run_one_at_a_time(jobs, job_s, backend, card))
    run_arm(
        arms,
        "one-at-a-time, main thread",
        lambda: run_one_at_a_time(jobs, job_s, backend, card, main_thread=True),
    )
    for policy in ("sjf", "slack-sjf", "orca"):
        run_arm(
            arms,
            f"engine {policy}, 1 device",
            lambda p=policy: run_engine(p, 1, None, jobs, job_s, factors, backend, card),
        )
        run_arm(
            arms,
            f"engine {policy}, 1 device process",
            lambda p=policy: run_engine(p, 1, None, jobs, job_s, factors, backend, card, True),
        )
    # concurrency: 1 thread per device, all jobs at once so arrivals do not cap the rate
    set_threads(1)
    one_job_s, one_factors = measure(backend, card)
    burst = [(0.0, s, 8.0 * one_job_s[s]) for _, s, _ in jobs]
    for n_dev in (1, 2):
        run_arm(
            arms,
            f"engine sjf, {n_dev} device processes, burst",
            lambda n_dev=n_dev: run_engine(
                "sjf", n_dev, 1, burst, one_job_s, one_factors, backend, card, True
            ),  # fmt: skip
        )
        run_arm(
            arms,
            f"engine sjf, {n_dev} device threads, burst",
            lambda n_dev=n_dev: run_engine(
                "sjf", n_dev, 1, burst, one_job_s, one_factors, backend, card
            ),  # fmt: skip
        )
    print()
    for name, r in arms.items():
        print(line(name, r))
    base = arms["one-at-a-time"]["jobs_per_s"]
    best_case = arms["one-at-a-time, main thread"]["jobs_per_s"]
    tp = {
        k: v["jobs_per_s"] for k, v in arms.items() if k.startswith("engine") and "burst" not in k
    }
    burst_tp = {k: v["jobs_per_s"] for k, v in arms.items() if "burst" in k}
    ratios = {f"throughput {k} vs one-at-a-time": v / base for k, v in tp.items()}
    ratios |= {f"throughput {k} vs one-at-a-time in the main thread": v / best_case
               for k, v in tp.items() if "process" in k}  # fmt: skip
    for how in ("processes", "threads"):
        ratios[f"concurrency 2 device {how} vs 1"] = (
            burst_tp[f"engine sjf, 2 device {how}, burst"]
            / burst_tp[f"engine sjf, 1 device {how}, burst"]
        )
    print({k: round(v, 2) if isinstance(v, float) else v for k, v in ratios.items()})
    out = {
        "host": host_info(load0),
        "hardware": f"CPU (this host, {default} cores); throughput arms torch threads "
        f"{default}, concurrency arms 1 per device",
        "workload": {
            "model": MODEL,
            "jobs": n,
            "steps": STEPS,
            "rate_jobs_per_s": rate,
            "slo": "8x the job's own run time",
            "min_clip": 0.0,
        },  # fmt: skip
        "job_s": job_s,
        "batch_factor": factors,
        "job_s_1_thread": one_job_s,
        "batch_factor_1_thread": one_factors,
        "arms": arms,
        "ratios": ratios,
        "targets": {"throughput": ">= 2x", "concurrency": ">= 1.7x"},
    }
    RESULTS.mkdir(exist_ok=True)
    name = "engine_bench_quick.json" if args.quick else "engine_bench.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
