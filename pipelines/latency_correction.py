"""Online correction of latency predictions from what serving observes.

Run times drift from the profiles the predictor learned (measured here: ~20 % between
processes). Per (model, accelerator) the ratio observed run time / predicted run time of
the most recent finished jobs is smoothed with an EWMA and applied to the planner's
predictions for the next window, so admission and SJF order use today's speeds."""

from __future__ import annotations

from adapters.result_store import ResultStore
from sdaas.records import model_key

ALPHA = 0.2  # weight of the newest observation
MIN_OBS = 3  # fewer observations than this: no correction yet
BOUNDS = (0.25, 4.0)  # a ratio outside this is a broken measurement, not drift


def latency_scale(store: ResultStore, *, recent: int = 500) -> dict[tuple[str, str], float]:
    """(name@version, accelerator) -> EWMA of observed run time over the predictor's
    own (uncorrected) prediction: a result's prediction is divided by the correction it
    was planned with, so the correction does not chase itself."""
    ewma: dict[tuple[str, str], float] = {}
    seen: dict[tuple[str, str], int] = {}
    for r in store.recent_done(recent):  # oldest first
        if r.predicted_latency_s <= 0 or r.run_s <= 0:
            continue
        key = (model_key(r.model, r.model_version), r.accelerator)
        base = r.predicted_latency_s / (r.latency_correction or 1.0)
        ratio = min(max(r.run_s / base, BOUNDS[0]), BOUNDS[1])
        ewma[key] = ratio if key not in ewma else (1 - ALPHA) * ewma[key] + ALPHA * ratio
        seen[key] = seen.get(key, 0) + 1
    return {k: v for k, v in ewma.items() if seen[k] >= MIN_OBS}
