"""No record can stop serving, tenants cannot touch each other's jobs, time is the
server's, and faults are loud and recoverable (issue 11). Real broker, real pipeline,
toy models."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.job_client import JobClient
from adapters.kafka_broker import EmbeddedBroker, reachable
from adapters.kafka_io import RawRecord, Topics
from adapters.result_store import ResultStore, StoreError
from pipelines.serving import ServeJobs, source_of
from pipelines.serving_driver import ServingDriver
from pipelines.serving_setup import build_spec
from tests.conftest import run_cli
from tests.pipelines.serving_home import PROMPT
from tests.pipelines.test_serving_e2e import topic_messages

pytestmark = pytest.mark.slow
_OFFSETS = itertools.count(1_000_000)


def _spec(settings, store: Path, **kw):
    spec = build_spec(settings, window_s=30.0, max_backlog_s=kw.pop("max_backlog_s", 1e9))
    return replace(spec, store_path=str(store), correct_latency=False, **kw)


def _records(values: list[bytes], now: float, **kw) -> list[RawRecord]:
    return [RawRecord(0, next(_OFFSETS), v, now, now, **kw) for v in values]


def _serve_records(spec, records: list[RawRecord]) -> dict[str, str]:
    """The serving transform over `records`, as the driver runs it; their outcomes."""
    options = PipelineOptions(["--runner=FnApiRunner"])
    with beam.Pipeline(runner=FnApiRunner(), options=options) as p:
        _ = p | beam.Create(records, reshuffle=False) | ServeJobs(spec)
    return ResultStore(spec.store_path).outcomes([source_of(spec.source_topic, r) for r in records])


def _job(**kw) -> dict:
    d = {"job_id": uuid.uuid4().hex[:12], "tenant": "alice", "prompt": PROMPT, "style": "flat",
         "latency_slo_s": 120.0, "min_clip": 0.0}  # fmt: skip
    return d | kw


def poison(now: float) -> dict[str, bytes]:
    """Each record that stopped `sdaas serve` for good, or was wrongly accepted."""
    enc = lambda d: json.dumps(d).encode()  # noqa: E731
    return {
        "unserved resolution": enc(_job(resolution="64x64")),
        "invalid UTF-8": b'{"job_id": "\xff\xfe", "tenant": "a"}',
        "5,000-digit integer": enc(_job()).replace(b'0.0', b"9" * 5000, 1),
        "4,000-digit integer": enc(_job(seed=10**3999)),
        "NaN timestamp": enc(_job(submitted_ts=float("nan"))),
        "Infinity timestamp": enc(_job(submitted_ts=float("inf"))),
        "1e300 timestamp": enc(_job(submitted_ts=1e300)),
        "a year ahead": enc(_job(submitted_ts=now + 365 * 86400)),
        "tenant with newline": enc(_job(tenant="alpha\n")),
        "tenant with colon": enc(_job(tenant="acme:prod")),
        "job id with newline": enc(_job(job_id="invoice-0001\n")),
        "huge SLO": enc(_job(latency_slo_s=1e308)),
        "deep nesting": b"[" * 8000 + b"]" * 8000,
        "lone surrogate in the prompt": enc(_job(prompt="two red \ud800 circles")),
        "invalid UTF-8 that looks like UTF-16": b"\x00\xff" + enc(_job())[2:],
    }  # fmt: skip


def _ledger(store: Path, topic: str) -> list[tuple[str, str]]:
    with sqlite3.connect(store) as db:
        q = "SELECT source, outcome FROM ledger WHERE source LIKE ?"
        return db.execute(q, (f"{topic}/%",)).fetchall()


def test_poison_records_and_valid_jobs_end_to_end_serve_keeps_running(serving_settings, broker):
    prefix = f"p{uuid.uuid4().hex[:6]}"
    topics = Topics(prefix)
    client = JobClient(broker.bootstrap, topics)
    bad = poison(time.time())
    valid = []
    for i in range(6):  # valid jobs before, between and after the poison
        valid.append(client.submit(tenant="alice", prompt=PROMPT, style="flat",
                                   latency_slo_s=300, min_clip=0, seed=i))  # fmt: skip
        for raw in list(bad.values())[i * 3 : i * 3 + 3]:
            client.send_raw(raw)
    client.flush()
    r = run_cli("--home", str(serving_settings.home), "serve", "--bootstrap-servers",
                broker.bootstrap, "--topic-prefix", prefix, "--idle-exit", "2",
                "--window-s", "2", "--max-backlog-s", "1000")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr  # idle exit, not a crash
    store = Path(serving_settings.data_dir / "results" / "results.db")
    ledger = _ledger(store, topics.jobs)
    assert len(ledger) == len(valid) + len(bad)  # every record exactly one outcome
    outcomes = sorted(o for _, o in ledger)
    assert outcomes == sorted(["result"] * len(valid) + ["dead_letter"] * len(bad))
    results = ResultStore(store)
    assert all(results.get("alice", j.job_id).status == "done" for j in valid)
    letters = topic_messages(broker.bootstrap, topics.dead_letters)
    assert len(letters) == len(bad)
    reasons = " | ".join(d["reason"] for d in letters)
    for needle in ("style 'flat' is served at 32x32", "not UTF-8", "JSON we cannot read",
                   "an integer of about 4000 digits", "submitted_ts: nan", "submitted_ts: inf",
                   "more than 300 s from the broker's time", "'\\n' is not allowed",
                   "':' is not allowed", "at most 3600 seconds", "nested too deeply",
                   "an unpaired surrogate", "not UTF-8 (byte 0xff at offset 1)"):  # fmt: skip
        assert needle in reasons, needle
    assert all(d["tenant"] in ("", "alice") for d in letters)  # no illegal id is kept
    assert PROMPT not in r.stdout + r.stderr + reasons


_ANY = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.just(10**4000) | st.lists(st.integers(), max_size=2)
)  # fmt: skip
_FIELDS = {
    "job_id": st.uuids().map(lambda u: u.hex[:10]) | _ANY,
    "tenant": st.sampled_from(["alice", "bob"]) | _ANY,
    "prompt": st.just(PROMPT) | _ANY,
    "style": st.sampled_from(["flat", "outline", "cubism"]) | _ANY,
    "latency_slo_s": st.just(120.0) | _ANY,
    "min_clip": st.just(0.0) | _ANY,
    "seed": st.integers(0, 10) | _ANY,
    "resolution": st.sampled_from(["32x32", "64x64"]) | _ANY,
    "submitted_ts": st.just(None) | _ANY,
}
_ONE_BAD_FIELD = st.builds(  # a valid job with one field (or one extra) set to anything
    lambda k, v: json.dumps(_job() | {k: v}).encode(),
    st.sampled_from([*_FIELDS, "colour"]),
    _ANY,
)
_RECORD = st.one_of(
    st.builds(lambda: json.dumps(_job()).encode()),
    _ONE_BAD_FIELD,
    st.binary(max_size=200),
    st.integers(4301, 6000).map(lambda n: b'{"seed": ' + b"7" * n + b"}"),
    st.fixed_dictionaries({}, optional=_FIELDS).map(lambda d: json.dumps(d).encode()),
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(values=st.lists(_RECORD, min_size=1, max_size=8))
def test_property_any_records_each_get_exactly_one_outcome_and_the_pipeline_survives(
    serving_settings, tmp_path_factory, values
):
    store = tmp_path_factory.getbasetemp() / "property" / "results.db"
    spec = _spec(serving_settings, store)
    records = _records(values, time.time())
    outcomes = _serve_records(spec, records)  # raising here = the window failed
    assert len(outcomes) == len(records)
    assert set(outcomes.values()) <= {"result", "dead_letter", "duplicate"}


def test_client_timestamps_change_neither_windows_nor_admission_nor_jct(serving_settings, tmp_path):
    now = time.time()
    spec = _spec(serving_settings, tmp_path / "results.db", max_backlog_s=0.0, window_s=2.0)
    admitted = []
    for spread in (0.0, 2.0):  # the same jobs, client timestamps shared or 2 s apart
        jobs = [_job(submitted_ts=now - spread * i) for i in range(8)]
        recs = _records([json.dumps(j).encode() for j in jobs], now)
        assert set(_serve_records(spec, recs).values()) == {"result"}
        got = [ResultStore(spec.store_path).get("alice", j["job_id"]) for j in jobs]
        admitted.append(sum(r.status == "done" for r in got))
        assert all(r.jct_s >= 0 for r in got)
    assert admitted[0] == admitted[1] == len(spec.devices)  # the bound admits one each
    # 200 s ahead (inside the stated skew): timed from the broker timestamp, not the client
    ahead = _job(submitted_ts=now + 200)
    _serve_records(spec, _records([json.dumps(ahead).encode()], now))
    r = ResultStore(spec.store_path).get("alice", ahead["job_id"])
    assert r.status == "done" and r.run_s <= r.jct_s < 200
    # a record without a timestamp (-0.001, as Kafka gives it): a client stamping its
    # own clock is checked against the receipt, not against 1970
    stamped = _job(submitted_ts=now)
    rec = RawRecord(0, next(_OFFSETS), json.dumps(stamped).encode(), -0.001, now)
    assert set(_serve_records(spec, [rec]).values()) == {"result"}
    assert ResultStore(spec.store_path).get("alice", stamped["job_id"]).status == "done"


def test_two_tenants_may_submit_the_same_job_id_and_see_only_their_own(serving_settings, broker):
    home = ["--home", str(serving_settings.home)]
    prefix = f"c{uuid.uuid4().hex[:6]}"
    kafka = ["--bootstrap-servers", broker.bootstrap, "--topic-prefix", prefix]
    job_id = f"invoice-{uuid.uuid4().hex[:6]}"  # the same for both tenants
    job = ["--style", "flat", "--latency-slo", "120", "--min-clip", "0", "--job-id", job_id]
    for tenant in ("alice", "bob"):
        r = run_cli(*home, "submit", *kafka, *job, "--tenant", tenant, "--prompt", PROMPT)
        assert r.returncode == 0, r.stderr
    r = run_cli(*home, "serve", *kafka, "--idle-exit", "1.5", "--window-s", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "duplicate" not in r.stdout + r.stderr  # bob's job is not alice's
    for tenant in ("alice", "bob"):
        r = run_cli(*home, "results", "--admin", "--tenant", tenant, "--job-id", job_id, "--json")
        (res,) = json.loads(r.stdout)
        assert (res["tenant"], res["status"]) == (tenant, "done")
        assert Path(res["image_uri"][7:]).parent.name == tenant
        msgs = topic_messages(broker.bootstrap, Topics(prefix).results(tenant))
        assert [(m["tenant"], m["job_id"]) for m in msgs] == [(tenant, job_id)]


def test_a_vanished_store_is_refused_unless_the_operator_says_so(
    serving_settings, broker, tmp_path
):
    store = tmp_path / "results" / "results.db"
    spec = _spec(serving_settings, store)
    topics = Topics(f"v{uuid.uuid4().hex[:6]}")
    client = JobClient(broker.bootstrap, topics)
    client.submit(tenant="alice", prompt=PROMPT, style="flat", latency_slo_s=120, min_clip=0)
    client.flush()
    driver = ServingDriver(spec, broker.bootstrap, topics, progress=lambda *_: None)
    driver.run(idle_exit_s=1.0)  # one job served: an image and committed offsets
    driver.close()
    for f in store.parent.glob("results.db*"):
        f.unlink()
    with pytest.raises(StoreError) as e:
        ServingDriver(spec, broker.bootstrap, topics, progress=lambda *_: None)
    msg = str(e.value)
    assert str(store) in msg and "result images" in msg and "committed offsets" in msg
    assert "--new-store" in msg and not store.exists()
    ServingDriver(spec, broker.bootstrap, topics, allow_new_store=True).close()
    assert store.exists()


def test_sigterm_to_sdaas_broker_stops_tansu_and_a_dying_tansu_is_loud(tmp_path):
    def start():
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "--home", str(tmp_path), "broker"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        state = tmp_path / "data" / "serving" / "broker.json"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if state.exists() and reachable(json.loads(state.read_text())["bootstrap"]):
                return proc, json.loads(state.read_text())
            time.sleep(0.1)
        proc.kill()
        raise AssertionError("sdaas broker did not start: " + proc.communicate()[1])

    proc, info = start()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    with pytest.raises(ProcessLookupError):
        os.kill(info["pid"], 0)  # no Tansu left behind
    assert not reachable(info["bootstrap"])  # and the port is free

    proc, info = start()
    os.kill(info["pid"], signal.SIGKILL)  # Tansu dies under the wrapper
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "exited on its own" in err and "broker.log" in err


def test_serve_survives_the_broker_going_away_while_idle_and_loses_no_job(serving_settings):
    first = EmbeddedBroker().start()
    port, prefix = first.port, f"b{uuid.uuid4().hex[:6]}"
    topics = Topics(prefix)
    store = ResultStore(serving_settings.data_dir / "results" / "results.db")
    jobs = []

    def submit(bootstrap):
        c = JobClient(bootstrap, topics)
        jobs.append(c.submit(tenant="alice", prompt=PROMPT, style="flat", latency_slo_s=120,
                             min_clip=0))  # fmt: skip
        c.flush()

    def wait_for(job, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if store.known([("alice", job.job_id)]):
                return True
            time.sleep(0.1)
        return False

    submit(first.bootstrap)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "--home", str(serving_settings.home), "serve",
         "--bootstrap-servers", first.bootstrap, "--topic-prefix", prefix, "--window-s", "1",
         "--idle-exit", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    second = None

    def serve_output() -> str:
        proc.kill()
        return proc.communicate(timeout=30)[0]

    try:
        assert wait_for(jobs[0]), serve_output()
        # published too: from here serve is idle, reading an empty topic
        assert topic_messages(first.bootstrap, topics.results("alice"), timeout=30)
        first.stop()  # the broker dies while serve is idle
        time.sleep(5)  # serve notices within its 2 s health check and backs off
        second = EmbeddedBroker(port).start()  # back on the same port (empty: memory storage)
        submit(second.bootstrap)
        assert wait_for(jobs[1]), "job after the restart never served:\n" + serve_output()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        first.stop()
        if second:
            second.stop()
    assert proc.returncode == 0, out
    # loud either way: the outage seen (lost, then back), or the restarted broker's new
    # jobs topic seen, when the restart fell between two 2 s health checks
    lost = f"lost the Kafka broker at 127.0.0.1:{port}" in out and "is back after" in out
    assert lost or "is new (the broker restarted?)" in out, out
    assert all(store.get("alice", j.job_id).status == "done" for j in jobs)


def test_a_broker_restart_between_health_checks_loses_no_job(serving_settings, tmp_path):
    """The restart is not seen as an outage (it came back before the next check, or
    while a window ran): the jobs topic's new id says so, and serve reads it anew."""
    broker = EmbeddedBroker().start()
    topics = Topics(f"r{uuid.uuid4().hex[:6]}")
    spec = _spec(serving_settings, tmp_path / "results" / "results.db")
    store = ResultStore(spec.store_path)
    lines: list[str] = []
    try:
        c = JobClient(broker.bootstrap, topics)
        first = c.submit(tenant="alice", prompt=PROMPT, style="flat", latency_slo_s=120,
                         min_clip=0)  # fmt: skip
        c.flush()
        driver = ServingDriver(spec, broker.bootstrap, topics, progress=lines.append,
                               health_every_s=0.3)  # fmt: skip
        driver.run(idle_exit_s=1.0)
        assert store.known([("alice", first.job_id)])
        port = broker.port
        broker.stop()
        broker = EmbeddedBroker(port).start()  # at once: no health check in between
        c = JobClient(broker.bootstrap, topics)
        second = c.submit(tenant="alice", prompt=PROMPT, style="flat", latency_slo_s=120,
                          min_clip=0)  # fmt: skip
        c.flush()
        driver.run(idle_exit_s=2.0)
        driver.close()
    finally:
        broker.stop()
    assert store.get("alice", second.job_id).status == "done", lines
    assert any("is new (the broker restarted?)" in x or "is back after" in x for x in lines)


def test_a_broker_that_fails_while_asked_for_its_topic_id_is_waited_for(monkeypatch):
    """The health check's port answers, then the broker dies while asked which topic it
    holds: serve waits for it (`_broker_lost`) instead of exiting with the error."""
    import pipelines.serving_driver as sd

    driver = object.__new__(sd.ServingDriver)
    driver.bootstrap, driver.health_every_s, driver.stopping = "127.0.0.1:1", -1.0, False
    driver.reports, driver.progress = [], lambda line: None
    driver.pending, driver.windows_read = [], 0
    driver.publisher = SimpleNamespace(start=lambda: None, stop=lambda: None)
    driver.runtime = SimpleNamespace(idle=lambda: True, drain=lambda timeout=None: True)
    lost = []

    def topic_gone():
        raise ConnectionError("broker went away mid-request")

    def broker_lost(give_up_s):
        lost.append(give_up_s)
        driver.stopping = True

    monkeypatch.setattr(sd, "reachable", lambda b: True)
    monkeypatch.setattr(driver, "_topic_recreated", topic_gone)
    monkeypatch.setattr(driver, "_broker_lost", broker_lost)
    assert driver.run(idle_exit_s=7.0) == []
    assert lost == [7.0]
