"""Nothing the API accepted is lost (issue 25), with real processes: the embedded broker
(Tansu, memory storage) killed and started again on the same port, and `sdaas serve`
started afterwards. The API's job book is the record of what was accepted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from adapters import kafka_io
from adapters.kafka_broker import EmbeddedBroker, free_port
from adapters.kafka_io import Topics
from api.front import ApiConfig
from api.server import ApiServer
from pipelines.serving_setup import build_spec
from sdaas.job_status import OUTCOMES
from tests.api.conftest import PROMPT

pytestmark = pytest.mark.slow


def _cfg(serving_settings, tmp_path, bootstrap: str, topics: Topics) -> ApiConfig:
    planner = build_spec(serving_settings).planner
    return ApiConfig(bootstrap=bootstrap, data_dir=tmp_path, results_dir=tmp_path / "results",
                     topics=topics, styles=tuple(planner.styles), salt=b"t",
                     resolutions=planner.resolutions, watch_every_s=0.5)  # fmt: skip


def _client(api: ApiServer, tenant: str) -> httpx.Client:
    key = api.front.keys.create(tenant)
    return httpx.Client(base_url=api.url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def _events(c: httpx.Client, job_id: str) -> list[str]:
    """The job's event stream to its end (it must end: an outcome closes it)."""
    with c.stream("GET", f"/v1/jobs/{job_id}/events", timeout=30) as r:
        return [line[7:] for line in r.iter_lines() if line.startswith("event: ")]


def _job(style: str, seed: int) -> dict:
    return {"prompt": PROMPT, "style": style, "latency_slo_s": 600.0, "min_clip": 0.0,
            "seed": seed}  # fmt: skip


def test_jobs_accepted_before_a_broker_restart_each_reach_one_outcome(serving_settings, tmp_path):
    port, topics = free_port(), Topics(f"d{uuid.uuid4().hex[:6]}")
    broker = EmbeddedBroker(port=port).start()
    serve = None
    try:
        cfg = _cfg(serving_settings, tmp_path, broker.bootstrap, topics)
        with ApiServer(cfg) as api, _client(api, "ann") as c:
            ids = []
            for i in range(10):  # serving is down: only the broker and the book hold them
                r = c.post("/v1/jobs", json=_job(cfg.styles[0], i))
                assert r.status_code == 202, r.text
                ids.append(r.json()["job_id"])
            broker.stop()  # SIGTERM, then SIGKILL: every topic and record is gone
            broker = EmbeddedBroker(port=port).start()
            # as a restarted Tansu does when a client asks first: 4 partitions each
            kafka_io.ensure_topics(broker.bootstrap, [topics.jobs, topics.events,
                                                      topics.control], partitions=4)  # fmt: skip
            deadline = time.monotonic() + 60
            while api.front.resent < len(ids):  # the broker watch sends them again
                assert time.monotonic() < deadline, f"{api.front.resent} of {len(ids)} re-sent"
                time.sleep(0.2)
            cancelled = ids[:3]  # after the restart, before serving reads them
            for job_id in cancelled:
                assert c.delete(f"/v1/jobs/{job_id}").status_code == 202
            serve = subprocess.Popen(
                [sys.executable, "-m", "cli", "--home", str(serving_settings.home), "serve",
                 "--bootstrap-servers", broker.bootstrap, "--topic-prefix", topics.prefix,
                 "--window-s", "1", "--idle-exit", "300"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            deadline = time.monotonic() + 240
            while True:
                st = {j: c.get(f"/v1/jobs/{j}").json()["status"] for j in ids}
                if all(s in OUTCOMES for s in st.values()):
                    break
                assert serve.poll() is None, serve.communicate()[0][-3000:]
                assert time.monotonic() < deadline, st
                time.sleep(0.5)
            assert {j: st[j] for j in cancelled} == dict.fromkeys(cancelled, "cancelled")
            assert {st[j] for j in ids[3:]} == {"done"}, st
            for job_id in ids:  # one outcome each, in the stream and in the list
                assert sum(e in OUTCOMES for e in _events(c, job_id)) == 1
            listed = {v["job_id"]: v["status"] for v in c.get("/v1/jobs").json()["jobs"]}
            assert listed == st
            assert api.front.book.in_flight("ann") == 0  # nothing counts against the quota
            r = c.post("/v1/jobs", json=_job(cfg.styles[0], 3), headers={"Idempotency-Key":
                       ids[3]})  # fmt: skip
            assert r.status_code == 202 and r.json()["retry"]  # ended: not sent again
    finally:
        if serve is not None:
            serve.kill()
            out = serve.communicate(timeout=30)[0]
            assert PROMPT not in out
        broker.stop()


def test_a_post_the_broker_never_acked_is_withdrawn_not_run_later(serving_settings, tmp_path):
    port, topics = free_port(), Topics(f"w{uuid.uuid4().hex[:6]}")
    broker = EmbeddedBroker(port=port).start()
    try:
        cfg = _cfg(serving_settings, tmp_path, broker.bootstrap, topics)
        with ApiServer(cfg) as api, _client(api, "ann") as c:
            broker.stop()
            t0 = time.monotonic()
            r = c.post("/v1/jobs", json=_job(cfg.styles[0], 1), headers={"Idempotency-Key":
                       "never-acked"})  # fmt: skip
            assert r.status_code == 503 and "will not run" in r.json()["error"]
            assert time.monotonic() - t0 < cfg.send_timeout_s + 10
            broker = EmbeddedBroker(port=port).start()
            time.sleep(cfg.send_timeout_s + 3)  # librdkafka would deliver a kept record now
            assert c.get("/v1/jobs/never-acked").status_code == 404
            got = _records(broker.bootstrap, topics.jobs)
            assert not [m for m in got if m.get("job_id") == "never-acked"]
            r = c.post("/v1/jobs", json=_job(cfg.styles[0], 1), headers={"Idempotency-Key":
                       "never-acked"})  # fmt: skip
            assert r.status_code == 202 and "retry" not in r.json()  # now it is sent, as new
            assert [m["job_id"] for m in _records(broker.bootstrap, topics.jobs)] == [
                "never-acked"]  # fmt: skip
    finally:
        broker.stop()


def test_a_job_book_deleted_under_the_api_stops_new_jobs_loudly(serving_settings, tmp_path):
    """Writing on into an unlinked book would accept jobs that no restart knows of:
    the next POST is a 503 that queued nothing, /readyz names the book."""
    port, topics = free_port(), Topics(f"b{uuid.uuid4().hex[:6]}")
    broker = EmbeddedBroker(port=port).start()
    try:
        cfg = _cfg(serving_settings, tmp_path, broker.bootstrap, topics)
        with ApiServer(cfg) as api, _client(api, "ann") as c:
            assert c.post("/v1/jobs", json=_job(cfg.styles[0], 1)).status_code == 202
            cfg.book_path.unlink()
            r = c.post("/v1/jobs", json=_job(cfg.styles[0], 2), headers={"Idempotency-Key":
                       "after"})  # fmt: skip
            assert r.status_code == 503 and "job book is gone" in r.json()["error"]
            ready = c.get("/readyz")
            assert ready.status_code == 503 and "is gone" in ready.text
            got = [m.get("job_id") for m in _records(broker.bootstrap, topics.jobs)]
            assert len(got) == 1 and "after" not in got  # nothing sent for the refused one
    finally:
        broker.stop()


def _records(bootstrap: str, topic: str, wait_s: float = 3.0) -> list[dict]:
    """Every record of every partition of a topic (made, if missing, to look)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    kafka_io.ensure_topics(bootstrap, [topic])
    c = kafka_io.consumer(bootstrap, group=f"look-{uuid.uuid4().hex[:6]}")
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out, end = [], time.monotonic() + wait_s
        while time.monotonic() < end:
            for m in c.consume(100, 0.2):
                if not m.error():
                    out.append(json.loads(m.value()))
        return out
    finally:
        c.close()
