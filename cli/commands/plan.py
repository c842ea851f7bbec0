"""`sdaas plan`: what the planner would choose for one job, and why not when it cannot."""

from __future__ import annotations

import json

from cli.arguments import bounded_int, resolution
from sdaas.config import Settings
from sdaas.records import model_key


def add_parser(subparsers):
    pl = subparsers.add_parser(
        "plan",
        help="choose model, accelerator and steps for a style and SLOs",
        description="Plan one job with the champion predictors. Exit 0 when feasible, 4 "
        "when not (the reason and the best offer are printed).",
    )
    pl.add_argument("--style", required=True, help="one the models serve (`sdaas models list`)")
    pl.add_argument("--latency-slo", type=float, required=True, help="seconds")
    pl.add_argument("--min-clip", type=float, required=True, help="0..100")
    pl.add_argument("--resolution", type=resolution, help="WxH (default: smallest)")
    pl.add_argument("--prompt-tokens", type=bounded_int("--prompt-tokens", 0, 77),
                    help="prompt length in tokens, 0..77 (default 12)")  # fmt: skip
    pl.add_argument("--batch-size", type=bounded_int("--batch-size", 1, 64), default=1,
                    help="expected batch occupancy: plan for a batch of this many such "
                    "jobs, which finish together (default 1)")  # fmt: skip
    pl.add_argument("--prompt", help="the job's prompt: plan on the CLIP promised for it "
                    "(its features only, when a prompt-aware CLIP predictor was trained); "
                    "never stored or printed")  # fmt: skip
    pl.add_argument("--json", action="store_true", help="the plan as JSON")
    return pl


def run(args, settings: Settings) -> int:
    from dataclasses import asdict

    from pipelines.profile_sweep import default_clip
    from predictor.planner import load_planner

    clip_path = default_clip(settings) if args.prompt else None
    planner = load_planner(settings, batch_sizes=(args.batch_size,), clip_path=clip_path)
    plan = planner.plan(
        args.style,
        args.latency_slo,
        args.min_clip,
        resolution=args.resolution,
        prompt_tokens=args.prompt_tokens,
        batch_size=args.batch_size,
        prompt=args.prompt,
    )
    if args.json:
        print(json.dumps(asdict(plan), indent=2))
    elif plan.feasible:
        print(
            f"feasible: {model_key(plan.model, plan.model_version)} on {plan.accelerator}, "
            f"{plan.steps} steps: predicted {plan.predicted_latency_s:.3f} s"
            f"{f' for a batch of {args.batch_size}' if args.batch_size > 1 else ''}, "
            f"CLIP {plan.predicted_clip:.2f}"
        )
    else:
        print(f"infeasible: {plan.reason}")
    return 0 if plan.feasible else 4
