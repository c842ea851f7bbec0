"""Serving end to end: the real Tansu broker, the real Beam pipeline, the toy models."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from adapters.job_client import JobClient
from adapters.kafka_io import Topics, consumer
from adapters.result_store import ResultStore
from pipelines.serving_driver import ServingDriver
from pipelines.serving_setup import build_spec
from tests.pipelines.serving_home import PROMPT

pytestmark = pytest.mark.slow

MALFORMED = {
    "not json": b"{{{ nope",
    "missing field": json.dumps({"job_id": "m1", "tenant": "t"}).encode(),
    "wrong type": None,  # filled below (needs a valid style)
    "negative slo": None,
    "nan slo": None,
    "clip out of range": None,
    "unknown style": None,
    "prompt too long": None,
    "oversized message": b"{" + b" " * 20_000 + b"}",
}


def _job(style, **kw):
    d = {"job_id": uuid.uuid4().hex[:12], "tenant": "mallory", "prompt": PROMPT,
         "style": style, "latency_slo_s": 5.0, "min_clip": 0.0}  # fmt: skip
    d.update(kw)
    return json.dumps(d).encode()


def malformed(style: str) -> dict[str, bytes]:
    m = dict(MALFORMED)
    m["wrong type"] = _job(style, min_clip="high")
    m["negative slo"] = _job(style, latency_slo_s=-3)
    m["nan slo"] = _job(style, latency_slo_s=1.0).replace(b"1.0", b"NaN")
    m["clip out of range"] = _job(style, min_clip=250)
    m["unknown style"] = _job("cubism")
    m["prompt too long"] = _job(style, prompt="word " * 400)
    return m


def topic_messages(bootstrap: str, topic: str, timeout: float = 5.0) -> list[dict]:
    from confluent_kafka import TopicPartition

    c = consumer(bootstrap, group=f"test-{uuid.uuid4().hex[:6]}")
    c.assign([TopicPartition(topic, 0, 0)])
    out, deadline, quiet = [], time.monotonic() + timeout, 0
    while time.monotonic() < deadline and quiet < 10:
        m = c.poll(0.1)
        if m is None:
            quiet += 1 if out else 0
            continue
        if not m.error():
            out.append(json.loads(m.value()))
            quiet = 0
    c.close()
    return out


def submit_mix(client: JobClient, styles: list[str], n: int, tenants=("alice", "bob")):
    jobs = []
    for i in range(n):
        jobs.append(
            client.submit(
                tenant=tenants[i % len(tenants)],
                prompt=PROMPT,
                style=styles[i % len(styles)],
                latency_slo_s=[30.0, 0.05, 60.0][i % 3],  # the 0.05 s ones are infeasible
                min_clip=[0.0, 40.0, 30.0, 20.0][i % 4],
                seed=i,
            )
        )
    client.flush()
    return jobs


def test_n_jobs_in_n_results_out_sjf_within_windows_dead_letters_and_no_prompt_in_logs(
    serving_settings, broker, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    spec = build_spec(serving_settings, window_s=30.0, max_backlog_s=1e9)
    store = ResultStore(Path(spec.store_path))
    before = store.count()
    topics = Topics(f"t{uuid.uuid4().hex[:6]}")
    spec = type(spec)(**{**spec.__dict__, "source_topic": topics.jobs})
    client = JobClient(broker.bootstrap, topics)
    jobs = submit_mix(client, spec.planner.styles, 10)
    bad = malformed(spec.planner.styles[0])
    for raw in bad.values():
        client.send_raw(raw)
    client.flush()
    driver = ServingDriver(spec, broker.bootstrap, topics, progress=lambda *_: None)
    driver.run(idle_exit_s=1.5)
    driver.close()

    # every record accounted for: 10 results + 9 dead letters, once each
    outcomes: dict[str, int] = {}
    for r in driver.reports:
        for k, v in r.outcomes.items():
            outcomes[k] = outcomes.get(k, 0) + v
    assert outcomes == {"result": 10, "dead_letter": len(bad)}
    assert store.count() - before == 10
    results = {r.job_id: r for r in store.all() if r.job_id in {j.job_id for j in jobs}}
    assert len(results) == 10
    assert {r.status for r in results.values()} <= {"done", "rejected"}
    assert sum(r.status == "rejected" for r in results.values()) >= 3  # the 0.05 s SLOs
    # each tenant's topic holds exactly its own results, once each
    for tenant in ("alice", "bob"):
        msgs = topic_messages(broker.bootstrap, topics.results(tenant))
        mine = {j.job_id for j in jobs if j.tenant == tenant}
        assert sorted(m["job_id"] for m in msgs) == sorted(mine)
        assert all(m["tenant"] == tenant for m in msgs)
    # dead letters: one per malformed record, each with its reason
    letters = topic_messages(broker.bootstrap, topics.dead_letters)
    assert len(letters) == len(bad) and all(d["reason"] for d in letters)
    reasons = " | ".join(d["reason"] for d in letters)
    for needle in ("not JSON", "missing: required", "'high': must be a number", "must be > 0",
                   "must be finite", "must be in [0, 100]", "'cubism': unknown",
                   "over the 1000 limit", "byte limit"):  # fmt: skip
        assert needle in reasons
    # within each (window, accelerator) the run order is SJF on predicted time
    done = [r for r in results.values() if r.status == "done"]
    groups: dict = {}
    for r in done:
        groups.setdefault((r.window, r.accelerator), []).append(r)
    assert max(len(g) for g in groups.values()) >= 3, [
        (r.status, r.window, r.model, r.steps, r.error) for r in results.values()
    ]
    for g in groups.values():
        g.sort(key=lambda r: r.run_order)
        assert [r.run_order for r in g] == list(range(len(g)))
        preds = [r.predicted_latency_s for r in g]
        assert preds == sorted(preds)
    assert all(r.clip_score is not None and r.image_uri.startswith("file://") for r in done)
    assert all(Path(r.image_uri[7:]).parent.name == r.tenant for r in done)
    # privacy: the prompt is in no log line, no stdout/stderr, no result, no dead letter
    out, err = capfd.readouterr()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for text in (logs, out, err, json.dumps([r.__dict__ for r in results.values()]), reasons):
        assert PROMPT not in text and "word word" not in text


def test_a_job_id_submitted_twice_runs_once(serving_settings, broker):
    spec = build_spec(serving_settings, window_s=1.0)
    topics = Topics(f"t{uuid.uuid4().hex[:6]}")
    spec = type(spec)(**{**spec.__dict__, "source_topic": topics.jobs})
    client = JobClient(broker.bootstrap, topics)
    style = spec.planner.styles[0]
    for _ in range(2):  # twice in one window
        client.submit(
            tenant="t", prompt=PROMPT, style=style, latency_slo_s=30, min_clip=0, job_id="dup-1"
        )
    client.flush()
    driver = ServingDriver(spec, broker.bootstrap, topics, progress=lambda *_: None)
    driver.run(idle_exit_s=1.0)
    client.submit(
        tenant="t", prompt=PROMPT, style=style, latency_slo_s=30, min_clip=0, job_id="dup-1"
    )
    client.flush()  # and again in a later window
    driver.run(idle_exit_s=1.0)
    driver.close()
    outcomes = [o for r in driver.reports for o, n in r.outcomes.items() for _ in range(n)]
    assert sorted(outcomes) == ["duplicate", "duplicate", "result"]
    assert len(topic_messages(broker.bootstrap, topics.results("t"))) == 1


def _serve(home: Path, bootstrap: str, prefix: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "--home",
            str(home),
            "serve",
            "--bootstrap-servers",
            bootstrap,
            "--topic-prefix",
            prefix,
            "--window-s",
            "5",
            "--max-backlog-s",
            "1000",
            *extra,
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _serve_16_jobs(settings, broker, tenant: str, results: int):
    """16 jobs for `tenant`, then `sdaas serve` in a subprocess, returned once at least
    `results` of them have results, so that a signal sent next lands mid-window."""
    prefix = f"t{uuid.uuid4().hex[:6]}"
    client = JobClient(broker.bootstrap, Topics(prefix))
    store = ResultStore(settings.data_dir / "results" / "results.db")
    jobs = [
        client.submit(
            tenant=tenant, prompt=PROMPT, style="flat", latency_slo_s=300, min_clip=20.0, seed=i
        )  # fmt: skip
        for i in range(16)
    ]
    client.flush()
    ids = {(tenant, j.job_id) for j in jobs}
    proc = _serve(settings.home, broker.bootstrap, prefix)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(store.known(ids)) < results:
        time.sleep(0.05)
    return prefix, store, ids, proc


def got_before_kill(out: str, seen: int) -> int:
    """Jobs stored before the kill: at least the `seen` observed, at most a few more."""
    n = out.count("duplicate job")
    return n if seen <= n <= seen + 3 else -1


def test_sigkill_mid_window_then_restart_loses_nothing_and_duplicates_nothing(
    serving_settings, broker
):
    prefix, store, ids, proc = _serve_16_jobs(serving_settings, broker, "crash", results=2)
    topics = Topics(prefix)
    got_before = len(store.known(ids))
    assert 1 <= got_before < len(ids), [(r.status, r.error) for r in store.for_tenant("crash")]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc = _serve(serving_settings.home, broker.bootstrap, prefix, "--idle-exit", "2")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert store.known(ids) == ids
    results = [r for r in store.for_tenant("crash") if (r.tenant, r.job_id) in ids]
    assert len(results) == len(ids)  # exactly one each
    # the replay skipped the jobs that had finished before the kill, by job_id
    assert out.count("duplicate job") == got_before_kill(out, got_before), out
    msgs = topic_messages(broker.bootstrap, topics.results("crash"))
    assert {("crash", m["job_id"]) for m in msgs} == ids  # at-least-once, nothing missing
    assert PROMPT not in out


def test_sigterm_finishes_the_jobs_in_flight_then_stops(serving_settings, broker):
    prefix, store, ids, proc = _serve_16_jobs(serving_settings, broker, "term", results=1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "SIGTERM: finishing the jobs in flight" in out
    assert store.known(ids) == ids  # every job handed over finished before the exit
    # and it was committed: a new server finds nothing to do
    proc = _serve(serving_settings.home, broker.bootstrap, prefix, "--idle-exit", "1")
    out, _ = proc.communicate(timeout=120)
    assert "stopped after 0 windows, 0 records" in out, out


def test_admission_control_rejects_beyond_the_backlog_bound(serving_settings, broker):
    spec = build_spec(serving_settings, window_s=5.0, max_backlog_s=0.0)
    topics = Topics(f"t{uuid.uuid4().hex[:6]}")
    client = JobClient(broker.bootstrap, topics)
    jobs = [
        client.submit(tenant="adm", prompt=PROMPT, style="flat", latency_slo_s=300, min_clip=0)
        for _ in range(3)
    ]
    client.flush()
    driver = ServingDriver(spec, broker.bootstrap, topics, progress=lambda *_: None)
    driver.run(idle_exit_s=1.0)
    driver.close()
    got = {r.job_id: r for r in driver.store.for_tenant("adm")}
    statuses = sorted(got[j.job_id].status for j in jobs)
    assert statuses == ["done", "rejected", "rejected"]
    assert all(
        "overloaded" in r.error and "bound 0 s" in r.error
        for r in got.values()
        if r.status == "rejected"
    )


def test_observed_run_times_correct_the_next_windows_predictions(
    serving_settings, broker, tmp_path
):
    from dataclasses import replace

    from predictor.latency_correction import Observation

    spec = build_spec(serving_settings, window_s=5.0)
    spec = replace(spec, store_path=str(tmp_path / "r.db"))
    (acc,) = spec.accelerators
    seeded = ResultStore(tmp_path / "r.db")
    history = [  # every model ran 3x slower than predicted (enough runs: no probe)
        Observation((k, acc, 1), 0.1, 0.3, 2) for k in spec.cards for _ in range(5)
    ]
    seeded.observe(history, "job", spec.planner.predictor_version)
    base = spec.planner.plan("flat", 300.0, 0.0).predicted_latency_s
    topics = Topics(f"t{uuid.uuid4().hex[:6]}")
    client = JobClient(broker.bootstrap, topics)
    job = client.submit(tenant="c", prompt=PROMPT, style="flat", latency_slo_s=300, min_clip=0)
    client.flush()
    driver = ServingDriver(spec, broker.bootstrap, topics, progress=lambda *_: None)
    driver.run(idle_exit_s=1.0)
    driver.close()
    r = seeded.get("c", job.job_id)
    assert r.latency_correction == pytest.approx(3.0)
    assert r.predicted_latency_s == pytest.approx(3 * base, rel=1e-6)
