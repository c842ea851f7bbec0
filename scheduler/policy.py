"""One interface for every scheduling policy, used by the simulator and by serving.

A policy decides four things; the simulator does the rest (time, accelerators, model
loads, batching mechanics, preemption at step boundaries):

* `place(j, t)`: which accelerator kind a job goes to, with which model and steps, or
  None to reject it at admission (default: the planner's rule with each kind's backlog);
* `make_queue(kind)`: the queue order for a kind (the heart of most policies);
* `next_batch(queue, inst, t, carry)`: what a free accelerator runs next, given the
  unfinished jobs of the segment it just ended (`carry`); may drop jobs;
* `on_busy_arrival(j, kind, t)`: preemptive / batching policies may interrupt a running
  segment (it then ends at its next denoising-step boundary).

Serving runs the same objects in the same loop (`scheduler/live.py`): a policy is
written once and decides in `sdaas serve` as in `sdaas bench`. A policy sees the core as
`Core` (`scheduler/job_table.py`): the per-job arrays and what it may call.

Policies register under a `PolicyKey` (`register`); `scheduler.policies`, which imports
every policy module, turns a key or string into one (`make_policy`).
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from typing import ClassVar

from scheduler.job_table import Core


class PolicyKey(enum.StrEnum):
    SJF = "sjf"
    FCFS = "fcfs"
    EDF = "edf"
    CLOCKWORK = "clockwork"
    INFAAS = "infaas"
    ORCA = "orca"
    FASTSERVE = "fastserve"
    SRPT_ORACLE = "srpt-oracle"
    FAIR_BOUND = "fair-bound"
    SLACK_SJF = "slack-sjf"


class Policy(ABC):
    key: ClassVar[PolicyKey]
    stands_for: ClassVar[str]  # the system this policy models, for tables and --help
    batching: ClassVar[bool] = False  # may run several same-model jobs per step
    pays_load: ClassVar[bool] = True  # False only for the true-CLIP oracle's relaxation
    clip_margin_override: ClassVar[float | None] = None  # oracle plans at min_clip exactly
    completes_all: ClassVar[bool] = True  # False for policies that reject or drop jobs
    # down-shifts steps within the min CLIP: its CLIP risk follows the goodput target
    # (SimConfig.for_target); others ignore the relaxed margin
    downshifts: ClassVar[bool] = False

    sim: Core

    def bind(self, sim: Core) -> None:
        self.sim = sim

    def jobs_added(self, n: int) -> None:  # noqa: B027 - optional hook
        """The run now has n jobs (the live core adds them as they arrive): grow any
        per-job state the policy keeps."""

    def place(self, j: int, t: float) -> int | None:
        """Default placement: the kind with the earliest predicted finish (backlog per
        instance + the job's predicted time there). Never rejects."""
        return self.sim.place_earliest_finish(j)

    @abstractmethod
    def make_queue(self, kind: int):
        """A queue (see scheduler/queues.py) for one accelerator kind."""

    def next_batch(self, queue, inst: int, t: float, carry: list[int]) -> list[int]:
        """Default: non-batching; unfinished jobs go back into the queue, pop the head."""
        for j in carry:
            queue.push(j)
        j = queue.pop()
        return [] if j is None else [j]

    def on_busy_arrival(self, j: int, kind: int, t: float) -> None:
        """Called when job j is queued on a kind with no idle accelerator. Default:
        nothing (non-preemptive policies wait for a segment to end)."""
        return None

    def segment_work(self, j: int) -> float:
        """Most batch-1 work seconds job j may run before the policy decides again. The
        simulator asks only a policy that overrides this (a quantum)."""
        return math.inf


# filled by `register` as policy modules are imported: look policies up through
# `scheduler.policies`, which imports them all
REGISTRY: dict[PolicyKey, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    REGISTRY[cls.key] = cls
    return cls
