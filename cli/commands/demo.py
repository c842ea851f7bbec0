"""`sdaas demo`: the whole system end to end on embedded defaults (`cli/demo.py`)."""

from __future__ import annotations

from sdaas.config import Settings


def add_parser(subparsers):
    d = subparsers.add_parser("demo", help="run the end-to-end demo on embedded defaults")
    d.add_argument("--steps", type=int, default=10, help="denoising steps per image (default 10)")
    d.add_argument("--seed", type=int, default=0, help="seed of the demo's jobs (default 0)")
    return d


def run(args, settings: Settings) -> int:
    from cli.demo import run_demo

    run_demo(settings, steps=args.steps, seed=args.seed)
    return 0
