"""`sdaas train`: fit the latency and CLIP predictors on profiles, tracked in MLflow."""

from __future__ import annotations

import sys
from pathlib import Path

from sdaas.config import Settings


def add_parser(subparsers):
    tr = subparsers.add_parser(
        "train",
        help="train the LightGBM latency and CLIP predictors, tracked in MLflow",
        description="Train both predictors on profile rows, log them to MLflow "
        "(mlruns/mlflow.db) and register them as sdaas-latency / sdaas-clip (and "
        "sdaas-clip-prompt, from the prompt features of measured profiles, when they have "
        "them); a new version becomes champion only if it is no worse on the same held-out "
        "rows.",
    )
    tr.add_argument(
        "--data",
        default="both",
        choices=["measured", "reference", "both"],
        help="which profiles to train on (default both)",
    )
    tr.add_argument("--profiles", help="measured profiles folder (default data/profiles)")
    tr.add_argument("--n-estimators", type=int, help="boosting rounds (default 400)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--no-promote",
        dest="promote",
        action="store_false",
        help="register, but never move the champion alias",
    )
    tr.add_argument(
        "--accept-noisy",
        action="store_true",
        help="promote even if measured profiles look noisy (low R², negative intercepts, "
        "unsettled cells); without it such a run is registered, flagged and exits 1",
    )
    return tr


def run(args, settings: Settings) -> int:
    from predictor.store import tracking_uri
    from predictor.train_cli import train_all

    print(f"training predictors on {args.data} profiles (MLflow: {tracking_uri(settings)})")
    r = train_all(
        settings,
        data=args.data,
        profiles_dir=Path(args.profiles) if args.profiles else None,
        promote=args.promote,
        seed=args.seed,
        params={"n_estimators": args.n_estimators} if args.n_estimators else None,
        accept_noisy=args.accept_noisy,
    )
    print(f"data {r.data}: rows by source {r.sources}, hash {r.data_hash}")
    print("latency: " + ", ".join(f"{k} {v:.3f}" for k, v in r.latency_metrics.items()))
    print(f"  {r.latency.name} v{r.latency.version}: {r.latency.reason}")
    if r.clip is not None:
        print("clip:    " + ", ".join(f"{k} {v:.3f}" for k, v in r.clip_metrics.items()))
        print(f"  {r.clip.name} v{r.clip.version}: {r.clip.reason}")
    if r.prompt_clip is not None:  # profiles with prompt features: the prompt-aware one
        metrics = r.prompt_clip_metrics or {}
        print("prompt:  " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        print(f"  {r.prompt_clip.name} v{r.prompt_clip.version}: {r.prompt_clip.reason}")
    print("inspect: make mlflow-ui, then http://127.0.0.1:5000 (experiment sdaas-predictors)")
    if r.noisy:
        print(f"noisy profiles: {'; '.join(r.noisy)}", file=sys.stderr)
        if not args.accept_noisy and args.promote:
            return 1
    return 0
