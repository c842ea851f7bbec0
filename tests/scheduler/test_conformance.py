"""One scheduling core: for every policy, the simulator and the served system's core
(`LiveCore`, driven by devices) make the same decisions (admit/reject, placement, batches,
preemptions at step boundaries, drops) on the same jobs, when the served jobs take what
the simulator says they take. The devices here run on a virtual clock
(tests/scheduler/virtual_devices.py); the real device engine is tested in tests/engine."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.cluster import Cluster
from scheduler.live import CANCELLED, DONE, LIVE_CONFIG, PENDING, LiveCore, LiveJob
from scheduler.options import ClassOptions
from scheduler.policies import known_policies, make_policy
from scheduler.simulator import Simulator
from scheduler.workload import SloClass, Workload
from tests.scheduler.conftest import toy_catalog
from tests.scheduler.virtual_devices import VirtualCluster

CONFIG = LIVE_CONFIG.__class__(**{**LIVE_CONFIG.__dict__, "log": True, "max_backlog_s": 12.0})
TWO_KINDS = Cluster.parse("2xX+1xY")


def scenario() -> Workload:
    """Bursts on two fast and one slow instance: ties, queues, batches, tight deadlines
    that some policies reject or drop. Truth = prediction (the core cannot know more)."""
    classes = (
        SloClass("any", 100.0, 50.0),  # 5 steps, loose
        SloClass("any", 4.0, 20.0),  # 2 steps, tight
        SloClass("any", 2.5, 30.0),  # 3 steps, tighter than it can make on Y
        SloClass("any", 30.0, 80.0),  # 8 steps
    )
    arrivals = [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 3.2, 3.2, 3.2, 7.0, 7.5, 9.0, 9.0, 9.0, 9.0]
    cls = [0, 1, 2, 3, 1, 2, 0, 1, 1, 3, 2, 0, 1, 2, 1, 1]
    n = len(arrivals)
    return Workload("conformance", np.array(arrivals), np.array(cls), classes,
                    np.ones(n), np.zeros(n))  # fmt: skip


def live_jobs(w: Workload, options: ClassOptions) -> list[tuple[float, LiveJob]]:
    out = []
    for j, (a, c) in enumerate(zip(w.arrival.tolist(), w.cls.tolist(), strict=True)):
        cl = w.classes[c]
        between = [options.between_of(c, k) for k in range(len(options.planned[c]))]
        job = LiveJob(cl.style, a + cl.latency_slo_s, cl.min_clip, options.planned[c],
                      options.relaxed[c], payload=j, between=between)  # fmt: skip
        out.append((a, job))
    return out


def run_both(policy: str, catalog, config=CONFIG, w: Workload | None = None):
    w = scenario() if w is None else w
    sim = Simulator(catalog, TWO_KINDS, make_policy(policy), config)
    sim_result = sim.run(w)
    core = LiveCore(catalog, TWO_KINDS, make_policy(policy), config)
    cluster = VirtualCluster(core)
    cluster.run(live_jobs(w, sim.options))
    return sim, sim_result, core, cluster


@pytest.mark.parametrize("policy", known_policies())
def test_simulator_and_serving_core_make_the_same_decisions(policy):
    sim, sim_result, core, cluster = run_both(policy, toy_catalog(slow_kind=True, batch2=1.5))
    assert core.log == sim.log
    assert core.status == list(sim_result.status)
    assert np.allclose(core.finish, sim_result.finish, equal_nan=True)
    for d in cluster.devices:  # what each device ran is what the core decided, in order
        decided = [e[1] for e in sim.log if e[0] == "run" and e[2] == d.i and e[1]]
        assert [b for b, _ in d.ran] == decided


def test_the_cores_agree_where_jobs_may_run_fewer_steps_than_planned():
    """With a CLIP margin over a down-shift margin, a plan late on its instance may run
    at a step count between the two (slack-sjf's rule 3: the option least likely to miss
    either SLO): both cores are handed the same steps in between and choose alike. The
    scenario, and one more tight job when every device is idle again."""
    config = CONFIG.__class__(**{**CONFIG.__dict__, "clip_margin": 15.0, "clip_noise": 5.0})
    w = scenario()
    n = w.n + 1
    w = Workload(w.name, np.append(w.arrival, 60.0), np.append(w.cls, 1), w.classes,
                 np.ones(n), np.zeros(n))  # fmt: skip
    sim, sim_result, core, _ = run_both("slack-sjf", toy_catalog(slow_kind=True), config, w)
    assert core.log == sim.log and core.status == list(sim_result.status)
    planned = [sim.options.planned[c][k].steps for c, k in zip(sim.cls, sim.kind, strict=True)]
    relaxed = [sim.options.relaxed[c][k].steps for c, k in zip(sim.cls, sim.kind, strict=True)]
    between = [r < s < p for s, p, r in zip(sim.steps, planned, relaxed, strict=True)]
    assert any(between)  # the rule was used, not only allowed


def test_the_scenario_tells_policies_apart():
    """Conformance over one trivial schedule would prove nothing: the policies' own
    decision sequences differ on it, some reject or drop, some batch, some preempt."""
    catalog = toy_catalog(slow_kind=True, batch2=1.5)
    logs = {}
    for policy in known_policies():
        sim = Simulator(catalog, TWO_KINDS, make_policy(policy), CONFIG)
        sim.run(scenario())
        logs[policy] = sim.log
    assert len({tuple(v) for v in logs.values()}) >= 5
    refusals = {p for p, log in logs.items() if any(e[0] in ("reject", "drop") for e in log)}
    assert {"clockwork", "slack-sjf"} <= refusals
    batched = {p for p, log in logs.items() if any(e[0] == "run" and len(e[1]) > 1 for e in log)}
    assert {"orca", "slack-sjf"} <= batched
    runs = {p: [j for e in log if e[0] == "run" for j in e[1]] for p, log in logs.items()}
    resumed = {p for p, r in runs.items() if len(r) > len(set(r))}  # a job ran in 2 segments
    assert "fastserve" in resumed


def test_cancel_a_queued_and_a_running_job():
    """A queued job is cancelled at once and never runs; a running one stops at its next
    step boundary and frees its device for the next job."""
    catalog = toy_catalog()
    core = LiveCore(catalog, Cluster.parse("1xX"), make_policy("fcfs"), CONFIG)
    cluster = VirtualCluster(core)
    c = SloClass("any", 100.0, 50.0)  # 5 steps of 1 s
    opts = ClassOptions.build(catalog, (c,), [0], 0.0)
    job = LiveJob("any", 100.0, 50.0, opts.planned[0], opts.relaxed[0])
    core.submit([job, job, job])  # 0 runs, 1 and 2 wait
    assert core.cancel(1) and core.status[1] == CANCELLED
    cluster.now = 2.5
    assert core.cancel(0)  # running: ends at the step boundary at 3.0
    assert core.status[0] == PENDING
    cluster.devices[0].interrupt()
    cluster.run([])
    assert core.status == [CANCELLED, CANCELLED, DONE]
    assert core.finish[0] == 3.0
    assert core.start[2] == 3.0 and core.finish[2] == 8.0  # the freed device took job 2
    assert [b for b, _ in cluster.devices[0].ran] == [(0,), (2,)]
    assert not core.cancel(2)  # already done


@pytest.mark.parametrize("policy", ["sjf", "orca", "slack-sjf"])
def test_a_served_core_replays_in_the_simulator(policy):
    """`scheduler.replay` rebuilds the simulator's input from what a live core recorded:
    when the served jobs took what their options predict, the replay finishes every job
    when the core did, with the same outcome."""
    from scheduler.replay import replay

    catalog = toy_catalog(slow_kind=True, batch2=1.5)
    w = scenario()
    options = ClassOptions.build(catalog, w.classes, [0, 1], CONFIG.clip_margin)
    core = LiveCore(catalog, TWO_KINDS, make_policy(policy), CONFIG)
    VirtualCluster(core).run(live_jobs(w, options))
    result, t0 = replay(core)
    assert t0 == 0.0
    assert list(result.status) == core.status
    assert np.allclose(result.finish, core.finish, equal_nan=True)
    assert list(result.min_clip) == [core.min_clip[c] for c in core.cls]  # rule 3 reads it
    assert (np.asarray(core.status) == DONE).sum() >= 8  # most of the jobs ran
    late, t0 = replay(core, first=4)  # the first 4 left out: times from job 4's arrival
    assert t0 == w.arrival[4] and len(late.status) == len(core.status) - 4
    slow, _ = replay(core, speed=2.0)  # every job twice its prediction: more busy time
    assert slow.busy_s.sum() > result.busy_s.sum()


@pytest.mark.parametrize("policy", ["sjf", "orca"])
def test_a_replay_at_measured_speeds_finishes_jobs_when_the_core_did(policy):
    """Served jobs that take longer than predicted (sjf: 1-2x, each job its own; orca's
    batches: all 1.5x): the core measures each job's speed, and a replay at those speeds
    finishes every job when the core did, where the profile's word finishes them early."""
    from scheduler.replay import replay

    catalog = toy_catalog(slow_kind=True, batch2=1.5)
    w = scenario()
    options = ClassOptions.build(catalog, w.classes, [0, 1], CONFIG.clip_margin)
    truth = np.linspace(1.0, 2.0, w.n) if policy == "sjf" else np.full(w.n, 1.5)
    core = LiveCore(catalog, TWO_KINDS, make_policy(policy), CONFIG)
    VirtualCluster(core, speed=dict(enumerate(truth))).run(live_jobs(w, options))
    ran = np.asarray(core.steps_run) > 0
    assert ran.sum() >= 8
    assert np.allclose(core.measured_speed()[ran], truth[ran])
    assert np.all(core.measured_speed()[~ran] == 1.0)
    measured, _ = replay(core, speed=core.measured_speed())
    assert list(measured.status) == core.status
    assert np.allclose(measured.finish, core.finish, equal_nan=True)
    word, _ = replay(core)
    done = (np.asarray(core.status) == DONE) & (word.status == DONE)
    assert np.mean(word.finish[done] < np.asarray(core.finish)[done] - 1e-6) > 0.5
