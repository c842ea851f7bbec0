"""`sdaas bench`: every scheduling policy simulated on a GPU cluster, ranked by goodput."""

from __future__ import annotations

import sys
from pathlib import Path

from cli.arguments import comma_list
from sdaas.config import Settings


def add_parser(subparsers):
    from scheduler.comparison import DEFAULT_LOADS, DEFAULT_TRACE, WORKLOADS

    b = subparsers.add_parser(
        "bench",
        help="simulate every scheduling policy on a GPU cluster over offered load",
        description="Discrete-event simulation of the scheduling policies on a cluster "
        "of reference GPUs (published profiles, data/reference/), over offered load as a "
        "share of the cluster's measured FCFS capacity, for Poisson, bursty (Gamma) and "
        "trace-replay arrivals, ranked by goodput (both SLOs met over all arrived jobs) "
        "with the lost share beside every mean JCT; and the smallest cluster at which "
        "each policy meets both SLOs for 90/95/99 % of the jobs (GPUs needed). Writes "
        "runs.parquet, summary.parquet, gpus_needed.parquet, summary.md and plots to "
        "--out and prints the summary.",
    )
    b.add_argument("--cluster", default="8xA100+8xT4", help="e.g. 8xA100+8xT4 (kinds: "
                   "A100, H100, V100, A10, T4)")  # fmt: skip
    b.add_argument("--policies", type=comma_list(str, "--policies"),
                   help="comma list (default: all)")  # fmt: skip
    b.add_argument("--loads", type=comma_list(float, "--loads"), default=DEFAULT_LOADS,
                   help="offered loads, share of capacity (default 0.3,...,1.2)")  # fmt: skip
    b.add_argument("--workloads", type=comma_list(str, "--workloads"), default=WORKLOADS,
                   help="poisson, bursty, trace, production (the production-like "
                        "requests: checkpoints, images, LoRAs, nights and peak hours), mmpp "
                        "(Markov-modulated Poisson), or trace:PATH (default all five "
                        "built-in ones)")  # fmt: skip
    b.add_argument("--mmpp-rates", type=comma_list(float, "--mmpp-rates"), default=None,
                   help="mmpp: relative arrival rate of each state (default 1,10)")  # fmt: skip
    b.add_argument("--mmpp-dwell-s", type=comma_list(float, "--mmpp-dwell-s"), default=None,
                   help="mmpp: mean seconds in each state at load 1.0 (default 60,10)")  # fmt: skip
    b.add_argument("--trace", type=Path, default=DEFAULT_TRACE,
                   help="arrival trace, one `arrival_ms[,...]` a line, sorted")  # fmt: skip
    b.add_argument("--jobs", type=int, default=20_000, help="jobs per run (default 20000)")
    b.add_argument("--seeds", type=int, default=3, help="seeds per point (default 3)")
    b.add_argument("--pred-error", type=float, default=0.1,
                   help="σ of log(true/predicted run time) (default 0.1)")  # fmt: skip
    b.add_argument("--burst-cv", type=float, default=5.0,
                   help="inter-arrival CV of the bursty workload (default 5)")  # fmt: skip
    b.add_argument("--slo-mix", default="mixed", help="mixed (1 s and 5 s x min CLIP 25 and "
                   "29.5), tight (1 s), loose (5 s), or uniform (one class, no SLO) (default "
                   "mixed)")  # fmt: skip
    b.add_argument("--no-cold-start", action="store_true", help="model loads cost nothing")
    b.add_argument("--plan-load", type=float, default=1.0,
                   help="GPUs needed: plan for the jobs arriving at this load of --cluster's "
                        "capacity (default 1.0; 0: skip)")  # fmt: skip
    b.add_argument("--plan-targets", type=comma_list(float, "--plan-targets"),
                   default=(0.90, 0.95, 0.99),
                   help="GPUs needed for these shares of jobs meeting both SLOs "
                        "(default 0.9,0.95,0.99)")  # fmt: skip
    b.add_argument("--out", help="output folder (default data/outputs/scheduler-bench)")
    return b


def run(args, settings: Settings) -> int:
    from scheduler.comparison import ComparisonConfig, print_progress, run_comparison
    from scheduler.policies import known_policies

    policies = known_policies() if args.policies in (None, ("all",)) else list(args.policies)
    cfg = ComparisonConfig(
        cluster=args.cluster,
        policies=policies,
        loads=args.loads,
        workloads=args.workloads,
        jobs=args.jobs,
        seeds=args.seeds,
        pred_error=args.pred_error,
        burst_cv=args.burst_cv,
        slo_mix=args.slo_mix,
        trace=str(args.trace),
        cold_start=not args.no_cold_start,
        plan_load=args.plan_load,
        plan_targets=args.plan_targets,
        **{
            k: tuple(v)
            for k, v in (("mmpp_rates", args.mmpp_rates), ("mmpp_dwell_s", args.mmpp_dwell_s))
            if v
        },
    )
    out = Path(args.out) if args.out else settings.outputs_dir / "scheduler-bench"
    out.mkdir(parents=True, exist_ok=True)  # before minutes of simulation, not after
    n_runs = len(cfg.workloads) * cfg.seeds * len(cfg.loads) * len(cfg.policies)
    print(f"simulating {n_runs} runs of {cfg.jobs} jobs on {cfg.cluster} ...", file=sys.stderr)
    run_comparison(cfg, out, progress=print_progress)
    print((out / "summary.md").read_text())
    print(f"results: {out}/ (runs.parquet, summary.parquet, gpus_needed.parquet, summary.md, "
          "*.png)")  # fmt: skip
    return 0
