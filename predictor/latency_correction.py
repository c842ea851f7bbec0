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

On top of that, the host's speed *now* (`Drift`, one per accelerator kind): a host drifts
over minutes (another process, clocks, co-located work) and every model on it slows or
speeds up together, faster than a 20-run median per key follows. Every timed observation
(any key) is a measurement of it: its log ratio less its key's correction, as the key's
runs before it gave it. The drift is a local-level filter on the log factor, mean-reverting
to 0 (an Ornstein-Uhlenbeck process: time constant `DRIFT_TAU_S`, stationary spread
`DRIFT_SD`): each observation moves it by the Kalman gain (its variance against the
key's run-to-run spread), the median of the last three recent residuals is what it is
moved toward (one outlier never moves it; a change seen twice is followed), and between
observations it decays toward 1 while its interval widens back to the prior's. Each key's
median is taken over its log ratios less the drift before each run, so what the drift
explains is not counted twice. The planner's factor is the key's correction x the drift
at `now`, their intervals combined.

Pure: no clock inside. Serving feeds it observations from the result store (with the
time each was stored) and the time to evaluate the drift at; the planner takes the
factors (`Corrections.scale`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from statistics import median

import numpy as np

WINDOW = 20  # observations per key the estimate uses (the most recent)
PRIOR_SPREAD = 0.25  # run-to-run spread (log) assumed until 3 runs show the real one
NOISE_FLOOR = 0.03  # no interval narrower than this spread (timer and scheduling jitter)
Z90 = 1.645
STALE_MIN_OBS = 5
STALE_BAND = (0.8, 1.25)  # a factor surely outside this: the profile is stale
RATIO_BOUNDS = (1e-3, 1e3)  # a ratio outside this is a broken measurement
# the host drift (per accelerator kind): a log factor that reverts to 0 with this time
# constant (its half-life: 0.69 x this) when not observed, and whose spread, with no
# observation for long, is this (from bench/results/predictor_bench.json: one fixed cell
# over 3 minutes within 15 % of its median 65 % of the time, back to back 92 %: about
# 0.06 run-to-run and 0.09 drift)
DRIFT_TAU_S = 60.0
DRIFT_SD = 0.10
DRIFT_RECENT_S = 60.0  # residuals this recent enter the median of three
DRIFT_LONE_CLIP = 3.0  # a residual with nothing recent beside it moves it <= this many sd
# the drift is filtered over the newest observations only: those at most this old (5
# time constants: what is older weighs < 1 %), and at most this many
DRIFT_HISTORY_S = 300.0
DRIFT_HISTORY_N = 500

Key = tuple[str, str, int]  # (name@version, accelerator, batch size)


@dataclass(frozen=True)
class Observation:
    key: Key
    predicted_s: float  # the predictor's prediction, before any correction
    observed_s: float
    steps: int = 0  # the run's denoising steps (0: unknown)
    # when it was observed (seconds, the store's clock); None: unknown, no drift update
    ts: float | None = field(default=None, compare=False)


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
    spread: float = PRIOR_SPREAD  # run-to-run spread (log) of the runs it is taken from

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
    # plain Python, not numpy: the drift takes one of these per observation (20 numbers)
    r = [float(v) for v in log_ratios[-WINDOW:]]
    m = median(r)
    if len(r) >= 3:
        spread = max(1.4826 * median([abs(v - m) for v in r]), NOISE_FLOOR)
    else:
        spread = PRIOR_SPREAD
    half = Z90 * 1.253 * spread / math.sqrt(len(r))  # 1.253: a median's standard error
    base = Correction(math.exp(m), math.exp(m - half), math.exp(m + half), len(r),
                      spread=spread)  # fmt: skip
    by_count: dict[int, list[float]] = {}
    for n, v in zip((steps or [0] * len(log_ratios))[-WINDOW:], r, strict=True):
        if n > 0:
            by_count.setdefault(int(n), []).append(v)
    if len(by_count) < 2:
        return base
    counts = sorted(by_count)
    # least squares of the per-step-count medians over log(steps), weighted by how many
    # runs each median is of
    x = [math.log(c) for c in counts]
    y = [median(by_count[c]) for c in counts]
    w = [len(by_count[c]) for c in counts]
    sw = sum(w)
    mx = sum(wi * xi for wi, xi in zip(w, x, strict=True)) / sw
    my = sum(wi * yi for wi, yi in zip(w, y, strict=True)) / sw
    sxx = sum(wi * (xi - mx) ** 2 for wi, xi in zip(w, x, strict=True))
    slope = sum(wi * (xi - mx) * (yi - my) for wi, xi, yi in zip(w, x, y, strict=True)) / sxx
    return Correction(
        base.factor, base.low, base.high, base.n, my - slope * mx, slope,
        counts[0], counts[-1], spread,
    )  # fmt: skip


@dataclass(frozen=True)
class Drift:
    """The host's speed against the per-key corrected prediction, as of `ts`: the run
    time is `factor` x that prediction, within [low, high] with ~90 % confidence.
    `level` and `var`: the log factor's estimate and its variance; `n`: observations."""

    level: float = 0.0
    var: float = DRIFT_SD**2
    ts: float | None = None
    n: int = 0
    recent: tuple[tuple[float, float], ...] = ()  # (ts, residual): the last three at most

    @property
    def factor(self) -> float:
        return math.exp(self.level)

    @property
    def low(self) -> float:
        return math.exp(self.level - Z90 * math.sqrt(self.var))

    @property
    def high(self) -> float:
        return math.exp(self.level + Z90 * math.sqrt(self.var))

    def at(self, now: float | None) -> Drift:
        """As of `now`: decayed toward 1, its variance grown toward the prior's, by the
        time since it was last observed (an Ornstein-Uhlenbeck step)."""
        if now is None or self.ts is None or now <= self.ts:
            return self if self.ts is not None or now is None else replace(self, ts=now)
        a = math.exp(-(now - self.ts) / DRIFT_TAU_S)
        var = self.var * a * a + DRIFT_SD**2 * (1.0 - a * a)
        return replace(self, level=self.level * a, var=var, ts=now)

    def observe(self, ts: float, residual: float, noise_var: float) -> Drift:
        """One run's log ratio less its key's correction (`residual`), whose own
        run-to-run variance is `noise_var`."""
        prior = self.at(ts)
        recent = (*[(t, r) for t, r in prior.recent if ts - t <= DRIFT_RECENT_S][-2:],
                  (ts, residual))  # fmt: skip
        innovation = median([r for _, r in recent]) - prior.level
        if len(recent) == 1:  # nothing recent to take a median with: a bounded step
            bound = DRIFT_LONE_CLIP * math.sqrt(prior.var + noise_var)
            innovation = min(max(innovation, -bound), bound)
        gain = prior.var / (prior.var + noise_var)
        return replace(prior, level=prior.level + gain * innovation,
                       var=(1.0 - gain) * prior.var, n=prior.n + 1,
                       recent=recent)  # fmt: skip

    def describe(self) -> str:
        return (
            f"host at {self.factor:.2f}x the corrected prediction "
            f"(90 %: {self.low:.2f}-{self.high:.2f}x, {self.n} runs)"
        )


def with_drift(c: Correction, d: Drift) -> Correction:
    """A key's correction times the host drift, their 90 % intervals combined (in log
    space, in quadrature)."""
    lo, hi = math.log(c.factor / c.low), math.log(c.high / c.factor)
    dh = Z90 * math.sqrt(d.var)
    f = c.factor * d.factor
    return replace(c, factor=f, low=f * math.exp(-math.hypot(lo, dh)),
                   high=f * math.exp(math.hypot(hi, dh)),
                   intercept=c.intercept + d.level)  # fmt: skip


class Scale(dict):
    """(name@version, accelerator) -> `Correction`, drift included; a key with no runs of
    its own on a kind with a drift gets the drift alone (the host slows every model)."""

    def __init__(self, entries, drift: dict[str, Drift]):
        super().__init__(entries)
        self.drift = drift

    def get(self, key, default=None):
        if key in self:
            return self[key]
        d = self.drift.get(key[1]) if isinstance(key, tuple) and len(key) == 2 else None
        if d is None or d.n == 0:
            return default
        return with_drift(Correction(1.0, 1.0, 1.0, 0), d)


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
    by_key: dict[Key, Correction]  # per key, the host drift taken out
    drift: dict[str, Drift] = field(default_factory=dict)  # per accelerator kind, at `now`

    @classmethod
    def from_observations(
        cls, observations: Iterable[Observation], now: float | None = None, drift: bool = True
    ) -> Corrections:
        """`observations` oldest first. `now`: when the drift is wanted (default: the
        newest observation's time); `drift=False`: per-key corrections alone, from the
        plain log ratios (as before the drift was tracked)."""
        valid = []
        lo, hi = RATIO_BOUNDS
        for o in observations:
            if not (o.predicted_s > 0 and o.observed_s > 0):
                continue
            ratio = o.observed_s / o.predicted_s
            if math.isfinite(ratio) and lo <= ratio <= hi:
                valid.append((o, math.log(ratio)))
        stamps = [o.ts for o, _ in valid if o.ts is not None]
        newest = max(stamps) if stamps and drift else None
        oldest = -math.inf
        if newest is not None:  # the drift's filter starts here
            oldest = max(newest - DRIFT_HISTORY_S, sorted(stamps)[-DRIFT_HISTORY_N:][0])
        logs: dict[Key, list[float]] = {}
        steps: dict[Key, list[int]] = {}
        drifts: dict[str, Drift] = {}
        for o, x in valid:
            if newest is not None and o.ts is not None and o.ts >= oldest:
                d = drifts.get(o.key[1], Drift()).at(o.ts)
                before = logs.get(o.key)
                if before:  # a residual against what the key's earlier runs say
                    c = estimate(before, steps[o.key])
                    residual = x - math.log(c.at(o.steps or c.steps_lo))
                    noise = c.spread**2 * (1.0 + 0.5 * math.pi / min(c.n, WINDOW))
                    drifts[o.key[1]] = d.observe(o.ts, residual, noise)
                else:  # a key's first run sets its correction, not the host's drift
                    drifts[o.key[1]] = d
                x -= d.level  # the key's own input: its log ratio less the drift then
            logs.setdefault(o.key, []).append(x)
            steps.setdefault(o.key, []).append(o.steps)
        at = newest if now is None else now
        return cls(
            {k: estimate(v, steps[k]) for k, v in logs.items()},
            {kind: d.at(at) for kind, d in drifts.items()},
        )

    def scale(self, batch_size: int = 1) -> Scale:
        """(name@version, accelerator) -> correction at `batch_size`, the host drift on
        its kind included: the planner's input (`factor_at` reads an entry)."""
        none = Drift()
        return Scale(
            {
                (m, a): with_drift(c, self.drift.get(a, none)) if a in self.drift else c
                for (m, a, b), c in self.by_key.items()
                if b == batch_size
            },
            self.drift,
        )

    def stale(self) -> dict[Key, Correction]:
        return {k: c for k, c in self.by_key.items() if c.stale}
