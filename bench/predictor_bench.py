"""Benchmark the predictor: training time, plan latency at scale, and SLOs met for real.

1. Training time of both predictors on the reference profiles (and measured ones).
2. Plan latency: 20 models x 6 accelerators on one style (120 candidates per plan), 2000
   random requests, median and p99 (aim: median < 50 µs).
3. Against real runs: build the tiny models in a scratch home, profile them (quick sweep),
   train on those measured profiles, then plan 50 feasible jobs and run each one at a time
   through the model backend; report the share whose measured latency meets its SLO
   (aim >= 95 %), with and without planning headroom. Jobs are made to bind: each picks a
   (model, steps) at random, asks for the CLIP the predictor gives there (so the plan
   needs that many steps or a better model) and an SLO 5-50 % above its predicted latency.

Writes bench/results/predictor_bench.json. Usage: python bench/predictor_bench.py
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


def plan_latency(latency, clip, n_requests: int = 2000) -> dict:
    import numpy as np

    from predictor.planner import ModelOption, Planner

    accs = sorted(latency.spec.categories["accelerator"])[:6]
    names = sorted({m.split("@")[0] for m in latency.spec.categories["model"]})
    options = [
        ModelOption(
            names[i % len(names)], "reference", ("photo",), 1, 50, ((512, 512),), 7.5, tuple(accs)
        )
        for i in range(20)
    ]
    # 20 distinct names: the planner treats each as its own model.
    options = [
        ModelOption(
            f"{o.name}",
            f"v{i}",
            o.styles,
            o.steps_min,
            o.steps_max,
            o.resolutions,
            o.guidance_scale,
            o.accelerators,
        )
        for i, o in enumerate(options)
    ]
    t0 = time.perf_counter()
    planner = Planner(options, latency, clip)
    build_s = time.perf_counter() - t0
    rng = random.Random(0)
    reqs = [(rng.uniform(0.2, 10.0), rng.uniform(5.0, 32.0)) for _ in range(n_requests)]
    for slo, mc in reqs[:50]:  # warm
        planner.plan("photo", slo, mc)
    times = []
    feasible = 0
    for slo, mc in reqs:
        t = time.perf_counter_ns()
        plan = planner.plan("photo", slo, mc)
        times.append((time.perf_counter_ns() - t) / 1000.0)
        feasible += plan.feasible
    arr = np.array(times)
    return {
        "models": 20,
        "accelerators": len(accs),
        "candidates_per_plan": 20 * len(accs),
        "requests": n_requests,
        "feasible": feasible,
        "build_s": build_s,
        "median_us": float(np.median(arr)),
        "p99_us": float(np.percentile(arr, 99)),
    }


def real_runs(n_jobs: int, headrooms: list[float]) -> dict:
    import numpy as np

    from models.backend import GenerationRequest, load_backend
    from models.registry import Registry
    from models.tiny import make_tiny
    from pipelines.profile_grid import SweepConfig
    from pipelines.profile_sweep import run_sweep
    from pipelines.prompts import DEFAULT_PROMPT_SET, load_prompts
    from predictor.planner import TOKEN_BUCKETS, load_planner
    from predictor.train_cli import train_all
    from sdaas.config import Settings
    from sdaas.privacy import load_salt, prompt_tokens

    home = Path(tempfile.mkdtemp(prefix="sdaas-pbench-"))
    s = Settings(home=home)
    reg = Registry(s.registry_path, model_roots=s.model_roots)
    for c in make_tiny(s.models_dir):
        reg.register_file(c)
    sweep = run_sweep(
        s, SweepConfig(steps=(1, 2, 4, 8, 12, 16, 25), prompts=3, seeds=(0, 1)), progress=print
    )
    t0 = time.perf_counter()
    report = train_all(s, data="measured")
    train_s = time.perf_counter() - t0
    backends = {c.name: load_backend(c, "cpu") for c in (r.card for r in reg.list())}
    for b in backends.values():  # warm up once, as the sweep does
        w, h = b.card.resolution_pairs[0]
        b.generate(GenerationRequest(("warm",), (0,), 1, w, h, 1.0))
    prompts = load_prompts(DEFAULT_PROMPT_SET, 40, load_salt(s))
    out = {
        "sweep_rows": sweep.rows,
        "train_s_measured": train_s,
        "latency_metrics": report.latency_metrics,
        "by_headroom": {},
    }
    styles = sorted({st for r in reg.list() for st in r.card.styles})
    for headroom in headrooms:
        planner = load_planner(s, headroom=headroom)
        rng = random.Random(1)
        met, runs, infeasible, errors = 0, 0, 0, []
        steps_hist: dict[int, int] = {}
        while runs < n_jobs:
            style = rng.choice(styles)
            prompt = rng.choice(prompts)
            tokens = prompt_tokens(prompt.text)
            t = planner.curves(style, (64, 64))
            row = rng.randrange(len(t.labels))
            col = rng.randrange(int(np.isfinite(t.latency[row]).sum()))
            bucket = int(np.abs(np.asarray(TOKEN_BUCKETS) - tokens).argmin())
            # clamped: random-weight tiny CLIP can predict 0, and min_clip must be >= 0
            min_clip = min(100.0, max(0.0, float(t.clip[bucket][row, col]) - 1e-6))
            slo = float(t.latency[row, col]) * rng.uniform(1.05, 1.5)
            plan = planner.plan(style, slo, min_clip, prompt_tokens=tokens)
            if not plan.feasible:
                infeasible += 1
                continue
            b = backends[plan.model]
            w, h = b.card.resolution_pairs[0]
            res = b.generate(
                GenerationRequest((prompt.text,), (runs,), plan.steps, w, h, b.card.guidance_scale)
            )
            runs += 1
            met += res.latency_s <= slo
            steps_hist[plan.steps] = steps_hist.get(plan.steps, 0) + 1
            errors.append((res.latency_s - plan.predicted_latency_s) / plan.predicted_latency_s)
        out["by_headroom"][str(headroom)] = {
            "jobs_run": runs,
            "infeasible_skipped": infeasible,
            "slo_met_share": met / runs,
            "mean_abs_pct_error": 100 * sum(abs(e) for e in errors) / len(errors),
            "planned_steps_histogram": dict(sorted(steps_hist.items())),
        }
        print(f"headroom {headroom:.0%}: {met}/{runs} met their latency SLO")
    # With random-weight tiny models CLIP is noise and its monotone fit is flat, so every
    # plan above needs only the minimum step count. To check latency predictions across the
    # step range against real runs, also time random (model, steps) cells directly.
    planner = load_planner(s)
    rng = random.Random(2)
    within, errs = 0, []
    for i in range(n_jobs):
        style = rng.choice(styles)
        t = planner.curves(style, (64, 64))
        row = rng.randrange(len(t.labels))
        col = rng.randrange(int(np.isfinite(t.latency[row]).sum()))
        o, _acc = t.labels[row]
        pred = float(t.latency[row, col])
        b = backends[o.name]
        w, h = b.card.resolution_pairs[0]
        prompt = rng.choice(prompts)
        res = b.generate(
            GenerationRequest((prompt.text,), (i,), int(t.steps[col]), w, h, b.card.guidance_scale)
        )
        within += res.latency_s <= 1.1 * pred
        errs.append(abs(res.latency_s - pred) / res.latency_s)
    out["direct_cells"] = {
        "runs": n_jobs,
        "share_within_110pct_of_prediction": within / n_jobs,
        "mape_pct": 100 * sum(errs) / len(errs),
    }
    print(
        f"direct cells: {within}/{n_jobs} within 110 % of the prediction, "
        f"MAPE {out['direct_cells']['mape_pct']:.1f} %"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/predictor_bench.json")
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()

    from predictor.dataset import load_training_data
    from predictor.features import CLIP_SPEC, LATENCY_SPEC
    from predictor.training import train
    from sdaas.config import Settings

    td = load_training_data(Settings(home=Path(tempfile.mkdtemp())), "reference")
    t0 = time.perf_counter()
    lat = train(td.frame, LATENCY_SPEC)
    clip = train(td.frame, CLIP_SPEC)
    train_s = time.perf_counter() - t0
    print(
        f"trained on {len(td.frame)} reference rows in {train_s:.2f} s; "
        f"latency held-out {lat.metrics}"
    )
    planning = plan_latency(lat, clip)
    print(f"plan latency: median {planning['median_us']:.1f} µs, p99 {planning['p99_us']:.1f} µs")
    real = real_runs(args.jobs, [0.0, 0.1])
    result = {
        "benchmark": "predictor",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "train_reference": {
            "rows": len(td.frame),
            "seconds": train_s,
            "latency": lat.metrics,
            "clip": clip.metrics,
        },
        "planning": planning,
        "real_runs": real,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
