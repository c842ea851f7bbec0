"""A served core's jobs replayed in the simulator: how far `sdaas bench` is from serving.

The live core (`scheduler/live.py`) keeps what it was given: each job's arrival in its
clock, its options per kind (model, steps, predicted seconds: the planner's, with the
online correction) and its deadline. Given exactly that, the simulator says what would
have happened had every job taken what its option predicts, under a fresh instance of
the same policy, on the same catalog (batch costs), cluster and config. The gap between
the two is the simulator's error on this host (`bench/sim_to_real_bench.py`): the
decisions are the same code, so what differs is run time, overhead and timing.
"""

from __future__ import annotations

import numpy as np

from scheduler.live import LiveCore
from scheduler.policies import make_policy
from scheduler.simulator import SimResult, Simulator
from scheduler.workload import SloClass, Workload


def replay(
    core: LiveCore, first: int = 0, speed: float | np.ndarray = 1.0
) -> tuple[SimResult, float]:
    """Simulate the core's jobs from index `first` on (earlier ones, warm-ups say, left
    out). Returns the result, in seconds from the first replayed arrival, and that
    arrival's time in the core's clock (subtract it from the core's own times).
    speed: every job's true work is its prediction times this (1: the profile's word);
    per job, indexed like the core's jobs: `core.measured_speed()`, what each job's
    steps really took, so that what is left is the simulator's model of queues, batches
    and overheads."""
    with core.lock:
        arrival = np.asarray(core.arrival[first:], dtype=float)
        cls = list(core.cls[first:])
        slo = [core.latency_slo_s[c] for c in cls]
        min_clip = [core.min_clip[c] for c in cls]
        options = core.options.subset(cls)
    n = len(arrival)
    factor = np.broadcast_to(np.asarray(speed, dtype=float), (len(core.arrival),))[first:]
    t0 = float(arrival[0]) if n else 0.0
    # one class per job: each served job has its own deadline and options
    classes = tuple(SloClass("served", s, m) for s, m in zip(slo, min_clip, strict=True))
    w = Workload("replay", arrival - t0, np.arange(n), classes, np.array(factor), np.zeros(n))
    sim = Simulator(core.catalog, core.cluster, make_policy(core.policy.key), core.config)
    return sim.run(w, options), t0
