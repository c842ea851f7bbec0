import pytest

from pipelines.result_store import ResultStore
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
    assert s.known(["j1", "j3"]) == {"j1"}


def test_ledger_and_publishing_state(tmp_path):
    s = ResultStore(tmp_path / "r.db")
    s.put([JobResult("j1", "a", "done")])
    s.put_dead_letters([{"source": "t/0/5", "reason": "bad"}])
    s.record([("t/0/4", "j1", "result"), ("t/0/5", "", "dead_letter")])
    s.record([("t/0/4", "j1", "duplicate")])  # a replay does not change an outcome
    assert s.outcomes(["t/0/4", "t/0/5", "t/0/6"]) == {"t/0/4": "result", "t/0/5": "dead_letter"}
    assert [r.job_id for r in s.results_for_sources(["t/0/4"])] == ["j1"]
    results, letters = s.unpublished()
    assert [r.job_id for r in results] == ["j1"] and letters[0]["source"] == "t/0/5"
    s.mark_published(["j1"], ["t/0/5"])
    assert s.unpublished() == ([], [])
