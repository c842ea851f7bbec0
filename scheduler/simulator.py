"""Discrete-event simulator: one event loop on a heap (Vidur's shape), workload, cluster
and policy kept apart.

Time advances over two streams: arrivals (already sorted in the Workload) and segment
ends (a heap). A segment is a batch of same-model jobs running on one accelerator
instance; it ends when its first job finishes, when the policy's quantum is used, or
earlier when the policy interrupts it (then at the next denoising-step boundary, so no
work is lost or invented). A job's true work is its predicted batch-1 seconds times the
workload's `true_factor`; a batch of b runs each job at speed 1/factor(b) from the
profiles' batch sizes. Switching an instance to a model that is not resident costs the
model's load time; it evicts the least recently used models until the newcomer fits
(`Catalog.evictions`: checkpoint sizes against the kind's memory budget, or a count of
models). A load goes to an idle instance where the newcomer fits beside what it holds,
else to one whose evicted models all have another copy, so the only copy of a model is
evicted last.

Every arrived job ends in exactly one terminal state: done, rejected or dropped.

The same core serves real jobs: `scheduler/live.py: LiveCore` subclasses it, adds jobs as
they arrive (`begin`, `add_jobs`, `arrive`) and passes a segment runner that hands each
segment to a device, which says when it ended (`scheduler/segments.py`), so every policy
decides in serving exactly as here (`tests/scheduler/test_conformance.py`: the same
decisions for all policies, batching and preemption included).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from scheduler.catalog import Catalog
from scheduler.cluster import Cluster
from scheduler.job_table import Core
from scheduler.options import ClassOptions, Option
from scheduler.policy import Policy
from scheduler.segments import Arithmetic, SegmentRunner
from scheduler.sim_config import SimConfig
from scheduler.workload import Workload
from sdaas.errors import InvalidInputError
from sdaas.job_status import JobStatus

DONE = JobStatus.DONE


@dataclass
class SimResult:
    """Per-job outcome arrays (index = job) plus per-instance busy seconds."""

    policy: str
    workload: str
    cluster: str
    arrival: np.ndarray
    latency_slo_s: np.ndarray
    min_clip: np.ndarray
    status: np.ndarray
    start: np.ndarray
    finish: np.ndarray
    kind: np.ndarray  # cluster kind index, -1 if never placed
    model: np.ndarray  # catalog model index, -1 if never placed
    steps: np.ndarray
    pred_s: np.ndarray
    true_work_s: np.ndarray
    clip: np.ndarray  # true CLIP of the served image (NaN unless done)
    busy_s: np.ndarray  # per instance
    instance_kind: np.ndarray
    kinds: list[str]
    models: list[str]
    events: int

    @property
    def jct(self) -> np.ndarray:
        return self.finish - self.arrival


class Simulator(Core):
    """The scheduling core (`Core`: what policies and segment runners may use of it).
    `runner`: who runs segments (default: `Arithmetic`, the simulated clock)."""

    def __init__(
        self,
        catalog: Catalog,
        cluster: Cluster,
        policy: Policy,
        config: SimConfig | None = None,
        runner: SegmentRunner | None = None,
    ):
        cluster.check(catalog)
        self.catalog = catalog
        self.cluster = cluster
        self.policy = policy
        self.config = config or SimConfig()
        self.kind_names = cluster.kinds
        self.ck = [catalog.kind_index(k) for k in self.kind_names]  # cluster -> catalog kind
        self.n_inst = [n for _, n in cluster.counts]
        self.log: list[tuple] | None = None
        self.dev_queues: list | None = None  # per instance, with queue_per_device
        self.overloaded: set[int] = set()  # jobs refused over the admission bound
        self.out_of_service: set[int] = set()  # instances no job may be queued on
        self.runner = runner if runner is not None else Arithmetic(self)

    # ---------------------------------------------------------------- placement helpers
    def earliest_finish(
        self, j: int, opts: list[Option | None], loads: bool = False, factor: float = 1.0
    ) -> tuple[int, float]:
        """The planner's rule: (the kind with the earliest finish for job j among `opts`
        (per kind), that finish); (-1, inf) when none serves it. Finish: the kind's backlog
        per instance in service plus the option's seconds times `factor` (1: predicted; the
        fair bound passes the job's true factor), plus, with `loads`, the model's load time
        on a kind where no instance holds it."""
        best_k, best_t = -1, math.inf
        backlog, n_inst, copies = self.backlog, self.n_inst, self.copies
        loads = loads and self.config.cold_start
        for k, o in enumerate(opts):
            if o is not None and n_inst[k]:  # a kind with no instance in service: none
                t = backlog[k] / n_inst[k] + o.pred_s * factor
                if loads and not copies[k].get(o.model):  # not self.holds(k, o.model)
                    t += self.catalog.load_s[o.model]
                if t < best_t:
                    best_k, best_t = k, t
        return best_k, best_t

    def place_earliest_finish(
        self, j: int, options: list[Option | None] | None = None, loads: bool = False
    ) -> int | None:
        """`earliest_finish` on predicted times, among `options` (default: the job's
        class's planned ones), the job assigned there: model/steps/prediction set; None
        if no kind can serve it."""
        opts = self.options.planned[self.cls[j]] if options is None else options
        best_k, best_t = self.earliest_finish(j, opts, loads)
        if best_k < 0:
            return None
        self.assign(j, best_k, opts[best_k])
        self.finish_pred[j] = best_t
        return best_k

    def holds(self, k: int, m: int) -> bool:
        """Some instance of kind k has model m resident."""
        return self.copies[k].get(m, 0) > 0

    def unload(self, i: int) -> None:
        """Instance i holds no model any more (it left the pool)."""
        copies = self.copies[self.inst_kind[i]]
        for m in self.resident[i]:
            copies[m] -= 1
        self.resident[i].clear()
        self.used[i] = 0.0

    def assign(self, j: int, k: int, option: Option) -> None:
        """Serve job j on kind k with `option`."""
        m, s, pred = option.model, option.steps, option.pred_s
        self.model[j], self.steps[j], self.pred[j], self.kind[j] = m, s, pred, k
        self.work[j] = self.remaining[j] = pred * self.factor[j]

    def reassign(self, j: int, option: Option) -> None:
        """Change a queued (not yet started) job's model/steps on its kind."""
        k = self.kind[j]
        self.backlog[k] += option.pred_s - self.pred[j]
        if self.dev_queues is not None:
            self.dev_backlog[self.dev_of[j]] += option.pred_s - self.pred[j]
        self.assign(j, k, option)

    def drop(self, j: int, t: float) -> None:
        """Job j leaves its queue unserved: it could no longer meet its SLO."""
        if self.log is not None:
            self.log.append(("drop", j, round(t, 9)))
        self._settle(j, JobStatus.DROPPED, t)

    def _settle(self, j: int, status: int, t: float) -> None:
        """Job j leaves the system at t (done, dropped, cancelled): its work leaves the
        backlog of its kind and device."""
        self.status[j] = status
        self.finish[j] = t
        self.remaining[j] = 0.0
        self.backlog[self.kind[j]] -= self.pred[j]
        if self.dev_queues is not None:
            self.dev_backlog[self.dev_of[j]] -= self.pred[j]

    def remaining_at(self, i: int, t: float) -> float:
        """Smallest true remaining work among instance i's running jobs at time t."""
        ws = self.seg_work_start[i]
        done = (t - ws) * self.seg_speed[i] if t > ws else 0.0
        return min(self.remaining[j] for j in self.seg_jobs[i]) - done

    # ---------------------------------------------------------------------- the run
    def run(self, w: Workload, options: ClassOptions | None = None) -> SimResult:
        """options: per SLO class and kind, what a job of that class would run (default:
        from the catalog, the planner's rule); serving passes the trained planner's."""
        self.begin(w, options)
        n, arrival, events = w.n, self.arrival, self._events
        heappop = heapq.heappop
        gather = self.config.gather_ties
        ai, count = 0, 0
        while ai < n or events:
            if ai < n and (not events or arrival[ai] <= events[0][0]):
                j, t = ai, arrival[ai]
                ai += 1
                # gather_ties: more jobs arrive now; queue them all before any starts
                if self.arrive(j, t, tie=gather and ai < n and arrival[ai] == t):
                    count += 1  # a rejection is not counted as an event
            else:
                t, _, i, ver = heappop(events)
                if ver != self.seg_version[i]:
                    continue
                self._segment_end(i, t)
                count += 1
        return self._result(w, count)

    def begin(self, w: Workload, options: ClassOptions | None = None) -> None:
        """Set up a run over workload `w` (the live core starts with no jobs and adds
        them with `add_jobs` as they arrive)."""
        cat, cfg, pol = self.catalog, self.config, self.policy
        self.options = options or ClassOptions.for_run(
            cat, w.classes, self.ck, cfg, pol.clip_margin_override
        )
        self.log = [] if cfg.log else None
        self.overloaded = set()  # a second run starts with none
        self._check_servable(w)
        self.workload = w
        self.latency_slo_s = [c.latency_slo_s for c in w.classes]  # per SLO class
        self.min_clip = [c.min_clip for c in w.classes]
        self.clear_jobs()
        K = len(self.kind_names)
        self.backlog = [0.0] * K
        inst_kind = [k for k in range(K) for _ in range(self.n_inst[k])]
        self.inst_kind = inst_kind
        n_total = len(inst_kind)
        self.instances_of = [[i for i in range(n_total) if inst_kind[i] == k] for k in range(K)]
        self.idle = [ids[::-1] for ids in self.instances_of]
        self.resident: list[list[int]] = [[] for _ in range(n_total)]
        self.used = [0.0] * n_total  # [i]: its resident models' weights summed
        # [k][m]: instances of kind k with model m resident, kept with `resident`:
        # placement asks at every arrival (counting them there was a sixth of slack-sjf's
        # run under cProfile)
        self.copies: list[dict[int, int]] = [{} for _ in range(K)]
        self.seg_jobs: list[list[int] | None] = [None] * n_total
        self.seg_start = [0.0] * n_total
        self.seg_work_start = [0.0] * n_total
        self.seg_speed = [1.0] * n_total
        self.seg_end = [0.0] * n_total
        self.seg_version = [0] * n_total
        self.busy = [0.0] * n_total
        self._events: list[tuple[float, int, int, int]] = []
        self._seq = 0
        pol.bind(self)
        # asked per job at every dispatch, so not at all when the policy sets no quantum
        quanta = cfg.preempt and type(pol).segment_work is not Policy.segment_work
        self._segment_work = pol.segment_work if quanta else None
        self.queues = [pol.make_queue(k) for k in range(K)]
        per_device = cfg.queue_per_device
        self.dev_queues = [pol.make_queue(k) for k in inst_kind] if per_device else None
        self.dev_backlog = [0.0] * n_total
        self.add_jobs(w.arrival.tolist(), w.cls.tolist(), w.true_factor.tolist())

    def add_jobs(self, arrival: list[float], cls: list[int], factor: list[float]) -> None:
        """Append jobs, arrived at `arrival`, of SLO classes `cls`, true work over predicted
        `factor`."""
        slo = self.latency_slo_s
        deadline = [a + slo[c] for a, c in zip(arrival, cls, strict=True)]
        self.extend_jobs(arrival, cls, factor, deadline)
        self.policy.jobs_added(len(self.arrival))

    def arrive(self, j: int, t: float, tie: bool = False) -> bool:
        """Job j arrives at t: placed and admitted (queued, maybe started) or rejected.
        `tie`: more jobs arrive at t, so nothing starts yet (gather_ties). False when
        rejected."""
        cfg, idle = self.config, self.idle
        gather = cfg.gather_ties
        k = self.policy.place(j, t)
        if cfg.queue_per_device and k is not None:
            k = self._to_device(j, k, cfg.max_backlog_s)
        elif k is not None and (self.backlog[k] > cfg.max_backlog_s * self.n_inst[k]
                                or not self.n_inst[k]):  # fmt: skip
            self.overloaded.add(j)
            k = None
        if k is None:
            self.status[j] = JobStatus.REJECTED
            self.finish[j] = t
            if self.log is not None:
                self.log.append(("reject", j, round(t, 9)))
            if gather and not tie:
                self._dispatch_idle(t)
            return False
        if self.log is not None:
            self.log.append(("admit", j, k, round(t, 9)))
        self.backlog[k] += self.pred[j]
        if cfg.queue_per_device:
            i = self.dev_of[j]
            self.dev_queues[i].push(j)
            self.dev_backlog[i] += self.pred[j]
            free = i in idle[k]
        else:
            self.queues[k].push(j)
            i, free = -1, bool(idle[k])
        if not free:
            self.policy.on_busy_arrival(j, k, t)
        elif not gather:
            if i < 0:
                i = self._idle_for(k, j)
            else:
                idle[k].remove(i)
            self._dispatch(i, t, [])
        if gather and not tie:
            self._dispatch_idle(t)
        return True

    def _idle_for(self, k: int, j: int) -> int:
        """An idle instance of kind k for job j: one that holds j's model if any does
        (a dispatcher does not load a model that an idle twin already has)."""
        idle = self.idle[k]
        if not self.config.cold_start:
            return idle.pop()
        m, res = self.model[j], self.resident
        for x in range(len(idle) - 1, -1, -1):
            if m in res[idle[x]]:
                return idle.pop(x)
        # it loads m: on an instance where m fits beside what it holds, else one whose
        # evicted models (the least recently used) all have a copy elsewhere, else the
        # most recently idled
        evictions, ck, used = self.catalog.evictions, self.ck[k], self.used
        copies = self.copies[k]
        best, score = len(idle) - 1, -1
        for x in range(len(idle) - 1, -1, -1):
            r = res[idle[x]]
            n = evictions(r, used[idle[x]], m, ck)
            s = 2 if not n else (1 if all(copies[e] > 1 for e in r[:n]) else 0)
            if s > score:
                best, score = x, s
                if s == 2:
                    break
        return idle.pop(best)

    def _to_device(self, j: int, k: int, bound: float) -> int | None:
        """queue_per_device: the instance of kind k with the least queued work takes j
        (of those in service: serving takes a device that cannot restart out); None
        (overloaded) when even that one has more than `bound` seconds queued."""
        ids, out = self.instances_of[k], self.out_of_service
        live = ids if not out else [i for i in ids if i not in out]
        i = min(live, key=self.dev_backlog.__getitem__, default=None)
        if i is None or self.dev_backlog[i] > bound:
            self.overloaded.add(j)
            return None
        self.dev_of[j] = i
        return k

    def _dispatch_idle(self, t: float) -> None:
        """Every idle instance with queued jobs is asked once for a batch (gather_ties). Once:
        an instance may take nothing (the queue holds jobs a busy twin serves in time) and
        go back to idle, and asking it again at the same t spun for ever."""
        for k, idle in enumerate(self.idle):
            if self.dev_queues is None:
                for i in idle[::-1]:
                    if not len(self.queues[k]):
                        break
                    idle.remove(i)
                    self._dispatch(i, t, [])
                continue
            for i in [i for i in idle if len(self.dev_queues[i])]:
                idle.remove(i)
                self._dispatch(i, t, [])

    def _check_servable(self, w: Workload) -> None:
        for c, cls in enumerate(w.classes):
            if all(o is None for o in self.options.planned[c]):
                raise InvalidInputError(
                    f"slo class {cls}: no model on cluster {self.cluster} serves style "
                    f"{cls.style!r} at min CLIP {cls.min_clip:g}; add an accelerator that can"
                )

    def _dispatch(self, i: int, t: float, carry: list[int]) -> None:
        k = self.inst_kind[i]
        queue = self.queues[k] if self.dev_queues is None else self.dev_queues[i]
        batch = self.policy.next_batch(queue, i, t, carry)
        if not batch:
            self.seg_jobs[i] = None
            self.idle[k].append(i)
            return
        cat = self.catalog
        m = self.model[batch[0]]
        load = 0.0
        res = self.resident[i]
        if m in res:
            if res[-1] != m:
                res.remove(m)
                res.append(m)
        else:
            if self.config.cold_start and self.policy.pays_load:
                load = cat.load_s[m]
            copies = self.copies[k]
            n = cat.evictions(res, self.used[i], m, self.ck[k])
            if n:
                weight = cat.weight
                for e in res[:n]:
                    copies[e] -= 1
                    self.used[i] -= weight[e]
                del res[:n]
            res.append(m)
            self.used[i] += cat.weight[m]
            copies[m] = copies.get(m, 0) + 1
        n = len(batch)
        factor = cat.batch_factor[(m, self.ck[k])][n] if n > 1 else 1.0
        start = self.start
        seg_work = self._segment_work
        if n == 1:  # the common case, without the loop
            j = batch[0]
            if start[j] < 0:
                start[j] = t
            work = self.remaining[j]
            if seg_work is not None:
                q = seg_work(j)
                if q < work:
                    work = q
        else:
            rem = self.remaining
            work = math.inf
            for j in batch:
                if start[j] < 0:
                    start[j] = t
                w = rem[j]
                if seg_work is not None:
                    q = seg_work(j)
                    if q < w:
                        w = q
                if w < work:
                    work = w
        if self.log is not None:
            self.log.append(("run", tuple(batch), i, round(t, 9)))
        ws = t + load
        self.seg_jobs[i] = batch
        self.seg_start[i] = t
        self.seg_work_start[i] = ws
        self.seg_speed[i] = 1.0 / factor
        runner = self.runner  # the simulated clock's without the call (`Arithmetic.run`)
        end = (
            ws + work * factor
            if type(runner) is Arithmetic
            else runner.run(i, batch, ws, work, factor)
        )
        # schedule_end(i, end), inline: once per segment
        self.seg_end[i] = end
        version = self.seg_version[i] = self.seg_version[i] + 1
        if end < math.inf:
            self._seq += 1
            heapq.heappush(self._events, (end, self._seq, i, version))

    def schedule_end(self, i: int, t: float) -> None:
        """Instance i's segment ends at t: an event on the heap, which voids the one it
        had. t = inf: its runner will say (serving), no event."""
        self.seg_end[i] = t
        self.seg_version[i] += 1
        if t < math.inf:
            self._seq += 1
            heapq.heappush(self._events, (t, self._seq, i, self.seg_version[i]))

    def _segment_end(self, i: int, t: float) -> None:
        ws = self.seg_work_start[i]
        done = (t - ws) * self.seg_speed[i] if t > ws else 0.0
        rem, work = self.remaining, self.work
        carry = []
        for j in self.seg_jobs[i]:
            r = rem[j] - done
            if r <= 1e-9 * (work[j] + 1.0):  # done: `_settle(j, DONE, t)`, inline
                self.status[j] = DONE
                self.finish[j] = t
                rem[j] = 0.0
                self.backlog[self.kind[j]] -= self.pred[j]
                if self.dev_queues is not None:
                    self.dev_backlog[self.dev_of[j]] -= self.pred[j]
            else:
                rem[j] = r
                carry.append(j)
        self.busy[i] += t - self.seg_start[i]
        self._dispatch(i, t, carry)

    def interrupt(self, i: int, t: float) -> None:
        """End instance i's segment at its next denoising-step boundary after t (a policy
        preempts it, or re-forms its batch); nothing when it is idle or preemption is
        off."""
        if self.seg_jobs[i] and self.config.preempt:
            self.runner.cut(i, t)

    def _result(self, w: Workload, count: int) -> SimResult:
        status = np.asarray(self.status)
        pending = status == JobStatus.PENDING
        if pending.any():
            raise RuntimeError(f"{int(pending.sum())} jobs never finished")
        cat = self.catalog
        model = np.asarray(self.model)
        steps = np.asarray(self.steps)
        clip = np.full(w.n, np.nan)
        done = status == JobStatus.DONE
        curve = np.vstack([cat.clip[m] for m in range(len(cat.models))])
        clip[done] = (
            curve[model[done], steps[done] - 1] + self.config.clip_noise * w.clip_noise[done]
        )
        slo = np.array([c.latency_slo_s for c in w.classes])[w.cls]
        minc = np.array([c.min_clip for c in w.classes])[w.cls]
        return SimResult(
            policy=self.policy.key.value,
            workload=w.name,
            cluster=str(self.cluster),
            arrival=w.arrival,
            latency_slo_s=slo,
            min_clip=minc,
            status=status,
            start=np.asarray(self.start),
            finish=np.asarray(self.finish),
            kind=np.asarray(self.kind),
            model=model,
            steps=steps,
            pred_s=np.asarray(self.pred),
            true_work_s=np.asarray(self.work),
            clip=clip,
            busy_s=np.asarray(self.busy),
            instance_kind=np.asarray(self.inst_kind),
            kinds=self.kind_names,
            models=cat.models,
            events=count,
        )


def simulate(catalog, cluster, policy, workload, config=None) -> SimResult:
    return Simulator(catalog, cluster, policy, config).run(workload)
