"""The planner's rule, written once: for each candidate (a model on an accelerator) the
fewest steps whose predicted CLIP reaches `min_clip`; among candidates the shortest
predicted run (ties: the larger CLIP margin), which is what SJF needs.

`predictor/planner.py` applies it to the trained predictors' curves, and
`scheduler/options.py` to the reference catalog's, for the simulator."""

from __future__ import annotations

import numpy as np


def fewest_steps(clip: np.ndarray, min_clip: float) -> tuple[np.ndarray, np.ndarray]:
    """clip: (candidates, steps), -inf where a step is not served. Per candidate: whether
    any step reaches `min_clip`, and the index of the first that does."""
    ok = clip >= min_clip
    return ok.any(axis=1), ok.argmax(axis=1)


def shortest(latency: np.ndarray, margin: np.ndarray, candidates: np.ndarray) -> int:
    """Among `candidates` (row indices), the shortest predicted latency; ties go to the
    larger CLIP margin."""
    return int(candidates[np.lexsort((-margin[candidates], latency[candidates]))[0]])
