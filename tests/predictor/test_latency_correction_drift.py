"""The host drift on top of the per-key corrections: it follows a step change in the
host's speed within a few runs (of any model) while a per-key median lags; it decays
toward 1 with its interval widening when nothing is observed; one outlier does not swing
it; a key's first run corrects the key, not the host. Pure: time is passed in."""

from __future__ import annotations

import math

import numpy as np
import pytest

from predictor.latency_correction import (
    DRIFT_SD,
    DRIFT_TAU_S,
    WINDOW,
    Corrections,
    Drift,
    Observation,
    factor_at,
)

KIND = "cpu-x"
KEYS = [(f"toy-{s}@1", KIND, 1) for s in "sml"]
PRED = {KEYS[0]: 0.2, KEYS[1]: 0.5, KEYS[2]: 1.1}  # each model's (uncorrected) prediction
ERR = {KEYS[0]: 0.5, KEYS[1]: 2.0, KEYS[2]: 1.3}  # each profile's own constant error
GAP_S = 2.0  # a run every 2 s


def _runs(speeds, start=0, t0=0.0, noise=0.02, seed=0):
    """Runs of the three models in turn; run i on a host at `speeds[i]` x its usual."""
    rng = np.random.default_rng(seed)
    out = []
    for i, v in enumerate(speeds):
        key = KEYS[(start + i) % len(KEYS)]
        seen = PRED[key] * ERR[key] * v * math.exp(rng.normal(0.0, noise))
        out.append(Observation(key, PRED[key], seen, 10, t0 + i * GAP_S))
    return out


def _factor(corr: Corrections, key) -> float:
    return factor_at(corr.scale(1).get(key[:2]), 10)


def _err(corr: Corrections, key, speed) -> float:
    """The corrected prediction against the truth on a host at `speed`."""
    return abs(_factor(corr, key) / (ERR[key] * speed) - 1.0)


def test_a_step_in_host_speed_is_followed_within_a_few_runs_while_the_median_lags():
    steady = 3 * WINDOW  # every key has a full window at the host's usual speed
    obs = _runs([1.0] * steady + [1.4] * 5)
    for n in range(1, 6):  # n runs after the host slowed by 1.4x
        seen = obs[: steady + n]
        now = seen[-1].ts + GAP_S
        nxt = KEYS[(steady + n) % len(KEYS)]  # the next run's model
        corr = Corrections.from_observations(seen, now=now)
        per_key = Corrections.from_observations(seen, now=now, drift=False)
        if n >= 4:  # within 10 % of the truth after four runs, of any of the models
            assert _err(corr, nxt, 1.4) < 0.10, (n, _factor(corr, nxt))
        # the per-key median over 20 runs has not moved (at most 2 of its runs are slow)
        assert _err(per_key, nxt, 1.4) > 0.25
    assert corr.drift[KIND].factor == pytest.approx(1.4, rel=0.1)
    assert corr.drift[KIND].low < 1.4 < corr.drift[KIND].high
    # the per-key corrections stay each profile's own error: the host's part is the drift's
    for k in KEYS:
        assert corr.by_key[k].factor == pytest.approx(ERR[k], rel=0.05)


def test_a_lasting_change_is_not_counted_twice_when_the_key_medians_take_it_in():
    """Each key's median is of its runs less the drift then: when the slow runs fill its
    window, the prediction does not overshoot (key median 1.4x times drift 1.4x)."""
    steady = 3 * WINDOW
    obs = _runs([1.0] * steady + [1.4] * 3 * WINDOW)
    errs = []
    for n in range(4, 3 * WINDOW, 3):
        seen = obs[: steady + n]
        corr = Corrections.from_observations(seen, now=seen[-1].ts + GAP_S)
        errs.append(_err(corr, KEYS[(steady + n) % len(KEYS)], 1.4))
    assert max(errs) < 0.10, errs


def test_a_model_not_run_since_the_host_slowed_gets_the_drift_too():
    steady = 3 * WINDOW
    obs = _runs([1.0] * steady + [1.4] * 6)
    only_two = [o for o in obs[steady:] if o.key != KEYS[2]]  # toy-l not run since
    corr = Corrections.from_observations(obs[:steady] + only_two, now=only_two[-1].ts + 1)
    assert _err(corr, KEYS[2], 1.4) < 0.10
    # a model with no run at all on that kind: the drift alone
    alone = corr.scale(1).get(("toy-xl@1", KIND))
    assert alone is not None and alone.factor == pytest.approx(1.4, rel=0.1)
    assert corr.scale(1).get(("toy-xl@1", "other-kind")) is None


def test_unobserved_it_decays_toward_one_and_its_interval_widens_to_the_prior():
    obs = _runs([1.0] * 3 * WINDOW + [1.5] * 8)
    last = obs[-1].ts
    at = [Corrections.from_observations(obs, now=last + dt).drift[KIND] for dt in
          (0.0, 30.0, 60.0, 120.0, 600.0)]  # fmt: skip
    factors = [d.factor for d in at]
    widths = [math.log(d.high / d.low) for d in at]
    assert factors[0] == pytest.approx(1.5, rel=0.08)
    assert all(a > b > 1.0 for a, b in zip(factors, factors[1:], strict=False))
    assert all(a < b for a, b in zip(widths, widths[1:], strict=False))
    # one time constant: the log factor is e^-1 of what it was
    assert math.log(factors[2]) == pytest.approx(math.log(factors[0]) / math.e, rel=0.01)
    assert factors[-1] == pytest.approx(1.0, abs=0.01)  # no information left
    assert widths[-1] == pytest.approx(2 * 1.645 * DRIFT_SD, rel=0.01)
    # the served factor decays with it, toward the key's own correction
    late = Corrections.from_observations(obs, now=last + 10 * DRIFT_TAU_S)
    assert _factor(late, KEYS[0]) == pytest.approx(late.by_key[KEYS[0]].factor, rel=0.01)


def test_one_outlier_does_not_swing_it_and_a_change_seen_twice_is_followed():
    steady = _runs([1.0] * 3 * WINDOW)
    t = steady[-1].ts
    spike = Observation(KEYS[0], PRED[KEYS[0]], PRED[KEYS[0]] * ERR[KEYS[0]] * 5.0, 10, t + 2)
    before = Corrections.from_observations(steady, now=t + 2).drift[KIND].factor
    after = Corrections.from_observations([*steady, spike], now=t + 2).drift[KIND].factor
    assert abs(after / before - 1.0) < 0.02
    back = _runs([1.0] * 3, start=1, t0=t + 4)
    corr = Corrections.from_observations([*steady, spike, *back], now=back[-1].ts)
    assert corr.drift[KIND].factor == pytest.approx(1.0, abs=0.03)
    twice = _runs([1.5] * 2, start=1, t0=t + 4)
    followed = Corrections.from_observations([*steady, spike, *twice], now=twice[-1].ts)
    assert followed.drift[KIND].factor > 1.25


def test_a_keys_first_run_corrects_the_key_not_the_host():
    steady = _runs([1.0] * 3 * WINDOW)
    t = steady[-1].ts
    new = ("toy-new@1", KIND, 1)
    first = Observation(new, 0.3, 3.0, 10, t + 2)  # its profile is 10x too fast
    corr = Corrections.from_observations([*steady, first], now=t + 2)
    assert corr.by_key[new].factor == pytest.approx(10.0, rel=0.05)
    assert corr.drift[KIND].factor == pytest.approx(1.0, abs=0.03)


def test_drift_is_per_kind_and_absent_without_timestamps():
    obs = _runs([1.0] * 3 * WINDOW + [1.4] * 6)
    # the same models on a second kind whose speed holds
    other = [
        Observation((o.key[0], "gpu-y", 1), o.predicted_s, o.predicted_s * ERR[o.key], 10, o.ts)
        for o in obs
    ]
    merged = sorted(obs + other, key=lambda o: o.ts)
    corr = Corrections.from_observations(merged, now=obs[-1].ts)
    assert corr.drift[KIND].factor > 1.3 and corr.drift["gpu-y"].factor == pytest.approx(
        1, abs=0.03
    )
    untimed = [Observation(o.key, o.predicted_s, o.observed_s, o.steps) for o in obs]
    plain = Corrections.from_observations(untimed)
    assert plain.drift == {}
    assert plain.by_key == Corrections.from_observations(obs, drift=False).by_key


def test_the_drift_alone_is_a_local_level_filter():
    """Its mechanics: the gain weighs its variance against the run's, observations narrow
    it, time widens it back, and the time update is exact for any split of the gap."""
    d = Drift().at(0.0)
    assert d.factor == 1.0 and d.var == pytest.approx(DRIFT_SD**2)
    seen = d.observe(1.0, math.log(1.3), noise_var=DRIFT_SD**2)
    assert seen.var < d.var and 1.0 < seen.factor < 1.3
    noisy = d.observe(1.0, math.log(1.3), noise_var=100 * DRIFT_SD**2)
    assert noisy.factor < seen.factor  # a noisier run moves it less
    one = seen.at(61.0)
    two = seen.at(31.0).at(61.0)
    assert one.level == pytest.approx(two.level) and one.var == pytest.approx(two.var)
