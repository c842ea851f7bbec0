"""The catalog the live core plans with: the served models, which kind runs which, and
what a batch costs there. The simulator's catalog comes from profiles; serving's
options come from the trained planner per job, so this one holds only what the core
needs beyond them."""

from __future__ import annotations

import numpy as np

from scheduler.catalog import Catalog


def live_catalog(
    planner,
    models: list[str],
    kinds: list[str],
    runs_on,
    load_s: dict[str, float] | None = None,
    max_resident: int | None = None,
) -> Catalog:
    """What the core needs of the served models beyond the planner's options: which
    model may run on which kind, and what a batch costs there. A batch of b costs
    factor(b) x one job, from the latency predictor at the model's most profiled steps,
    for the batch sizes it was profiled at (interpolated between them, none beyond):
    a model profiled at batch 1 only is never batched. Load times as measured here
    (`load_s`, model key -> s), charged only under a residency bound (`max_resident`
    per device; None: every model resident); price 1 per kind (INFaaS's cost rule then
    picks the fastest)."""
    steps = max(o.steps_max for o in planner.options)
    grid = np.arange(1, steps + 1)
    factors = {}
    for m, k in runs_on:
        key, kind = models[m], kinds[k]
        option = planner.options[m]
        sizes = sorted({1, *planner.profiled_batches.get(key, [1])})
        at = planner.probe_steps(option)[1]
        res = option.resolutions[0]
        try:
            one = planner.predicted_s(key, kind, at, res)
            known = [planner.predicted_s(key, kind, at, res, b) / one for b in sizes]
        except Exception:  # noqa: BLE001 - a planner without those batch sizes: batch 1
            sizes, known = [1], [1.0]
        f = np.full(max(sizes) + 1, np.inf)
        f[1:] = np.interp(np.arange(1, max(sizes) + 1), sizes, known)
        f[1] = 1.0
        factors[(m, k)] = f
    return Catalog(
        models=models,
        kinds=kinds,
        styles={m: () for m in models},
        steps=grid,
        latency={mk: np.zeros(steps) for mk in runs_on},
        batch_factor=factors,
        clip={m: np.zeros(steps) for m in range(len(models))},
        load_s={m: (load_s or {}).get(key, 0.0) for m, key in enumerate(models)},
        price_per_hour={k: 1.0 for k in range(len(kinds))},
        max_resident={k: max_resident or max(1, len(models)) for k in range(len(kinds))},
    )
