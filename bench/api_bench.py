"""Load benchmark of the front door: many concurrent clients over real HTTP.

A scratch home gets the toy models, a small real sweep and trained predictors; the
embedded broker, `sdaas serve` and `sdaas api` run as their own processes, as deployed.
CLIENTS concurrent clients (asyncio + aiohttp, TENANTS tenants), arriving over RAMP_S,
each submit JOBS_EACH jobs, one after another, and stream each job's events to its
outcome; then the same with all clients in one instant (`burst`). Reported: submit ->
202 latency (p50 / p95 / p99, client-side; the slowest with when they were sent),
whether every job accepted reached an outcome on its stream and in the tenant's job
list (no job lost; the counts add up), events per job, the API's CPU per job, wall
time, the load average and the load generator's own loop lag (`noisy` when either says
the numbers are not the API's alone). Target: p99 of submit -> 202 <= 50 ms.

Writes bench/results/api_bench.json. Usage: python bench/api_bench.py [--clients N]
[--keep-logs DIR] (the API's log names every event-loop stall over 0.1 s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).resolve().parent / "results"
OUTCOMES = {"done", "rejected", "failed", "cancelled"}
TENANTS, JOBS_EACH, TARGET_P99_S, RAMP_S = 4, 2, 0.050, 2.0
PROMPT = "two small red circles on the left"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def client(
    url: str, key: str, style: str, n: int, c: int, out: dict, go, ramp: float
) -> None:
    """One client with its own keep-alive connection (opened before the clock starts):
    submit a job, stream its events to the outcome; n times."""
    import aiohttp

    auth = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(url, headers=auth, timeout=timeout) as http:
        async with http.get("/healthz") as r:  # connect now, not on the clock
            await r.read()
        await go.wait()
        # clients arrive over RAMP_S, not in one instant: 200 requests in the same
        # millisecond queue behind each other on 2 cores (reported separately: `burst`)
        await asyncio.sleep(ramp * ((c * 0.618034) % 1.0))
        for i in range(n):
            body = {"prompt": PROMPT, "style": style, "latency_slo_s": 600.0, "min_clip": 0.0,
                    "seed": c * 100 + i}  # fmt: skip
            t0 = time.perf_counter()
            async with http.post("/v1/jobs", json=body) as r:
                reply = await r.json()
                out["submit_s"].append(time.perf_counter() - t0)
                out["slow"].append((out["submit_s"][-1], t0 - out["t0"]))
                out["rounds"].setdefault(i, []).append(out["submit_s"][-1])
                if r.status != 202:
                    out["refused"].append(r.status)
                    continue
            job_id = reply["job_id"]
            out["accepted"].append((key, job_id))
            events, last = 0, None
            async with http.get(f"/v1/jobs/{job_id}/events") as s:
                async for raw in s.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        last = line[7:]
                        events += 1
            out["events"].append(events)
            out["outcomes"][job_id] = last


async def ticks(lags: list, t0: float, every: float = 0.005) -> None:
    """The load generator's own loop lag: time it adds to what it measures."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(every)
        lags.append((time.perf_counter() - t - every, t - t0))


async def load(
    url: str, keys: list[str], ops_key: str, style: str, clients: int, ramp: float
) -> dict:
    import httpx

    out = {
        "submit_s": [],
        "refused": [],
        "accepted": [],
        "events": [],
        "outcomes": {},
        "rounds": {},
        "slow": [],
        "lag": [],
    }
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        for k in keys:  # each tenant's key is checked once (scrypt) before the clock starts
            r = await http.get("/v1/jobs", headers={"Authorization": f"Bearer {k}"})
            r.raise_for_status()
        go = asyncio.Event()
        tasks = [asyncio.create_task(client(url, keys[c % len(keys)], style, JOBS_EACH, c, out,
                                            go, ramp)) for c in range(clients)]  # fmt: skip
        await asyncio.sleep(2.0)  # every client connected
        t0 = out["t0"] = time.perf_counter()
        out["go_wall"] = time.time()
        go.set()
        ticker = asyncio.create_task(ticks(out["lag"], t0))
        await asyncio.gather(*tasks)
        ticker.cancel()
        out["wall_s"] = time.perf_counter() - t0
        listed = 0
        for k in keys:
            r = await http.get("/v1/jobs", params={"limit": 500},
                               headers={"Authorization": f"Bearer {k}"})  # fmt: skip
            listed += sum(j["status"] in OUTCOMES for j in r.json()["jobs"])
        out["listed_with_outcome"] = listed
        operator = {"Authorization": f"Bearer {ops_key}"}  # /metrics names the tenants
        out["metrics"] = (await http.get("/metrics", headers=operator)).text
    return out


def phase(out: dict) -> dict:
    """One phase's numbers: submit latency, outcomes, and whether the counts add up."""
    sub = out["submit_s"]
    accepted = len(out["accepted"])
    outcomes = list(out["outcomes"].values())
    ended = sum(o in OUTCOMES for o in outcomes)
    return {
        "submitted": len(sub), "accepted_202": accepted, "refused": out["refused"],
        "streams_ended_with_outcome": ended,
        "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes), key=str)},
        "listed_with_outcome": out["listed_with_outcome"], "lost": accepted - ended,
        "counts_add_up": ended == accepted == out["listed_with_outcome"] == len(sub),
        "submit_p50_s": pct(sub, 0.50), "submit_p95_s": pct(sub, 0.95),
        "submit_p99_s": pct(sub, 0.99), "submit_max_s": max(sub),
        # each client's first submit (during serving's first windows) and second
        "submit_p99_s_by_round": {i: pct(xs, 0.99) for i, xs in sorted(out["rounds"].items())},
        # the API's CPU per job (its submit, its event stream, its list entry): with one
        # event loop, N jobs submitted in one instant wait up to N times this
        "api_cpu_ms_per_job": out["api_cpu_s"] / max(1, len(sub)) * 1000,
        "events_per_job_mean": statistics.mean(out["events"]) if out["events"] else 0,
        "wall_s": out["wall_s"],
        "started_at": time.strftime("%H:%M:%S", time.localtime(out["go_wall"]))
        + f"{out['go_wall'] % 1:.3f}"[1:],
        "slowest_submits_s_at_s": sorted(out["slow"], reverse=True)[:8],
        "client_loop_lag_p99_s": pct([x for x, _ in out["lag"]], 0.99),
        "client_loop_lag_worst_s_at_s": sorted(out["lag"], reverse=True)[:5],
        # the API's own view, cumulative count per bucket (s): handler start to 202, the
        # broker's acknowledgement (part of it), how late the event loop ticked
        "server_submit_buckets": buckets(out["metrics"], "sdaas_submit_seconds"),
        "kafka_ack_buckets": buckets(out["metrics"], "sdaas_kafka_ack_seconds"),
        "loop_lag_buckets": buckets(out["metrics"], "sdaas_api_loop_lag_seconds"),
    }  # fmt: skip


def buckets(metrics: str, name: str) -> dict[str, float]:
    """One histogram's cumulative counts per bucket, from Prometheus text."""
    return {
        line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(f"{name}_bucket")
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--keep-logs", type=Path, help="copy serving's and the API's logs here")
    args = ap.parse_args()
    from adapters.kafka_broker import EmbeddedBroker
    from api.keys import TenantKeys
    from pipelines.serving_setup import prepare_toy_home

    RESULTS.mkdir(parents=True, exist_ok=True)
    load_at_start = os.getloadavg()  # before this bench's own work (the sweep, training)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        print("preparing a serving home (toy models, sweep, predictors) ...", flush=True)
        settings = prepare_toy_home(Path(tmp))
        from models.registry import Registry

        style = Registry(settings.registry_path, model_roots=settings.model_roots).styles()[0]
        tenants = TenantKeys(settings.tenants_path)
        keys = {phase: [tenants.create(f"{phase}{i}") for i in range(TENANTS)]
                for phase in ("ramp", "burst")}  # fmt: skip
        ops_key = tenants.create("ops", operator=True)
        env = {**os.environ, "SDAAS_HOME": str(settings.home)}
        cli = [sys.executable, "-m", "cli", "--home", str(settings.home)]
        kafka = ["--bootstrap-servers", broker.bootstrap]
        port = free_port()
        logs = Path(tmp) / "logs"
        logs.mkdir()
        serve = subprocess.Popen(
            [*cli, "serve", *kafka, "--window-s", "0.5", "--max-backlog-s", "1e9"],
            env=env,
            stdout=open(logs / "serve.log", "w"),
            stderr=subprocess.STDOUT,
        )
        api = subprocess.Popen(
            [
                *cli,
                "api",
                *kafka,
                "--port",
                str(port),
                "--rate",
                "1000",
                "--burst",
                "1000",
                "--max-in-flight",
                "10000",
            ],
            env=env,
            stdout=open(logs / "api.log", "w"),
            stderr=subprocess.STDOUT,
        )
        try:
            import httpx

            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if (
                    time.monotonic() > deadline
                    or serve.poll() is not None
                    or api.poll() is not None
                ):
                    raise SystemExit(f"serving or the API did not get ready; logs in {logs}")
                time.sleep(0.5)
            load_before = os.getloadavg()
            print(f"{args.clients} clients x {JOBS_EACH} jobs over HTTP ...", flush=True)
            cpu0 = cpu_s(api.pid)
            out = asyncio.run(load(url, keys["ramp"], ops_key, style, args.clients, RAMP_S))
            out["api_cpu_s"] = cpu_s(api.pid) - cpu0
            load_after = os.getloadavg()
            print(f"the same, all {args.clients} clients in one instant ...", flush=True)
            cpu0 = cpu_s(api.pid)
            burst = asyncio.run(load(url, keys["burst"], ops_key, style, args.clients, 0.0))
            burst["api_cpu_s"] = cpu_s(api.pid) - cpu0
        finally:
            for p in (api, serve):
                p.terminate()
            for p in (api, serve):
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        api_log = (logs / "api.log").read_text()
        if args.keep_logs:
            shutil.copytree(logs, args.keep_logs, dirs_exist_ok=True)
    result = {
        "clients": args.clients, "jobs_per_client": JOBS_EACH, "tenants": TENANTS,
        "ramp_s": RAMP_S, **phase(out), "target_p99_s": TARGET_P99_S,
        "met": phase(out)["submit_p99_s"] <= TARGET_P99_S,
        "load_average_at_start": load_at_start, "load_average_before": load_before,
        "load_average_after": load_after,
        "cores": os.cpu_count(), "prompt_in_api_log": PROMPT in api_log,
        "burst": phase(burst),
    }  # fmt: skip
    # the load generator shares the 2 cores: when its own loop runs late, or the host was
    # busy before the run, the latencies it measured are its noise as much as the API's
    result["noisy"] = max(
        result["client_loop_lag_p99_s"], result["burst"]["client_loop_lag_p99_s"]
    ) > 0.010 or load_at_start[0] > 0.75 * (os.cpu_count() or 1)
    for name in ("server_submit_buckets", "kafka_ack_buckets", "loop_lag_buckets"):
        ramp = result[name]  # the API's counters are cumulative: the burst's own counts
        result["burst"][name] = {k: v - ramp.get(k, 0.0) for k, v in result["burst"][name].items()}
    (RESULTS / "api_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items()}, indent=2))
    counts_ok = result["counts_add_up"] and result["burst"]["counts_add_up"]
    print(f"no job lost, counts add up: {counts_ok}; p99 submit -> 202 "
          f"{result['submit_p99_s'] * 1000:.1f} ms (target {TARGET_P99_S * 1000:.0f} ms): "
          f"{'met' if result['met'] else 'NOT met'}; all in one instant: "
          f"{result['burst']['submit_p99_s'] * 1000:.0f} ms"
          f"{'; NOISY: the host was busy, run again' if result['noisy'] else ''}")  # fmt: skip


if __name__ == "__main__":
    main()
