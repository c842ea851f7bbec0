"""The front's event feed and the event-loop watchdog, without a server or a broker."""

from __future__ import annotations

import asyncio
import logging
import time

from api.front import ApiConfig, Front
from api.loop_watch import LoopWatch


def test_a_batch_of_events_is_applied_a_chunk_at_a_time_with_the_loop_turning_between(tmp_path):
    front = Front(ApiConfig(bootstrap="unused:1", data_dir=tmp_path, results_dir=tmp_path))
    n = 5 * Front.CHUNK
    for i in range(n):
        front.book.accept("ann", f"j{i}", "fp")
    msgs = [{"tenant": "ann", "job_id": f"j{i}", "event": "planned", "steps": 4} for i in range(n)]
    seen = []  # how many jobs were planned each time another task got a turn

    async def other_requests():
        while len(seen) < 100 and (not seen or seen[-1] < n):
            seen.append(sum(v.status == "planned" for v in front.book.list("ann", limit=n)))
            await asyncio.sleep(0)

    async def main():
        with front.subscribe(("ann", "j7")) as woken:
            await asyncio.gather(front._apply(msgs), other_requests())
            assert woken.is_set()  # whoever streams j7 was woken

    asyncio.run(main())
    assert any(0 < k < n for k in seen), seen  # a submit waits for a chunk, not the batch
    assert all(v.status == "planned" for v in front.book.list("ann", limit=n))


def test_the_watchdog_names_a_stall_of_the_event_loop_and_counts_its_lag(caplog):
    from prometheus_client import CollectorRegistry, Histogram

    lag = Histogram("lag", "lag", buckets=(0.05, 1.0), registry=CollectorRegistry())
    watch = LoopWatch(lag, stall_s=0.1)

    def blocking_handler():
        time.sleep(0.3)  # a request handler that blocks the loop

    async def main():
        watch.start(asyncio.get_running_loop())
        await asyncio.sleep(0.05)
        blocking_handler()
        await asyncio.sleep(0.05)
        watch.stop()

    with caplog.at_level(logging.WARNING, logger="api.loop_watch"):
        asyncio.run(main())
    assert watch.stalls == 1
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "blocked for" in msg and "blocking_handler" in msg
    worst = lag.collect()[0].samples
    over = [s.value for s in worst if s.name == "lag_bucket" and s.labels["le"] == "0.05"]
    count = [s.value for s in worst if s.name == "lag_count"]
    assert count[0] - over[0] >= 1  # one tick was over 50 ms late


def test_readiness_follows_serving_heartbeats_and_is_withdrawn_when_they_stop(tmp_path):
    front = Front(ApiConfig(bootstrap="unused:1", data_dir=tmp_path, results_dir=tmp_path))
    now = [1000.0]
    front.clock = lambda: now[0]

    def beat(server: str, ts: float) -> dict:
        return {"tenant": "", "job_id": "", "event": "ready", "ts": ts, "server": server,
                "every_s": 5.0, "accelerators": ["cpu"]}  # fmt: skip

    asyncio.run(front._apply([beat("a", 900.0)]))  # replayed from the topic's start: old
    ok, why = front.serving_ready()
    assert not ok and "no serving process has said it is ready" in why
    asyncio.run(front._apply([beat("a", 999.0), beat("b", 999.5)]))
    assert front.serving_ready()[0]
    now[0] = 1010.0
    asyncio.run(front._apply([{"event": "stopping", "server": "b", "tenant": "", "job_id": ""}]))
    assert front.serving_ready()[0]  # a still counts: 10 s < 3 beats
    now[0] = 1016.0  # a missed its third beat
    ok, why = front.serving_ready()
    assert not ok and "for 16 s" in why
    asyncio.run(front._apply([beat("a", 1016.0)]))
    assert front.serving_ready()[0]  # back


def test_readiness_names_serving_faults_and_a_fatal_one_or_a_stop_reason_is_not_ready(tmp_path):
    """A store that vanished while serving ran is an outage on /readyz, with its reason;
    a recovered fault (an engine restarted) is named but serving stays ready."""
    from sdaas.health import Faults

    front = Front(ApiConfig(bootstrap="unused:1", data_dir=tmp_path, results_dir=tmp_path))
    front.clock = lambda: 1000.0
    faults = Faults(clock=lambda: 999.0)

    def beat(server: str) -> dict:
        return {"tenant": "", "job_id": "", "event": "ready", "ts": 999.0, "server": server,
                "every_s": 5.0, "faults": [f.to_json() for f in faults.current()]}  # fmt: skip

    faults.report("engine cpu:0", "pipe reader crashed; engine restarted, 2 jobs re-queued")
    asyncio.run(front._apply([beat("a")]))
    ok, why = front.serving_ready()
    assert ok and "engine cpu:0: pipe reader crashed" in why
    faults.report("result-store", "results.db vanished while serving ran", fatal=True)
    asyncio.run(front._apply([beat("a")]))
    ok, why = front.serving_ready()
    assert not ok and "serving cannot take work" in why and "results.db vanished" in why
    stop = {"tenant": "", "job_id": "", "event": "stopping", "server": "a",
            "reason": "the result store vanished"}  # fmt: skip
    asyncio.run(front._apply([stop]))
    ok, why = front.serving_ready()
    assert not ok and "the last one stopped: the result store vanished" in why
