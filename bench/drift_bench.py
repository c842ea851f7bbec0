"""Does the served latency correction follow this host's speed? Real toy-world runs
(real diffusers pipelines, as bench/predictor_bench.py loads them), timed one after
another for a few minutes, each predicted just before it runs from the runs before it:

  (a) per-key correction only (`Corrections.from_observations(..., drift=False)`): the
      median of each (model, accelerator, batch) key's last 20 log ratios (before issue
      28 item 5, what serving planned with);
  (b) per-key correction x the host drift (`predictor/latency_correction.py`: `Drift`),
      evaluated at the moment of the prediction.

The sequence is what serving sees: a small sweep and a latency predictor trained on it
(the profile), the calibrator's start-up probes (each model at its fewest and most
profiled steps), then runs of random (model, steps 1-25) cells with one fixed cell
(`REF_CELL`) every third run, and idle periods of `IDLE_S` in which one reference probe
runs after `IDLE_AFTER_S` as serving's runtime does (the fastest model at
`IDLE_PROBE_STEPS`, the system's probe prompt). Both arms see the same observations,
probes included. Also reported: (b) without the idle probes' observations (for the runs
right after an idle period), and the fixed cell's own spread (its runs within 15 % of
their median: what no fixed prediction can beat).

Writes bench/results/drift_bench.json (with the host load before and after: this host is
shared, 2 cores, and noisy). Usage: python bench/drift_bench.py [--seconds 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

SWEEP = dict(steps=(1, 4, 12, 25), prompts=2, seeds=(0,), batch_sizes=(1,))
REF_CELL = ("toy-m", 10)  # timed every third run
IDLE_EVERY_S = 70.0  # of running: then an idle period
IDLE_S = 25.0
WITHIN = 0.15
TARGET = 0.85  # issue 28: >= 85 % of direct runs within 15 % of the prediction


def share_within(rows, arm: str) -> float | None:
    if not rows:
        return None
    return sum(abs(r[arm] - r["observed_s"]) / r["observed_s"] <= WITHIN for r in rows) / len(rows)


def run_sequence(seconds: float, seed: int = 0) -> dict:
    import numpy as np

    from engine.calibrator import IDLE_AFTER_S, IDLE_PROBE_STEPS, PROBE_PROMPT
    from models.backend import GenerationRequest
    from models.loader import load_backend
    from pipelines.host_load import host_load
    from pipelines.profile_grid import SweepConfig
    from pipelines.profile_sweep import run_sweep
    from pipelines.prompts import TOYWORLD_PROMPT_SET, load_prompts
    from pipelines.serving_setup import toyworld_home
    from predictor.latency_correction import Corrections, Observation, factor_at
    from predictor.planner import load_planner
    from predictor.train_cli import train_all
    from sdaas.privacy import load_salt

    t_start = time.perf_counter()
    s, reg = toyworld_home(tempfile.mkdtemp(prefix="sdaas-drift-"))
    load_before = host_load()
    sweep = run_sweep(s, SweepConfig(**SWEEP, prompt_set=TOYWORLD_PROMPT_SET), progress=print)
    train_all(s, data="measured", accept_noisy=True)
    planner = load_planner(s, headroom=0.0, batch_sizes=(1,))
    (acc,) = {a for o in planner.options for a in o.accelerators}
    cards = {r.card.name: r.card for r in reg.list()}
    backends = {name: load_backend(c, "cpu") for name, c in cards.items()}
    prompts = load_prompts(TOYWORLD_PROMPT_SET, 24, load_salt(s))[SWEEP["prompts"] :]
    setup_s = time.perf_counter() - t_start

    def timed(model: str, steps: int, text: str, seed_: int) -> float:
        card = cards[model]
        w, h = card.resolution_pairs[0]
        req = GenerationRequest((text,), (seed_,), steps, w, h, card.guidance_scale,
                                card.styles[0])  # fmt: skip
        return backends[model].generate(req).latency_s

    def base_s(model: str, steps: int) -> float:
        card = cards[model]
        return planner.predicted_s(card.key, acc, steps, card.resolution_pairs[0])

    for m in cards:  # warm up once, as the sweep and the calibrator do
        timed(m, 1, "warm", 0)
    obs: list[Observation] = []
    probes: set[int] = set()  # indices in `obs` of idle reference probes

    def observe(model: str, steps: int, seconds_: float, probe: bool = False) -> None:
        if probe:
            probes.add(len(obs))
        key = (cards[model].key, acc, 1)
        obs.append(Observation(key, base_s(model, steps), seconds_, steps, time.time()))

    # the calibrator's start-up probes: each model at its fewest and most profiled steps
    for m in sorted(cards):
        for n in (min(SWEEP["steps"]), max(SWEEP["steps"])):
            observe(m, n, timed(m, n, PROBE_PROMPT, 0))
    ref_model = min(cards, key=lambda m: base_s(m, IDLE_PROBE_STEPS))  # the idle probe's
    rng = random.Random(seed)
    rows: list[dict] = []
    t0 = time.monotonic()
    next_idle = t0 + IDLE_EVERY_S
    after_idle = False
    i = 0
    while time.monotonic() - t0 < seconds:
        if time.monotonic() >= next_idle:  # serving idle: one reference probe, as served
            time.sleep(IDLE_AFTER_S)
            observe(ref_model, IDLE_PROBE_STEPS, timed(ref_model, IDLE_PROBE_STEPS,
                                                       PROBE_PROMPT, 0), probe=True)  # fmt: skip
            time.sleep(max(IDLE_S - IDLE_AFTER_S, 0.0))
            next_idle = time.monotonic() + IDLE_EVERY_S
            after_idle = True
        if i % 3 == 2:
            model, steps = REF_CELL
        else:
            model, steps = rng.choice(sorted(cards)), rng.randint(1, 25)
        now = time.time()
        key = (cards[model].key, acc)
        per_key = Corrections.from_observations(obs, drift=False)
        drift = Corrections.from_observations(obs, now=now)
        no_probe = Corrections.from_observations(
            [o for j, o in enumerate(obs) if j not in probes], now=now
        )
        base = base_s(model, steps)
        seen = timed(model, steps, rng.choice(prompts).text, i)
        d = drift.drift.get(acc)
        rows.append({
            "t_s": round(time.monotonic() - t0, 3), "model": model, "steps": steps,
            "fixed_cell": (model, steps) == REF_CELL, "after_idle": after_idle,
            "base_s": base, "observed_s": seen,
            "per_key_s": base * factor_at(per_key.scale(1).get(key), steps),
            "drift_s": base * factor_at(drift.scale(1).get(key), steps),
            "drift_no_probe_s": base * factor_at(no_probe.scale(1).get(key), steps),
            "drift_factor": d.factor if d else 1.0,
            "drift_90": [d.low, d.high] if d else [1.0, 1.0],
        })  # fmt: skip
        observe(model, steps, seen)
        after_idle = False
        i += 1
    fixed = np.array([r["observed_s"] for r in rows if r["fixed_cell"]])
    fixed_floor = float(np.mean(np.abs(fixed - np.median(fixed)) / fixed <= WITHIN))
    idle_rows = [r for r in rows if r["after_idle"]]
    return {
        "models": sorted(cards),
        "accelerator": acc,
        "sweep": {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in SWEEP.items()},
            "rows": sweep.rows,
            "wall_s": sweep.wall_s,
        },  # fmt: skip
        "setup_s": setup_s,
        "run_s": seconds,
        "runs": len(rows),
        "idle_periods": len(probes),
        "host_load": {"before": load_before, "after": host_load()},
        "within_15pct": {
            "per_key_only": share_within(rows, "per_key_s"),
            "per_key_x_drift": share_within(rows, "drift_s"),
            "fixed_cell_per_key_only": share_within(
                [r for r in rows if r["fixed_cell"]], "per_key_s"
            ),  # fmt: skip
            "fixed_cell_per_key_x_drift": share_within(
                [r for r in rows if r["fixed_cell"]], "drift_s"
            ),  # fmt: skip
            "after_idle_per_key_only": share_within(idle_rows, "per_key_s"),
            "after_idle_drift_with_probe": share_within(idle_rows, "drift_s"),
            "after_idle_drift_without_probe": share_within(idle_rows, "drift_no_probe_s"),
            # the fixed cell's runs within 15 % of their own median
            "fixed_cell_own_median_floor": fixed_floor,
        },
        "mape_pct": {
            arm: float(
                100
                * np.mean([abs(r[f"{arm}_s"] - r["observed_s"]) / r["observed_s"] for r in rows])
            )  # fmt: skip
            for arm in ("per_key", "drift")
        },
        "fixed_cell": {
            "model": REF_CELL[0],
            "steps": REF_CELL[1],
            "min_s": float(fixed.min()),
            "median_s": float(np.median(fixed)),
            "max_s": float(fixed.max()),
        },  # fmt: skip
        "sequence": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/drift_bench.json")
    parser.add_argument("--seconds", type=float, default=200.0, help="of timed runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    real = run_sequence(args.seconds, args.seed)
    w = real["within_15pct"]
    got = w["per_key_x_drift"]
    result = {
        "benchmark": "drift",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "command": f"python bench/drift_bench.py --seconds {args.seconds:g} --seed {args.seed}",
        "wall_s": time.perf_counter() - t0,
        "target": {"within_15pct": TARGET, "got": got, "met": got >= TARGET},
        **real,
    }
    for k, v in w.items():
        print(f"{k}: {'-' if v is None else f'{v:.1%}'}")
    print(f"runs {real['runs']}, load {real['host_load']}, wall {result['wall_s']:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
