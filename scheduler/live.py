"""The served system's scheduler: the simulator's event loop on real jobs.

`LiveEngine` is the `Simulator` with one thing replaced: how long a segment takes. The
simulator computes it from the true work; here `run_job` runs the job on its device and
returns the seconds it really took. Placement, admission, queue order, drops and the
admission bound are the policy's and the loop's, the same code the simulator runs, so
`sdaas serve --policy P` decides as `sdaas bench` does.

What serving cannot do yet is switched off where the simulator would look, visibly:
`live_catalog` allows batch size 1 only and no load times (models are preloaded), and
`LIVE_CONFIG` turns preemption off (a running job is not cut at a step boundary) until
the step-level engine. Devices of one window run one after another in this process;
each device keeps its own timeline (a segment ends at its start plus its measured time).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from scheduler.catalog import Catalog
from scheduler.cluster import Cluster
from scheduler.policy import Policy
from scheduler.simulator import SimConfig, Simulator

# serving: exact options (no CLIP margin: the planner's curves are the trained ones),
# no preemption, no cold starts, a window's jobs seen at once, and every device its own
# queue (identical devices share a profile, not a queue)
LIVE_CONFIG = SimConfig(
    clip_margin=0.0,
    clip_noise=0.0,
    cold_start=False,
    preempt=False,
    gather_ties=True,
    queue_per_device=True,
)

RunJob = Callable[[int, int, float], float]  # (job, instance, start) -> measured seconds


class LiveEngine(Simulator):
    def __init__(
        self,
        catalog: Catalog,
        cluster: Cluster,
        policy: Policy,
        run_job: RunJob,
        config: SimConfig = LIVE_CONFIG,
    ):
        super().__init__(catalog, cluster, policy, config)
        self.run_job = run_job

    def _check_servable(self, w) -> None:
        """A job no accelerator can serve (its min CLIP out of reach) is not an error
        here: every policy's placement finds no option for it, and it is rejected."""

    def _segment_end_time(self, i, batch, ws, work, factor):
        total = 0.0
        for j in batch:  # one job: the live catalog allows no batching yet
            total += self.run_job(j, i, ws + total)
        for j in batch:
            self.work[j] = self.remaining[j] = total
        self.seg_speed[i] = 1.0
        return ws + total


def live_catalog(models: list[str], kinds: list[str], runs_on: set[tuple[int, int]], steps: int):
    """What the core needs to know of the served models beyond the planner's options:
    which model may run on which accelerator kind. Batch size 1 (`batch_factor` is
    finite only at 1), no load time, price 1 per kind (INFaaS's cost rule then picks
    the fastest), every model resident."""
    grid = np.arange(1, steps + 1)
    one = np.full(2, np.inf)
    one[1] = 1.0
    return Catalog(
        models=models,
        kinds=kinds,
        styles={m: () for m in models},
        steps=grid,
        latency={mk: np.zeros(steps) for mk in runs_on},
        batch_factor={mk: one for mk in runs_on},
        clip={m: np.zeros(steps) for m in range(len(models))},
        load_s={m: 0.0 for m in range(len(models))},
        price_per_hour={k: 1.0 for k in range(len(kinds))},
        max_resident={k: max(1, len(models)) for k in range(len(kinds))},
    )
