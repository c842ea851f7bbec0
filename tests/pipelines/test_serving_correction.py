"""Serving corrects a wrong latency profile by itself (issue 13): with every prediction
10x too slow, and again 5x too fast, unproven profiles are probed before any job is
decided on them, the corrected prediction is within 20 % of the observed run times, and
from then on the jobs that can meet their SLO are admitted and the ones that cannot are
refused. Real pipeline, real planner, toy models."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest

from adapters.result_store import ResultStore
from engine.calibrator import PROBES, Calibrator
from predictor.planner import Planner
from predictor.store import load_predictor
from predictor.tracking import CLIP_MODEL, LATENCY_MODEL
from tests.pipelines.test_serving_hardening import _job, _records, _serve_records, _spec

pytestmark = pytest.mark.slow
LEAD_S = 5.0
CLIP = 40.0  # toy-s at 5 steps: long enough for run-to-run noise to stay small


class _Wrong:
    """The trained latency predictor, every prediction `factor` times what it says."""

    def __init__(self, inner, factor: float):
        self.inner, self.factor, self.spec = inner, factor, inner.spec

    def predict(self, frame):
        return self.inner.predict(frame) * self.factor


def _wrong_spec(settings, store, factor: float):
    spec = _spec(settings, store)
    latency = _Wrong(load_predictor(settings, LATENCY_MODEL), factor)
    planner = Planner(
        spec.planner.options,
        latency,
        load_predictor(settings, CLIP_MODEL),
        headroom=spec.planner.headroom,
    )
    return replace(spec, planner=planner, correct_latency=True)


def _serve(spec, jobs, *, lead_s: float = 0.0):
    """One window of `jobs`. `lead_s`: they arrive that much later than now, so that the
    pipeline's start-up (seconds on a busy 2-core host) is not charged to SLOs of a
    fraction of a second: these tests are about decisions and predictions."""
    values = [json.dumps(j).encode() for j in jobs]
    _serve_records(spec, _records(values, time.time() + lead_s))
    store = ResultStore(spec.store_path)
    return [store.get(j["tenant"], j["job_id"]) for j in jobs]


def _per_key_runs(store: ResultStore) -> dict:
    runs: dict = {}
    for o in store.observations():
        runs[o.key] = runs.get(o.key, 0) + 1
    return runs


def _corrected_error(spec, store: ResultStore, results) -> float:
    """How far the prediction serving makes *now*, from the evidence it has stored, is
    from the median observed run time of `results` (done jobs of one model and step
    count). Wall-clock accuracy of single runs on this shared host is the predictor
    bench's to measure (bench/predictor_bench.py); this checks the correction converged."""
    from predictor.latency_correction import Corrections, factor_at

    done = [r for r in results if r.status == "done"]
    ((key, acc, steps),) = {(f"{r.model}@{r.model_version}", r.accelerator, r.steps) for r in done}
    corr = Corrections.from_observations(store.observations(spec.planner.predictor_version))
    card = spec.cards[key]
    base = spec.planner.predicted_s(key, acc, steps, card.resolution_pairs[0])
    now = base * factor_at(corr.scale(1).get((key, acc)), steps)
    observed = float(np.median([r.run_s for r in done]))
    return abs(now - observed) / observed


def _relative_errors(results) -> list[float]:
    return [abs(r.predicted_latency_s - r.run_s) / r.run_s for r in results if r.status == "done"]


def test_profiles_ten_times_too_slow_are_corrected_and_jobs_admitted(serving_settings, tmp_path):
    spec = _wrong_spec(serving_settings, tmp_path / "r.db", 10.0)
    slow = spec.planner.plan("flat", 3600.0, CLIP).predicted_latency_s  # 10x the truth
    slo = slow  # 10x the true run time: refused by the wrong profile (with 10 % headroom)
    assert not spec.planner.plan("flat", slo, CLIP).feasible
    # the first window loads the models and probes every unproven profile, before it
    # decides: its job is already planned with the correction
    (warm,) = _serve(spec, [_job(latency_slo_s=3600.0, min_clip=CLIP)])
    store = ResultStore(spec.store_path)
    runs = _per_key_runs(store)
    assert set(runs) == {(k, a, 1) for k in spec.cards for a in spec.accelerators}
    assert all(n <= PROBES + 1 for n in runs.values())
    # corrected by the probes: about 0.1-0.3 (how fast an in-process device engine runs
    # against the sweep varies on a shared host: 0.44 seen once in a full suite run);
    # uncorrected would be 1.0
    assert warm.status == "done" and warm.latency_correction < 0.6
    got = _serve(spec, [_job(latency_slo_s=slo, min_clip=CLIP) for _ in range(6)], lead_s=LEAD_S)
    # every job admitted; on a loaded host the last ones may still be dropped at dispatch,
    # by the measured time they waited (a decision on the clock, not on the profile: the
    # device's time includes saving and scoring each image)
    assert not any("at admission" in r.error for r in got), [r.error for r in got]
    assert sum(r.status == "done" for r in got) >= 3, [r.error for r in got]
    assert all(r.status == "done" or "dropped by" in r.error for r in got)
    # planned on at most 3 runs of that model (2 probes and the first window's job); the
    # median over the window, as single runs on a shared 2-core host vary by 10-30 %
    assert max(_per_key_runs(store).values()) <= PROBES + 1 + 6
    assert _corrected_error(spec, store, got) <= 0.2
    # planned with the correction of 3 runs: far from the 10x error of the profile alone
    assert np.median(_relative_errors(got)) <= 0.6, _relative_errors(got)


def test_profiles_five_times_too_fast_are_corrected_and_hopeless_jobs_refused(
    serving_settings, tmp_path
):
    spec = _wrong_spec(serving_settings, tmp_path / "r.db", 0.2)
    fast = spec.planner.plan("flat", 3600.0, CLIP).predicted_latency_s  # a fifth of the truth
    hopeless = fast * 2  # the wrong prediction says it fits; the true run is 2.5x longer
    assert spec.planner.plan("flat", hopeless, CLIP).feasible
    generous = max(fast * 50, 5.0)
    pair = lambda: [_job(latency_slo_s=s, min_clip=CLIP) for s in (hopeless, generous)]  # noqa: E731
    # the first window: models load and probes run before it is decided, so the hopeless
    # job is already refused
    first = _serve(spec, pair(), lead_s=LEAD_S + 30.0)
    assert [r.status for r in first] == ["rejected", "done"], [
        (r.error, r.latency_correction, r.predicted_latency_s, r.run_s, hopeless) for r in first
    ]
    got = _serve(spec, pair() + pair() + pair(), lead_s=LEAD_S)
    assert [r.status for r in got] == ["rejected", "done"] * 3, [r.error for r in got]
    assert all("rejected by slack-sjf at admission" in r.error for r in first[:1] + got[::2])
    # the truth is 5x the profile, less the host's drift since profiling: above 2 is what
    # refusing the hopeless job needs (uncorrected, it would be 1.0)
    assert all(r.latency_correction > 2.0 for r in first + got), [
        r.latency_correction for r in first + got]  # fmt: skip
    assert _corrected_error(spec, ResultStore(spec.store_path), got) <= 0.2
    assert np.median(_relative_errors(got)) <= 0.6, _relative_errors(got)  # the profile: 0.8


def test_a_probe_that_raises_does_not_stop_serving(serving_settings, tmp_path, monkeypatch):
    tried = []

    def broken(self, key, kind, steps):
        tried.append((key, kind))
        raise RuntimeError("model weights unreadable")

    monkeypatch.setattr(Calibrator, "probe", broken)
    spec = replace(_spec(serving_settings, tmp_path / "r.db"), correct_latency=True)
    (r,) = _serve(spec, [_job(latency_slo_s=3600.0)])
    assert r.status == "done" and r.latency_correction == 1.0  # unproven, uncorrected
    assert len(tried) == len(set(tried)) == len(spec.cards)  # each tried once, given up
