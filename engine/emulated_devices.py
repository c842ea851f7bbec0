"""Emulated accelerators' timings from the profiles sdaas already has (issue 27: for
scale, a device engine on a GPU we do not have takes each step's time from the profile).

The source is the scheduler's `Catalog` of the reference profiles
(`scheduler.catalog.load_catalog`): per (model, accelerator kind) the batch-1 latency at
steps 1..S, the batch factor curve L(b)/L(1) and the model's load seconds, the numbers
the simulator costs jobs with, so an emulated device runs what the simulator predicts.
(The live core's catalog, `engine.live_catalog`, holds no latencies: serving's come from
the planner per job. It is refused here.)

From a catalog (`timing_from_profile`):

* fixed_s, step_s: a least-squares line `fixed + steps * step` through the batch-1
  latency at every step count the model is served at on that kind. The reference rows
  are linear in steps by construction (`per_step * (steps + k)`), so the line is exact
  there. A fixed part below 0 is taken as 0 (the line then goes through the origin);
  one served step count only: all of its latency is steps.
* batch_factor: the catalog's factors for batch 1..its batch limit (batch 1 only for a
  kind profiled at batch 1 only: the emulator then charges b jobs b times one).
* load_s: the catalog's load seconds of the model (ASSUMED numbers, `LOAD_S`).

This lives in engine/ because the catalog is the scheduler's: models/ (where the
emulated backend is) may not import it.
"""

from __future__ import annotations

import numpy as np

from models.emulated import EmulatedLoader, StepTiming
from scheduler.catalog import Catalog, load_catalog
from sdaas.errors import InvalidInputError


def timing_from_profile(model: str, kind: str, catalog: Catalog | None = None) -> StepTiming:
    """What `model` costs on accelerator `kind` (catalog names: 'sd-1.5', 'A100'), from
    `catalog` (default: the reference catalog over `kind`)."""
    catalog = catalog if catalog is not None else load_catalog([kind])
    if model not in catalog.models:
        raise InvalidInputError(
            f"model {model!r}: not in the catalog; its models: {', '.join(catalog.models)}"
        )
    i, k = catalog.models.index(model), catalog.kind_index(kind)
    if not catalog.can_run(i, k):
        raise InvalidInputError(f"model {model!r}: no profile on {kind}")
    lat = np.asarray(catalog.latency[(i, k)], dtype=float)
    served = np.isfinite(lat)
    steps, seconds = np.asarray(catalog.steps, dtype=float)[served], lat[served]
    if not served.any() or not seconds.any():
        raise InvalidInputError(
            f"model {model!r} on {kind}: the catalog has no latencies for it (the live "
            "catalog has none: use the reference catalog)"
        )
    if len(steps) == 1:
        fixed, step = 0.0, float(seconds[0] / steps[0])
    else:
        step, fixed = (float(v) for v in np.polyfit(steps, seconds, 1))
        if fixed < 0.0:
            fixed, step = 0.0, float(steps @ seconds / (steps @ steps))
    limit = catalog.batch_limit(i, k)
    factor = tuple(float(f) for f in catalog.batch_factor[(i, k)][1 : limit + 1])
    return StepTiming(
        fixed_s=fixed,
        step_s=max(step, 0.0),
        batch_factor=factor,
        load_s=float(catalog.load_s.get(i, 0.0)),
    )


def emulated_loader(
    kind: str, models: list[str] | None = None, catalog: Catalog | None = None, **backend
) -> EmulatedLoader:
    """A device engine's `backend_for` for an emulated `kind`: `models` (default: every
    catalog model profiled on `kind`) by their catalog names, timed from `catalog`
    (default: the reference catalog over `kind`). `backend`: `EmulatedLoader`'s other
    fields (device, size, sleep, clock)."""
    catalog = catalog if catalog is not None else load_catalog([kind])
    if models is None:
        k = catalog.kind_index(kind)
        models = [m for i, m in enumerate(catalog.models) if catalog.can_run(i, k)]
    return EmulatedLoader({m: timing_from_profile(m, kind, catalog) for m in models}, **backend)
