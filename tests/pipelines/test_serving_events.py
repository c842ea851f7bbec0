"""Serving's heartbeat to the front door, without a broker."""

from __future__ import annotations

import time

from pipelines.serving_events import Heartbeat


def test_a_heartbeat_repeats_ready_until_stopped_then_says_stopping():
    sent = []
    hb = Heartbeat(lambda *a, **kw: sent.append((a[2], kw)), ["cpu"], every_s=0.05).start()
    deadline = time.monotonic() + 10
    while sum(e == "ready" for e, _ in sent) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    hb.stop()
    events = [e for e, _ in sent]
    assert events[-1] == "stopping" and set(events[:-1]) == {"ready"}
    assert all(kw["server"] == hb.server for _, kw in sent)  # one process, one name
    assert sent[0][1]["accelerators"] == ["cpu"] and sent[0][1]["every_s"] == 0.05
    n = len(sent)
    time.sleep(0.15)
    assert len(sent) == n  # stopped means stopped


def test_cancels_are_read_from_the_start_but_only_those_of_the_last_hour_count():
    from adapters.kafka_io import Topics
    from pipelines.serving_events import CancelListener

    got = []
    listener = CancelListener("unused:1", Topics(), lambda t, j: got.append((t, j)),
                              clock=lambda: 10_000.0)  # fmt: skip
    assert not listener.tail.from_end  # a cancel sent while serving was down still counts
    cancel = lambda job_id, ts: {"op": "cancel", "tenant": "ann", "job_id": job_id, "ts": ts}  # noqa: E731
    listener._on([cancel("recent", 9_000.0), cancel("old", 6_000.0), cancel("no-ts", None),
                  cancel("nan", float("nan")), {"op": "cancel", "tenant": "ann\n", "ts": 9e3},
                  "not a dict", cancel("j\nk", 9_500.0)])  # fmt: skip
    assert got == [("ann", "recent")]
