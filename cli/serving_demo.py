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


def seed_batch_costs(spec, costs: dict) -> None:
    """Put batch costs serving measured under this predictor into the (new) store at
    `spec.store_path`, so that serving there reads them back at start instead of
    measuring again (about 5 s a start here): what a restart of `sdaas serve` does
    with its own store. The steps stored are the calibrator's own rule's."""
    from adapters.result_store import ResultStore
    from engine.calibrator import BATCH_PROBE_STEPS
    from sdaas.records import model_key

    planner = spec.planner
    steps = {model_key(o.name, o.version): min(BATCH_PROBE_STEPS, planner.probe_steps(o)[1])
             for o in planner.options}  # fmt: skip
    store = ResultStore(Path(spec.store_path))
    for (key, kind), cost in costs.items():
        if key in steps:
            store.put_batch_costs(planner.predictor_version, key, kind, steps[key], cost)


def measured_batch_costs(driver) -> dict:
    """(model key, accelerator) -> {batch size: cost} that `driver`'s serving measured."""
    return driver.store.batch_costs(driver.spec.planner.predictor_version)


def served_batch_costs(settings: Settings, spec) -> dict:
    """The batch costs the serving step measured under `spec`'s predictor ({} when it has
    not run: serving then measures them itself)."""
    from adapters.result_store import ResultStore, StoreError

    path = settings.outputs_dir / "serving-demo" / DEMO_POLICIES[0] / "results.db"
    try:
        return ResultStore(path, create=False).batch_costs(spec.planner.predictor_version)
    except StoreError:
        return {}


def serve_once(settings: Settings, bootstrap: str, policy: str, folder: Path, costs=None):
    from adapters.job_client import JobClient
    from adapters.kafka_io import Topics
    from pipelines.serving_driver import ServingDriver
    from pipelines.serving_setup import build_spec

    spec = build_spec(settings, policy=policy, window_s=30.0, max_backlog_s=60.0)
    topics = Topics(f"demo-{policy}")
    spec = replace(spec, store_path=str(folder / policy / "results.db"), source_topic=topics.jobs)
    if costs:
        seed_batch_costs(spec, costs)
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


def batching_line(driver) -> str:
    """How the policy batches: with which models up to which size (the profiled batch
    sizes), and what a batch cost against one job on this host's engine (measured by
    serving when it started: `engine/calibrator.py`)."""
    from scheduler.policies import policy_class

    spec = driver.spec
    if not policy_class(spec.policy).batching:
        return f"{spec.policy} runs each job alone (it does not batch)"
    sizes = {k: max(v) for k, v in spec.planner.profiled_batches.items()
             if k in spec.cards and max(v, default=1) > 1}  # fmt: skip
    if not sizes:
        return (f"{spec.policy} batches, but no model was profiled at batch sizes > 1, so "
                "none is batched")  # fmt: skip
    costs = driver.store.batch_costs(spec.planner.predictor_version)
    said = []
    for key, most in sorted(sizes.items()):
        cost = next((c for (m, _), c in sorted(costs.items()) if m == key), {})
        cost_said = ", ".join(f"{b} for {c:.2f}x" for b, c in sorted(cost.items()))
        said.append(f"{key} up to {most}" + (f" ({cost_said} one job's time)" if cost else ""))
    return f"{spec.policy} batches jobs of one model at step boundaries: " + "; ".join(said)


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
        sum(r.batch_size > 1 for r in done),
        max((r.batch_size for r in done), default=0),
    ]


def verdict(runs: dict) -> str:
    """Which policy met the most SLOs on this run, ours or not: goodput is both SLOs met
    over all arrived jobs (a rejected or dropped job counts as missed)."""
    met = {p: sum(r.latency_slo_met and r.clip_slo_met for r in d.store.all())
           for p, d in runs.items()}  # fmt: skip
    n = len(next(iter(runs.values())).store.all())
    ours, rest = DEMO_POLICIES[0], [p for p in runs if p != DEMO_POLICIES[0]]
    said = ", ".join(f"{p} {met[p]}/{n}" for p in runs)
    best = max(rest, key=lambda p: met[p])
    if met[ours] >= met[best]:
        most = "the most" if met[ours] > met[best] else f"as many as {best}"
        return (f"goodput (both SLOs met, over all {n} jobs): {said}: {ours} (ours, the "
                f"serving default) met {most}")  # fmt: skip
    dropped = [r.job_id for r in runs[ours].store.all() if "dropped by" in r.error]
    why = f" (it dropped {', '.join(dropped)})" if dropped else ""
    return (f"goodput (both SLOs met, over all {n} jobs): {said}: on this run {best} met more "
            f"than {ours}{why}; the table above is {ours}'s")  # fmt: skip


def serving_demo(settings: Settings, out=print) -> None:
    import shutil

    from adapters.kafka_broker import EmbeddedBroker

    folder = settings.outputs_dir / "serving-demo"
    shutil.rmtree(folder, ignore_errors=True)  # a fresh store: the demo reuses its job ids
    with EmbeddedBroker() as broker:
        out(f"   embedded Kafka broker (tansu) on {broker.bootstrap}")
        runs, costs = {}, None
        for p in DEMO_POLICIES:  # batch costs measured by the first start, read by the rest
            runs[p] = serve_once(settings, broker.bootstrap, p, folder, costs)
            costs = costs or measured_batch_costs(runs[p])
    ours = runs[DEMO_POLICIES[0]]
    for rep in ours.reports:
        out("   " + rep.line())
    for driver in runs.values():
        out("   " + batching_line(driver))
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
            r.batch_size if r.status == "done" else "-",
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
                "batch",
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
                "batched",
                "max batch",
            ],  # fmt: skip
            [summary_row(p, d) for p, d in runs.items()],
        )
    )
    out("   " + verdict(runs))
    out(f"results per tenant: {folder}/<policy>/ (images under <tenant>/); "
        "try `sdaas serve` + `sdaas submit` + `sdaas results --admin --tenant T`")  # fmt: skip
