"""srpt-oracle is the lower bound on mean JCT among policies that finish every job."""

import numpy as np
import pytest

from scheduler.catalog import load_catalog
from scheduler.cluster import Cluster
from scheduler.comparison import estimate_capacity
from scheduler.policy import known_policies, make_policy, policy_class
from scheduler.simulator import SimConfig, simulate
from scheduler.workload import bursty_arrivals, make_workload, poisson_arrivals, slo_mix


@pytest.mark.parametrize("spec", ["8xA100+8xT4", "2xA100", "4xT4+2xH100"])
@pytest.mark.parametrize("shape", ["poisson", "bursty"])
def test_srpt_oracle_never_loses_on_mean_jct(spec, shape):
    cluster = Cluster.parse(spec)
    cat = load_catalog(cluster.kinds)
    classes = slo_mix("mixed", cat.all_styles)
    cap = estimate_capacity(cat, cluster, classes, jobs=300)
    for load in (0.5, 0.9, 1.2):
        rng = np.random.default_rng(7)
        gen = poisson_arrivals if shape == "poisson" else bursty_arrivals
        w = make_workload(shape, gen(load * cap, 3000, rng), classes, rng, pred_error=0.2)
        means = {}
        for p in known_policies():
            if not policy_class(p).completes_all:
                continue  # dropping jobs buys JCT with SLOs; a different trade
            r = simulate(cat, cluster, make_policy(p), w, SimConfig())
            means[p] = float(r.jct.mean())
        oracle = means.pop("srpt-oracle")
        assert all(oracle <= m for m in means.values()), (load, oracle, means)
