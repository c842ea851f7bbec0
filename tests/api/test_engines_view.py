"""The operator's view of the serving processes' engines (their heartbeats' `engines`):
kept per live process, sanitised, in /v1/ops and /metrics for an operator key only, and
on the page. No broker, no serving: the app's routes over a front fed beats by hand."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.front import ENGINES_MAX, RESIDENT_MAX, TEXT_MAX, ApiConfig, Front


def row(engine: str, node: str = "10.0.0.1", **kw) -> dict:
    return {"engine": engine, "kind": "cpu-x", "node": node, "state": "serving",
            "in_service": True, "resident": ["toy@1"], "running": 2, "queued": 1,
            "dispatch_p99_ms": 1.5, **kw}  # fmt: skip


def beat(server: str, engines, ts: float = 999.0) -> dict:
    return {"tenant": "", "job_id": "", "event": "ready", "ts": ts, "server": server,
            "every_s": 5.0, "faults": [], "engines": engines}  # fmt: skip


def stopping(server: str) -> dict:
    return {"tenant": "", "job_id": "", "event": "stopping", "server": server}


def feed(front: Front, *msgs: dict) -> None:
    asyncio.run(front._apply(list(msgs)))


@pytest.fixture
def front(tmp_path):
    f = Front(ApiConfig(bootstrap="unused:1", data_dir=tmp_path, results_dir=tmp_path))
    f.now = 1000.0
    f.clock = lambda: f.now
    return f


@pytest.fixture
def app(tmp_path):
    """The app's routes, its lifespan (Kafka) not run: the front is fed by hand."""
    app = create_app(ApiConfig(bootstrap="unused:1", data_dir=tmp_path, results_dir=tmp_path))
    front: Front = app.state.front
    front.now = 1000.0
    front.clock = lambda: front.now
    keys = {"ann": front.keys.create("ann"), "ops": front.keys.create("ops", operator=True)}
    client = TestClient(app)

    def get(path: str, who: str):
        return client.get(path, headers={"Authorization": f"Bearer {keys[who]}"})

    yield front, get
    front.book.close()


def test_engines_are_kept_per_live_server_and_dropped_when_it_stops_or_is_gone(front):
    feed(front, beat("a", [row("cpu-x#0"), row("cpu-x#1", state="restarting")]),
         beat("b", [row("cpu-x@10.0.0.2#0", node="10.0.0.2")]))  # fmt: skip
    rows = front.fleet()
    assert [(r["server"], r["engine"]) for r in rows] == [
        ("a", "cpu-x#0"), ("a", "cpu-x#1"), ("b", "cpu-x@10.0.0.2#0")]  # fmt: skip
    assert rows[1]["state"] == "restarting"
    feed(front, beat("a", [row("cpu-x#0", state="left", in_service=False)]))  # the latest beat
    assert [r["state"] for r in front.fleet() if r["server"] == "a"] == ["left"]
    feed(front, stopping("b"))
    assert {r["server"] for r in front.fleet()} == {"a"} and "b" not in front.engines
    feed(front, beat("c", [row("old")], ts=900.0))  # replayed from the topic's start: old
    assert "c" not in front.engines
    front.now = 1016.0  # a missed its third beat: taken for gone
    assert front.fleet() == []
    feed(front, beat("d", [row("cpu-x#0", node="10.0.0.3")], ts=1016.0))
    assert list(front.engines) == ["d"]  # a's rows are gone from memory too
    feed(front, beat("d", None, ts=1016.0))  # a serving process that reports none
    assert front.fleet() == []


def test_hostile_engine_rows_are_sanitised_and_bounded(front):
    huge = "x" * 100_000
    hostile = [
        row(
            huge,
            node=huge,
            kind=huge,
            state=huge,
            resident=[huge] * 10_000 + [{"a": 1}],
            running=math.nan,
            queued=math.inf,
            dispatch_p99_ms=-1.0,
            extra={"nested": [1]},
        ),
        row(
            "e1",
            running=True,
            queued="7",
            dispatch_p99_ms=math.nan,
            in_service="yes",
            resident={"not": "a list"},
        ),
        row("e2", running=2.5, queued=1e300, dispatch_p99_ms=10**400),
        {"engine": ["not", "a", "string"]},
        {"engine": ""},
        "a string",
        [1, 2],
        None,
        row(
            "e3",
            node=None,
            kind=7,
            state=None,
            resident=None,
            running=None,
            queued=None,
            dispatch_p99_ms=None,
        ),
    ]
    feed(front, beat("a", hostile), beat("flood", [row(f"e{i}") for i in range(10_000)]))
    rows = {r["engine"]: r for r in front.fleet() if r["server"] == "a"}
    assert set(rows) == {"x" * TEXT_MAX, "e1", "e2", "e3"}
    big = rows["x" * TEXT_MAX]
    assert set(big) == {"server", "engine", "kind", "node", "state", "in_service", "resident",
                        "running", "queued", "dispatch_p99_ms"}  # fmt: skip
    assert big["node"] == big["kind"] == big["state"] == "x" * TEXT_MAX
    assert big["resident"] == ["x" * TEXT_MAX] * RESIDENT_MAX
    assert big["running"] is big["queued"] is big["dispatch_p99_ms"] is None
    e1 = rows["e1"]
    assert e1["running"] is e1["queued"] is e1["dispatch_p99_ms"] is None
    assert e1["in_service"] is False and e1["resident"] == []
    assert rows["e2"]["running"] is rows["e2"]["queued"] is rows["e2"]["dispatch_p99_ms"] is None
    assert rows["e3"]["node"] == "local" and rows["e3"]["kind"] == ""
    assert rows["e3"]["state"] == "unknown"
    assert sum(r["server"] == "flood" for r in front.fleet()) == ENGINES_MAX
    json.dumps(front.fleet(), allow_nan=False)  # every number finite: valid JSON


def test_ops_shows_the_engines_and_nodes_to_an_operator_only(app):
    front, get = app
    feed(front, beat("a", [row("cpu-x#0"), row("cpu-x#1", in_service=False, state="left",
                                                running=0)]),
         beat("b", [row("gpu#0", node="10.0.0.2", kind="h200", running=3, queued=None,
                        dispatch_p99_ms=None)]))  # fmt: skip
    ops = get("/v1/ops", "ops").json()
    assert [(e["server"], e["node"], e["engine"]) for e in ops["engines"]] == [
        ("a", "10.0.0.1", "cpu-x#0"),
        ("a", "10.0.0.1", "cpu-x#1"),
        ("b", "10.0.0.2", "gpu#0"),
    ]
    assert ops["engines"][0] == {"server": "a", **row("cpu-x#0")}
    assert ops["nodes"] == {"10.0.0.1": {"in_service": 1, "engines": 2, "running": 2},
                            "10.0.0.2": {"in_service": 1, "engines": 1, "running": 3}}  # fmt: skip
    tenant = get("/v1/ops", "ann")
    assert tenant.status_code == 200 and tenant.json()["scope"] == "ann"
    assert "engines" not in tenant.json() and "nodes" not in tenant.json()
    assert "cpu-x" not in tenant.text and "10.0.0" not in tenant.text
    feed(front, stopping("b"))
    ops = get("/v1/ops", "ops").json()
    assert {e["server"] for e in ops["engines"]} == {"a"} and "10.0.0.2" not in ops["nodes"]
    feed(front, stopping("a"))
    assert get("/v1/ops", "ops").json()["engines"] == []  # an operator, no engines now


def test_metrics_expose_the_engine_gauges(app):
    front, get = app
    a = [row("cpu-x#0"), row("cpu-x#1", dispatch_p99_ms=None, running=None),
         row("cpu-x#2", state="left", in_service=False, running=0)]  # fmt: skip
    b = [row("gpu#0", node="10.0.0.2", kind="h200", dispatch_p99_ms=250.0)]
    feed(front, beat("a", a), beat("b", b))
    text = get("/metrics", "ops").text
    for line in (
        'sdaas_engines{kind="cpu-x",node="10.0.0.1",state="serving"} 2.0',
        'sdaas_engines{kind="cpu-x",node="10.0.0.1",state="left"} 1.0',
        'sdaas_engines{kind="h200",node="10.0.0.2",state="serving"} 1.0',
        'sdaas_engine_running_jobs{engine="cpu-x#0",node="10.0.0.1"} 2.0',
        'sdaas_engine_running_jobs{engine="cpu-x#2",node="10.0.0.1"} 0.0',
        'sdaas_engine_dispatch_p99_seconds{engine="cpu-x#0",node="10.0.0.1"} 0.0015',
        'sdaas_engine_dispatch_p99_seconds{engine="gpu#0",node="10.0.0.2"} 0.25',
    ):
        assert line in text.splitlines(), line
    assert 'running_jobs{engine="cpu-x#1"' not in text  # nulls are left out
    assert 'p99_seconds{engine="cpu-x#1"' not in text
    assert get("/metrics", "ann").status_code == 403
    feed(front, stopping("a"), stopping("b"))
    assert 'engine="' not in get("/metrics", "ops").text


def test_the_page_has_the_engines_table_filled_from_ops_as_text(app):
    _, get = app
    page, script = get("/", "ann").text, get("/app.js", "ann").text
    assert 'id="engines-card"' in page and 'id="engines"' in page and 'id="nodes"' in page
    for column in ("node", "engine", "kind", "state", "resident models", "running", "queued",
                   "dispatch p99 (ms)"):  # fmt: skip
        assert f">{column}</th>" in page, column
    assert "function engines(ops)" in script and "engines(ops);" in script
    assert "Array.isArray(ops.engines)" in script  # hidden from a tenant's key
    assert "const esc = " in script and "esc(e.engine)" in script  # text, never markup
