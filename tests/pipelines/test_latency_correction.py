import pytest

from adapters.result_store import ResultStore
from pipelines.latency_correction import MIN_OBS, latency_scale
from sdaas.records import JobResult


def done(i, model, acc, pred, run, corr=1.0):
    return JobResult(f"j{i}", "t", "done", model, "1", acc, 2, pred, 0.0, run_s=run,
                     latency_correction=corr)  # fmt: skip


def test_ewma_of_observed_over_base_prediction(tmp_path):
    s = ResultStore(tmp_path / "r.db")
    s.put([done(i, "m", "cpu", 0.1, 0.12) for i in range(MIN_OBS)])  # 20 % slower
    s.put([done(10 + i, "n", "cpu", 0.1, 0.05) for i in range(MIN_OBS - 1)])  # too few
    assert latency_scale(s) == {("m@1", "cpu"): pytest.approx(1.2)}


def test_a_corrected_prediction_does_not_chase_itself(tmp_path):
    s = ResultStore(tmp_path / "r.db")
    # planned with correction 1.2 (prediction 0.12 = 1.2 x base 0.1), ran 0.12 s: stays 1.2
    s.put([done(i, "m", "cpu", 0.12, 0.12, corr=1.2) for i in range(5)])
    assert latency_scale(s)[("m@1", "cpu")] == pytest.approx(1.2)


def test_outliers_are_bounded(tmp_path):
    s = ResultStore(tmp_path / "r.db")
    s.put([done(i, "m", "cpu", 0.1, 100.0) for i in range(5)])
    assert latency_scale(s)[("m@1", "cpu")] == 4.0
