"""The demo's front door: the API on uvicorn in front of a serving loop, one job
submitted over HTTP with a tenant's key, its server-sent events shown as they come.
Plain `urllib`: what any client without our code would do."""

from __future__ import annotations

import json
import shutil
import urllib.request
from dataclasses import replace

from sdaas.config import Settings

DEMO_PROMPT = "two small red circles on the left"


def _call(url: str, key: str, method: str = "GET", body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})  # fmt: skip
    return urllib.request.urlopen(req, timeout=120)


def api_demo(settings: Settings, out=print) -> None:
    from adapters.kafka_broker import EmbeddedBroker
    from adapters.kafka_io import Topics
    from api.front import ApiConfig
    from api.server import ApiServer
    from cli.serving_demo import seed_batch_costs, served_batch_costs
    from pipelines.serving_driver import serving_in_background
    from pipelines.serving_setup import build_spec
    from sdaas.privacy import load_salt

    folder = settings.outputs_dir / "api-demo"
    shutil.rmtree(folder, ignore_errors=True)
    with EmbeddedBroker() as broker:
        topics = Topics("demo-api")
        spec = build_spec(settings, window_s=0.5, max_backlog_s=60.0)
        spec = replace(spec, store_path=str(folder / "results" / "results.db"))
        seed_batch_costs(spec, served_batch_costs(settings, spec))
        cfg = ApiConfig(bootstrap=broker.bootstrap, data_dir=folder, results_dir=folder / "results",
                        topics=topics, styles=tuple(spec.planner.styles),
                        resolutions=spec.planner.resolutions, salt=load_salt(settings))  # fmt: skip
        with serving_in_background(spec, broker.bootstrap, topics), ApiServer(cfg) as api:
            key = api.front.keys.create("demo", operator=True)  # it may read /metrics
            out(f"   API on {api.url}: the page at {api.url}/, OpenAPI docs at {api.url}/docs, "
                f"metrics at {api.url}/metrics (tenant 'demo', key {key[:14]}...)")  # fmt: skip
            job = {"prompt": DEMO_PROMPT, "style": spec.planner.styles[0],
                   "latency_slo_s": 20.0, "min_clip": 0.0}  # fmt: skip
            with _call(f"{api.url}/v1/jobs", key, "POST", job) as r:
                job_id = json.load(r)["job_id"]
                out(f"   POST /v1/jobs -> {r.status} job {job_id}")
            out(f"   GET /v1/jobs/{job_id}/events (server-sent events):")
            with _call(f"{api.url}/v1/jobs/{job_id}/events", key) as stream:
                event = ""
                for raw in stream:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        out(f"     {_describe(event, json.loads(line[6:]))}")
            with _call(f"{api.url}/v1/jobs/{job_id}/image", key) as r:
                image = folder / f"{job_id}.png"
                image.write_bytes(r.read())
            out(f"   GET /v1/jobs/{job_id}/image -> {image}")
    out("   run it for real: `sdaas serve` in one shell, `sdaas tenants create NAME` and "
        "`sdaas api` in another, then open http://127.0.0.1:8000/")  # fmt: skip


def _describe(event: str, d: dict) -> str:
    if event == "planned":
        return (f"planned: {d['model']} on {d['accelerator']}, {d['steps']} steps, predicted "
                f"{d['predicted_latency_s']:.2f} s, CLIP {d['predicted_clip']:.1f}")  # fmt: skip
    if event == "step":
        return f"step {d['step']}/{d['of']}"
    if event == "started":
        return f"started on {d.get('device', '?')}"
    if "result" in d:
        r = d["result"]
        return (f"{event}: JCT {r['jct_s']:.2f} s, CLIP "
                f"{'-' if r['clip_score'] is None else round(r['clip_score'], 1)}, SLOs "
                f"{'met' if r['latency_slo_met'] and r['clip_slo_met'] else 'missed'}")  # fmt: skip
    return event
