"""Correcting latency predictions from what serving observes, with a stated confidence.

A profile can be wrong by a factor, not a few percent: a sweep run while the host was
busy predicted 1.1 s for a job that then ran in 0.05 s. Per (model, accelerator, batch
size) the correction is the median of the last `WINDOW` log ratios observed run time /
the predictor's own (uncorrected) prediction; its 90 % interval comes from their robust
spread (MAD). Where the observations span several step counts, the ratio's trend over
log(steps) is fitted through the per-step-count medians (a profile can be wrong in its
fixed part and its per-step part differently); `Correction.at(steps)` applies it, held
flat outside the observed step range. So:

* it converges to a constant error of any size in one or two observations (no cap: the
  old 4x cap left a 20x error 5x wrong for ever);
* it does not chase noise: one slow run among many moves a median hardly at all;
* it forgets: the last `WINDOW` observations only, so a host that speeds up again is
  followed within that many runs;
* a profile that keeps disagreeing (enough observations, interval outside
  `STALE_BAND`) is *stale*: reported, and `sdaas profile --stale` re-measures it.

Pure: serving feeds it observations from the result store; the planner takes the
factors (`Corrections.scale`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

WINDOW = 20  # observations per key the estimate uses (the most recent)
PRIOR_SPREAD = 0.25  # run-to-run spread (log) assumed until 3 runs show the real one
NOISE_FLOOR = 0.03  # no interval narrower than this spread (timer and scheduling jitter)
Z90 = 1.645
STALE_MIN_OBS = 5
STALE_BAND = (0.8, 1.25)  # a factor surely outside this: the profile is stale
RATIO_BOUNDS = (1e-3, 1e3)  # a ratio outside this is a broken measurement

Key = tuple[str, str, int]  # (name@version, accelerator, batch size)


@dataclass(frozen=True)
class Observation:
    key: Key
    predicted_s: float  # the predictor's prediction, before any correction
    observed_s: float
    steps: int = 0  # the run's denoising steps (0: unknown)


@dataclass(frozen=True)
class Correction:
    """Multiply the prediction by `factor`; the truth is in [low, high] with ~90 %
    confidence, from `n` observations."""

    factor: float
    low: float
    high: float
    n: int
    # log factor = intercept + slope * log(steps) within [steps_lo, steps_hi]; slope 0
    # when the observations hold one step count
    intercept: float = 0.0
    slope: float = 0.0
    steps_lo: int = 1
    steps_hi: int = 1

    def at(self, steps) -> float | np.ndarray:
        """The factor for a run of `steps` (a number or an array)."""
        if self.slope == 0.0:
            return self.factor if np.ndim(steps) == 0 else np.full(np.shape(steps), self.factor)
        s = np.clip(np.asarray(steps, dtype=float), self.steps_lo, self.steps_hi)
        out = np.exp(self.intercept + self.slope * np.log(s))
        return float(out) if np.ndim(steps) == 0 else out

    @property
    def stale(self) -> bool:
        return self.n >= STALE_MIN_OBS and (self.low > STALE_BAND[1] or self.high < STALE_BAND[0])

    def describe(self) -> str:
        return (
            f"observed {self.factor:.2f}x the prediction over {self.n} runs "
            f"(90 %: {self.low:.2f}-{self.high:.2f}x)"
        )


def estimate(log_ratios: list[float], steps: list[int] | None = None) -> Correction:
    r = np.asarray(log_ratios[-WINDOW:], dtype=float)
    m = float(np.median(r))
    if len(r) >= 3:
        spread = max(1.4826 * float(np.median(np.abs(r - m))), NOISE_FLOOR)
    else:
        spread = PRIOR_SPREAD
    half = Z90 * 1.253 * spread / math.sqrt(len(r))  # 1.253: a median's standard error
    base = Correction(math.exp(m), math.exp(m - half), math.exp(m + half), len(r))
    s = np.asarray((steps or [0] * len(log_ratios))[-WINDOW:], dtype=float)
    known = s > 0
    counts = sorted(set(s[known]))
    if len(counts) < 2:
        return base
    x = np.log(counts)
    y = np.array([np.median(r[known & (s == c)]) for c in counts])
    w = np.array([np.sum(known & (s == c)) for c in counts], dtype=float)
    slope, intercept = np.polyfit(x, y, 1, w=np.sqrt(w))
    return Correction(
        base.factor, base.low, base.high, base.n, float(intercept), float(slope),
        int(counts[0]), int(counts[-1]),
    )  # fmt: skip


def factor_at(value, steps) -> float:
    """What a planner scale entry means at `steps`: 1 for none, a number as it is, a
    `Correction` at that step count."""
    if value is None:
        return 1.0
    if isinstance(value, Correction):
        return float(value.at(int(steps)))
    return float(value)


@dataclass(frozen=True)
class Corrections:
    by_key: dict[Key, Correction]

    @classmethod
    def from_observations(cls, observations: Iterable[Observation]) -> Corrections:
        """`observations` oldest first."""
        logs: dict[Key, list[float]] = {}
        steps: dict[Key, list[int]] = {}
        lo, hi = RATIO_BOUNDS
        for o in observations:
            if not (o.predicted_s > 0 and o.observed_s > 0):
                continue
            ratio = o.observed_s / o.predicted_s
            if math.isfinite(ratio) and lo <= ratio <= hi:
                logs.setdefault(o.key, []).append(math.log(ratio))
                steps.setdefault(o.key, []).append(o.steps)
        return cls({k: estimate(v, steps[k]) for k, v in logs.items()})

    def scale(self, batch_size: int = 1) -> dict[tuple[str, str], Correction]:
        """(name@version, accelerator) -> correction at `batch_size`: the planner's input
        (`factor_at` reads an entry)."""
        return {(m, a): c for (m, a, b), c in self.by_key.items() if b == batch_size}

    def stale(self) -> dict[Key, Correction]:
        return {k: c for k, c in self.by_key.items() if c.stale}
