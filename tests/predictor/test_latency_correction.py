"""The latency correction: converges to a constant error of any size, ignores noise and
outliers, forgets, and calls a persistently wrong profile stale."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.latency_correction import (
    STALE_MIN_OBS,
    WINDOW,
    Corrections,
    Observation,
    factor_at,
)

KEY = ("toy-s@1", "cpu-x", 1)


def _obs(ratios, predicted=0.5, key=KEY):
    return [Observation(key, predicted, predicted * r) for r in ratios]


@pytest.mark.parametrize("error", [0.1, 0.2, 5.0, 20.0])
def test_a_constant_error_of_any_size_is_corrected_after_one_observation(error):
    """Profiles 10x too slow (observed 0.1x) or 5x too fast: no cap holds it back."""
    c = Corrections.from_observations(_obs([error])).by_key[KEY]
    assert c.factor == pytest.approx(error) and c.n == 1
    assert c.low < error < c.high


def test_noise_is_not_chased_and_an_outlier_hardly_moves_it():
    rng = np.random.default_rng(0)
    noisy = list(np.exp(rng.normal(0.0, 0.15, size=WINDOW)))
    c = Corrections.from_observations(_obs(noisy)).by_key[KEY]
    assert abs(c.factor - 1.0) < 0.1 and c.low < 1.0 < c.high
    assert not c.stale
    spiked = Corrections.from_observations(_obs([*noisy[:-1], 30.0])).by_key[KEY]
    assert abs(spiked.factor - c.factor) < 0.05


def test_it_forgets_what_is_older_than_its_window():
    c = Corrections.from_observations(_obs([10.0] * 50 + [1.0] * WINDOW)).by_key[KEY]
    assert c.factor == pytest.approx(1.0)


def test_the_interval_narrows_with_evidence():
    few = Corrections.from_observations(_obs([2.0, 2.1])).by_key[KEY]
    many = Corrections.from_observations(_obs([2.0, 2.1] * 8)).by_key[KEY]
    assert many.high - many.low < few.high - few.low


def test_a_profile_that_keeps_disagreeing_is_stale_and_one_that_agrees_is_not():
    wrong = Corrections.from_observations(_obs([9.0, 10.0, 11.0] * 2))
    assert KEY in wrong.stale() and "10.00x" in wrong.by_key[KEY].describe()
    early = Corrections.from_observations(_obs([10.0] * (STALE_MIN_OBS - 1)))
    assert early.stale() == {}  # too few runs to call it
    right = Corrections.from_observations(_obs([0.95, 1.05, 1.0, 1.1, 0.9, 1.0]))
    assert right.stale() == {}


def test_broken_measurements_are_ignored_and_scale_is_per_batch_size():
    other = ("toy-s@1", "cpu-x", 4)
    obs = [*_obs([2.0]), Observation(KEY, 0.0, 1.0), Observation(KEY, 0.5, float("nan"))]
    obs += [Observation(KEY, 1.0, 1e9), *_obs([3.0], key=other)]
    corr = Corrections.from_observations(obs)
    assert corr.by_key[KEY].n == 1
    assert {k: c.factor for k, c in corr.scale(1).items()} == {
        ("toy-s@1", "cpu-x"): pytest.approx(2.0)
    }
    assert {k: c.factor for k, c in corr.scale(4).items()} == {
        ("toy-s@1", "cpu-x"): pytest.approx(3.0)
    }


def test_a_trend_over_steps_is_followed_and_held_flat_outside_the_observed_range():
    """A profile right at 1 step but 2x slow at 8 (its per-step part is wrong)."""
    obs = [Observation(KEY, 0.1, 0.1, 1), Observation(KEY, 0.1, 0.2, 8)] * 3
    c = Corrections.from_observations(obs).by_key[KEY]
    assert c.at(1) == pytest.approx(1.0) and c.at(8) == pytest.approx(2.0)
    assert 1.0 < c.at(4) < 2.0
    assert c.at(50) == pytest.approx(2.0)  # no extrapolation
    same = Corrections.from_observations(_obs([3.0] * 4)).by_key[KEY]  # steps unknown
    assert same.at(1) == same.at(25) == pytest.approx(3.0)
    assert factor_at(None, 5) == 1.0 and factor_at(1.5, 5) == 1.5
    assert factor_at(c, 8) == pytest.approx(2.0)
