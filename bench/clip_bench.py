"""Benchmark the CLIP promise on captions the predictor never saw: prompt-blind against
prompt-aware (issue 28 item 6).

The toy-world captions (`data/prompts/toyworld_prompts.tsv`, 48) are split at random:
`TRAIN_CAPTIONS` go into a real profiling sweep (Beam, the shipped toy-world models,
the real CLIP scorer; the sweep records each prompt's features and saves their basis),
the rest, with `--fresh-captions` more drawn from the same generator
(`models.toyworld.world.prompt_set`, past the 48), are never profiled, never part of the
basis, never trained on. Each held-out caption gets `HELD_OUT_SEEDS` seeds of its own
(a job brings a seed of its own; the sweep too gives every caption seeds of its own,
`pipelines.profile_grid.noise_seed`). Then:

1. held-out-caption CLIP MAE per model, prompt-blind (`sdaas-clip`) and prompt-aware
   (`sdaas-clip-prompt`), at the swept step counts, beside a ceiling no predictor can
   beat: each caption's own mean over its seeds (in-sample, so optimistic), and the
   error a predictor knowing each caption's true mean would still make (the seed's
   noise, estimated from each caption's two seeds);
2. the same request mix planned by each arm (min CLIP uniform over the swept CLIP
   range, latency SLO 0.2-3 s, the profiled style; each request a held-out caption at
   one of its seeds): requests refused, and for every planned job, run here, the share
   whose CLIP reaches the plan's promise (target >= 95 %), with a 95 % interval
   clustered by caption (jobs of one caption are not independent). Arms: prompt-blind
   as trained (`blind`), with its per-step planned margins (`blind_planned_margins`),
   with margins calibrated exactly as the prompt-aware ones (`blind_same_calibration`:
   `training.prompt_clip_margins` on the blind features), and prompt-aware;
3. plan latency with prompt features (each request a new prompt) and the cost of
   computing a prompt's features.

Images are generated in batches of one model and step count (the same image as one at a
time, to float rounding). Writes bench/results/clip_bench.json with the load average
before and after. Torch runs one thread (a shared 2-core host; CLIP does not depend on
timing). About 5 minutes here.
Usage: python bench/clip_bench.py [--requests 1600] [--train-captions 32] [--fresh-captions 32]
"""

from __future__ import annotations

import argparse
import csv
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

STEPS = (1, 2, 4, 10)
SWEEP_SEEDS = (0, 1)
HELD_OUT_SEEDS = 2  # seeds per held-out caption, its own (100000 + 2 * caption + j)
GEN_BATCH = 16
SLO_RANGE = (0.2, 3.0)
HEADROOM = 0.1
# (target, "max" when the number must not exceed it, "min" when it must reach it)
TARGETS = {
    "held_out_clip_mae": (12.0, "max"),
    "clip_promise_met_share": (0.95, "min"),
    "refused_ratio_aware_to_blind": (0.5, "max"),
    "refused_ratio_aware_to_blind_planned_margins": (0.5, "max"),
    "refused_ratio_aware_to_blind_same_calibration": (0.5, "max"),
    "plan_median_us_with_prompt": (1000.0, "max"),
}


def split_captions(n_train: int, seed: int = 0) -> tuple[list[str], list[str]]:
    from pipelines.prompts import TOYWORLD_PROMPT_SET, read_prompt_texts

    texts = read_prompt_texts(TOYWORLD_PROMPT_SET)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return [texts[i] for i in order[:n_train]], [texts[i] for i in order[n_train:]]


def fresh_captions(n: int, taken: list[str]) -> list[str]:
    """n more captions of the toy world, from the generator the prompt set came from
    (`prompt_set` continues past the shipped 48), none of them in `taken`."""
    from models.toyworld.world import prompt_set

    seen = set(taken)
    more = [t for _, t in prompt_set(len(taken) + n)[len(taken) :]]
    assert not seen & set(more), "fresh captions must be new"
    return more


def write_prompt_set(path: Path, texts: list[str]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["source", "category", "prompt"])
        w.writerows(["toyworld", "bench train", t] for t in texts)
    return path


def profile_frame(card, steps, prompt_features, n: int):
    """Rows shaped like profile rows (after `add_derived_columns`) for a predictor."""
    import pandas as pd

    from predictor.features import add_derived_columns

    w, h = card.resolution_pairs[0]
    rows = {
        "model": [card.name] * n,
        "model_version": [card.version] * n,
        "accelerator": [""] * n,
        "steps": list(steps),
        "height": [h] * n,
        "width": [w] * n,
        "batch_size": [1] * n,
        "guidance_scale": [card.guidance_scale] * n,
    }
    for k, v in prompt_features.columns().items():
        rows[k] = [v] * n
    return add_derived_columns(pd.DataFrame(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/clip_bench.json")
    parser.add_argument("--requests", type=int, default=1600)
    parser.add_argument("--train-captions", type=int, default=32)
    parser.add_argument("--fresh-captions", type=int, default=32)
    args = parser.parse_args()
    started = time.perf_counter()

    import numpy as np
    import torch

    torch.set_num_threads(1)

    from models.backend import GenerationRequest
    from models.clip_score import ClipScorer
    from models.loader import load_backend
    from pipelines.host_load import host_load
    from pipelines.profile_grid import SweepConfig
    from pipelines.profile_sweep import default_clip, run_sweep
    from pipelines.serving_setup import toyworld_home
    from predictor.planner import load_planner
    from predictor.store import load_predictor
    from predictor.tracking import CLIP_MODEL, PROMPT_CLIP_MODEL
    from predictor.train_cli import train_all
    from sdaas.privacy import prompt_tokens

    load_before = host_load()
    train_caps, held_caps = split_captions(args.train_captions)
    tsv_held = len(held_caps)
    held_caps = held_caps + fresh_captions(args.fresh_captions, train_caps + held_caps)
    seeds_of = {
        c: tuple(100_000 + HELD_OUT_SEEDS * i + j for j in range(HELD_OUT_SEEDS))
        for i, c in enumerate(held_caps)
    }
    home = Path(tempfile.mkdtemp(prefix="sdaas-clipbench-"))
    s, reg = toyworld_home(home)
    prompt_set = write_prompt_set(home / "train_captions.tsv", train_caps)
    cfg = SweepConfig(
        steps=STEPS,
        prompts=len(train_caps),
        seeds=SWEEP_SEEDS,
        prompt_set=prompt_set,
        repeats=(1, 1),
    )
    t0 = time.perf_counter()
    sweep = run_sweep(s, cfg, progress=print)
    sweep_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = train_all(s, data="measured", accept_noisy=True)
    train_s = time.perf_counter() - t0
    assert report.prompt_clip is not None, "no prompt-aware predictor was trained"
    blind_pred = load_predictor(s, CLIP_MODEL)
    aware_pred = load_predictor(s, PROMPT_CLIP_MODEL)
    clip_path = default_clip(s)
    planner = load_planner(s, headroom=HEADROOM, clip_path=clip_path)
    featurizer = planner.featurizer
    cards = {r.card.name: r.card for r in reg.list()}
    backends = {name: load_backend(c, "cpu") for name, c in cards.items()}
    scorer = ClipScorer.from_path(str(clip_path), "cpu")
    images: dict[tuple, float] = {}

    def generate(keys) -> None:
        """CLIP of every (model, steps, caption, seed) in `keys` not yet known, in
        batches of one model and step count."""
        todo: dict[tuple, list] = {}
        for key in dict.fromkeys(keys):
            if key not in images:
                todo.setdefault(key[:2], []).append(key[2:])
        for (model, steps), items in sorted(todo.items()):
            card = cards[model]
            w, h = card.resolution_pairs[0]
            for i in range(0, len(items), GEN_BATCH):
                part = items[i : i + GEN_BATCH]
                caps, seeds = tuple(c for c, _ in part), tuple(sd for _, sd in part)
                req = GenerationRequest(caps, seeds, steps, w, h, card.guidance_scale,
                                        card.styles[0])  # fmt: skip
                scores = scorer.score(backends[model].generate(req).images, list(caps))
                for (c, sd), v in zip(part, scores, strict=True):
                    images[(model, steps, c, sd)] = v

    # 1. held-out captions at the swept step counts: MAE, and how often each bound holds
    t0 = time.perf_counter()
    feats = {c: featurizer.one(c) for c in held_caps}
    generate(
        (name, st, cap, sd)
        for name in sorted(cards)
        for st in STEPS
        for cap in held_caps
        for sd in seeds_of[cap]
    )
    per_model: dict[str, dict] = {}
    for name, card in sorted(cards.items()):
        y, blind, aware, mean_of_caption, floor = [], [], [], [], []
        blind_bound, aware_bound = [], []
        key = card.key
        for cap in held_caps:
            frame = profile_frame(card, STEPS, feats[cap], len(STEPS))
            frame["prompt_tokens"] = prompt_tokens(cap)
            pb, pa = blind_pred.predict(frame), aware_pred.predict(frame)
            runs = np.array([[images[(name, st, cap, sd)] for sd in seeds_of[cap]] for st in STEPS])
            # a predictor knowing each caption's true mean still errs by the seed's
            # noise: E|y - mean| = E|y1 - y2| / sqrt(2) for two seeds (normal noise)
            floor.extend(np.abs(runs[:, 0] - runs[:, 1]) / np.sqrt(2))
            for j in range(HELD_OUT_SEEDS):
                y.extend(runs[:, j])
                blind.extend(pb)
                aware.extend(pa)
                mean_of_caption.extend(runs.mean(axis=1))
                blind_bound.extend(pb - blind_pred.spec.lower_margin.get(key, 0.0))
                # what a prompt-aware plan promises: its per-step margins
                aware_bound.extend(pa - aware_pred.spec.margin_at(key, np.array(STEPS)))
        y = np.array(y)
        per_model[key] = {
            "rows": len(y),
            "mae_blind": float(np.mean(np.abs(np.array(blind) - y))),
            "mae_prompt_aware": float(np.mean(np.abs(np.array(aware) - y))),
            "mae_caption_mean_ceiling": float(np.mean(np.abs(np.array(mean_of_caption) - y))),
            "mae_true_caption_mean_floor": float(np.mean(floor)),
            "margin_blind": blind_pred.spec.lower_margin.get(key, 0.0),
            "margin_prompt_aware": aware_pred.spec.lower_margin.get(key, 0.0),
            "step_margins_blind": blind_pred.spec.step_margin.get(key, {}),
            "step_margins_prompt_aware": aware_pred.spec.step_margin.get(key, {}),
            "bound_holds_blind": float(np.mean(y >= np.array(blind_bound))),
            "bound_holds_prompt_aware": float(np.mean(y >= np.array(aware_bound))),
            # rows where the prompt-aware bound promises anything at all (> 0)
            "promising_rows_prompt_aware": float(np.mean(np.array(aware_bound) > 0)),
        }
        print(f"{key}: held-out MAE blind {per_model[key]['mae_blind']:.1f}, prompt-aware "
              f"{per_model[key]['mae_prompt_aware']:.1f}, caption-mean ceiling "
              f"{per_model[key]['mae_caption_mean_ceiling']:.1f}, true-caption-mean floor "
              f"{per_model[key]['mae_true_caption_mean_floor']:.1f}")  # fmt: skip
    held_s = time.perf_counter() - t0

    def overall(field: str) -> float:
        rows = sum(v["rows"] for v in per_model.values())
        return sum(v[field] * v["rows"] for v in per_model.values()) / rows

    # 2. one request mix, planned by each arm; planned jobs run here
    t0 = time.perf_counter()
    from dataclasses import replace

    from predictor.dataset import load_training_data
    from predictor.features import CLIP_SPEC
    from predictor.planner import Planner
    from predictor.tracking import LATENCY_MODEL
    from predictor.training import DEFAULT_PARAMS, PROMPT_CLIP_PARAMS, prompt_clip_margins

    td = load_training_data(s, "measured")
    measured = td.frame
    lo, hi = float(measured["clip_score"].min()), float(measured["clip_score"].max())
    style = next(iter(cards.values())).styles[0]  # the style the sweep profiled
    rng = random.Random(1)
    requests = []
    for _ in range(args.requests):
        cap = rng.choice(held_caps)
        requests.append(
            (cap, rng.uniform(lo, hi), rng.uniform(*SLO_RANGE), rng.choice(seeds_of[cap]))
        )
    latency_pred = load_predictor(s, LATENCY_MODEL)
    # the prompt-blind predictor with margins calibrated the same way as the prompt-aware
    # one (per step count, on the jobs a plan would promise on): apples to apples
    blind_cal = Planner(
        planner.options, latency_pred, blind_pred, headroom=HEADROOM, blind_step_margins=True
    )
    # ... and with exactly the prompt-aware calibration (`prompt_clip_margins`): the blind
    # features of the same rows, the same cross-fit, replay and level
    rows = td.prompt_rows()
    params = {**DEFAULT_PARAMS, **PROMPT_CLIP_PARAMS, "random_state": 0}
    same_margins, same_metrics, same_steps = prompt_clip_margins(rows, CLIP_SPEC, params)
    blind_same = Planner(
        planner.options,
        latency_pred,
        replace(blind_pred, spec=blind_pred.spec.with_margins(same_margins, same_steps)),
        headroom=HEADROOM,
        blind_step_margins=True,
    )
    arm_plans: dict[str, list] = {}
    for arm in ("blind", "blind_planned_margins", "blind_same_calibration", "prompt_aware"):
        plans = []
        for cap, min_clip, slo, _ in requests:
            if arm == "blind":
                plan = planner.plan(style, slo, min_clip, prompt_tokens=prompt_tokens(cap))
            elif arm == "blind_planned_margins":
                plan = blind_cal.plan(style, slo, min_clip, prompt_tokens=prompt_tokens(cap))
            elif arm == "blind_same_calibration":
                plan = blind_same.plan(style, slo, min_clip, prompt_tokens=prompt_tokens(cap))
            else:
                plan = planner.plan(style, slo, min_clip, prompt_features=feats[cap])
            plans.append(plan)
        arm_plans[arm] = plans
    generate(
        (p.model, p.steps, cap, seed)
        for plans in arm_plans.values()
        for p, (cap, _, _, seed) in zip(plans, requests, strict=True)
        if p.feasible
    )
    arms = {}
    for arm, plans in arm_plans.items():
        refused = {"clip": 0, "latency": 0}
        met_min = 0
        hits, groups, short, promised, steps_hist = [], [], [], [], {}
        for plan, (cap, min_clip, _, seed) in zip(plans, requests, strict=True):
            if not plan.feasible:
                refused["clip" if "unreachable" in plan.reason else "latency"] += 1
                continue
            clip = images[(plan.model, plan.steps, cap, seed)]
            hits.append(clip >= plan.predicted_clip)
            groups.append(cap)
            met_min += clip >= min_clip
            short.append(plan.predicted_clip - clip)
            promised.append(plan.predicted_clip)
            steps_hist[plan.steps] = steps_hist.get(plan.steps, 0) + 1
        jobs = len(hits)
        share, half = clustered_share(hits, groups)
        arms[arm] = {
            "requests": len(requests),
            "refused": sum(refused.values()),
            "refused_min_clip_unreachable": refused["clip"],
            "refused_latency": refused["latency"],
            "jobs_run": jobs,
            "captions_planned": len(set(groups)),
            "clip_promise_met_share": share,
            "clip_promise_met_ci95": [share - half, min(1.0, share + half)],
            "min_clip_met_share": met_min / jobs if jobs else float("nan"),
            "mean_clip_above_promise": float(-np.mean(short)) if short else float("nan"),
            "planned_steps_histogram": dict(sorted(steps_hist.items())),
            # promise met, by tercile of the promise (low, mid, high)
            "promise_met_by_promise_tercile": [
                float(np.mean(np.array(short)[part] <= 0))
                for part in np.array_split(np.argsort(promised), 3)
            ]
            if len(short) >= 3
            else [],
        }
        print(f"{arm}: refused {arms[arm]['refused']}/{len(requests)}, ran {jobs}, promise "
              f"met {share:.3f} +- {half:.3f}")  # fmt: skip
    jobs_s = time.perf_counter() - t0

    # 3. plan latency: every request a new prompt (no cache hits), features given
    prng = np.random.default_rng(7)
    base = np.array([feats[c].components for c in held_caps])
    from predictor.prompt_features import PromptFeatures

    new = [
        PromptFeatures(
            8,
            2,
            tuple(base[i % len(base)] + prng.normal(0, 0.01, base.shape[1])),
            planner.prompt_basis_id,
        )  # fmt: skip
        for i in range(2000)
    ]
    t_blind, t_aware = [], []
    for f in new:
        mc, slo = float(prng.uniform(lo, hi)), float(prng.uniform(*SLO_RANGE))
        t = time.perf_counter_ns()
        planner.plan(style, slo, mc, prompt_tokens=8)
        t_blind.append((time.perf_counter_ns() - t) / 1000)
        t = time.perf_counter_ns()
        planner.plan(style, slo, mc, prompt_features=f)
        t_aware.append((time.perf_counter_ns() - t) / 1000)
    t_feat = []
    for cap in held_caps * 4:
        t = time.perf_counter_ns()
        featurizer.one(cap)
        t_feat.append((time.perf_counter_ns() - t) / 1000)

    blind_refused, aware_refused = arms["blind"]["refused"], arms["prompt_aware"]["refused"]
    got = {
        "held_out_clip_mae": overall("mae_prompt_aware"),
        "clip_promise_met_share": arms["prompt_aware"]["clip_promise_met_share"],
        "refused_ratio_aware_to_blind": aware_refused / blind_refused if blind_refused else 0.0,
        "refused_ratio_aware_to_blind_planned_margins": aware_refused
        / max(1, arms["blind_planned_margins"]["refused"]),
        "refused_ratio_aware_to_blind_same_calibration": aware_refused
        / max(1, arms["blind_same_calibration"]["refused"]),
        "plan_median_us_with_prompt": float(np.median(t_aware)),
    }
    result = {
        "benchmark": "clip",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "command": "python bench/clip_bench.py "
        f"--requests {args.requests} --train-captions {args.train_captions} "
        f"--fresh-captions {args.fresh_captions}",
        "captions": {
            "train": len(train_caps),
            "held_out": len(held_caps),
            "held_out_from_prompt_set": tsv_held,
            "held_out_fresh": len(held_caps) - tsv_held,
            "split_seed": 0,
        },
        "sweep": {
            "steps": list(STEPS),
            "seeds": list(SWEEP_SEEDS),
            "rows": sweep.rows,
            "wall_s": sweep_s,
            "prompt_basis": planner.prompt_basis_id,
        },
        "train_s": train_s,
        "cv_on_train_captions": {
            "blind": {k: v for k, v in report.clip_metrics.items() if "unseen" in k},
            "prompt_aware": {
                k: v
                for k, v in (report.prompt_clip_metrics or {}).items()
                if "unseen" in k or "promise" in k
            },
        },
        "held_out_captions": {
            "seeds_per_caption": HELD_OUT_SEEDS,
            "steps": list(STEPS),
            "per_model": per_model,
            "mae_blind": overall("mae_blind"),
            "mae_prompt_aware": overall("mae_prompt_aware"),
            "mae_caption_mean_ceiling": overall("mae_caption_mean_ceiling"),
            "mae_true_caption_mean_floor": overall("mae_true_caption_mean_floor"),
            "bound_holds_blind": overall("bound_holds_blind"),
            "bound_holds_prompt_aware": overall("bound_holds_prompt_aware"),
            "wall_s": held_s,
        },
        "planned_jobs": {
            "style": style,
            "min_clip_range": [lo, hi],
            "latency_slo_range_s": list(SLO_RANGE),
            "headroom": HEADROOM,
            "arms": arms,
            "blind_same_calibration_metrics": same_metrics,
            "wall_s": jobs_s,
        },
        "plan_latency_us": {
            "blind_median": float(np.median(t_blind)),
            "blind_p99": float(np.percentile(t_blind, 99)),
            "prompt_aware_median": float(np.median(t_aware)),
            "prompt_aware_p99": float(np.percentile(t_aware, 99)),
            "features_per_prompt_median": float(np.median(t_feat)),
        },
        "host_load": {"before": load_before, "after": host_load()},
    }
    result["targets"] = {
        k: {"target": t, "got": got[k], "met": got[k] <= t if way == "max" else got[k] >= t}
        for k, (t, way) in TARGETS.items()
    }
    result["wall_s"] = time.perf_counter() - started
    for k, v in result["targets"].items():
        print(f"{k}: {v['got']:.3f} (target {v['target']}) {'ok' if v['met'] else 'MISSED'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
