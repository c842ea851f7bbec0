"""Per SLO class and accelerator kind: the option (model, steps, predicted seconds) the
planner would pick, computed once per run so placing a job is a table look-up.

The rule is `scheduler/planning_rule.py`, the one the trained planner uses too: among
models serving the style on that kind, the fewest steps whose CLIP curve reaches
`min_clip + margin`, then the shortest predicted time (ties: the larger CLIP margin)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from scheduler.catalog import Catalog
from scheduler.planning_rule import fewest_steps, shortest
from scheduler.sim_config import SimConfig
from scheduler.workload import SloClass


class Option(NamedTuple):
    """What a job would run on one accelerator kind. A tuple underneath: policies read
    thousands of them per simulated second (`o.pred_s` is as fast as `o[2]`)."""

    model: int  # catalog model index
    steps: int
    pred_s: float  # predicted batch-1 seconds
    clip: float = math.nan  # predicted CLIP (serving's planner; the catalog's curves here)

    def scaled(self, by: float) -> Option:
        return self if by == 1.0 else self._replace(pred_s=self.pred_s * by)


def best_option(catalog: Catalog, style: str, min_clip: float, kind: int) -> Option | None:
    rows = [
        m
        for m, name in enumerate(catalog.models)
        if style in catalog.styles[name] and catalog.can_run(m, kind)
    ]
    if not rows:
        return None
    lat = np.vstack([catalog.latency[(m, kind)] for m in rows])
    clip = np.where(np.isfinite(lat), np.vstack([catalog.clip[m] for m in rows]), -np.inf)
    has, first = fewest_steps(clip, min_clip)
    if not has.any():
        return None
    idx = np.arange(len(rows))
    b = shortest(lat[idx, first], clip[idx, first] - min_clip, np.flatnonzero(has))
    return Option(rows[b], int(catalog.steps[first[b]]), float(lat[b, first[b]]),
                  float(clip[b, first[b]]))  # fmt: skip


def steps_between(catalog: Catalog, planned: Option | None, relaxed: Option | None,
                  kind: int, scale: float = 1.0) -> tuple[Option, ...]:  # fmt: skip
    """The planned model at each step count strictly between the relaxed option's and
    the plan's, most steps first (so the most CLIP first): what a job may run when its
    plan is late and the down-shifted option would give up more CLIP than its deadline
    asks. Seconds times `scale` (the class's work scale, as its options have). Empty
    when the two use different models or adjacent step counts."""
    if planned is None or relaxed is None or planned.model != relaxed.model:
        return ()
    m = planned.model
    lat, clip = catalog.latency[(m, kind)], catalog.clip[m]
    # steps 1..S, index s - 1; off the model's grid its latency is +inf
    return tuple(Option(m, s, float(lat[s - 1]) * scale, float(clip[s - 1]))
                 for s in range(planned.steps - 1, relaxed.steps, -1)
                 if math.isfinite(lat[s - 1]))  # fmt: skip


@dataclass
class ClassOptions:
    """planned[c][k]: the option at `min_clip + margin`; relaxed[c][k]: at `min_clip +
    relaxed_margin` (what step down-shifting may serve). None where kind k cannot serve
    c. `between_of(c, k)`: the planned model's step counts between the two, most steps
    first (`steps_between`), given as `between[c][k]` or, by `build`, worked out when
    first asked (a production workload has a class per job, most never asked); empty
    where there are none: serving, which plans no down-shift, has none."""

    planned: list[list[Option | None]]
    relaxed: list[list[Option | None]]
    between: list[list[tuple[Option, ...]]] = field(default_factory=list)
    # (c, k) -> between_of(c, k), when `between` is not given
    lazy: Callable[[int, int], tuple[Option, ...]] | None = field(default=None, repr=False)
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def between_of(self, c: int, k: int) -> tuple[Option, ...]:
        if self.between:
            return self.between[c][k]
        if self.lazy is None:
            return ()
        key = (c, k)
        if key not in self._memo:
            self._memo[key] = self.lazy(c, k)
        return self._memo[key]

    def subset(self, classes: list[int]) -> ClassOptions:
        """The options of `classes` (indices), in that order."""
        planned = [self.planned[c] for c in classes]
        relaxed = [self.relaxed[c] for c in classes]
        if self.between:
            return ClassOptions(planned, relaxed, [self.between[c] for c in classes])
        return ClassOptions(planned, relaxed, lazy=lambda c, k: self.between_of(classes[c], k))

    @classmethod
    def for_run(
        cls,
        catalog: Catalog,
        classes: tuple[SloClass, ...],
        kinds: list[int],
        config: SimConfig,
        margin_override: float | None = None,
    ) -> ClassOptions:
        """The options a run plans with (`Simulator.begin`'s default): at the policy's
        `clip_margin_override` where it has one (the oracle plans at min CLIP exactly),
        else at the config's `clip_margin`; relaxed at the config's `relaxed_margin`."""
        margin = config.clip_margin if margin_override is None else margin_override
        return cls.build(catalog, classes, kinds, margin, config.relaxed_margin)

    @classmethod
    def build(
        cls,
        catalog: Catalog,
        classes: tuple[SloClass, ...],
        kinds: list[int],
        margin: float,
        relaxed_margin: float = 0.0,
    ) -> ClassOptions:
        memo: dict[tuple[str, float], list[Option | None]] = {}

        def at(style: str, clip: float) -> list[Option | None]:
            """Per kind, memoised: classes that differ only in latency SLO (one class per
            job, as replays and production workloads have) share their options."""
            if (style, clip) not in memo:
                memo[(style, clip)] = [best_option(catalog, style, clip, k) for k in kinds]
            return memo[(style, clip)]

        def scaled(opts: list[Option | None], by: float) -> list[Option | None]:
            if by == 1.0:
                return opts
            return [None if o is None else o.scaled(by) for o in opts]

        low = min(relaxed_margin, margin)  # down-shifting never aims higher than the plan

        def between(c: int, k: int) -> tuple[Option, ...]:
            cl = classes[c]
            return steps_between(catalog, at(cl.style, cl.min_clip + margin)[k],
                                 at(cl.style, cl.min_clip + low)[k], kinds[k],
                                 cl.work_scale)  # fmt: skip

        return cls(
            [scaled(at(c.style, c.min_clip + margin), c.work_scale) for c in classes],
            [scaled(at(c.style, c.min_clip + low), c.work_scale) for c in classes],
            lazy=between,
        )
