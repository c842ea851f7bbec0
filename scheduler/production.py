"""A production-like text-to-image request stream, from the published statistics of a
production trace (Alibaba, 2025: 26,823 requests over 23 days; the figures are in
PRODUCTION and in data/SOURCES.md). The trace itself is not public; these are its
marginals, and `tests/scheduler/test_production.py` checks that the stream reproduces
them within 10 %.

What a request asks for: steps (30 in 90.6 %, 40 in 5.1 %, the rest 1-100), images
(1, 2, 4 or 8), a checkpoint from a long tail (86 of them, Zipf: the most popular takes
31 %), and, for 17 %, a LoRA (which roughly doubles execution time).

When requests arrive: by the hour, a third of the hours empty (the night: the same 8
hours of every day) and the busiest hour at 9.2x the mean hour (the other hours' counts
are lognormal quantiles in random order, so the shape is the same for every seed);
within an hour, in sessions (a user submitting a few requests seconds apart). The
nights' long gaps and the sessions' short ones make the inter-arrival CV about 12,
where Poisson arrivals have 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sdaas.errors import InvalidInputError


@dataclass(frozen=True)
class ProductionStats:
    """The published figures (and the two knobs of the session model, tuned to them)."""

    requests: int = 26_823
    days: int = 23
    steps: dict[int, float] = field(
        default_factory=lambda: {
            30: 0.906,
            40: 0.051,
            20: 0.015,
            50: 0.012,
            25: 0.008,
            4: 0.004,
            100: 0.004,
        }  # fmt: skip
    )
    images: dict[int, float] = field(default_factory=lambda: {1: 0.58, 2: 0.08, 4: 0.20, 8: 0.14})
    checkpoints: int = 86
    top_checkpoint_share: float = 0.31
    lora_share: float = 0.17
    lora_cost: float = 2.0  # execution time with one LoRA over without
    empty_hour_share: float = 1 / 3
    peak_hour_ratio: float = 9.2  # busiest hour / mean hour
    interarrival_cv: float = 12.0
    # sessions: requests per session (geometric mean) and seconds between them
    session_requests: float = 8.0
    session_gap_s: float = 5.0


PRODUCTION = ProductionStats()


@dataclass
class Requests:
    """n requests, sorted by arrival (seconds from the first hour's start)."""

    arrival: np.ndarray
    steps: np.ndarray
    images: np.ndarray
    checkpoint: np.ndarray  # 0 = the most popular
    lora: np.ndarray  # bool

    @property
    def n(self) -> int:
        return len(self.arrival)


def _solve_increasing(f, target: float, lo: float = 0.0, hi: float = 5.0) -> float:
    """x in [lo, hi] where the increasing function f reaches `target` (bisection)."""
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return (lo + hi) / 2


def zipf_exponent(n: int, top_share: float) -> float:
    """The exponent s at which the first of n Zipf ranks takes `top_share`."""
    ranks = np.arange(1, n + 1, dtype=float)
    return _solve_increasing(lambda s: 1.0 / np.sum(ranks**-s), top_share)


def hourly_counts(stats: ProductionStats, hours: int, total: int, rng) -> np.ndarray:
    """Requests per hour: the first `empty_hour_share` of every day's hours have none;
    the others get lognormal quantiles (sigma set so the busiest hour is
    `peak_hour_ratio` x the mean hour), shuffled, scaled to `total`."""
    night = round(24 * stats.empty_hour_share)
    open_hours = np.flatnonzero(np.arange(hours) % 24 >= night)
    if not len(open_hours):  # shorter than a night: every hour is open
        open_hours = np.arange(hours)
    active = len(open_hours)
    q = (np.arange(active) + 0.5) / active
    z = np.sqrt(2) * _erfinv(2 * q - 1)
    target = stats.peak_hour_ratio * active / hours  # peak over the mean active hour

    def peak(sig: float) -> float:
        w = np.exp(sig * z)
        return w.max() / w.mean()

    w = np.exp(_solve_increasing(peak, target) * z)
    counts = np.zeros(hours)
    counts[open_hours] = rng.permutation(w)
    scaled = counts / counts.sum() * total
    out = np.floor(scaled).astype(int)
    out[np.argsort(scaled - out)[::-1][: total - out.sum()]] += 1  # largest remainders
    return out


def arrivals_in_sessions(counts: np.ndarray, stats: ProductionStats, rng) -> np.ndarray:
    """Each hour's requests in sessions that start uniformly in the hour; a session's
    requests are `session_gap_s` apart on average (exponential)."""
    out = []
    for h, c in enumerate(counts):
        left = int(c)
        while left > 0:
            size = min(left, int(rng.geometric(1.0 / stats.session_requests)))
            t0 = 3600.0 * (h + rng.random())
            gaps = np.r_[0.0, rng.exponential(stats.session_gap_s, size - 1)]
            out.append(np.minimum(t0 + np.cumsum(gaps), 3600.0 * (h + 1) - 1e-6))
            left -= size
    return np.sort(np.concatenate(out)) if out else np.zeros(0)


def production_requests(
    n: int | None = None,
    *,
    seed: int = 0,
    days: float | None = None,
    stats: ProductionStats = PRODUCTION,
) -> Requests:
    """n requests (default: the trace's count) over `days` (default: the trace's days
    scaled by n / requests, so the rate per hour is the trace's; fewer days: a busier
    service with the same daily shape, in real time)."""
    n = stats.requests if n is None else n
    if not (isinstance(n, int) and n >= 2):
        raise InvalidInputError(f"requests: {n!r}: must be an integer >= 2")
    if days is not None and not (math.isfinite(days) and days > 0):
        raise InvalidInputError(f"days: {days!r}: must be a number > 0")
    rng = np.random.default_rng(seed)
    span_days = stats.days * n / stats.requests if days is None else days
    hours = max(1, math.ceil(span_days * 24))
    arrival = arrivals_in_sessions(hourly_counts(stats, hours, n, rng), stats, rng)

    def draw(mix: dict[int, float]) -> np.ndarray:
        keys = np.array(list(mix))
        p = np.array(list(mix.values()))
        return keys[rng.choice(len(keys), size=n, p=p / p.sum())]

    s = zipf_exponent(stats.checkpoints, stats.top_checkpoint_share)
    pop = np.arange(1, stats.checkpoints + 1, dtype=float) ** -s
    return Requests(
        arrival=arrival,
        steps=draw(stats.steps),
        images=draw(stats.images),
        checkpoint=rng.choice(stats.checkpoints, size=n, p=pop / pop.sum()),
        lora=rng.random(n) < stats.lora_share,
    )


def _erfinv(y: np.ndarray) -> np.ndarray:
    """Inverse error function (Giles' approximation refined by two Newton steps): no
    scipy at run time."""
    y = np.clip(np.asarray(y, float), -1 + 1e-15, 1 - 1e-15)
    w = -np.log((1.0 - y) * (1.0 + y))
    x = np.where(
        w < 5.0,
        _poly(w - 2.5, (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
                        0.00021858087, -0.00125372503, -0.00417768164, 0.246640727,
                        1.50140941)),
        _poly(np.sqrt(w) - 3.0, (-0.000200214257, 0.000100950558, 0.00134934322,
                                 -0.00367342844, 0.00573950773, -0.0076224613,
                                 0.00943887047, 1.00167406, 2.83297682)),
    ) * y  # fmt: skip
    for _ in range(2):
        err = np.vectorize(math.erf)(x) - y
        x = x - err / (2 / math.sqrt(math.pi) * np.exp(-(x**2)))
    return x


def _poly(w: np.ndarray, coeffs: tuple[float, ...]) -> np.ndarray:
    p = np.zeros_like(w)
    for c in coeffs:
        p = p * w + c
    return p
