"""`sdaas profile`: measure latency and CLIP score over steps x models x accelerators."""

from __future__ import annotations

from pathlib import Path

from cli.arguments import comma_list
from sdaas.config import Settings
from sdaas.errors import SdaasError


def add_parser(subparsers):
    pr = subparsers.add_parser(
        "profile",
        help="sweep steps x models x accelerators into Parquet profiles (Apache Beam)",
        description="Profile every registered model on every local accelerator: warm latency, "
        "per-step time and CLIP score per (model, accelerator, steps, prompt, seed, batch), "
        "written to data/profiles/<run>/ as Parquet with a manifest, a failures file and a "
        "plot. Default grid is --quick (about a minute here). With --summary, only print the "
        "fitted latency lines of an existing run. Extra Beam flags go after '--'.",
        epilog="GPU fleet: run `sdaas profile --devices cuda` on each GPU host (every cuda:N "
        "is profiled under its device name), or submit the same pipeline to a cluster with "
        "--runner DataflowRunner/FlinkRunner -- <runner flags>; copy the run folders into "
        "data/profiles/ of the planning host.",
    )
    grid = pr.add_mutually_exclusive_group()
    grid.add_argument("--quick", action="store_true", help="small grid (default)")
    grid.add_argument(
        "--full", action="store_true", help="15 step counts, 8 prompts, 2 seeds, batch 1,2,4"
    )
    pr.add_argument("--steps", type=comma_list(int, "--steps"), help="comma list, e.g. 1,2,4,8")
    pr.add_argument("--prompts", type=int, help="how many prompts of the prompt set")
    pr.add_argument("--seeds", type=comma_list(int, "--seeds"),
                    help="comma list (default 0); every prompt runs at seeds of its own: "
                    "prompt k at k*1000 + each")  # fmt: skip
    pr.add_argument("--batch-sizes", type=comma_list(int, "--batch-sizes"),
                    help="comma list (default 1; 1,2,4 with --full)")  # fmt: skip
    pr.add_argument(
        "--repeats",
        type=comma_list(int, "--repeats"),
        help="MIN,MAX timed calls per cell: at least MIN, more until they agree within 5 %% "
        "or MAX are spent (default 2,5)",
    )
    pr.add_argument("--models", type=comma_list(str, "--models"),
                    help="comma list (default: all registered)")  # fmt: skip
    pr.add_argument("--devices", type=comma_list(str, "--devices"),
                    help="cpu, cuda, cuda:N (default: all local)")  # fmt: skip
    pr.add_argument("--prompt-set", help="TSV with a prompt column (default data/prompts/...)")
    pr.add_argument("--clip", help="CLIP model folder (default data/models/tiny-clip)")
    pr.add_argument("--out", help="run folder (default data/profiles/<time>-<runner>)")
    pr.add_argument(
        "--runner",
        default="FnApiRunner",
        help="Beam runner: FnApiRunner (default), DaskRunner, or any other name",
    )
    pr.add_argument(
        "--dask-workers",
        type=int,
        default=2,
        help="local Dask worker processes for DaskRunner (default 2)",
    )
    pr.add_argument(
        "--summary",
        nargs="?",
        const="",
        metavar="RUN",
        help="summarise a run folder or Parquet file (default: latest run)",
    )
    pr.add_argument(
        "--stale",
        action="store_true",
        help="re-measure only the models, devices and batch sizes whose latency profile "
        "serving found stale (observed run times keep disagreeing with it); then retrain",
    )
    pr.add_argument("--plot", help="PNG path for the summary plot (default RUN/profile.png)")
    pr.add_argument(
        "--reference",
        action="store_true",
        help="rebuild data/reference/reference_profiles.parquet from the published "
        "figures in data/reference/ (published, derived and ASSUMED rows)",
    )
    pr.add_argument("beam_args", nargs="*", help="extra Beam pipeline flags, after '--'")
    return pr


def run(args, settings: Settings) -> int:
    from pipelines.profile_grid import SweepConfig
    from pipelines.prompts import DEFAULT_PROMPT_SET
    from profiles.steps import FULL_STEPS, QUICK_STEPS
    from profiles.summary import latest_run, summary_report
    from profiles.timing import REPEATS

    if args.reference:
        from profiles.reference import write_reference

        out, n = write_reference()
        print(
            f"reference profiles: {n} rows -> {out} (anchors: {out.parent}/published_latency.csv)"
        )
        text, _ = summary_report(out, out.parent / "reference_profiles.png")
        print(text)
        return 0
    if args.summary is not None:
        path = Path(args.summary) if args.summary else latest_run(settings.profiles_dir)
        if not path.exists():
            raise SdaasError(f"--summary: {str(path)!r}: no such file or folder")
        plot = (
            Path(args.plot)
            if args.plot
            else (path if path.is_dir() else path.parent) / ("profile.png")
        )
        text, _ = summary_report(path, plot)
        print(f"profiles: {path}")
        print(text)
        return 0
    from pipelines.profile_sweep import run_sweep

    steps = args.steps or (FULL_STEPS if args.full else QUICK_STEPS)
    config = SweepConfig(
        models=args.models or (),
        devices=args.devices or (),
        steps=steps,
        prompts=args.prompts if args.prompts is not None else (8 if args.full else 3),
        seeds=args.seeds if args.seeds is not None else ((0, 1) if args.full else (0,)),
        batch_sizes=args.batch_sizes or ((1, 2, 4) if args.full else (1,)),
        prompt_set=Path(args.prompt_set) if args.prompt_set else DEFAULT_PROMPT_SET,
        repeats=args.repeats or REPEATS,
    )
    if args.stale:
        config = _stale_sweep(settings, config)
        if config is None:
            return 0
    report = run_sweep(
        settings,
        config,
        out_dir=Path(args.out) if args.out else None,
        runner=args.runner,
        beam_args=args.beam_args,
        dask_workers=args.dask_workers,
        clip_path=Path(args.clip) if args.clip else None,
    )
    text, _ = summary_report(Path(report.out_dir), Path(report.out_dir) / "profile.png")
    print(text)
    return 0


def _stale_sweep(settings: Settings, config):
    """The sweep `config` narrowed to the (model, device, batch size) cells serving
    reported stale: what `sdaas profile --stale` re-measures. None: nothing to do."""
    from dataclasses import replace

    from models.accelerators import local_accelerators
    from pipelines.serving_setup import observed_corrections

    corr = observed_corrections(settings)
    if corr is None:  # nothing served here yet: nothing observed to disagree
        print("no stale latency profile: nothing served here yet, or no champion to compare")
        return None
    stale = corr.stale()
    if not stale:
        print("no stale latency profile: what serving observed agrees with the champion")
        return None
    here = {a.name: a.device for a in local_accelerators()}
    for (key, acc, batch), c in sorted(stale.items()):
        where = "re-measuring" if acc in here else "not on this host: profile it there;"
        print(f"stale: {key} on {acc} (batch {batch}) {c.describe()}: {where}")
    cells = {(k.rpartition("@")[0], here[a], b) for k, a, b in stale if a in here}
    if not cells:
        return None
    return replace(
        config,
        models=tuple(sorted({m for m, _, _ in cells})),
        devices=tuple(sorted({d for _, d, _ in cells})),
        batch_sizes=tuple(sorted({b for _, _, b in cells})),
    )
