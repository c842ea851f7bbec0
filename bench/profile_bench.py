"""Benchmark the profiling sweep: pipeline overhead and Dask scaling.

    overhead ratio = sweep wall time / sum of measured generate() time (FnApiRunner)
    Dask speed-up  = wall time with 1 local worker / wall time with 2 local workers

Runs the quick grid on the registered tiny models (building and registering them if
needed), all in one process so the ratios compare like with like on a noisy machine,
and writes bench/results/profile_bench.json. Usage: python bench/profile_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/profile_bench.json")
    parser.add_argument("--steps", default="1,2,4,8,16,25", help="step grid (quick default)")
    parser.add_argument("--prompts", type=int, default=3)
    args = parser.parse_args()

    from models.registry import Registry
    from models.tiny import make_tiny
    from pipelines.profile_grid import SweepConfig
    from pipelines.profile_sweep import run_sweep
    from sdaas.config import Settings

    settings = Settings()
    cards = make_tiny(settings.models_dir)
    reg = Registry(settings.registry_path, model_roots=settings.model_roots)
    for c in cards:
        reg.register_file(c, exist_ok=True)
    cfg = SweepConfig(steps=tuple(int(s) for s in args.steps.split(",")), prompts=args.prompts)
    # Import the model libraries up front: their import time is not pipeline overhead.
    import diffusers  # noqa: F401
    from diffusers import StableDiffusionPipeline  # noqa: F401
    from transformers import CLIPModel  # noqa: F401

    scratch = Path(tempfile.mkdtemp(prefix="sdaas-bench-"))
    runs = {}
    try:
        for label, runner, workers in [
            ("fnapi", "FnApiRunner", 1),
            ("dask_1_worker", "DaskRunner", 1),
            ("dask_2_workers", "DaskRunner", 2),
        ]:
            print(f"== {label}")
            t0 = time.perf_counter()
            rep = run_sweep(
                settings, cfg, out_dir=scratch / label, runner=runner, dask_workers=workers
            )
            runs[label] = {
                **asdict(rep),
                "overhead_ratio": rep.overhead_ratio,
                "outer_wall_s": time.perf_counter() - t0,
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "benchmark": "profile_sweep",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "grid": {"steps": cfg.steps, "prompts": cfg.prompts, "seeds": cfg.seeds},
        "runs": runs,
        "fnapi_overhead_ratio": runs["fnapi"]["overhead_ratio"],
        "dask_speedup_2_over_1": runs["dask_1_worker"]["wall_s"] / runs["dask_2_workers"]["wall_s"],
        "note": "wall_s includes model loading and warm-up; model_s is the sum of warm "
        "generate() latencies. Dask workers split the cores (OMP/torch threads = cpus // "
        "workers), so on a 2-core host 2 workers cannot beat 1 worker using both cores: "
        "the Dask speed-up here measures distribution overhead, not scaling.",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("fnapi_overhead_ratio", "dask_speedup_2_over_1")}))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
