import numpy as np
import pytest

from scheduler.comparison import DEFAULT_TRACE
from scheduler.workload import (
    at_exact_rate,
    bursty_arrivals,
    make_workload,
    mmpp_arrivals,
    mmpp_mean_rate,
    poisson_arrivals,
    read_trace,
    realised_rate,
    slo_mix,
    trace_arrivals,
)
from sdaas.errors import InvalidInputError


def _cv(a):
    g = np.diff(a)
    return g.std() / g.mean()


def test_bursty_generator_reaches_the_asked_cv_and_rate():
    rng = np.random.default_rng(0)
    a = bursty_arrivals(10.0, 200_000, rng, cv=5.0)
    assert _cv(a) >= 4.5
    assert len(a) / a[-1] == pytest.approx(10.0, rel=0.05)
    p = poisson_arrivals(10.0, 200_000, rng)
    assert _cv(p) == pytest.approx(1.0, abs=0.02)


def test_shipped_trace_replays_at_any_rate_keeping_its_shape():
    t = read_trace(DEFAULT_TRACE)
    assert len(t) == 8032 and (np.diff(t) >= 0).all()
    a = trace_arrivals(t, 50.0, 2 * len(t))  # longer than the trace: it repeats
    assert len(a) == 2 * len(t) and (np.diff(a) >= 0).all()
    assert len(a) / a[-1] == pytest.approx(50.0, rel=0.01)
    assert _cv(a[:8000]) == pytest.approx(_cv(t), rel=0.02)


@pytest.mark.parametrize(
    "text, match",
    [
        ("0,1\n10,2\n5,3\n", "line 3: arrival 5 ms comes before the previous 10 ms"),
        ("0,1\n-4,2\n", "line 2: arrival -4.0 ms: must be finite and >= 0"),
        ("0,1\nsoon,2\n", "line 2: arrival 'soon': not a number"),
        ("7,1\n", "needs at least 2 arrivals"),
    ],
)
def test_bad_traces_are_refused_with_the_line(tmp_path, text, match):
    f = tmp_path / "t.txt"
    f.write_text(text)
    with pytest.raises(InvalidInputError, match=match):
        read_trace(f)


def test_missing_trace_and_bad_rates(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file"):
        read_trace(tmp_path / "nope.txt")
    rng = np.random.default_rng(0)
    for rate in (0, -1.0, float("nan")):
        with pytest.raises(InvalidInputError, match="rate: .* must be a finite number > 0"):
            poisson_arrivals(rate, 10, rng)


def test_truth_draws_have_mean_one_and_the_asked_spread():
    rng = np.random.default_rng(1)
    classes = slo_mix("mixed", ["photo"])
    w = make_workload("w", np.arange(100_000.0), classes, rng, pred_error=0.2)
    assert w.true_factor.mean() == pytest.approx(1.0, abs=0.01)
    assert np.log(w.true_factor).std() == pytest.approx(0.2, rel=0.02)
    assert set(np.unique(w.cls)) == set(range(len(classes)))
    with pytest.raises(InvalidInputError, match="slo mix: 'nope'"):
        slo_mix("nope", ["photo"])


@pytest.mark.parametrize("n", [10, 999, 8032, 20_000])
def test_realised_load_is_the_nominal_load_for_every_workload_and_length(n):
    """The rate a run realises, (n - 1) gaps over its span, is the one asked for, exactly:
    whatever the generator's noise, and for a trace whatever part of it is replayed (at
    20,000 jobs the DiffServe trace used to run at 0.96x)."""
    rng = np.random.default_rng(n)
    trace = read_trace(DEFAULT_TRACE)
    for a in (
        poisson_arrivals(3.0, n, rng),
        bursty_arrivals(3.0, n, rng, cv=5.0),
        trace_arrivals(trace, 3.0, n),
    ):
        assert len(a) == n and a[0] == 0.0 and (np.diff(a) >= 0).all()
        assert realised_rate(a) == pytest.approx(3.0, rel=1e-12)


def test_mmpp_runs_at_its_stationary_mean_and_is_bursty():
    """Two states (quiet, then 10x the rate): the long-run rate is the stationary mean
    (each state's rate weighted by its share of time, proportional to its dwell), and
    counts per window vary far more than Poisson's (index of dispersion 1)."""
    rates, dwell = (1.0, 10.0), (6.0, 1.0)
    assert mmpp_mean_rate(rates, dwell) == pytest.approx((6 + 10) / 7)
    a = mmpp_arrivals(20.0, 200_000, np.random.default_rng(3), rates, dwell)
    assert len(a) == 200_000 and (np.diff(a) >= 0).all()
    assert realised_rate(a) == pytest.approx(20.0, rel=0.03)  # ~1,400 sojourns
    counts = np.histogram(a, bins=np.arange(0.0, a[-1], 1.0))[0]
    assert counts.var() / counts.mean() > 5
    p = np.histogram(poisson_arrivals(20.0, 200_000, np.random.default_rng(3)),
                     bins=np.arange(0.0, 9000.0, 1.0))[0]  # fmt: skip
    assert p.var() / p.mean() == pytest.approx(1.0, abs=0.1)


def test_mmpp_with_three_states_is_seeded_and_spends_time_by_dwell():
    rates, dwell = (0.0, 1.0, 5.0), (10.0, 10.0, 2.0)  # a silent state too
    a = mmpp_arrivals(4.0, 50_000, np.random.default_rng(7), rates, dwell)
    b = mmpp_arrivals(4.0, 50_000, np.random.default_rng(7), rates, dwell)
    assert (a == b).all()
    assert realised_rate(a) == pytest.approx(4.0, rel=0.05)
    gaps = np.diff(a)
    assert gaps.max() > 20 * gaps.mean()  # the silent state's long gaps
    assert realised_rate(at_exact_rate(a, 1.0)) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize(
    "rates, dwell, match",
    [
        ((1.0,), (1.0,), "at least 2"),
        ((1.0, 2.0), (1.0,), "1 values for 2 states"),
        ((1.0, -2.0), (1.0, 1.0), "mmpp rate: -2.0"),
        ((0.0, 0.0), (1.0, 1.0), "at least one must be > 0"),
        ((1.0, 2.0), (1.0, 0.0), "mmpp dwell: 0.0 s"),
    ],
)
def test_bad_mmpp_parameters_are_refused(rates, dwell, match):
    with pytest.raises(InvalidInputError, match=match):
        mmpp_arrivals(1.0, 10, np.random.default_rng(0), rates, dwell)
