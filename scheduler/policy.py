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
written once and decides in `sdaas serve` as in `sdaas bench`.

Policies register under a `PolicyKey`; `make_policy` turns a key or string into one.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from sdaas.errors import InvalidInputError

if TYPE_CHECKING:
    from scheduler.simulator import Simulator


class PolicyKey(enum.StrEnum):
    SJF = "sjf"
    FCFS = "fcfs"
    EDF = "edf"
    CLOCKWORK = "clockwork"
    INFAAS = "infaas"
    ORCA = "orca"
    FASTSERVE = "fastserve"
    SRPT_ORACLE = "srpt-oracle"
    SLACK_SJF = "slack-sjf"


class Policy(ABC):
    key: ClassVar[PolicyKey]
    stands_for: ClassVar[str]  # the system this policy models, for tables and --help
    batching: ClassVar[bool] = False  # may run several same-model jobs per step
    pays_load: ClassVar[bool] = True  # False only for the oracle's relaxation
    clip_margin_override: ClassVar[float | None] = None  # oracle plans at min_clip exactly
    completes_all: ClassVar[bool] = True  # False for policies that reject or drop jobs
    # down-shifts steps within the min CLIP: its CLIP risk follows the goodput target
    # (SimConfig.for_target); others ignore the relaxed margin
    downshifts: ClassVar[bool] = False

    sim: Simulator

    def bind(self, sim: Simulator) -> None:
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
        """Most batch-1 work seconds job j may run before the policy decides again."""
        return float("inf")


_REGISTRY: dict[PolicyKey, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    _REGISTRY[cls.key] = cls
    return cls


def known_policies() -> list[str]:
    _load_all()
    return [k.value for k in PolicyKey if k in _REGISTRY]


def policy_class(key: str | PolicyKey) -> type[Policy]:
    _load_all()
    try:
        return _REGISTRY[PolicyKey(key)]
    except ValueError:
        raise InvalidInputError(
            f"policy: {key!r}: unknown; known policies: {', '.join(known_policies())}"
        ) from None


def make_policy(key: str | PolicyKey, **kwargs) -> Policy:
    return policy_class(key)(**kwargs)


def _load_all() -> None:
    import scheduler.policies  # noqa: F401  (registers every policy module)
