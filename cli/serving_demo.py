"""The demo's serving step: the embedded broker, the serving loop, a mixed workload from
several tenants (tight and loose SLOs, a few malformed jobs, one resubmission), per-job
results under slack-sjf (ours, the serving default) and a summary of the same workload
under the paper's SJF and under FCFS: the same scheduling core decides in each."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

from sdaas.config import Settings
from sdaas.table import format_table

DEMO_PROMPTS = (
    "two small red circles on the left",
    "a large blue square in the middle",
    "three green triangles at the bottom",
    "one yellow star in the top right corner",
)


def workload(styles: list[str]) -> list[dict]:
    """24 jobs from 3 tenants: tight (1.5 s) and loose (20 s) SLOs, min CLIP 0-20: what
    the toy-world models can promise for 95 % of captions (their CLIP varies by 30-60
    points with the caption, so higher minimums are refused with their best offer)."""
    jobs = []
    for i in range(24):
        jobs.append(
            dict(
                job_id=f"demo-{i:02d}",
                tenant=("acme", "globex", "initech")[i % 3],
                prompt=DEMO_PROMPTS[i % len(DEMO_PROMPTS)],
                style=styles[i % len(styles)],
                latency_slo_s=(1.5, 20.0)[(i // 3) % 2],
                min_clip=(0.0, 20.0, 10.0, 15.0)[i % 4],
                seed=i,
            )
        )
    return jobs


MALFORMED = (
    b"this is not json",
    json.dumps({"job_id": "demo-bad-1", "tenant": "acme", "style": "flat"}).encode(),
    json.dumps(
        {
            "job_id": "demo-bad-2",
            "tenant": "globex",
            "prompt": "a red circle",
            "style": "flat",
            "latency_slo_s": -2,
            "min_clip": 150,
        }  # fmt: skip
    ).encode(),
    b'{"job_id": "demo-bad-3", "tenant": "\xff\xfe"}',  # not UTF-8: this once stopped serving
    json.dumps(  # a resolution no model serves: this too
        {
            "job_id": "demo-bad-4",
            "tenant": "acme",
            "prompt": "a red circle",
            "style": "flat",
            "latency_slo_s": 5,
            "min_clip": 0,
            "resolution": "64x64",
        }  # fmt: skip
    ).encode(),
)


# ours (the serving default), the paper's SJF, and FCFS: the same jobs under each
DEMO_POLICIES = ("slack-sjf", "sjf", "fcfs")


def serve_once(settings: Settings, bootstrap: str, policy: str, folder: Path):
    from adapters.job_client import JobClient
    from adapters.kafka_io import Topics
    from pipelines.serving_driver import ServingDriver
    from pipelines.serving_setup import build_spec

    spec = build_spec(settings, policy=policy, window_s=30.0, max_backlog_s=60.0)
    topics = Topics(f"demo-{policy}")
    spec = replace(spec, store_path=str(folder / policy / "results.db"), source_topic=topics.jobs)
    driver = ServingDriver(spec, bootstrap, topics, progress=lambda *_: None)  # loads models
    client = JobClient(bootstrap, topics)
    jobs = workload(spec.planner.styles)
    for j in jobs:
        client.submit(**j)
    client.submit(**jobs[0])  # a resubmission: same job_id, must not run twice
    for raw in MALFORMED:
        client.send_raw(raw)
    client.flush()
    driver.run(idle_exit_s=1.0)
    driver.close()
    return driver


def summary_row(policy: str, driver) -> list:
    results = driver.store.all()
    done = [r for r in results if r.status == "done"]
    jct = [r.jct_s for r in done]
    outcomes: dict[str, int] = {}
    for rep in driver.reports:
        for k, v in rep.outcomes.items():
            outcomes[k] = outcomes.get(k, 0) + v
    met = sum(r.latency_slo_met and r.clip_slo_met for r in results)
    p95 = statistics.quantiles(jct, n=20)[-1] if len(jct) >= 2 else float("nan")
    return [
        policy,
        sum(outcomes.values()),
        len(done),
        sum(r.status == "rejected" for r in results),
        outcomes.get("dead_letter", 0),
        outcomes.get("duplicate", 0),
        f"{statistics.mean(jct):.2f}" if jct else "-",
        f"{p95:.2f}",
        f"{met}/{len(results)}",
    ]


def serving_demo(settings: Settings, out=print) -> None:
    import shutil

    from adapters.kafka_broker import EmbeddedBroker

    folder = settings.outputs_dir / "serving-demo"
    shutil.rmtree(folder, ignore_errors=True)  # a fresh store: the demo reuses its job ids
    with EmbeddedBroker() as broker:
        out(f"   embedded Kafka broker (tansu) on {broker.bootstrap}")
        runs = {p: serve_once(settings, broker.bootstrap, p, folder) for p in DEMO_POLICIES}
    ours = runs[DEMO_POLICIES[0]]
    for rep in ours.reports:
        out("   " + rep.line())
    rows = [
        [
            r.job_id,
            r.tenant,
            r.status,
            f"{r.model} {r.steps} st" if r.model else "-",
            f"{r.latency_slo_s:g}",
            f"{r.min_clip:g}",
            f"{r.queued_s:.2f}",
            f"{r.run_s:.2f}",
            f"{r.jct_s:.2f}",
            "-" if r.clip_score is None else f"{r.clip_score:.1f}",
            "yes" if r.latency_slo_met and r.clip_slo_met else "no",
            r.error[:60],
        ]
        for r in sorted(ours.store.all(), key=lambda r: r.job_id)
    ]
    out(
        format_table(
            [
                "job",
                "tenant",
                "status",
                "plan",
                "SLO s",
                "min CLIP",
                "queued",
                "run",
                "JCT",
                "CLIP",
                "met",
                "why not run",
            ],  # fmt: skip
            rows,
        )
    )
    letters = ours.store.dead_letters()
    for d in letters:
        out(f"   dead letter {d['source']}: {d['reason']}")
    out(
        format_table(
            [
                "policy",
                "records",
                "done",
                "rejected",
                "dead letters",
                "duplicates",
                "mean JCT s",
                "p95 JCT s",
                "SLOs met",
            ],  # fmt: skip
            [summary_row(p, d) for p, d in runs.items()],
        )
    )
    out(f"results per tenant: {folder}/<policy>/ (images under <tenant>/); "
        "try `sdaas serve` + `sdaas submit` + `sdaas results --admin --tenant T`")  # fmt: skip
