"""fair-bound: the bound ours is measured against, on the information every policy has.

`srpt-oracle` (the true-CLIP oracle, kept as a reference line) is not a fair bound for a
goodput target: it plans each job on its TRUE CLIP draw (so it serves a job at exactly
the steps its own noise allows, with no safety margin) and loads models for free. On
the production-like jobs that made it need 6 GPUs for 90 % goodput where every causal
policy needed 82 or more; with loads paid it still needed 42. No scheduler can reach
it, so "within 1.15x of the oracle" measured nothing.

What the fair bound knows, exactly:

* each job's TRUE run time at any option: its true factor (true / predicted seconds,
  the workload's `true_factor`, `Core.factor`) times the option's prediction, from the
  moment the job arrives; and, once it has run, its true remaining work (`remaining`).
* the arrivals to come, used in one decision only: whether to pay a model load for a
  job that the load alone makes late, when no instance of the kind holds its model
  (yes if another job planned on that model there arrives within `invest_horizon_s`,
  10 s). Its order (SRPT) needs no look-ahead: on one server it minimises mean response
  time without seeing the future.
* NOT a job's CLIP draw: it plans, like every causal policy, on the predicted curve.
* everything a causal policy knows: the planner's options per kind at the planner's
  CLIP margin (`options.planned`) and at the down-shift margin the goodput target
  allows (`options.relaxed`, `SimConfig.for_target`, as ours gets: `downshifts`), the
  queues, which models each instance holds, load times and batch costs.

What it pays, exactly as the others: model loads (`pays_load`, the simulator's LRU and
eviction rule), the batch slow-down of the profiles, and preemption only at the next
denoising-step boundary (the simulator's cut, which fastserve and srpt-oracle use too).

What it does with that (every decision on true times):

1. Placement: the kind where the job finishes first (backlog per instance + its true
   run + the load where no instance of the kind holds its model), at the planned
   option if that makes its SLO there, else at the down-shifted one. Rejected at
   arrival only when no kind could serve it in time even idle, down-shifted, with the
   load it would pay: jobs no schedule can serve in time.
2. Order: shortest true remaining time first, counting on each instance the load a job
   of a model it does not hold would pay. Slack rescue (the most urgent job first when
   the shortest would make it late) only while the queue is short (fewer than
   `long_queue` waiting per instance): on a long queue it turns the order into EDF,
   which serves every job at its last moment and loses the rest (what makes ours fall
   off a cliff on the Markov-modulated bursts).
3. Preemption at step boundaries, never at a started job's expense: when a segment
   ends (or an arrival cuts it: the arrival's model resident there, the cut segment's
   jobs able to wait for it), its unfinished jobs run on unless a queued job shorter
   than them would miss its deadline waiting for them and they can all still make
   theirs after it.
4. Steps: a job that has not started runs the planned option when it makes its
   deadline and the queue is short; the down-shifted one when the queue is long, when
   only that one makes it, or when it was placed down-shifted and the queue is not
   calm (at least `calm` waiting per instance). A job no option lets make its deadline
   on this instance is dropped (no accelerator time goes to a job that will be late),
   unless the load alone is what makes it late: then it is left for a busy twin that
   holds its model, or, where no instance of the kind holds it and the model is wanted
   again soon, run anyway so that the model gets loaded.
5. Batching: the chosen job's batch is filled with the shortest queued jobs of its
   model, up to the profiled limit and one more than the waiting jobs per instance,
   each only if the slower batch still meets every member's deadline (filling most
   urgent first, as slack-sjf does, measured 0.944 against 0.946 mean goodput over
   Poisson, bursty and mmpp arrivals at loads 0.5-1.3); an arrival joins a
   running batch of its model with room at its next step.

Why this bounds the causal policies, and how far it can be trusted: it has every piece
of information a causal policy has plus the true run times, every action any of them
takes (place, reject, order, batch, down-shift, drop) plus free-of-load preemption, and
the same costs. It is not an optimum: maximising the jobs that meet their deadlines is
NP-hard even on one machine with release dates (1|r_j|sum U_j), and batching, loads and
CLIP risk make it harder. So it is a strong clairvoyant heuristic, checked rather than
proved: tests/scheduler/test_fair_bound.py holds its goodput at or above every causal
policy's on small workloads, and the comparison report flags any workload where a
causal policy needs fewer GPUs than it (there the bound is loose, and ours against it
reads better than it is).

In serving (`scheduler/live.py`) the true factor is 1 (the core knows no more than the
prediction): it then decides as a causal SRPT with these rules.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from scheduler.policies.batch_fill import fill_batch
from scheduler.policy import Policy, PolicyKey, register
from scheduler.queues import SlackQueue

# what `FairBound._serve` says of a job on an instance
RUN, ELSEWHERE, HOPELESS = "run", "elsewhere", "hopeless"


@register
class FairBound(Policy):
    key = PolicyKey.FAIR_BOUND
    stands_for = "fair bound: clairvoyant on run times; same CLIP plan, margins, loads"
    batching = True
    completes_all = False
    downshifts = True  # the same CLIP risk per goodput target as ours
    # pays_load = True and clip_margin_override = None: the defaults every causal policy has

    def __init__(
        self,
        long_queue: float = 4.0,
        calm: float = 1.0,
        invest_horizon_s: float = 10.0,
        rescue: bool = True,
        preempt: bool = True,
    ):
        self.long_queue = long_queue  # waiting jobs per instance that make a queue long
        self.rescue = rescue  # slack rescue, while the queue is short
        self.preempt = preempt  # cut a longer running segment for a shorter arrival
        self.calm = calm  # fewer waiting jobs per instance than this: a calm queue
        # a job only a load makes late pays it when its model is wanted again this soon
        self.invest_horizon_s = invest_horizon_s

    def bind(self, sim) -> None:
        super().bind(sim)
        # per (kind, model): when the jobs planned on that model there arrive (sorted)
        w, planned = sim.workload, sim.options.planned
        self._arrivals_of: dict[tuple[int, int], list[float]] = {}
        if w.n:
            for k in range(len(sim.n_inst)):
                model = np.array([-1 if o[k] is None else o[k].model for o in planned])[w.cls]
                for m in np.unique(model[model >= 0]).tolist():
                    self._arrivals_of[(k, m)] = w.arrival[model == m].tolist()

    # ------------------------------------------------------------------ true times
    def _load(self, m: int, inst: int) -> float:
        """The load a job of model m pays to start on instance inst."""
        sim = self.sim
        if not sim.config.cold_start or m in sim.resident[inst]:
            return 0.0
        return sim.catalog.load_s[m]

    def _earliest(self, j: int, options) -> tuple[int, float]:
        """The planner's rule on true times: the kind with the earliest finish (backlog
        per instance + the job's true run + the load where no instance holds its model);
        (-1, inf) when none serves it."""
        sim = self.sim
        f, backlog, n_inst, copies = sim.factor[j], sim.backlog, sim.n_inst, sim.copies
        cold, load_s = sim.config.cold_start, sim.catalog.load_s
        best_k, best_t = -1, math.inf
        for k, o in enumerate(options):
            if o is not None and n_inst[k]:
                t = backlog[k] / n_inst[k] + o.pred_s * f
                if cold and not copies[k].get(o.model, 0):  # no instance holds it
                    t += load_s[o.model]
                if t < best_t:
                    best_k, best_t = k, t
        return best_k, best_t

    # ------------------------------------------------------------------ the decisions
    def place(self, j: int, t: float) -> int | None:
        sim = self.sim
        c = sim.cls[j]
        slo = sim.latency_slo_s[c]
        planned, relaxed = sim.options.planned[c], sim.options.relaxed[c]
        for options in (planned, relaxed):
            k, finish = self._earliest(j, options)
            if k >= 0 and finish <= slo:
                sim.assign(j, k, options[k])
                sim.finish_pred[j] = finish
                return k
        # late on every backlog: down-shifted on the kind where it finishes first idle,
        # counting the load only where another kind holds the same model (a model held
        # nowhere must be loaded once for any of its jobs to run: counting that load put
        # every job on the T4s' resident model and left the A100s idle on 2xA100+2xT4);
        # rejected only if it misses even idle with no load
        f, cold, load_s = sim.factor[j], sim.config.cold_start, sim.catalog.load_s
        kinds = range(len(relaxed))
        best_k, best_t, fastest = -1, math.inf, math.inf
        for k, o in enumerate(relaxed):
            if o is None or not sim.n_inst[k]:
                continue
            x = o.pred_s * f
            fastest = min(fastest, x)
            m = o.model
            if cold and not sim.holds(k, m) and any(sim.holds(q, m) for q in kinds if q != k):
                x += load_s[m]
            if x < best_t:
                best_k, best_t = k, x
        if best_k < 0 or fastest > slo:
            return None
        sim.assign(j, best_k, relaxed[best_k])
        sim.finish_pred[j] = best_t
        return best_k

    def make_queue(self, kind: int) -> SlackQueue:
        sim = self.sim
        return SlackQueue(sim.remaining, sim.deadline_ts, sim.model, fill_shortest=True)

    def next_batch(self, queue: SlackQueue, inst: int, t: float, carry: list[int]) -> list[int]:
        if not queue:  # nothing waits: the segment's jobs (if any) run on
            return carry
        sim = self.sim
        kind = sim.inst_kind[inst]
        if carry and not self._cut_for_queue(queue, inst, t, carry):
            return self._fill(queue, carry, inst, kind, t)
        for j in carry:  # a cut segment's jobs compete again, at their true remaining
            queue.push(j)
        remaining, deadline = sim.remaining, sim.deadline_ts
        aside: list[int] = []  # jobs that make it on a busy twin holding their model
        batch: list[int] = []
        while not batch:
            h = queue.shortest()
            if h is None:
                break
            h = self._shortest_here(queue, inst, h)
            j = h
            # the most urgent job first if the shortest would make it late, but only
            # while the queue is short: on a long one that makes the order EDF, which
            # serves every job at its last moment and loses the rest
            if self.rescue and len(queue) < self.long_queue * sim.n_inst[kind]:
                r = queue.most_urgent()
                if r != h:
                    sh = remaining[h] + self._load(sim.model[h], inst)
                    sr = remaining[r] + self._load(sim.model[r], inst)
                    if t + sh + sr > deadline[r]:
                        j = r
            queue.take(j)
            verdict = self._serve(j, queue, inst, kind, t)
            if verdict is RUN:
                batch = self._fill(queue, [j], inst, kind, t)
            elif verdict is ELSEWHERE:
                aside.append(j)
            else:
                sim.drop(j, t)
        for j in aside:
            queue.push(j)
        return batch

    def _cut_for_queue(self, queue: SlackQueue, inst: int, t: float, carry: list[int]) -> bool:
        """Whether the unfinished jobs of the segment that just ended (`carry`) go back to
        the queue rather than run on: only for a queued job that is shorter here than
        any of them, would miss its deadline if it waited for the first of them to
        finish, and after which every one of them can still make its deadline. (Sent
        back whenever a shorter job waited, started jobs were overtaken again and again
        on bursts and dropped, their steps wasted: 3.5 points of goodput at load 0.5 of
        the Markov-modulated workload.)"""
        sim = self.sim
        h = queue.shortest()
        if h is None:
            return False
        h = self._shortest_here(queue, inst, h)
        remaining, deadline = sim.remaining, sim.deadline_ts
        size = remaining[h] + self._load(sim.model[h], inst)
        first = min(remaining[x] for x in carry)
        if size >= first or t + first + size <= deadline[h]:  # h can wait for them
            return False
        return all(t + size + remaining[x] <= deadline[x] for x in carry)

    def _serve(self, j: int, queue: SlackQueue, inst: int, kind: int, t: float) -> str:
        """RUN: job j makes its deadline on instance inst from t, with the option it now
        runs (a job that has not started: the planned one, or the down-shifted one when
        the queue is long or only that one makes it). HOPELESS: no option makes it. When
        only the load here makes it late, `_late_by_load` decides (a twin takes it, or it
        runs so that its model gets loaded, or it is hopeless)."""
        sim = self.sim
        deadline = sim.deadline_ts[j]
        if sim.start[j] >= 0:  # it has run: its option is fixed
            m, x = sim.model[j], t + sim.remaining[j]
            if x + self._load(m, inst) <= deadline:
                return RUN
            return self._late_by_load(queue, kind, m, inst, t) if x <= deadline else HOPELESS
        c, f = sim.cls[j], sim.factor[j]
        planned, relaxed = sim.options.planned[c][kind], sim.options.relaxed[c][kind]
        waiting, n = len(queue), sim.n_inst[kind]
        resident, load_s = sim.resident[inst], sim.catalog.load_s
        cold = sim.config.cold_start
        placed_down = planned is None or (sim.model[j], sim.steps[j]) != planned[:2]
        # down-shifted on a long queue; one placed down-shifted (its kind's backlog said
        # the plan would be late) goes back to the plan only on a calm one
        down = waiting >= self.long_queue * n or (placed_down and waiting >= self.calm * n)
        order = (relaxed, planned) if down else (planned, relaxed)
        verdict = HOPELESS
        for o in order:
            if o is None:
                continue
            x = t + o.pred_s * f
            if x + (load_s[o.model] if cold and o.model not in resident else 0.0) <= deadline:
                self._runs(j, o)
                return RUN
            if x <= deadline and verdict is HOPELESS:
                verdict = self._late_by_load(queue, kind, o.model, inst, t)
                if verdict is RUN:  # it pays the load: its model's first copy here
                    self._runs(j, o)
                    return RUN
        return verdict

    def _runs(self, j: int, o) -> None:
        """Queued job j runs option o of its kind (down-shifted, or back to the plan)."""
        sim = self.sim
        if o.model != sim.model[j] or o.steps != sim.steps[j] or o.pred_s != sim.pred[j]:
            sim.reassign(j, o)

    def _wanted_soon(self, queue: SlackQueue, kind: int, m: int, t: float) -> bool:
        """Another job of model m waits on the kind, or one planned on m there arrives
        within `invest_horizon_s` (the workload's future: the one use of it)."""
        if queue.shortest_of(m) is not None:
            return True
        times = self._arrivals_of.get((kind, m))
        if times is None:
            return False
        i = bisect.bisect_right(times, t)
        return i < len(times) and times[i] <= t + self.invest_horizon_s

    def _late_by_load(self, queue: SlackQueue, kind: int, m: int, inst: int, t: float) -> str:
        """A job of model m that only the load makes late here: ELSEWHERE when a busy
        instance of the kind holds m (it takes the job when it frees). When none holds
        it: RUN, paying the load though the job will be late, if the model is wanted
        again soon (`_wanted_soon`: someone must load it once for its jobs to run;
        dropping every such job kept the A100s' fast models out for good on
        2xA100+2xT4, 2-14 points of goodput); else HOPELESS (a rarely asked checkpoint
        is not loaded for a job that will be late: 52 -> 46 GPUs for 90 % on the
        production-like jobs). HOPELESS too when only idle instances hold it."""
        sim = self.sim
        if not sim.holds(kind, m):
            return RUN if self._wanted_soon(queue, kind, m, t) else HOPELESS
        return ELSEWHERE if self._busy_twin(kind, m, inst) else HOPELESS

    def _busy_twin(self, kind: int, m: int, inst: int) -> bool:
        """Another instance of the kind holds model m and runs a segment (so it will ask
        for work again)."""
        sim = self.sim
        resident, seg_jobs = sim.resident, sim.seg_jobs
        return any(i != inst and seg_jobs[i] and m in resident[i] for i in sim.instances_of[kind])

    def _shortest_here(self, queue: SlackQueue, inst: int, h: int) -> int:
        """The shortest job on this instance, a load counted where its model is not
        resident: the shortest queued job of a resident model beats the head when the
        head's run plus its load is longer."""
        sim = self.sim
        m, resident = sim.model[h], sim.resident[inst]
        if not sim.config.cold_start or m in resident:
            return h
        remaining = sim.remaining
        best, size = h, remaining[h] + sim.catalog.load_s[m]
        for other in resident:
            x = queue.shortest_of(other)
            if x is not None and remaining[x] < size:
                best, size = x, remaining[x]
        return best

    def _fill(
        self, queue: SlackQueue, batch: list[int], inst: int, kind: int, t: float
    ) -> list[int]:
        """The batch plus the shortest queued jobs of its model, up to the profiled limit
        and one more than the waiting jobs per instance, while the slower batch still
        meets every member's deadline (true times)."""
        waiting = len(queue)
        if not waiting:
            return batch
        sim = self.sim
        start = t + self._load(sim.model[batch[0]], inst)
        return fill_batch(sim, queue, batch, kind, start, sim.remaining, waiting)

    def on_busy_arrival(self, j: int, kind: int, t: float) -> None:
        """Join a running batch of its model with room; else cut the running segment
        with the most remaining work, if that is more than the arrival's, the arrival's
        model is resident there, and every cut job can still make its deadline."""
        sim = self.sim
        m = sim.model[j]
        limit = sim.catalog.batch_limit(m, sim.ck[kind])
        for i in sim.instances_of[kind]:
            b = sim.seg_jobs[i]
            if b and sim.model[b[0]] == m and len(b) < limit:
                sim.interrupt(i, t)
                return
        if not self.preempt:
            return
        size, deadline = sim.remaining[j], sim.deadline_ts
        worst, worst_rem = -1, size
        for i in sim.instances_of[kind]:
            b = sim.seg_jobs[i]
            if not b or m not in sim.resident[i]:
                continue
            ws = sim.seg_work_start[i]
            done = (t - ws) * sim.seg_speed[i] if t > ws else 0.0
            rem = min(sim.remaining[x] for x in b) - done
            if rem <= worst_rem:
                continue
            if all(t + size + sim.remaining[x] - done <= deadline[x] for x in b):
                worst, worst_rem = i, rem
        if worst >= 0:
            sim.interrupt(worst, t)
