"""The HTTP API over real HTTP (uvicorn), against the real broker and a serving loop
(the toy models): every route, keys and tenancy, quotas, idempotency, cancel, the event
stream, metrics, and no prompt in any log or metric."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
import uuid
from dataclasses import replace

import httpx
import pytest

from api.server import ApiServer
from sdaas.job_request import parse_job
from tests.api.conftest import CANARY

pytestmark = pytest.mark.slow


def events(client: httpx.Client, job_id: str, on_event=None, timeout: float = 120) -> list:
    """The job's event stream to its end: [(event, data)]."""
    out, event = [], None
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
                if on_event:
                    on_event(event, out[-1][1])
    return out


def test_submit_stream_every_step_then_status_image_and_list(stack):
    with stack.client("ann") as c:
        r = c.post("/v1/jobs", json=stack.job(seed=1))
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        seen = events(c, job_id)
        names = [e for e, _ in seen]
        assert names[0] == "accepted" and names[-1] == "done" and "planned" in names
        assert names.index("planned") < names.index("started") < names.index("step")
        planned = dict(seen)["planned"]
        steps = [d["step"] for e, d in seen if e == "step"]
        assert steps == list(range(1, planned["steps"] + 1))  # every step, in order
        job = c.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "done" and job["plan"]["steps"] == planned["steps"]
        assert job["outcome"]["tenant"] == "ann" and job["outcome"]["clip_score"] is not None
        assert job["progress"] == {"step": planned["steps"], "of": planned["steps"]}
        # the image is this API's URL, never the server's file path
        assert "image_uri" not in job["outcome"]
        assert job["outcome"]["image_url"] == f"/v1/jobs/{job_id}/image"
        assert "file:" not in json.dumps(seen)
        # a resumed stream: only the events after Last-Event-ID; a hostile one is ignored
        last = len(seen) - 2
        with c.stream("GET", f"/v1/jobs/{job_id}/events",
                      headers={"Last-Event-ID": str(last)}) as r:  # fmt: skip
            assert [ln for ln in r.iter_lines() if ln.startswith("event: ")] == ["event: done"]
        for hostile in (b"\xb2", "9" * 5000, "-1"):  # superscript two (latin-1): isdigit()
            r = c.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": hostile})
            assert r.status_code == 200 and r.text.count("event: ") == len(seen)
        img = c.get(f"/v1/jobs/{job_id}/image")
        assert img.status_code == 200 and img.content.startswith(b"\x89PNG")
        listed = c.get("/v1/jobs", params={"status": "done"}).json()["jobs"]
        assert job_id in [j["job_id"] for j in listed]
        assert all(j["status"] == "done" for j in listed)
        page = c.get("/v1/jobs", params={"limit": 1}).json()
        assert len(page["jobs"]) == 1 and page["next_before"] is not None


def test_keys_and_tenancy(stack):
    with stack.client("ann") as ann, stack.client("bob") as bob, stack.client(None) as anon:
        job_id = ann.post("/v1/jobs", json=stack.job(seed=2)).json()["job_id"]
        assert anon.get(f"/v1/jobs/{job_id}").status_code == 401
        assert anon.post("/v1/jobs", json=stack.job()).status_code == 401
        wrong = {"Authorization": "Bearer sdaas_000000000000.not-a-key"}
        assert anon.get("/v1/jobs", headers=wrong).status_code == 401
        # another tenant's job is exactly a job that does not exist
        for method, path in (("GET", ""), ("GET", "/events"), ("GET", "/image"),
                             ("DELETE", "")):  # fmt: skip
            r = bob.request(method, f"/v1/jobs/{job_id}{path}")
            assert r.status_code == 404, (method, path)
            assert r.json() == {"error": f"job {job_id!r}: not found"}
        assert job_id not in [j["job_id"] for j in bob.get("/v1/jobs").json()["jobs"]]
        # the same id is bob's own job if bob submits it
        r = bob.post("/v1/jobs", json=stack.job(job_id=job_id))
        assert r.status_code == 202 and "retry" not in r.json()
        events(ann, job_id), events(bob, job_id)
        a, b = ann.get(f"/v1/jobs/{job_id}").json(), bob.get(f"/v1/jobs/{job_id}").json()
        assert a["outcome"]["tenant"] == "ann" and b["outcome"]["tenant"] == "bob"


def test_every_problem_is_named_with_422_and_the_prompt_never_echoed(stack):
    with stack.client("ann") as c:
        bad = stack.job(min_clip="high", latency_slo_s=-1, style="cubism", extra=1)
        r = c.post("/v1/jobs", json=bad)
        assert r.status_code == 422 and r.json()["problems"] == ["'extra': unknown field"]
        del bad["extra"]
        r = c.post("/v1/jobs", json=bad)
        text = " | ".join(r.json()["problems"])
        assert r.status_code == 422
        for needle in ("min_clip: 'high': must be a number", "latency_slo_s: -1.0: must be > 0",
                       "style: 'cubism': unknown"):  # fmt: skip
            assert needle in text
        assert CANARY not in r.text
        nan = json.dumps(stack.job(latency_slo_s=float("nan"))).encode()
        r = c.post("/v1/jobs", content=nan)
        assert r.status_code == 422 and "must be finite" in r.text
        for body in (b"\xff\xfe not utf-8", b"[1, 2]", b"{"):
            assert c.post("/v1/jobs", content=body).status_code == 422
        r = c.post("/v1/jobs", json=stack.job(prompt="x" * 20_000))  # never read whole
        assert r.status_code == 413 and "byte limit" in r.text
        huge = json.dumps(stack.job()).replace('"latency_slo_s": 300.0', '"latency_slo_s": 1e400')
        r = c.post("/v1/jobs", content=huge[:-1] + ', "seed": ' + "9" * 400 + "}")
        assert r.status_code == 422 and "latency_slo_s" in r.text and "seed" in r.text
        r = c.post("/v1/jobs", json=stack.job(job_id="a\nb"))
        assert r.status_code == 422 and "job_id" in r.text
        r = c.post("/v1/jobs", json=stack.job(tenant="bob"))
        assert r.status_code == 422 and "set by your API key" in r.text
        assert c.get("/v1/jobs", params={"status": "weird"}).status_code == 422


def test_what_cannot_run_is_refused_at_the_door_naming_the_cause(stack):
    """Everything serving would refuse or fail is a 422 here, with the real cause."""
    lone = json.dumps(stack.job(prompt="two red circles \ud800 on the left"))
    assert "\\ud800" in lone  # a JSON escape: valid JSON, not valid text
    wanted = {
        lone: "prompt: U+D800 at character 16: an unpaired surrogate",
        json.dumps(stack.job(resolution="64x64")): "resolution: '64x64': style",
        json.dumps(stack.job(submitted_ts=float("nan"))): "submitted_ts: nan: must be finite",
        json.dumps(stack.job(submitted_ts=1e300)): "submitted_ts: 1e+300: more than 300 s",
        json.dumps(stack.job(submitted_ts=time.time() + 86400 * 365)): "more than 300 s",
        b'{"prompt": "caf\xe9"}': "body: not UTF-8 (byte 0xe9 at offset 15)",
        b'{"seed": ' + b"7" * 5000 + b"}": "a number too long: over 4300 digits",
        b"[" * 5000 + b"]" * 5000: "body: JSON nested too deeply",
    }
    with stack.client("ann") as c:
        for body, why in wanted.items():
            r = c.post("/v1/jobs", content=body)
            assert r.status_code == 422 and why in " | ".join(r.json()["problems"]), r.text
        ok = c.post("/v1/jobs", json=stack.job(submitted_ts=time.time() - 5, seed=12))
        assert ok.status_code == 202  # a sane client timestamp is fine
        events(c, ok.json()["job_id"])


def test_a_422_costs_no_rate_limit_token(stack):
    cfg = replace(stack.cfg, data_dir=stack.cfg.data_dir / "tokens", rate_per_s=0.01, burst=1)
    with ApiServer(cfg) as api:
        key = api.front.keys.create("dan")
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"},
                          timeout=60) as c:  # fmt: skip
            for _ in range(5):
                assert c.post("/v1/jobs", json=stack.job(style="cubism")).status_code == 422
            r = c.post("/v1/jobs", json=stack.job(seed=13))
            assert r.status_code == 202  # the one token of the burst was still there
            assert c.post("/v1/jobs", json=stack.job(seed=14)).status_code == 429
            events(c, r.json()["job_id"])


def test_ops_shows_a_tenant_its_own_numbers_and_an_operator_all(stack):
    with stack.client("ann") as ann, stack.client("bob") as bob, stack.client("ops") as ops:
        job_id = bob.post("/v1/jobs", json=stack.job(seed=15)).json()["job_id"]
        events(bob, job_id)
        mine = ann.get("/v1/ops").json()
        everyone = ops.get("/v1/ops").json()
        bobs = bob.get("/v1/ops").json()
    book = stack.api.front.book
    assert mine["scope"] == "ann" and mine["counts"] == book.counts("ann")
    assert everyone["scope"] == "all tenants" and everyone["counts"] == book.counts()
    assert book.counts() != book.counts("ann")  # bob's jobs are in the first only
    assert bobs["counts"]["done"] >= 1 and job_id not in json.dumps(mine)
    # the engines (from serving's heartbeats) are an operator's view only
    assert "engines" not in mine and "nodes" not in mine and "engines" not in bobs
    assert everyone["engines"] and {e["state"] for e in everyone["engines"]} <= {
        "starting", "serving", "restarting", "left", "stopped", "vacant"}  # fmt: skip
    assert sum(n["engines"] for n in everyone["nodes"].values()) == len(everyone["engines"])


def test_a_retried_post_with_the_same_idempotency_key_is_one_job(stack):
    key = f"idem-{uuid.uuid4().hex[:8]}"
    with stack.client("ann") as c:
        first = c.post("/v1/jobs", json=stack.job(seed=3), headers={"Idempotency-Key": key})
        again = c.post("/v1/jobs", json=stack.job(seed=3), headers={"Idempotency-Key": key})
        assert first.status_code == again.status_code == 202
        assert first.json()["job_id"] == again.json()["job_id"] == key and again.json()["retry"]
        other = c.post("/v1/jobs", json=stack.job(seed=4), headers={"Idempotency-Key": key})
        assert other.status_code == 409
        # the same job spelled otherwise: a client's own submitted_ts (stamped anew on
        # each retry), 300 as 300.0, the tenant its key says: the same job, not a 409
        respelled = {**stack.job(seed=3), "latency_slo_s": 300, "tenant": "ann",
                     "submitted_ts": time.time()}  # fmt: skip
        r = c.post("/v1/jobs", json=respelled, headers={"Idempotency-Key": key})
        assert r.status_code == 202 and r.json()["retry"], r.text
        seen = events(c, key)
        assert [e for e, _ in seen].count("done") == 1
        assert sum(j["job_id"] == key for j in c.get("/v1/jobs").json()["jobs"]) == 1
    from adapters.result_store import ResultStore

    store = ResultStore(stack.cfg.results_dir / "results.db")
    assert sum(r.job_id == key for r in store.for_tenant("ann")) == 1


def test_a_retry_while_the_first_post_is_still_sending_learns_how_that_ended(stack):
    """The retry must not answer 202 for a job the first request then fails to queue."""
    import threading

    front, real = stack.api.front, stack.api.front.send

    async def broker_fails(*_a, **_kw):
        await asyncio.sleep(0.5)
        raise ConnectionError("the broker did not acknowledge")

    key = f"race-{uuid.uuid4().hex[:8]}"
    got = {}

    def post(name):
        with stack.client("ann") as c:
            got[name] = c.post("/v1/jobs", json=stack.job(seed=7), headers={"Idempotency-Key": key})

    front.send = broker_fails
    try:
        first = threading.Thread(target=post, args=("first",))
        first.start()
        time.sleep(0.2)  # the first is in the book, waiting on its acknowledgement
        post("retry")
        first.join()
    finally:
        front.send = real
    assert got["first"].status_code == got["retry"].status_code == 503
    post("later")  # the broker is back: the job is queued now, as a new one
    assert got["later"].status_code == 202 and "retry" not in got["later"].json()
    with stack.client("ann") as c:
        assert [e for e, _ in events(c, key)].count("done") == 1


def test_a_retry_sends_a_job_a_stopped_api_entered_but_never_got_acknowledged(stack):
    """An API process that stopped between entering a job and the broker's ack: the
    client's retry (same key, same request) must queue it, not answer 202 for nothing."""
    key, body = f"lost-{uuid.uuid4().hex[:8]}", stack.job(seed=11)
    front = stack.api.front
    job = parse_job(json.dumps({**body, "tenant": "ann", "job_id": key}).encode())
    stored = replace(job, submitted_ts=None).to_json().decode()  # as the route keeps it
    front.book.accept("ann", key, front.fingerprint(stored))  # entered; never sent, never acked
    with stack.client("ann") as c:
        r = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        assert r.status_code == 202
        assert status_of(c, key, {"done"}) == "done"  # fails in 60 s where never queued
        assert [e for e, _ in events(c, key)].count("done") == 1
        again = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        assert again.status_code == 202 and again.json()["retry"]  # now it is queued


def status_of(c: httpx.Client, job_id: str, want: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while (st := c.get(f"/v1/jobs/{job_id}").json()["status"]) not in want:
        assert time.monotonic() < deadline, st
        time.sleep(0.02)
    return st


def test_cancel_a_queued_job_at_once_and_a_running_one_within_a_step(stack):
    long = {k: v for k, v in stack.long.items() if k != "steps"}
    total = stack.long["steps"]
    assert total >= 3, stack.long
    with stack.client("ann") as c:
        running = c.post("/v1/jobs", json=stack.job(**long, seed=5)).json()["job_id"]
        status_of(c, running, {"running"})
        # the one device is busy: this job is planned and waits in the core's queue
        queued = c.post("/v1/jobs", json=stack.job(**long, seed=6)).json()["job_id"]
        assert status_of(c, queued, {"planned", "running", "done"}) == "planned"
        assert c.delete(f"/v1/jobs/{queued}").status_code == 202
        assert c.get(f"/v1/jobs/{running}").json()["status"] == "running"  # still going
        assert c.delete(f"/v1/jobs/{running}").status_code == 202
        cancelled = time.time()  # the cancel is in Kafka now
        q = events(c, queued)
        assert q[-1][0] == "cancelled" and "started" not in [e for e, _ in q]
        seen = events(c, running)
        assert seen[-1][0] == "cancelled", [e for e, _ in seen]
        steps = [d for e, d in seen if e == "step"]
        # serving got the cancel (its own clock, like the steps'), then the job stopped at
        # the boundary of the step it was in: no step ends after that one
        got = next(d["ts"] for e, d in seen if e == "cancelling")
        assert got >= cancelled - 1.0  # the same host's clock
        assert len([d for d in steps if d["ts"] > got]) <= 1, (got, steps)
        assert len(steps) < total
        assert c.delete(f"/v1/jobs/{queued}").status_code == 409  # already ended
        assert c.get(f"/v1/jobs/{queued}/image").status_code == 404
        assert c.get(f"/v1/jobs/{running}").json()["outcome"]["status"] == "cancelled"


def test_rate_limit_and_in_flight_quota_answer_429_with_retry_after(stack):
    cfg = replace(stack.cfg, data_dir=stack.cfg.data_dir / "strict", rate_per_s=0.2, burst=2,
                  max_in_flight=1)  # fmt: skip
    with ApiServer(cfg) as api:
        key = api.front.keys.create("cat")
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"},
                          timeout=60) as c:  # fmt: skip
            first = c.post("/v1/jobs", json=stack.job(seed=7))
            over = c.post("/v1/jobs", json=stack.job(seed=8))
            assert first.status_code == 202
            assert over.status_code == 429 and "in-flight" in over.json()["error"]
            assert over.headers["Retry-After"] == "1"
            limited = c.post("/v1/jobs", json=stack.job(seed=9))
            assert limited.status_code == 429 and "rate limit" in limited.json()["error"]
            assert int(limited.headers["Retry-After"]) >= 1
            events(c, first.json()["job_id"])


def test_health_readiness_metrics_and_no_prompt_in_logs_or_metrics(stack, caplog, capfd):
    caplog.set_level(logging.INFO)
    with stack.client("ann") as c:
        job_id = c.post("/v1/jobs", json=stack.job(seed=10)).json()["job_id"]
        events(c, job_id)
        assert c.get("/healthz").json() == {"ok": True}
        assert gc.get_freeze_count() > 0  # the libraries are out of the collector's view
        deadline = time.monotonic() + 30
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        refused = c.get("/metrics")  # it names every tenant: ann's key may not read it
        with stack.client("ops") as operator:
            text = operator.get("/metrics").text
        ops = c.get("/v1/ops").json()
        page = c.get("/")
    for name in ('sdaas_jobs_total{outcome="done",tenant="ann"}', "sdaas_queue_depth",
                 "sdaas_slo_attainment", "sdaas_job_latency_seconds_bucket",
                 "sdaas_predictor_error_ratio_bucket", "sdaas_submit_seconds_bucket",
                 "sdaas_engines{", "sdaas_engine_running_jobs{"):  # fmt: skip
        assert name in text, name
    assert refused.status_code == 403 and "--operator" in refused.json()["error"]
    assert httpx.get(f"{stack.api.url}/metrics").status_code == 401
    assert ops["counts"]["done"] >= 1 and ops["recent"][0]["job_id"] == job_id
    assert page.status_code == 200 and "Playground" in page.text
    assert httpx.get(f"{stack.api.url}/docs").status_code == 200  # OpenAPI docs, no key
    out, err = capfd.readouterr()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert f"/v1/jobs/{job_id}" in logs  # the access log is there, and it is clean
    for blob in (text, logs, out, err, json.dumps(ops)):
        assert CANARY not in blob
