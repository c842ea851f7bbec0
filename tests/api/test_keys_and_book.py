"""Tenant keys and the API's job book, without a server."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from api.job_book import JobBook
from api.keys import TenantKeys
from api.limits import TokenBuckets, retry_after


def test_a_key_is_shown_once_and_only_a_salted_hash_is_stored(tmp_path):
    keys = TenantKeys(tmp_path / "t.db")
    a1, a2, b = keys.create("ann"), keys.create("ann"), keys.create("bob")
    assert keys.tenant_of(a1) == keys.tenant_of(a2) == "ann" and keys.tenant_of(b) == "bob"
    assert keys.tenant_of(a1[:-1] + ("x" if a1[-1] != "x" else "y")) is None  # wrong secret
    assert keys.tenant_of("") is None and keys.tenant_of("Bearer nonsense") is None
    dump = "\n".join(sqlite3.connect(tmp_path / "t.db").iterdump())
    for key in (a1, a2, b):
        assert key.split(".", 1)[1] not in dump  # the secret is nowhere on disk
    rows = sqlite3.connect(tmp_path / "t.db").execute("SELECT salt FROM tenants").fetchall()
    assert len({r[0] for r in rows}) == 3  # a salt per key
    assert TenantKeys(tmp_path / "t.db").tenant_of(b) == "bob"  # a fresh process checks too
    assert keys.revoke("ann") == 2 and keys.tenant_of(a1) is None  # the cache forgets it
    assert [t for t, *_ in keys.tenants()] == ["bob"]


def test_a_key_revoked_by_another_process_fails_at_its_next_request(tmp_path):
    keys = TenantKeys(tmp_path / "t.db")
    ann, bob = keys.create("ann"), keys.create("bob")
    assert keys.tenant_of(ann) == "ann" and keys.cached(ann) == (True, "ann")  # cached
    revoke = "import sys; from api.keys import TenantKeys; TenantKeys(sys.argv[1]).revoke('ann')"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", revoke, str(tmp_path / "t.db")], check=True, cwd=root)
    assert keys.cached(ann) == (False, None)  # the cache gave way: checked afresh
    assert keys.tenant_of(ann) is None and keys.tenant_of(bob) == "bob"


def test_status_only_moves_forward_and_the_outcome_is_final(tmp_path):
    book = JobBook(tmp_path / "b.db")
    assert book.accept("ann", "j1", "fp") is None
    assert book.accept("ann", "j1", "fp") == "fp"  # a retry finds the first
    assert book.accept("bob", "j1", "other") is None  # same id, another tenant: its own job
    ev = lambda e, **d: {"tenant": "ann", "job_id": "j1", "event": e, **d}  # noqa: E731
    assert book.apply(ev("started", device="cpu"))
    assert book.apply(ev("planned", accelerator="cpu", steps=4, model="m"))  # late: kept as plan
    assert book.get("ann", "j1").status == "running"
    assert book.apply(ev("step", step=2, of=4)) and book.apply(ev("step", step=1, of=4))
    assert book.get("ann", "j1").step == 2  # an old step never moves progress back
    assert book.apply(ev("done", result={"status": "done", "jct_s": 1.0}))
    assert not book.apply(ev("failed"))  # final: a repeat or a late event changes nothing
    v = book.get("ann", "j1")
    assert v.status == "done" and v.plan["steps"] == 4 and v.result["jct_s"] == 1.0
    assert [e for _, e, _ in book.events_after("ann", "j1", -1)] == [
        "accepted", "started", "planned", "step", "step", "done"]  # fmt: skip
    assert book.get("bob", "j1").status == "accepted"
    assert not book.apply({"tenant": "cat", "job_id": "j1", "event": "done"})  # not ours
    assert book.in_flight("ann") == 0 and book.in_flight("bob") == 0  # bob's never acked
    book.sent("bob", "j1", "topic-1")
    assert book.in_flight("bob") == 1


def test_the_book_keeps_a_request_until_its_outcome_and_knows_what_a_new_broker_lacks(tmp_path):
    book = JobBook(tmp_path / "b.db")
    for job_id in ("a", "b", "c", "never-acked"):
        book.accept("ann", job_id, "fp-" + job_id, f'{{"job_id": "{job_id}"}}')
    for job_id in ("a", "b", "c"):
        book.sent("ann", job_id, "old")
    book.apply({"tenant": "ann", "job_id": "a", "event": "done", "result": {"status": "done"}})
    book.apply({"tenant": "ann", "job_id": "b", "event": "started", "device": "cpu:0"})
    assert book.request_of("ann", "a") == ""  # ended: the prompt is not kept
    assert book.request_of("ann", "b") == '{"job_id": "b"}'
    # the broker came back empty: open jobs acked on the old topic, never the unacked one
    assert [j for _, j, _ in book.to_resend("new")] == ["b", "c"]
    assert book.needs_send("ann", "c", "new") and book.needs_send("ann", "never-acked", "old")
    assert not book.needs_send("ann", "c", "old") and not book.needs_send("ann", "a", "new")
    book.sent("ann", "b", "new")
    book.sent("ann", "c", "new")
    assert book.to_resend("new") == [] and not book.needs_send("ann", "c", "new")
    # a book from before requests were kept: a retry of the same request fills it in
    old = JobBook(tmp_path / "old.db")
    old.accept("ann", "x", "fp")
    assert old.request_of("ann", "x") == ""
    assert old.accept("ann", "x", "fp", '{"job_id": "x"}') == "fp"
    assert old.request_of("ann", "x") == '{"job_id": "x"}'
    assert old.accept("ann", "x", "other", '{"job_id": "y"}') == "fp"  # not another request's
    assert old.request_of("ann", "x") == '{"job_id": "x"}'


def test_the_operator_numbers_can_be_one_tenants(tmp_path):
    book = JobBook(tmp_path / "b.db")
    for tenant, job_id, event in (("ann", "1", "done"), ("ann", "2", "planned"),
                                  ("bob", "1", "done"), ("bob", "2", "failed")):  # fmt: skip
        book.accept(tenant, job_id, "fp")
        book.apply(
            {
                "tenant": tenant,
                "job_id": job_id,
                "event": event,
                "accelerator": "cpu",
                "result": {"status": event, "latency_slo_met": True, "clip_slo_met": True},
            }
        )
    assert book.counts("ann") == {"done": 1, "planned": 1}
    assert book.counts() == {"done": 2, "planned": 1, "failed": 1}
    assert book.queued_by_accelerator("bob") == {} and book.queued_by_accelerator() == {"cpu": 1}
    assert sum(n for _, n, _ in book.attainment_by_minute(tenant="ann")) == 1
    assert sum(n for _, n, _ in book.attainment_by_minute()) == 3


def test_token_bucket_allows_a_burst_then_the_rate():
    now = [0.0]
    b = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [b.take("ann") for _ in range(3)] == [0, 0, 0]
    wait = b.take("ann")
    assert wait == 0.5 and retry_after(wait) == "1"
    assert b.take("bob") == 0  # tenants do not share a bucket
    now[0] = 0.5
    assert b.take("ann") == 0


def test_a_wrong_key_costs_one_scrypt_however_often_it_is_presented(tmp_path, monkeypatch):
    import api.keys

    keys = TenantKeys(tmp_path / "t.db")
    good = keys.create("ann")
    wrong = good[:-1] + ("x" if good[-1] != "x" else "y")
    calls = []
    real = api.keys._hash
    monkeypatch.setattr(api.keys, "_hash", lambda s, salt: calls.append(1) or real(s, salt))
    assert keys.cached(wrong) == (False, None)  # never checked: only scrypt can tell
    assert [keys.tenant_of(wrong) for _ in range(5)] == [None] * 5
    assert len(calls) == 1 and keys.cached(wrong) == (True, None)
    assert keys.tenant_of(good) == "ann" and keys.cached(good) == (True, "ann")
    assert keys.cached("not a key") == (True, None)  # malformed: known bad without a lookup
    assert len(calls) == 2


def test_only_an_operator_key_is_an_operators_and_an_older_table_gains_the_column(tmp_path):
    db = sqlite3.connect(tmp_path / "t.db")  # the table as it was before operator keys
    db.execute("CREATE TABLE tenants (key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, salt BLOB "
               "NOT NULL, hash BLOB NOT NULL, created_ts REAL NOT NULL, revoked INTEGER NOT "
               "NULL DEFAULT 0)")  # fmt: skip
    db.commit()
    keys = TenantKeys(tmp_path / "t.db")
    ann, ops = keys.create("ann"), keys.create("ops", operator=True)
    assert not keys.is_operator(ann) and keys.is_operator(ops)
    assert not keys.is_operator(ops[:-1] + ("x" if ops[-1] != "x" else "y"))
    assert [(t, op) for t, _, _, op in keys.tenants()] == [("ann", 0), ("ops", 1)]


def test_pruning_drops_old_progress_but_keeps_every_outcome_and_live_jobs(tmp_path):
    import time

    book = JobBook(tmp_path / "b.db")
    for j in ("old", "live"):
        book.accept("ann", j, "fp")
        book.apply_many([{"tenant": "ann", "job_id": j, "event": e, "step": 1, "of": 2}
                         for e in ("planned", "started", "step")])  # fmt: skip
    book.apply({"tenant": "ann", "job_id": "old", "event": "done", "result": {"jct_s": 1.0}})
    assert book.prune(older_than_s=3600) == 0  # it ended just now
    time.sleep(0.05)
    assert book.prune(older_than_s=0.01, limit=2) == 2  # in batches
    assert book.prune(older_than_s=0.01) == 2
    assert [e for _, e, _ in book.events_after("ann", "old", -1)] == ["done"]
    assert len(book.events_after("ann", "live", -1)) == 4  # not ended: all kept
    assert book.get("ann", "old").status == "done"


def test_a_book_deleted_or_replaced_while_open_refuses_new_jobs_and_says_why(tmp_path, caplog):
    import logging
    import os

    import pytest

    from api.job_book import JobBookGone

    book = JobBook(tmp_path / "b.db")
    assert book.accept("ann", "j1", "fp") is None and book.check() == ""
    os.remove(tmp_path / "b.db")  # deleted while the API runs
    with caplog.at_level(logging.ERROR, logger="api.job_book"):
        with pytest.raises(JobBookGone, match="is gone"):
            book.accept("ann", "j2", "fp")
        assert "is gone" in book.check()
    assert len(caplog.records) == 1  # said once, then kept

    other = JobBook(tmp_path / "c.db")
    (tmp_path / "elsewhere.db").write_bytes((tmp_path / "c.db").read_bytes())
    os.replace(tmp_path / "elsewhere.db", tmp_path / "c.db")  # another file in its place
    assert "was replaced by another file" in other.check()
    with pytest.raises(JobBookGone):
        other.accept("ann", "j1", "fp")


def test_a_dead_letter_naming_a_planned_job_does_not_end_it(tmp_path):
    """A bad record that claims a running job's (tenant, job_id) is dead-lettered, and its
    'rejected' event names that id: it must not end the job in the book (its real
    outcome would then be dropped as a repeat)."""
    book = JobBook(tmp_path / "b.db")
    book.accept("ann", "x", "fp")
    book.accept("ann", "y", "fp")

    def ev(job_id, event, **kw):
        return {"tenant": "ann", "job_id": job_id, "event": event, **kw}

    book.apply_many([ev("x", "planned", steps=4), ev("x", "started", device="cpu")])
    assert book.apply_many([ev("x", "rejected", error="prompt: missing")]) == []
    assert book.get("ann", "x").status == "running"
    book.apply_many([ev("x", "done", result={"status": "done"})])
    assert book.get("ann", "x").status == "done"
    # a job serving never read a valid record for: the dead letter is its outcome
    book.apply_many([ev("y", "rejected", error="prompt: missing")])
    assert book.get("ann", "y").status == "rejected"
    book.accept("ann", "z", "fp")  # a dropped job (after its plan) is rejected with its
    dropped = ev("z", "rejected", result={"status": "rejected"})  # result: that one counts
    book.apply_many([ev("z", "planned", steps=4), dropped])
    assert book.get("ann", "z").status == "rejected"
