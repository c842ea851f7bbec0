"""Benchmark the predictor: training time, plan latency at scale, and predictions
against real runs of the toy-world models.

1. Training time of both predictors on the reference profiles.
2. Plan latency: 20 models x 6 accelerators on one style (120 candidates per plan), 2000
   random requests, median and p99 (aim: median < 50 µs).
3. Real runs (`real_runs`): a scratch home with the shipped toy-world models (real
   diffusers pipelines, real CLIP scorer), a batch-aware sweep (7 step counts x 3
   prompts x 2 seeds x batch 1, 2, 4), predictors trained on it, then, on prompts the
   sweep never saw:
   - held-out cell MAPE of the latency predictor (target <= 5 %);
   - serving started on that home as `sdaas serve` starts it: its first probes (each
     model at its fewest and most profiled steps) against the sweep's predictions, the
     share within 15 % (target >= 85 %: profiles measured as served);
   - direct runs of random (model, steps 1-25, batch) cells: the share within 15 % of
     the prediction serving makes just before the run (the profile's, corrected by the
     probes and every run before it, host drift included; target >= 85 %) and of the
     profile's own, beside the host's own floors: the share of runs within 15 % of the
     median of three back-to-back runs of the same cell, and of one fixed cell timed
     after every direct run (the host's drift over minutes);
   - jobs planned with random SLOs (0.2-3 s) and min CLIP (over the measured range),
     each run alone (`--planned-jobs`, 400): the share meeting both SLOs (target >= 95 %)
     with a 95 % interval clustered by caption, the step counts the plans used (target
     >= 3 different), how many requests were refused instead (at most 50 per job
     asked: with honest floors every request can be refused), and how many CLIP misses
     were images scoring 0 (they miss any min CLIP > 0, whatever was promised);
   - the CLIP predictor on held-out prompts: MAE per model and per (model, steps).
   All prompts are captions of the toy world (`data/prompts/toyworld_prompts.tsv`):
   what those models draw, so their CLIP scores mean something.

Writes bench/results/predictor_bench.json (with the host load before and after, and
which targets were met). Usage:
python bench/predictor_bench.py [--jobs 60] [--planned-jobs 400] [--captions 8]
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

from bench_stats import clustered_share

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


# Two sweeps over toy-world captions: batch 1 over more prompts (what the CLIP predictor
# and its margin for unseen prompts learn from), batches 2 and 4 over fewer (latency
# only; a batch of 4 costs 4 runs). Training takes each batch size from its sweep.
STEPS = (1, 2, 4, 8, 12, 16, 25)
BENCH_SWEEPS = (
    dict(steps=STEPS, prompts=8, seeds=(0, 1), batch_sizes=(1,)),
    dict(steps=STEPS, prompts=3, seeds=(0, 1), batch_sizes=(2, 4)),
)
BATCH_SIZES = (1, 2, 4)


def bench_sweeps(captions: int) -> tuple[dict, ...]:
    """BENCH_SWEEPS with `captions` prompts in the batch-1 sweep (the CLIP sample)."""
    return (dict(BENCH_SWEEPS[0], prompts=captions), *BENCH_SWEEPS[1:])


REFUSALS_PER_JOB = 50  # planned jobs stop after this many refusals per job asked
REF_CELL = ("toy-m", 10)  # (model, steps) timed after every direct run: the host's drift
# (target, "max" when the number must not exceed it, "min" when it must reach it)
TARGETS = {
    "cell_mape_pct": (5.0, "max"),
    "direct_within_15pct": (0.85, "min"),
    "first_probes_within_15pct": (0.85, "min"),
    "both_slos_met": (0.95, "min"),
    "planned_step_counts": (3, "min"),
}


def clip_on_held_out_prompts(frame) -> dict:
    """The CLIP predictor scored on measured toy-world CLIP: leave one prompt out (train
    on the others' batch-1 rows, predict its), MAE per model and per (model, steps)."""
    import numpy as np

    from predictor.features import CLIP_SPEC
    from predictor.training import train

    rows = frame[(frame["batch_size"] == 1) & frame["clip_score"].notna()].copy()
    errs = []
    for prompt in sorted(rows["prompt_id"].unique()):
        held = rows["prompt_id"] == prompt
        model = train(rows[~held], CLIP_SPEC)
        test = rows[held]
        pred = model.model.predict(model.spec.frame(test))
        errs.append(test.assign(abs_err=np.abs(pred - test["clip_score"].to_numpy())))
    import pandas as pd

    e = pd.concat(errs)
    by_model = e.groupby("model")["abs_err"].mean()
    by_steps = e.groupby(["model", "steps"])["abs_err"].mean()
    return {
        "held_out": "each prompt in turn (batch-1 rows)",
        "mae": float(e["abs_err"].mean()),
        "mae_by_model": {m: float(v) for m, v in by_model.items()},
        "mae_by_model_steps": {f"{m} {s}": float(v) for (m, s), v in by_steps.items()},
        "clip_range": [float(rows["clip_score"].min()), float(rows["clip_score"].max())],
    }


def noise_verdict(real: dict) -> str:
    """Whether this run's own sweep was noisy: its accuracy numbers are then bounded by
    the host, not only by the predictor (compare runs on a quiet host)."""
    n = len(real["noisy_fits"])
    load = real["host_load"]["after"]["load_per_core"]
    d = real["direct_runs"]
    floor = min(d["noise_floor_within_15pct"], d["drift_floor_within_15pct"])
    floor_note = (
        f"; only {floor:.0%} of the runs of one fixed cell (back to back, or spread over "
        "the direct runs) are within 15 % of their own median, so no fixed prediction "
        f"can reach {TARGETS['direct_within_15pct'][0]:.0%} here"
        if floor < TARGETS["direct_within_15pct"][0]
        else ""
    )
    if n:
        return (
            f"NOISY: {n} measured fits flagged ({'; '.join(real['noisy_fits'])}); load "
            f"{load:.2f}/core after: the accuracy numbers are bounded by this host's noise"
            f"{floor_note}"
        )
    return f"quiet: no measured fit flagged; load {load:.2f}/core after{floor_note}"


def first_served_probes(settings) -> tuple[dict, list]:
    """Serving started on the bench's home as `sdaas serve` starts it (its device engine
    at serving's torch threads) probes each model at its fewest and most profiled steps
    before any job: how far those first served runs are from the sweep's predictions
    (issue 28 item 4: profiles measured as served). Returns the summary and the probes'
    observations (serving's first evidence: the direct runs' predictions start from it)."""
    import numpy as np

    from adapters.result_store import ResultStore
    from engine.runtime import ServingRuntime
    from pipelines.serving_setup import build_spec, result_store_path

    spec = build_spec(settings)
    ServingRuntime(spec).close()
    obs = ResultStore(result_store_path(settings)).observations(spec.planner.predictor_version)
    err = np.array([abs(o.observed_s - o.predicted_s) / o.observed_s for o in obs])
    share, worst = np.mean(err <= 0.15), err.max()
    print(f"first served probes: {len(obs)} runs at {spec.threads} torch threads, "
          f"{share:.0%} within 15 % of the sweep (worst {worst:.0%})")  # fmt: skip
    return {
        "torch_threads": spec.threads,
        "runs": [
            {
                "model": o.key[0],
                "steps": o.steps,
                "predicted_s": o.predicted_s,
                "observed_s": o.observed_s,
            }  # fmt: skip
            for o in obs
        ],
        "share_within_15pct": float(share),
        "median_error_pct": float(100 * np.median(err)),
        "worst_error_pct": float(100 * worst),
    }, obs


def real_runs(n_jobs: int, headroom: float, n_planned: int = 400, captions: int = 8) -> dict:
    """Toy-world models (real diffusers pipelines trained here, real CLIP scorer) on this
    host: a batch-aware sweep, predictors trained on it, then runs that were never part
    of the sweep, compared with the predictions."""
    import numpy as np

    from models.backend import GenerationRequest
    from models.clip_score import ClipScorer
    from models.loader import load_backend
    from pipelines.host_load import host_load
    from pipelines.profile_grid import SweepConfig
    from pipelines.profile_sweep import default_clip, run_sweep
    from pipelines.prompts import TOYWORLD_PROMPT_SET, load_prompts
    from pipelines.serving_setup import toyworld_home
    from predictor.latency_correction import Corrections, Observation, factor_at
    from predictor.planner import load_planner
    from predictor.train_cli import train_all
    from sdaas.privacy import load_salt, prompt_tokens

    s, reg = toyworld_home(tempfile.mkdtemp(prefix="sdaas-pbench-"))
    sweep_configs = bench_sweeps(captions)
    load_before = host_load()
    sweeps = [
        run_sweep(s, SweepConfig(**sw, prompt_set=TOYWORLD_PROMPT_SET), progress=print)
        for sw in sweep_configs
    ]
    t0 = time.perf_counter()
    report = train_all(s, data="measured", accept_noisy=True)
    train_s = time.perf_counter() - t0
    from predictor.dataset import load_training_data

    frame = load_training_data(s, "measured").frame
    clip_eval = clip_on_held_out_prompts(frame)
    served, probes = first_served_probes(s)
    print(f"CLIP on held-out prompts: MAE {clip_eval['mae']:.2f} ({clip_eval['mae_by_model']})")
    cards = {r.card.name: r.card for r in reg.list()}
    backends = {name: load_backend(c, "cpu") for name, c in cards.items()}
    scorer = ClipScorer.from_path(str(default_clip(s)), "cpu")
    for b in backends.values():  # warm up once, as the sweep does
        w, h = b.card.resolution_pairs[0]
        b.generate(GenerationRequest(("warm",), (0,), 1, w, h, 1.0))
    # prompts the sweep never saw
    prompts = load_prompts(TOYWORLD_PROMPT_SET, 48, load_salt(s))[captions:]
    planner = load_planner(s, headroom=headroom, batch_sizes=BATCH_SIZES)
    (acc,) = {a for o in planner.options for a in o.accelerators}

    def run(model: str, steps: int, batch: int, prompt, seed: int):
        card = cards[model]
        w, h = card.resolution_pairs[0]
        req = GenerationRequest((prompt.text,) * batch, tuple(range(seed, seed + batch)), steps,
                                w, h, card.guidance_scale, card.styles[0])  # fmt: skip
        res = backends[model].generate(req)
        return res, scorer.score(res.images[:1], [prompt.text])[0]

    # 1. direct (model, steps, batch) runs against the predictor
    rng = random.Random(2)
    direct, tracked, self_dev, reference = [], [], [], []
    ref_prompt = prompts[0]
    # what serving has seen (its probes, then every run here): the prediction made just
    # before a run, as serving makes it, is the profile's corrected by these (drift too)
    seen = list(probes)
    ref_card = cards[REF_CELL[0]]
    ref_pred = planner.predicted_s(ref_card.key, acc, REF_CELL[1], ref_card.resolution_pairs[0], 1)

    def observe(model: str, steps: int, batch: int, pred: float, took: float) -> None:
        key = (cards[model].key, acc, batch)
        seen.append(Observation(key, pred, took, steps, time.time()))

    for i in range(n_jobs):
        model = rng.choice(sorted(cards))
        steps = rng.choice([s_ for s_ in range(1, 26)])
        batch = rng.choice(BATCH_SIZES)
        card = cards[model]
        pred = planner.predicted_s(card.key, acc, steps, card.resolution_pairs[0], batch)
        corr = Corrections.from_observations(seen, now=time.time()).scale(batch)
        pred_now = pred * factor_at(corr.get((card.key, acc)), steps)
        prompt = rng.choice(prompts)
        res, _ = run(model, steps, batch, prompt, i)
        direct.append(abs(res.latency_s - pred) / res.latency_s)
        tracked.append(abs(res.latency_s - pred_now) / res.latency_s)
        observe(model, steps, batch, pred, res.latency_s)
        # the same call twice more, back to back: how far this host's runs of one cell
        # are from each other, a floor no predictor can get under
        again = [run(model, steps, batch, prompt, i)[0].latency_s for _ in range(2)]
        times = [res.latency_s, *again]
        own = float(np.median(times))
        self_dev.extend(abs(t - own) / t for t in times)
        # one fixed reference cell after every direct run: how this host's speed drifts
        # over the minutes the direct runs take (a profile is one moment of it)
        reference.append(run(REF_CELL[0], REF_CELL[1], 1, ref_prompt, 0)[0].latency_s)
        observe(REF_CELL[0], REF_CELL[1], 1, ref_pred, reference[-1])
    direct_arr, tracked_arr = np.array(direct), np.array(tracked)
    floor = float(np.mean(np.array(self_dev) <= 0.15))
    ref = np.array(reference)
    drift_floor = float(np.mean(np.abs(ref - np.median(ref)) / ref <= 0.15))
    # 2. jobs planned with varied SLOs and min CLIP, each run alone
    rng = random.Random(1)
    met_lat = met_clip = 0
    both, caption = [], []  # per planned job: both SLOs met; its caption (the cluster)
    steps_hist: dict[int, int] = {}
    styles = planner.styles
    jobs = refused = 0
    lat_errs, clip_short = [], []
    zero_misses = 0  # CLIP misses on images that scored 0 (the scorer's 100 max(cos, 0))
    while jobs < n_planned and refused < REFUSALS_PER_JOB * n_planned:
        style = rng.choice(styles)
        prompt = rng.choice(prompts)
        min_clip = rng.uniform(clip_eval["clip_range"][0], clip_eval["clip_range"][1])
        slo = rng.uniform(0.2, 3.0)
        plan = planner.plan(style, slo, min_clip, prompt_tokens=prompt_tokens(prompt.text))
        if not plan.feasible:
            refused += 1
            continue
        res, clip = run(plan.model, plan.steps, 1, prompt, 1000 + jobs)
        jobs += 1
        ok_lat, ok_clip = res.latency_s <= slo, clip >= min_clip
        met_lat += ok_lat
        met_clip += ok_clip
        zero_misses += int(not ok_clip and clip <= 0.0)
        both.append(ok_lat and ok_clip)
        caption.append(prompt.id)
        steps_hist[plan.steps] = steps_hist.get(plan.steps, 0) + 1
        lat_errs.append(abs(res.latency_s - plan.predicted_latency_s) / res.latency_s)
        clip_short.append(plan.predicted_clip - clip)  # > 0: below what the plan promised
    share, half = clustered_share(both, caption)
    above_zero = jobs - met_clip - zero_misses  # CLIP misses on images scoring above 0
    out = {
        "models": sorted(cards),
        "accelerator": acc,
        "prompt_set": TOYWORLD_PROMPT_SET.name,
        "sweeps": [
            {
                **{k: list(v) if isinstance(v, tuple) else v for k, v in sw.items()},
                "rows": r.rows,
                "wall_s": r.wall_s,
            }
            for sw, r in zip(sweep_configs, sweeps, strict=True)
        ],
        "host_load": {"before": load_before, "after": host_load()},
        "noisy_fits": list(report.noisy),
        "train_s_measured": train_s,
        "latency_metrics": report.latency_metrics,
        "clip_metrics": report.clip_metrics,
        "clip_on_held_out_prompts": clip_eval,
        "first_served_probes": served,
        "direct_runs": {
            "runs": n_jobs,
            "batch_sizes": list(BATCH_SIZES),
            # against the profile's prediction, and against the prediction serving
            # makes just before the run (corrected by every run before it, drift too)
            "share_within_15pct": float(np.mean(direct_arr <= 0.15)),
            "tracked_share_within_15pct": float(np.mean(tracked_arr <= 0.15)),
            "tracked_mape_pct": float(100 * tracked_arr.mean()),
            # runs within 15 % of the median of their own cell's 3 back-to-back runs
            "noise_floor_within_15pct": floor,
            # runs of one fixed cell (REF_CELL), one after each direct run, within 15 %
            # of their own median: the host's drift, a floor for any fixed prediction
            "drift_floor_within_15pct": drift_floor,
            "reference_cell": {
                "model": REF_CELL[0],
                "steps": REF_CELL[1],
                "min_s": float(ref.min()),
                "median_s": float(np.median(ref)),
                "max_s": float(ref.max()),
            },  # fmt: skip
            "mape_pct": float(100 * direct_arr.mean()),
        },
        "planned_jobs": {
            "jobs_run": jobs,
            "requests_refused": refused,  # min CLIP or SLO beyond what can be promised
            "stopped_at_refusal_cap": jobs < n_planned,
            "headroom": headroom,
            "clip_margins": planner.clip_margins,
            "clip_below_promise_share": (
                float(np.mean(np.array(clip_short) > 0)) if clip_short else None
            ),
            "latency_slo_met_share": met_lat / max(jobs, 1),
            "clip_slo_met_share": met_clip / max(jobs, 1),
            # an image scoring 0 misses every min CLIP > 0, whatever was promised: on
            # these toy models such images cluster by caption (toy-l: 5-6 % of unseen
            # captions' images at every step count >= 2), a ceiling no prompt-blind
            # promise above 0 can pass
            "clip_misses_on_zero_images": zero_misses,
            "clip_misses_above_zero": above_zero,
            "both_slos_met_share": share,
            # jobs of one caption move together: the interval is clustered by caption
            "both_slos_met_ci95": [share - half, min(1.0, share + half)],
            "captions": len(set(caption)),
            "latency_mape_pct": float(100 * np.mean(lat_errs)) if lat_errs else None,
            "planned_steps_histogram": dict(sorted(steps_hist.items())),
        },
    }
    got = {
        "cell_mape_pct": report.latency_metrics["cell_median_mape_pct"],
        "direct_within_15pct": out["direct_runs"]["tracked_share_within_15pct"],
        "first_probes_within_15pct": served["share_within_15pct"],
        "both_slos_met": out["planned_jobs"]["both_slos_met_share"],
        "planned_step_counts": len(steps_hist),
    }
    out["targets"] = {
        k: {"target": t, "got": got[k], "met": got[k] <= t if way == "max" else got[k] >= t}
        for k, (t, way) in TARGETS.items()
    }
    out["noise"] = noise_verdict(out)
    print(out["noise"])
    for k, v in out["targets"].items():
        print(f"{k}: {v['got']:.3f} (target {v['target']}) {'ok' if v['met'] else 'MISSED'}")
    lo, hi = out["planned_jobs"]["both_slos_met_ci95"]
    print(f"both SLOs met: 95 % interval {lo:.3f}-{hi:.3f} over {jobs} jobs, "
          f"{out['planned_jobs']['captions']} captions; CLIP misses: {zero_misses} on images "
          f"scoring 0, {above_zero} above 0")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/predictor_bench.json")
    parser.add_argument(
        "--jobs",
        type=int,
        default=60,
        help="direct runs of random cells (each timed 4 times; default 60)",
    )
    parser.add_argument(
        "--planned-jobs",
        type=int,
        default=400,
        help="jobs planned with random SLOs and min CLIP, each run alone "
        "(default 400: enough for a +-3 %% interval on the share meeting both)",
    )
    parser.add_argument("--headroom", type=float, default=0.1)
    parser.add_argument(
        "--captions",
        type=int,
        default=8,
        help="captions in the batch-1 sweep, the CLIP sample (default 8; a CLIP floor "
        "vouches for n/(n+1) of unseen captions below 19, so 19+ for a 95 %% promise; "
        "the other 48 - n are the unseen captions jobs are planned on)",
    )
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
    real = real_runs(args.jobs, args.headroom, args.planned_jobs, args.captions)
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
