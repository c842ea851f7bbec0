import json
import sqlite3
from pathlib import Path

import pytest

from adapters.result_store import ResultStore, StoreError
from sdaas.errors import NotFoundError
from sdaas.records import JobResult


def test_first_result_per_job_wins_and_tenants_see_only_their_own(tmp_path):
    s = ResultStore(tmp_path / "r.db")
    assert s.put([JobResult("j1", "alice", "done", run_s=1.0)]) == 1
    assert s.put([JobResult("j1", "alice", "failed"), JobResult("j2", "bob", "rejected")]) == 1
    assert s.get("alice", "j1").status == "done"
    with pytest.raises(NotFoundError, match="no result for tenant 'bob'"):
        s.get("bob", "j1")
    assert [r.job_id for r in s.for_tenant("bob")] == ["j2"]
    assert s.known([("alice", "j1"), ("alice", "j3"), ("bob", "j1")]) == {("alice", "j1")}


def test_ledger_and_publishing_state(tmp_path):
    s = ResultStore(tmp_path / "r.db")
    s.put([JobResult("j1", "a", "done")])
    s.put_dead_letters([{"source": "t/0/5", "reason": "bad"}])
    s.record([("t/0/4", "a", "j1", "result"), ("t/0/5", "", "", "dead_letter")])
    s.record([("t/0/4", "a", "j1", "duplicate")])  # a replay does not change an outcome
    assert s.outcomes(["t/0/4", "t/0/5", "t/0/6"]) == {"t/0/4": "result", "t/0/5": "dead_letter"}
    assert [r.job_id for r in s.results_for_sources(["t/0/4"])] == ["j1"]
    results, letters = s.unpublished()
    assert [r.job_id for r in results] == ["j1"] and letters[0]["source"] == "t/0/5"
    s.mark_published([("a", "j1")], ["t/0/5"])
    assert s.unpublished() == ([], [])


def test_two_tenants_may_use_the_same_job_id_and_each_sees_only_its_own(tmp_path):
    s = ResultStore(tmp_path / "r.db")
    s.put([JobResult("invoice-0001", "alice", "done", run_s=1.0)], ["t/0/1"])
    assert s.put([JobResult("invoice-0001", "bob", "rejected")], ["t/0/2"]) == 1
    assert s.get("alice", "invoice-0001").status == "done"
    assert s.get("bob", "invoice-0001").status == "rejected"
    assert [r.tenant for r in s.results_for_sources(["t/0/2"])] == ["bob"]
    s.mark_published([("bob", "invoice-0001")], [])
    assert [r.tenant for r in s.unpublished()[0]] == ["alice"]


def test_a_v1_store_keyed_by_job_id_alone_is_migrated_in_place(tmp_path):
    path = tmp_path / "r.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE results (job_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, status TEXT "
        "NOT NULL, body TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0, stored_ts REAL "
        "NOT NULL DEFAULT 0); CREATE TABLE ledger (source TEXT PRIMARY KEY, job_id TEXT NOT "
        "NULL, outcome TEXT NOT NULL);"
    )
    body = json.dumps({"job_id": "j1", "tenant": "alice", "status": "done"})
    db.execute("INSERT INTO results VALUES ('j1', 'alice', 'done', ?, 1, 5.0)", (body,))
    db.execute("INSERT INTO ledger VALUES ('t/0/1', 'j1', 'result')")
    db.commit()
    db.close()
    s = ResultStore(path)
    assert s.get("alice", "j1").status == "done"
    assert [r.tenant for r in s.results_for_sources(["t/0/1"])] == ["alice"]
    assert s.put([JobResult("j1", "bob", "done")]) == 1  # now per tenant
    assert ResultStore(path).count() == 2  # reopening does not migrate again


def test_a_corrupted_store_is_reported_with_its_path_and_what_to_do(tmp_path):
    path = tmp_path / "results.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as e:
        ResultStore(path)
    assert str(path) in str(e.value) and "Restore it from a backup, or move it aside" in str(
        e.value
    )


def test_a_reader_never_creates_an_empty_store(tmp_path):
    with pytest.raises(StoreError, match="no result store at"):
        ResultStore(tmp_path / "results.db", create=False)
    assert not (tmp_path / "results.db").exists()


def test_observations_round_trip_oldest_first_per_predictor_version(tmp_path):
    from predictor.latency_correction import Observation

    store = ResultStore(tmp_path / "r.db")
    first = Observation(("m@1", "cpu-x", 1), 0.5, 0.05)
    second = Observation(("m@1", "cpu-x", 2), 0.7, 0.07)
    store.observe([first], "probe", predictor="3")
    store.observe([second], "job", predictor="3")
    store.observe([first], "job", predictor="4")
    assert store.observations("3") == [first, second]
    assert store.observations("3", limit=1) == [second]
    assert store.observations("4") == [first] and store.observations("5") == []


def test_batch_costs_are_kept_per_predictor_version_and_a_v3_store_gets_them(tmp_path):
    import sqlite3

    path = tmp_path / "r.db"
    ResultStore(path)
    with sqlite3.connect(path) as db:  # a store written by the previous schema
        db.execute("DROP TABLE batch_costs")
        db.execute("PRAGMA user_version=3")
    store = ResultStore(path)
    store.put_batch_costs("3", "m@1", "cpu-x", 8, {2: 1.4, 4: 2.1})
    store.put_batch_costs("3", "m@1", "cpu-x", 8, {4: 2.5})  # measured again: replaced
    store.put_batch_costs("4", "m@1", "gpu-y", 8, {2: 1.1})
    assert store.batch_costs("3") == {("m@1", "cpu-x"): {2: 1.4, 4: 2.5}}
    assert store.batch_costs("4") == {("m@1", "gpu-y"): {2: 1.1}}
    assert store.batch_costs("5") == {}


def _remove(path):
    for end in ("", "-wal", "-shm"):
        Path(f"{path}{end}").unlink(missing_ok=True)


def test_a_store_deleted_while_in_use_is_never_created_anew(tmp_path):
    path = tmp_path / "results.db"
    s = ResultStore(path)
    s.put([JobResult("j1", "alice", "done")], ["t/0/1"])
    _remove(path)
    for use in (s.count, s.check, lambda: s.put([JobResult("j2", "alice", "done")])):
        with pytest.raises(StoreError) as e:
            use()
        assert f"the result store {path} is gone" in str(e.value) and "--new-store" in str(e.value)
    with pytest.raises(StoreError, match="is gone"):  # nor by a new handle in this process
        ResultStore(path)
    assert not path.exists()
    assert ResultStore(path, fresh=True).count() == 0  # only when the operator says so


def test_a_store_replaced_while_in_use_is_refused(tmp_path):
    path = tmp_path / "results.db"
    s = ResultStore(path)
    s.put([JobResult("j1", "alice", "done")], ["t/0/1"])
    for end in ("", "-wal", "-shm"):  # moved aside, an empty store in its place
        if Path(f"{path}{end}").exists():
            Path(f"{path}{end}").rename(tmp_path / f"old.db{end}")
    sqlite3.connect(path).execute("CREATE TABLE results (x)").connection.close()
    with pytest.raises(StoreError, match="was replaced by another file"):
        s.put([JobResult("j2", "alice", "done")])
    with pytest.raises(StoreError, match="was replaced by another file"):
        ResultStore(path)


def test_a_store_that_takes_no_writes_is_a_clear_error(tmp_path):
    """RLIMIT_FSIZE: a real write failure (EFBIG), like a full disk, even as root."""
    import resource

    s = ResultStore(tmp_path / "results.db")
    s.put([JobResult("j1", "alice", "done")], ["t/0/1"])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
    try:
        errors = []
        for use in (s.check, lambda: s.put([JobResult("j2", "alice", "done")])):
            try:
                use()
            except Exception as exc:  # noqa: BLE001 - asserted below, limit restored first
                errors.append(exc)
        seen = s.count()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert len(errors) == 2 and all(isinstance(e, StoreError) for e in errors), errors
    assert "cannot be written (disk I/O error)" in str(errors[0]) and "restart" in str(errors[0])
    assert seen == 1  # still readable
    s.put([JobResult("j2", "alice", "done")])  # and writable again once it is fixed
