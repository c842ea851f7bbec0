"""Load benchmark of the front door: many concurrent clients over real HTTP.

A scratch home gets the toy models, a small real sweep and trained predictors; the
embedded broker, `sdaas serve` and `sdaas api` run as their own processes, as deployed.
CLIENTS concurrent clients (asyncio + httpx, TENANTS tenants) each submit JOBS_EACH jobs,
one after another, and stream each job's events to its outcome. Reported: submit -> 202
latency (p50 / p95 / p99, client-side), whether every job accepted reached an outcome on
its stream and in the tenant's job list (no job lost; the counts add up), events per
job, wall time, and the load average. Target: p99 of submit -> 202 <= 50 ms.

Writes bench/results/api_bench.json. Usage: python bench/api_bench.py [--clients N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


async def load(url: str, keys: list[str], style: str, clients: int, ramp: float) -> dict:
    import httpx

    out = {
        "submit_s": [],
        "refused": [],
        "accepted": [],
        "events": [],
        "outcomes": {},
        "rounds": {},
    }
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        for k in keys:  # each tenant's key is checked once (scrypt) before the clock starts
            r = await http.get("/v1/jobs", headers={"Authorization": f"Bearer {k}"})
            r.raise_for_status()
        go = asyncio.Event()
        tasks = [asyncio.create_task(client(url, keys[c % len(keys)], style, JOBS_EACH, c, out,
                                            go, ramp)) for c in range(clients)]  # fmt: skip
        await asyncio.sleep(2.0)  # every client connected
        t0 = time.perf_counter()
        go.set()
        await asyncio.gather(*tasks)
        out["wall_s"] = time.perf_counter() - t0
        listed = 0
        for k in keys:
            r = await http.get("/v1/jobs", params={"limit": 500},
                               headers={"Authorization": f"Bearer {k}"})  # fmt: skip
            listed += sum(j["status"] in OUTCOMES for j in r.json()["jobs"])
        out["listed_with_outcome"] = listed
        out["metrics"] = (await http.get("/metrics")).text
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
        "events_per_job_mean": statistics.mean(out["events"]) if out["events"] else 0,
        "wall_s": out["wall_s"],
        # the API's own view, handler start to 202: cumulative count per bucket (s)
        "server_submit_buckets": {
            line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in out["metrics"].splitlines()
            if line.startswith("sdaas_submit_seconds_bucket")
        },
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    args = ap.parse_args()
    from adapters.kafka_broker import EmbeddedBroker
    from api.keys import TenantKeys
    from pipelines.serving_setup import prepare_toy_home

    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        print("preparing a serving home (toy models, sweep, predictors) ...", flush=True)
        settings = prepare_toy_home(Path(tmp))
        from models.registry import Registry

        style = Registry(settings.registry_path, model_roots=settings.model_roots).styles()[0]
        tenants = TenantKeys(settings.data_dir / "api" / "tenants.db")
        keys = {phase: [tenants.create(f"{phase}{i}") for i in range(TENANTS)]
                for phase in ("ramp", "burst")}  # fmt: skip
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
            out = asyncio.run(load(url, keys["ramp"], style, args.clients, RAMP_S))
            load_after = os.getloadavg()
            print(f"the same, all {args.clients} clients in one instant ...", flush=True)
            burst = asyncio.run(load(url, keys["burst"], style, args.clients, 0.0))
        finally:
            for p in (api, serve):
                p.terminate()
            for p in (api, serve):
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        api_log = (logs / "api.log").read_text()
    result = {
        "clients": args.clients, "jobs_per_client": JOBS_EACH, "tenants": TENANTS,
        "ramp_s": RAMP_S, **phase(out), "target_p99_s": TARGET_P99_S,
        "met": phase(out)["submit_p99_s"] <= TARGET_P99_S,
        "load_average_before": load_before, "load_average_after": load_after,
        "cores": os.cpu_count(), "prompt_in_api_log": PROMPT in api_log,
        "burst": phase(burst),
    }  # fmt: skip
    ramp_buckets = result["server_submit_buckets"]
    result["burst"]["server_submit_buckets"] = {  # the API's counters are cumulative
        k: v - ramp_buckets.get(k, 0.0) for k, v in result["burst"]["server_submit_buckets"].items()
    }
    (RESULTS / "api_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items()}, indent=2))
    counts_ok = result["counts_add_up"] and result["burst"]["counts_add_up"]
    print(f"no job lost, counts add up: {counts_ok}; p99 submit -> 202 "
          f"{result['submit_p99_s'] * 1000:.1f} ms (target {TARGET_P99_S * 1000:.0f} ms): "
          f"{'met' if result['met'] else 'NOT met'}; all in one instant: "
          f"{result['burst']['submit_p99_s'] * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
