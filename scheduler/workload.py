"""Workloads: arrival times (Poisson, bursty Gamma, Markov-modulated Poisson, or a
replayed trace) and each job's SLO class, plus the per-job draws that make the truth
differ from the prediction.

Every random draw happens here, up front, from one seeded generator: two policies run
on the same Workload see exactly the same jobs, arrivals and true run times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdaas.errors import InvalidInputError


@dataclass(frozen=True)
class SloClass:
    """What a user asks for: a style, a latency SLO and a minimum CLIP score.
    `work_scale`: the job's work over one image's (several images, a LoRA)."""

    style: str
    latency_slo_s: float
    min_clip: float
    weight: float = 1.0
    work_scale: float = 1.0


def slo_mix(name: str, styles: list[str]) -> tuple[SloClass, ...]:
    """Named SLO mixes over the served styles. `mixed`: tight (1 s) and loose (5 s, the
    DiffServe SLO for SD 1.5) latency x low (25) and high (29.5) min CLIP, equally likely.
    `tight` / `loose`: only that latency. `uniform`: one class (the theory tests)."""
    lat = {"mixed": (1.0, 5.0), "tight": (1.0,), "loose": (5.0,)}
    if name == "uniform":
        return (SloClass(styles[0], 1e9, 0.0),)
    if name not in lat:
        raise InvalidInputError(
            f"slo mix: {name!r}: unknown; known: {', '.join([*lat, 'uniform'])}"
        )
    return tuple(SloClass(s, slo, c) for s in styles for slo in lat[name] for c in (25.0, 29.5))


@dataclass
class Workload:
    """n jobs. `true_factor`: true run time / predicted run time (same for whatever option
    serves the job). `clip_noise`: standard-normal draw scaling the CLIP noise."""

    name: str
    arrival: np.ndarray  # seconds, sorted
    cls: np.ndarray  # index into classes
    classes: tuple[SloClass, ...]
    true_factor: np.ndarray
    clip_noise: np.ndarray

    @property
    def n(self) -> int:
        return len(self.arrival)

    def interarrival_cv(self) -> float:
        gaps = np.diff(self.arrival)
        return float(gaps.std() / gaps.mean()) if len(gaps) > 1 and gaps.mean() > 0 else 0.0


def realised_rate(arrival: np.ndarray) -> float:
    """Arrivals per second as a run sees them: (n - 1) gaps over the span from the
    first arrival to the last."""
    return (len(arrival) - 1) / float(arrival[-1] - arrival[0])


def at_exact_rate(arrival: np.ndarray, rate: float) -> np.ndarray:
    """The arrivals from t=0, time scaled so that their realised rate is exactly `rate`:
    a load is then the load the run offers, not the generator's mean (n draws of a
    bursty process miss its mean rate by several %, a trace's first n arrivals by
    more)."""
    a = np.asarray(arrival, float)
    a = a - a[0] if len(a) else a
    if len(a) < 2 or a[-1] <= 0:  # no gaps to scale
        return a
    return a * (realised_rate(a) / rate)


def poisson_arrivals(rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n Poisson arrivals whose realised rate is exactly `rate` (n >= 2)."""
    _check_rate(rate)
    return at_exact_rate(np.cumsum(rng.exponential(1.0 / rate, n)), rate)


def bursty_arrivals(rate: float, n: int, rng: np.random.Generator, cv: float = 5.0) -> np.ndarray:
    """Gamma inter-arrivals with mean 1/rate and coefficient of variation `cv` (shape
    1/cv^2): cv 5 gives long quiet gaps and dense bursts, the production trace has 11.6."""
    _check_rate(rate)
    if not cv > 0:
        raise InvalidInputError(f"cv: {cv!r}: must be > 0")
    shape = 1.0 / cv**2
    return at_exact_rate(np.cumsum(rng.gamma(shape, 1.0 / (rate * shape), n)), rate)


# The Markov-modulated Poisson workload's defaults: a quiet state and a burst state at 10x
# its rate; 60 s quiet, 10 s of burst on average (in the comparison: seconds at load 1.0
# of the cluster's capacity; a load rescales time). The burst state offers 4.4x the mean
# rate for 14 % of the time; at 23.7 jobs/s (8xA100+8xT4's capacity) counts in 10 s
# windows have an index of dispersion (variance / mean) of about 340, where a Poisson
# stream has 1, and the inter-arrival CV is 1.75.
MMPP_RATES = (1.0, 10.0)
MMPP_DWELL_S = (60.0, 10.0)


def mmpp_check(rates, dwell_s) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The MMPP's parameters as floats, or the error that says what is wrong."""
    rates, dwell_s = tuple(rates), tuple(dwell_s)
    problems = []
    if len(rates) < 2:
        problems.append(f"mmpp rates: {rates!r}: give one rate per state, at least 2")
    if len(dwell_s) != len(rates):
        problems.append(f"mmpp dwell: {len(dwell_s)} values for {len(rates)} states")
    for x in rates:
        if not (isinstance(x, int | float) and math.isfinite(x) and x >= 0):
            problems.append(f"mmpp rate: {x!r}: must be a finite number >= 0")
    for x in dwell_s:
        if not (isinstance(x, int | float) and math.isfinite(x) and x > 0):
            problems.append(f"mmpp dwell: {x!r} s: must be a finite number > 0")
    if not problems and not any(r > 0 for r in rates):
        problems.append(f"mmpp rates: {rates!r}: at least one must be > 0")
    if problems:
        raise InvalidInputError("; ".join(problems))
    return tuple(map(float, rates)), tuple(map(float, dwell_s))


def mmpp_mean_rate(rates, dwell_s) -> float:
    """The stationary mean of `mmpp_arrivals`' rate: each state's rate weighted by its
    share of time, which is proportional to its mean dwell (every state is entered
    equally often: the chain jumps to each other state with equal probability)."""
    rates, dwell_s = mmpp_check(rates, dwell_s)
    r, d = np.asarray(rates), np.asarray(dwell_s)
    return float((r * d).sum() / d.sum())


def mmpp_arrivals(
    rate: float,
    n: int,
    rng: np.random.Generator,
    rates=MMPP_RATES,
    dwell_s=MMPP_DWELL_S,
) -> np.ndarray:
    """n arrivals of a Markov-modulated Poisson process: a hidden state k in 0..K-1 stays
    for an exponential time of mean `dwell_s[k]` seconds, then jumps to another state,
    each with equal probability (K = 2: they alternate); in state k, arrivals are Poisson
    at `rates[k]`, scaled by one factor so that the stationary mean rate
    (`mmpp_mean_rate`) is `rate`. `rates` are relative (only their ratios matter);
    `dwell_s` is in seconds of the returned clock. The first state is drawn from the
    stationary share of time. Returned as drawn, from the first state's start: the
    realised rate of n arrivals misses `rate` by a few % (bursts are lumpy); pass them
    through `at_exact_rate` for a run at exactly `rate`."""
    _check_rate(rate)
    rates, dwell_s = mmpp_check(rates, dwell_s)
    if not (isinstance(n, int) and n >= 1):
        raise InvalidInputError(f"jobs: {n!r}: must be an integer >= 1")
    k_n = len(rates)
    lam = np.asarray(rates) * (rate / mmpp_mean_rate(rates, dwell_s))
    dwell = np.asarray(dwell_s)
    share = dwell / dwell.sum()
    # enough sojourns for n arrivals on average, drawn in chunks until there are n
    per_sojourn = float((lam * dwell).mean())
    chunk = max(64, int(2 * n / max(per_sojourn, 1e-9)) + 16)
    out: list[np.ndarray] = []
    got, t0 = 0, 0.0
    state = int(rng.choice(k_n, p=share))
    while got < n:
        # the chain's states: each jump goes to one of the K - 1 others, uniformly
        jumps = rng.integers(1, k_n, size=chunk)
        states = (state + np.concatenate([[0], np.cumsum(jumps[:-1])])) % k_n
        lengths = rng.exponential(dwell[states])
        starts = t0 + np.concatenate([[0.0], np.cumsum(lengths[:-1])])
        counts = rng.poisson(lam[states] * lengths)
        total = int(counts.sum())
        if total:
            owner = np.repeat(np.arange(chunk), counts)
            times = starts[owner] + rng.random(total) * lengths[owner]
            out.append(np.sort(times))
            got += total
        t0 = float(starts[-1] + lengths[-1])
        state = int((states[-1] + jumps[-1]) % k_n)
    return np.concatenate(out)[:n]


def read_trace(path: Path) -> np.ndarray:
    """Arrival times in seconds from a trace file: one request per line, `arrival_ms[,...]`
    (the DiffServe format). Times must be finite, >= 0 and sorted."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"trace: {str(path)!r}: no such file")
    times = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        field = line.split(",")[0]
        try:
            ms = float(field)
        except ValueError:
            raise InvalidInputError(
                f"trace {path.name} line {no}: arrival {field!r}: not a number (ms)"
            ) from None
        if not math.isfinite(ms) or ms < 0:
            raise InvalidInputError(
                f"trace {path.name} line {no}: arrival {ms!r} ms: must be finite and >= 0"
            )
        if times and ms < times[-1]:
            raise InvalidInputError(
                f"trace {path.name} line {no}: arrival {ms:g} ms comes before the previous "
                f"{times[-1]:g} ms: the trace must be sorted by time"
            )
        times.append(ms)
    if len(times) < 2:
        raise InvalidInputError(f"trace {path.name}: needs at least 2 arrivals, has {len(times)}")
    return np.asarray(times) / 1000.0


def trace_arrivals(times: np.ndarray, rate: float, n: int) -> np.ndarray:
    """Replay a trace's first n arrivals (it repeats, shifted, when n is longer) at
    realised rate `rate`: scaled by the rate of what is replayed, not of the whole file
    (which ran the bundled DiffServe trace at 0.96x nominal at 20,000 jobs)."""
    _check_rate(rate)
    t = times - times[0]
    span = t[-1] + (t[-1] / (len(t) - 1))  # one mean gap after the last arrival
    reps = math.ceil(n / len(t))
    out = (t[None, :] + span * np.arange(reps)[:, None]).ravel()[:n]
    return at_exact_rate(out, rate)


def make_workload(
    name: str,
    arrival: np.ndarray,
    classes: tuple[SloClass, ...],
    rng: np.random.Generator,
    *,
    pred_error: float = 0.1,
    service: str = "lognormal",
) -> Workload:
    """Attach SLO classes and truth draws. `service`: `lognormal` (truth = prediction x
    exp(N(0, pred_error)) with mean 1), `exponential` (truth = prediction x Exp(1): the
    M/M/1 tests), or `exact` (truth = prediction: M/D/1)."""
    n = len(arrival)
    if not pred_error >= 0:
        raise InvalidInputError(f"pred_error: {pred_error!r}: must be >= 0")
    w = np.array([c.weight for c in classes], float)
    cls = rng.choice(len(classes), size=n, p=w / w.sum())
    if service == "lognormal":
        factor = np.exp(rng.normal(-(pred_error**2) / 2, pred_error, n))
    elif service == "exponential":
        factor = rng.exponential(1.0, n)
    elif service == "exact":
        factor = np.ones(n)
    else:
        raise InvalidInputError(f"service: {service!r}: one of lognormal, exponential, exact")
    return Workload(name, np.asarray(arrival, float), cls, classes, factor, rng.normal(0, 1, n))


def _check_rate(rate: float) -> None:
    if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
        raise InvalidInputError(f"rate: {rate!r} jobs/s: must be a finite number > 0")
