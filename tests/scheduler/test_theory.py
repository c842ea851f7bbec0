"""The simulator against queueing theory, not against itself."""

import math

import numpy as np
import pytest

from scheduler.catalog import single_model_catalog
from scheduler.cluster import Cluster
from scheduler.policies import make_policy
from scheduler.simulator import simulate
from scheduler.workload import slo_mix
from tests.scheduler.conftest import workload

ONE = slo_mix("uniform", ["any"])
N = 200_000


def _mean_jct(servers: int, rho: float, service: str, seed: int = 0) -> float:
    cat = single_model_catalog(1.0)  # mean service time 1 s
    w = workload(ONE, rho * servers, N, seed=seed, service=service)
    r = simulate(cat, Cluster.parse(f"{servers}xX"), make_policy("fcfs"), w)
    return float(r.jct.mean())


@pytest.mark.slow
def test_fcfs_matches_mm1_mean_response_time():
    rho = 0.5
    assert _mean_jct(1, rho, "exponential") == pytest.approx(1 / (1 - rho), rel=0.03)


@pytest.mark.slow
def test_fcfs_matches_md1_pollaczek_khinchine():
    rho = 0.7
    expected = 1 + rho / (2 * (1 - rho))  # E[S] + rho E[S] / (2 (1 - rho)) for deterministic S
    assert _mean_jct(1, rho, "exact") == pytest.approx(expected, rel=0.03)


def _erlang_c_response(c: int, rho: float) -> float:
    a = c * rho
    top = a**c / math.factorial(c) / (1 - rho)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return 1 + p_wait / (c * (1 - rho))


@pytest.mark.slow
def test_pooled_servers_match_mmc_erlang_c():
    """Four instances of one kind share one queue: M/M/4."""
    assert _mean_jct(4, 0.7, "exponential") == pytest.approx(_erlang_c_response(4, 0.7), rel=0.03)


def test_theory_tests_would_catch_a_wrong_service_time():
    """Guard: with service at 1.1x the mean the M/D/1 check fails."""
    cat = single_model_catalog(1.1)
    w = workload(ONE, 0.5, 20_000, service="exact")
    r = simulate(cat, Cluster.parse("1xX"), make_policy("fcfs"), w)
    assert abs(np.mean(r.jct) / 1.5 - 1) > 0.03
