"""Per SLO class and accelerator kind: the option (model, steps, predicted seconds) the
planner would pick, computed once per run so placing a job is a table look-up.

The rule is `scheduler/planning_rule.py`, the one the trained planner uses too: among
models serving the style on that kind, the fewest steps whose CLIP curve reaches
`min_clip + margin`, then the shortest predicted time (ties: the larger CLIP margin)."""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass
class ClassOptions:
    """planned[c][k]: the option at `min_clip + margin`; relaxed[c][k]: at `min_clip +
    relaxed_margin` (what step down-shifting may serve). None where kind k cannot serve
    c."""

    planned: list[list[Option | None]]
    relaxed: list[list[Option | None]]

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

        return cls(
            [scaled(at(c.style, c.min_clip + margin), c.work_scale) for c in classes],
            # down-shifting never aims higher than the plan
            [
                scaled(at(c.style, c.min_clip + min(relaxed_margin, margin)), c.work_scale)
                for c in classes
            ],
        )
