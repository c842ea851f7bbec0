"""Beam runner selection, always explicit.

Left to itself, Beam's DirectRunner first tries to download the Prism runner, which
fails here (DESIGN.md §5). So the default is the in-process `FnApiRunner`; `DaskRunner`
gets a local `dask.distributed` cluster unless given `--dask_client_address`; any other
name (FlinkRunner, DataflowRunner, ...) is passed through with its own flags.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

log = logging.getLogger(__name__)

DEFAULT_RUNNER = "FnApiRunner"


@dataclass
class RunnerChoice:
    runner: Any
    options: PipelineOptions
    name: str
    workers: int


@contextlib.contextmanager
def runner_for(
    name: str = DEFAULT_RUNNER, *, beam_args: list[str] | None = None, dask_workers: int = 2
) -> Iterator[RunnerChoice]:
    """A runner and its options; starts (and stops) a local Dask cluster when needed."""
    args = list(beam_args or [])
    key = name.lower().removesuffix("runner")
    if key == "fnapi":
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        yield RunnerChoice(FnApiRunner(), PipelineOptions(args), "FnApiRunner", 1)
        return
    if key == "dask":
        from apache_beam.runners.dask.dask_runner import DaskRunner

        if any(a.startswith("--dask_client_address") for a in args):
            yield RunnerChoice(DaskRunner(), PipelineOptions(args), "DaskRunner", 0)
            return
        import os

        import dask
        from distributed import LocalCluster

        log.info("starting a local dask cluster: %d worker processes", dask_workers)
        # Dask's nanny starts workers with OMP_NUM_THREADS=1 and MALLOC_TRIM_THRESHOLD_=65536;
        # measured here, torch inference then runs 1.7x slower even after set_num_threads.
        # Give each worker its share of the cores instead.
        threads = str(max(1, (os.cpu_count() or 1) // dask_workers))
        dask.config.set(
            {
                "distributed.nanny.pre-spawn-environ": {
                    "OMP_NUM_THREADS": threads,
                    "MKL_NUM_THREADS": threads,
                    "OPENBLAS_NUM_THREADS": threads,
                }
            }
        )
        cluster = LocalCluster(
            n_workers=dask_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
        try:
            opts = PipelineOptions([*args, f"--dask_client_address={cluster.scheduler_address}"])
            yield RunnerChoice(DaskRunner(), opts, "DaskRunner", dask_workers)
        finally:
            cluster.close()
        return
    yield RunnerChoice(name, PipelineOptions([f"--runner={name}", *args]), name, 0)
