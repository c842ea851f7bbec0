"""What the scheduling core keeps per job, and what policies and segment runners may read
and call of the core.

`JobTable` declares the per-job arrays once: `Simulator.begin` empties them
(`clear_jobs`) and `add_jobs` grows them (`extend_jobs`). Plain lists, not numpy: the
event loop reads and writes one element at a time, where a list is several times faster;
grown in place, because queues and policies keep references to them (a heap keyed on
`pred.__getitem__`).

`Core` is the simulator as a policy (`scheduler/policy.py`) or a segment runner
(`scheduler/segments.py`) sees it: a Protocol, so that neither imports the simulator,
which imports them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

from sdaas.job_status import JobStatus

if TYPE_CHECKING:
    from scheduler.catalog import Catalog
    from scheduler.options import ClassOptions, Option
    from scheduler.sim_config import SimConfig
    from scheduler.workload import Workload


class JobTable(Protocol):
    """Index = job. A Protocol with an implementation: `Core` includes the arrays, and
    the simulator subclasses it for `clear_jobs` and `extend_jobs`."""

    # given when the job arrives
    arrival: list[float]
    cls: list[int]  # its SLO class
    factor: list[float]  # true work over predicted (the workload's `true_factor`)
    deadline_ts: list[float]  # arrival + the class's latency SLO
    # the rest start at _NEW and change as the job is placed, run and settled
    status: list[int]  # a JobStatus
    start: list[float]  # its first dispatch
    finish: list[float]  # when it left: done, rejected, dropped (cancelled, failed: live)
    kind: list[int]  # the cluster kind it is placed on
    model: list[int]  # its option's catalog model
    steps: list[int]  # the denoising steps it is served at
    pred: list[float]  # its option's predicted batch-1 seconds
    finish_pred: list[float]  # its predicted finish when placed (the planner's rule)
    work: list[float]  # true batch-1 seconds: pred x factor
    remaining: list[float]  # true batch-1 seconds still to run
    dev_of: list[int]  # the instance whose queue holds it (queue_per_device)

    def clear_jobs(self) -> None:
        for name in JOB_ARRAYS:
            setattr(self, name, [])

    def extend_jobs(
        self, arrival: list[float], cls: list[int], factor: list[float], deadline_ts: list[float]
    ) -> None:
        given = {"arrival": arrival, "cls": cls, "factor": factor, "deadline_ts": deadline_ts}
        n = len(arrival)
        for name in JOB_ARRAYS:
            getattr(self, name).extend(given[name] if name in given else [_NEW[name]] * n)


JOB_ARRAYS = tuple(JobTable.__annotations__)  # their names, in declaration order
# what a job holds before it is placed (-1: none yet; NaN: has not left)
_NEW = {"status": JobStatus.PENDING, "start": -1.0, "finish": math.nan, "kind": -1,
        "model": -1, "steps": 0, "pred": 0.0, "finish_pred": 0.0, "work": 0.0,
        "remaining": 0.0, "dev_of": -1}  # fmt: skip


class Core(JobTable, Protocol):
    """The simulator (and the live core, its subclass) as policies and segment runners
    see it. Per cluster kind k, per instance i, per SLO class c."""

    catalog: Catalog
    config: SimConfig
    workload: Workload
    options: ClassOptions  # [c][k]: the planned and the down-shifted option, or None
    latency_slo_s: list[float]  # [c]
    min_clip: list[float]  # [c]
    ck: list[int]  # [k]: its catalog kind
    n_inst: list[int]  # [k]: its instances
    instances_of: list[list[int]]  # [k]
    inst_kind: list[int]  # [i]: its cluster kind
    resident: list[list[int]]  # [i]: models loaded, least recently used first
    seg_jobs: list[list[int] | None]  # [i]: the jobs of its running segment
    seg_work_start: list[float]  # [i]: when its segment's work starts (after a load)
    seg_speed: list[float]  # [i]: batch-1 seconds of work per second in its segment
    seg_end: list[float]  # [i]: when its segment ends (inf: its device will say)

    def place_earliest_finish(
        self, j: int, options: list[Option | None] | None = None, loads: bool = False
    ) -> int | None: ...

    def assign(self, j: int, k: int, option: Option) -> None: ...

    def reassign(self, j: int, option: Option) -> None: ...

    def drop(self, j: int, t: float) -> None: ...

    def interrupt(self, i: int, t: float) -> None: ...

    def remaining_at(self, i: int, t: float) -> float: ...

    def schedule_end(self, i: int, t: float) -> None: ...
