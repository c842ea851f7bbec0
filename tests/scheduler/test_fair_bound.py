"""The fair bound (`fair-bound`): clairvoyant on run times, planning on the same predicted
CLIP and margins as every policy, paying model loads; and what holds of it: its goodput
is at least every causal policy's on the same jobs and cluster (checked here, not
proved); it is NOT held under the true-CLIP oracle's (`srpt-oracle`), which never drops
a job and so loses more under overload."""

import numpy as np
import pytest

from scheduler.catalog import load_catalog
from scheduler.cluster import Cluster
from scheduler.comparison import estimate_capacity
from scheduler.metrics import summarize
from scheduler.policies import known_policies, make_policy, policy_class
from scheduler.ranking import BOUNDS, FAIR, ORACLE
from scheduler.simulator import SimConfig, simulate
from scheduler.workload import (
    SloClass,
    Workload,
    at_exact_rate,
    bursty_arrivals,
    make_workload,
    mmpp_arrivals,
    poisson_arrivals,
    slo_mix,
)
from sdaas.job_status import JobStatus
from tests.scheduler.conftest import jobs, toy_catalog

ONE = Cluster.parse("1xX")
EXACT = SimConfig(clip_margin=0.0, clip_noise=0.0)


def steps(n, slo=1e6):
    return SloClass("any", slo, n * 10.0)


def test_it_shares_the_causal_policies_plan_margins_and_loads():
    fair, oracle = policy_class(FAIR), policy_class(ORACLE)
    assert fair.pays_load and fair.clip_margin_override is None  # as every causal policy
    assert fair.downshifts  # the CLIP risk each goodput target allows, as ours gets
    assert not oracle.pays_load and oracle.clip_margin_override == 0.0  # the reference's


def test_it_pays_the_model_load_the_true_clip_oracle_skips():
    cat = toy_catalog(load_s=2.0)
    w = jobs([(steps(1), 0.0)])
    assert simulate(cat, ONE, make_policy(FAIR), w, EXACT).finish[0] == pytest.approx(3.0)
    assert simulate(cat, ONE, make_policy(ORACLE), w, EXACT).finish[0] == pytest.approx(1.0)


def test_it_plans_the_steps_every_policy_plans_not_the_jobs_clip_draw():
    """At low load the fair bound serves each job the planner's steps (min CLIP + the
    margin, whatever the job's CLIP noise), as sjf does, but for the odd tight job it
    down-shifts (fewer steps, at the margin the goodput target allows); the true-CLIP
    oracle serves the steps each job's own draw allows."""
    cluster = Cluster.parse("2xA100+2xT4")
    cat = load_catalog(cluster.kinds)
    classes = slo_mix("mixed", cat.all_styles)
    cap = estimate_capacity(cat, cluster, classes, jobs=300)
    rng = np.random.default_rng(5)
    w = make_workload("low", poisson_arrivals(0.05 * cap, 400, rng), classes, rng)
    fair = simulate(cat, cluster, make_policy(FAIR), w, SimConfig())
    sjf = simulate(cat, cluster, make_policy("sjf"), w, SimConfig())
    oracle = simulate(cat, cluster, make_policy(ORACLE), w, SimConfig())
    done = (fair.status == JobStatus.DONE) & (sjf.status == JobStatus.DONE)
    assert done.mean() > 0.95
    assert (fair.steps[done] == sjf.steps[done]).mean() > 0.98
    assert (fair.steps[done] <= sjf.steps[done]).all()
    assert (oracle.steps != sjf.steps).mean() > 0.3


def test_it_knows_a_jobs_true_run_time():
    """Predicted 5 s against a 4 s SLO, truly 3.5 s: ours rejects it on the prediction; the
    fair bound knows it makes it. Predicted 2 s, truly 4.5 s: it drops the second job
    at once instead of serving it late."""
    w = Workload("truth", np.array([0.0, 10.0]), np.array([0, 1]),
                 (steps(5, slo=4.0), steps(2, slo=4.0)), np.array([0.7, 2.25]),
                 np.zeros(2))  # fmt: skip
    ours = simulate(toy_catalog(), ONE, make_policy("slack-sjf", downshift=False), w, EXACT)
    fair = simulate(toy_catalog(), ONE, make_policy(FAIR), w, EXACT)
    assert ours.status[0] == JobStatus.REJECTED
    assert fair.status[0] == JobStatus.DONE and fair.finish[0] == pytest.approx(3.5)
    assert ours.status[1] == JobStatus.DONE and ours.finish[1] == pytest.approx(14.5)
    assert fair.status[1] != JobStatus.DONE


def test_a_shorter_urgent_job_cuts_a_running_one_at_its_step_boundary():
    """A (5 steps, loose SLO) runs from 0; B (1 step, 1.5 s SLO) arrives at 0.5 and would
    miss waiting for A: A is cut at its step boundary 1.0, B runs 1-2, A resumes."""
    cat = toy_catalog(batch2=float("inf"))
    r = simulate(cat, ONE, make_policy(FAIR), jobs([(steps(5), 0.0), (steps(1, 1.5), 0.5)]),
                 EXACT)  # fmt: skip
    assert list(r.finish) == pytest.approx([6.0, 2.0])
    # one that can wait does not cut it
    r = simulate(cat, ONE, make_policy(FAIR), jobs([(steps(5), 0.0), (steps(1, 9.0), 0.5)]),
                 EXACT)  # fmt: skip
    assert list(r.finish) == pytest.approx([5.0, 6.0])


@pytest.mark.parametrize("shape", ["poisson", "bursty", "mmpp"])
def test_its_goodput_is_at_least_every_causal_policys(shape):
    """Same jobs, same cluster, loads from half to past capacity: at least the best causal
    policy's goodput, within a point (checked, not proved: it is a policy, not a law.
    On 2xA100+2xT4 and 4xA100+4xT4, 3-5 seeds, four loads, 2000 jobs, it fell under by
    at most one job; on the bench's 20k jobs by 0.3 points once, at load 0.5 of the
    Markov-modulated workload, seed 0; since slack-sjf fills batches most urgent first
    and waits for a busy twin holding a job's model, by 0.6 points here, at load 1.3 of
    Poisson arrivals: 0.9713 against 0.9773)."""
    cluster = Cluster.parse("4xA100+4xT4")
    cat = load_catalog(cluster.kinds)
    classes = slo_mix("mixed", cat.all_styles)
    cap = estimate_capacity(cat, cluster, classes, jobs=300)
    causal = [p for p in known_policies() if p not in BOUNDS]
    for load in (0.5, 1.0, 1.3):
        rng = np.random.default_rng(1)
        rate, n = load * cap, 1500
        if shape == "poisson":
            arr = poisson_arrivals(rate, n, rng)
        elif shape == "bursty":
            arr = bursty_arrivals(rate, n, rng)
        else:
            arr = at_exact_rate(mmpp_arrivals(rate, n, rng), rate)
        w = make_workload(shape, arr, classes, rng)
        got = {
            p: summarize(simulate(cat, cluster, make_policy(p), w, SimConfig()))["both_slo_met"]
            for p in [*causal, FAIR]
        }
        best = max(causal, key=got.get)
        assert got[FAIR] >= got[best] - 0.01, (load, best, got)


def test_it_is_not_held_under_the_true_clip_oracle():
    """The oracle serves every job it admits, however late; under overload the fair
    bound's drops (only of jobs that would be late) win it more goodput. So "fair bound
    <= oracle" is not a law, and no test may assume it."""
    cluster = Cluster.parse("2xA100+2xT4")
    cat = load_catalog(cluster.kinds)
    classes = slo_mix("mixed", cat.all_styles)
    cap = estimate_capacity(cat, cluster, classes, jobs=300)
    rng = np.random.default_rng(0)
    w = make_workload("over", at_exact_rate(mmpp_arrivals(1.3 * cap, 1500, rng), 1.3 * cap),
                      classes, rng)  # fmt: skip
    got = {p: summarize(simulate(cat, cluster, make_policy(p), w, SimConfig()))
           for p in (FAIR, ORACLE)}  # fmt: skip
    assert got[FAIR]["both_slo_met"] > got[ORACLE]["both_slo_met"]
    assert got[ORACLE]["lost_share"] == 0 and got[FAIR]["dropped_share"] > 0
