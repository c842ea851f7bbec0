"""One scheduling core: for every policy, the simulator and the served system's engine
make the same decisions (admit/reject, placement, start order, drops) on the same jobs,
when the served jobs take what the simulator says they take."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.cluster import Cluster
from scheduler.live import LIVE_CONFIG, LiveEngine
from scheduler.policy import known_policies, make_policy
from scheduler.simulator import Simulator
from scheduler.workload import SloClass, Workload
from tests.scheduler.conftest import toy_catalog

CONFIG = LIVE_CONFIG.__class__(**{**LIVE_CONFIG.__dict__, "log": True, "max_backlog_s": 12.0})
TWO_KINDS = Cluster.parse("2xX+1xY")


def scenario() -> Workload:
    """Bursts on two fast and one slow instance: ties, queues, tight deadlines that some
    policies reject or drop, jobs whose truth is slower than predicted."""
    classes = (
        SloClass("any", 100.0, 50.0),  # 5 steps, loose
        SloClass("any", 4.0, 20.0),  # 2 steps, tight
        SloClass("any", 2.5, 30.0),  # 3 steps, tighter than it can make on Y
        SloClass("any", 30.0, 80.0),  # 8 steps
    )
    arrivals = [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 3.2, 3.2, 3.2, 7.0, 7.5, 9.0, 9.0]
    cls = [0, 1, 2, 3, 1, 2, 0, 1, 1, 3, 2, 0, 1, 2]
    factor = [1.0, 1.2, 1.0, 0.8, 1.0, 1.5, 1.0, 1.0, 1.1, 1.0, 1.0, 0.9, 1.0, 1.3]
    n = len(arrivals)
    return Workload("conformance", np.array(arrivals), np.array(cls), classes,
                    np.array(factor), np.zeros(n))  # fmt: skip


@pytest.mark.parametrize("policy", known_policies())
def test_simulator_and_serving_engine_make_the_same_decisions(policy):
    catalog = toy_catalog(slow_kind=True, batch2=float("inf"))  # batch 1, as serving
    w = scenario()
    sim = Simulator(catalog, TWO_KINDS, make_policy(policy), CONFIG)
    sim_result = sim.run(w)

    ran: list[tuple[int, int, float]] = []

    def fake_backend(j: int, instance: int, start: float) -> float:
        """Serving's backend, faked: the job 'runs' and takes its true time."""
        ran.append((j, instance, start))
        return live.pred[j] * w.true_factor[j]

    live = LiveEngine(catalog, TWO_KINDS, make_policy(policy), fake_backend, CONFIG)
    live_result = live.run(w)
    assert live.log == sim.log
    assert list(live_result.status) == list(sim_result.status)
    assert np.allclose(live_result.finish, sim_result.finish, equal_nan=True)
    started = [(b[0], i, t) for kind, b, i, t in (e for e in sim.log if e[0] == "run")]
    assert [(j, i) for j, i, _ in ran] == [(j, i) for j, i, _ in started]  # ran = decided


def test_the_scenario_tells_policies_apart():
    """Conformance over one trivial schedule would prove nothing: the policies' own
    decision sequences differ on it, and some reject or drop."""
    catalog = toy_catalog(slow_kind=True, batch2=float("inf"))
    logs = {}
    for policy in known_policies():
        sim = Simulator(catalog, TWO_KINDS, make_policy(policy), CONFIG)
        sim.run(scenario())
        logs[policy] = sim.log
    assert len({tuple(v) for v in logs.values()}) >= 5
    refusals = {p for p, log in logs.items() if any(e[0] in ("reject", "drop") for e in log)}
    assert {"clockwork", "slack-sjf"} <= refusals
