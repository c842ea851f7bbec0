"""Per SLO class and accelerator kind: the option (model, steps, predicted seconds) the
planner would pick, computed once per run so placing a job is a table look-up.

The rule is the planner's (`predictor/planner.py`): among models serving the style on
that kind, the fewest steps whose CLIP curve reaches `min_clip + margin`, then the
shortest predicted time (ties: the larger CLIP margin)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.catalog import Catalog
from scheduler.workload import SloClass

Option = tuple[int, int, float]  # (model index, steps, predicted batch-1 seconds)


def best_option(catalog: Catalog, style: str, min_clip: float, kind: int) -> Option | None:
    best: tuple[float, float, Option] | None = None
    for m, name in enumerate(catalog.models):
        if style not in catalog.styles[name] or not catalog.can_run(m, kind):
            continue
        ok = np.flatnonzero(catalog.clip[m] >= min_clip)
        lat = catalog.latency[(m, kind)]
        ok = ok[np.isfinite(lat[ok])]
        if not len(ok):
            continue
        i = int(ok[0])
        key = (float(lat[i]), -float(catalog.clip[m][i]))
        if best is None or key < best[:2]:
            best = (*key, (m, int(catalog.steps[i]), float(lat[i])))
    return None if best is None else best[2]


@dataclass
class ClassOptions:
    """planned[c][k]: the option at `min_clip + margin`; relaxed[c][k]: at `min_clip`
    exactly (what step down-shifting may serve). None where kind k cannot serve c."""

    planned: list[list[Option | None]]
    relaxed: list[list[Option | None]]

    @classmethod
    def build(
        cls, catalog: Catalog, classes: tuple[SloClass, ...], kinds: list[int], margin: float
    ) -> ClassOptions:
        return cls(
            [
                [best_option(catalog, c.style, c.min_clip + margin, k) for k in kinds]
                for c in classes
            ],
            [[best_option(catalog, c.style, c.min_clip, k) for k in kinds] for c in classes],
        )
