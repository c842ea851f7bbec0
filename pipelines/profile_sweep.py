"""The profiling sweep: a Beam batch pipeline from the grid to Parquet profiles.

    grid cells ──► RunInference(ProfilingModelHandler) per (model, accelerator)
               ──► key by shard ──► GroupByKey ──► WriteParquetShard   (rows)
               └─► failed inferences ──► WriteFailures                  (failures.jsonl)

Every check that can fail is made before any model loads (registry, grid, step range,
output folder). After the run the driver reads the files back: rows + failures must
equal the grid size, or the sweep fails loudly.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from models.accelerators import resolve_devices
from models.backend import cpu_threads
from models.registry import Registry
from pipelines.host_load import host_load
from pipelines.parquet_io import WriteFailures, WriteParquetShard
from pipelines.profile_grid import ProfileCell, SweepConfig, expand_grid, select_cards
from pipelines.profile_handler import ProfilingModelHandler
from pipelines.prompts import featurize_prompts, load_prompts
from pipelines.runners import DEFAULT_RUNNER, runner_for
from pipelines.sweep_progress import PROGRESS_FILE, SweepProgress
from profiles.parquet_io import CellFailure, read_failures, read_profiles
from profiles.timing import REPEATS
from sdaas import __version__
from sdaas.config import Settings
from sdaas.errors import InvalidInputError, SdaasError
from sdaas.privacy import load_salt
from sdaas.records import PROFILE_ARROW_SCHEMA, ProfileRecord, model_key

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class SweepIncompleteError(SdaasError):
    """The files hold fewer rows than the grid minus its failures."""


@dataclass(frozen=True)
class SweepReport:
    out_dir: str
    runner: str
    workers: int
    grid_cells: int
    rows: int
    failures: int
    wall_s: float
    model_s: float  # sum of measured generate() latencies (every timed repeat)

    @property
    def overhead_ratio(self) -> float:
        return self.wall_s / self.model_s if self.model_s else float("inf")


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise InvalidInputError(
            f"--out: {str(out_dir)!r}: cannot write there ({exc.strerror or exc}); "
            "choose a writable folder"
        ) from None


def build_sweep(
    p: beam.Pipeline,
    cells: list[ProfileCell],
    cards: dict,
    clip_path: str | None,
    out_dir: Path,
    torch_threads: int | None = None,
    repeats: tuple[int, int] = REPEATS,
    timer=None,
) -> None:
    """Add the sweep to pipeline `p`: one RunInference branch per (model, accelerator)."""
    groups: dict[tuple[str, str], list[ProfileCell]] = {}
    for c in cells:
        groups.setdefault((c.model, c.device), []).append(c)
    rows, failures = [], []
    for i, ((model, device), group) in enumerate(sorted(groups.items())):
        label = f"{model} on {device}"
        handler = ProfilingModelHandler(
            cards[model],
            device,
            clip_path,
            torch_threads=torch_threads,
            repeats=repeats,
            timer=timer,
            progress_path=str(out_dir / PROGRESS_FILE),
        )
        outcomes = (
            p
            | f"Cells {i}: {label}" >> beam.Create(group, reshuffle=False)
            # Pre-batched singletons, not BatchElements: BatchElements flushes its last batch
            # in finish_bundle, and the DaskRunner drops finish_bundle output (measured).
            | f"Singletons {i}" >> beam.Map(lambda c: [c])
            | f"Profile {i}: {label}" >> RunInference(handler.with_no_batching())
            | f"Outcome {i}" >> beam.Map(lambda r: r.inference)
        )
        # Filters, not tagged outputs: the DaskRunner does not route tagged outputs.
        rows.append(outcomes | f"Rows {i}" >> beam.Filter(lambda o: isinstance(o, ProfileRecord)))
        failures.append(
            outcomes | f"Failures {i}" >> beam.Filter(lambda o: isinstance(o, CellFailure))
        )
    written_rows = (
        rows
        | "All rows" >> beam.Flatten()
        | "Key by shard"
        >> beam.Map(lambda r: (f"{model_key(r.model, r.model_version)}|{r.accelerator}", r))
        | "Group shards" >> beam.GroupByKey()
        | "Write Parquet" >> beam.ParDo(WriteParquetShard(str(out_dir)))
        | "Count rows" >> beam.Map(lambda path_n: ("rows", path_n[1]))
    )
    written_failures = (
        failures
        | "All failures" >> beam.Flatten()
        | "Key failures" >> beam.Map(lambda f: ("failures", f))
        | "Group failures" >> beam.GroupByKey()
        | "Write failures" >> beam.ParDo(WriteFailures(str(out_dir)))
        | "Count failures" >> beam.Map(lambda n: ("failures", n))
    )
    # One terminal step joins both writers. The DaskRunner computes only the graph's last
    # transform (dask_runner.run_pipeline), so a second leaf would silently never run.
    (
        (written_rows, written_failures)
        | "Join writers" >> beam.Flatten()
        | "Written" >> beam.CombinePerKey(sum)
    )


def default_clip(settings: Settings) -> Path:
    """The trained toy-world CLIP when shipped (its scores mean something), else the tiny one."""
    from sdaas.config import SHIPPED_TOYWORLD

    toy = SHIPPED_TOYWORLD / "toy-clip"
    return toy if (toy / "config.json").is_file() else settings.models_dir / "tiny-clip"


def run_sweep(
    settings: Settings,
    config: SweepConfig,
    *,
    out_dir: Path | None = None,
    runner: str = DEFAULT_RUNNER,
    beam_args: list[str] | None = None,
    dask_workers: int = 2,
    clip_path: Path | None = None,
    progress=print,
    timer=None,
) -> SweepReport:
    """Validate, run the sweep on `runner`, verify the files. Returns what happened.
    `timer`: seconds of one generate() call from (cell, result) (tests inject noise)."""
    registry = Registry(settings.registry_path, model_roots=settings.model_roots)
    cards = select_cards(registry, config.models)
    accelerators = resolve_devices(list(config.devices))
    prompts = load_prompts(config.prompt_set, config.prompts, load_salt(settings))
    cells = expand_grid(cards, accelerators, config, prompts)
    clip = clip_path if clip_path is not None else default_clip(settings)
    if not (Path(clip) / "config.json").is_file():
        raise InvalidInputError(
            f"--clip: {str(clip)!r}: no CLIP model there; build one with "
            "`sdaas models make-tiny` or pass --clip PATH"
        )
    if out_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = settings.profiles_dir / f"{stamp}-{runner.lower()}"
    out_dir = Path(out_dir)
    _check_writable(out_dir)
    stale = list(out_dir.glob("*.parquet")) + list(out_dir.glob("failures.jsonl"))
    if stale:
        raise InvalidInputError(
            f"--out: {str(out_dir)!r} already holds a sweep; choose an empty folder"
        )
    # what the CLIP predictor may know of each prompt: numbers on a basis fitted on these
    # captions, saved beside the rows (numbers only) so training can log it with the model
    with_features, basis = featurize_prompts(prompts, Path(clip))
    if basis is not None:
        basis.save(out_dir)
    by_prompt = {p.id: p for p in with_features}
    cells = [replace(c, prompt=by_prompt[c.prompt.id]) for c in cells]

    per_model = Counter(c.model for c in cells)
    progress(
        f"profiling {len(cells)} cells on {runner}: "
        + ", ".join(f"{m} x{n}" for m, n in sorted(per_model.items()))
        + f" on {', '.join(a.name for a in accelerators)} -> {out_dir}"
    )
    start = time.perf_counter()
    by_name = {c.name: c for c in cards}
    with runner_for(runner, beam_args=beam_args, dask_workers=dask_workers) as choice:
        p = beam.Pipeline(runner=choice.runner, options=choice.options)
        # Local Dask workers share this host's cores. Dask starts workers with
        # OMP_NUM_THREADS=1, so without this one worker would use one core of two.
        local_dask = choice.name == "DaskRunner" and choice.workers > 0
        share = max(1, (os.cpu_count() or 1) // max(1, choice.workers))
        threads = min(cpu_threads(), share) if local_dask else None
        build_sweep(p, cells, by_name, str(clip), out_dir, threads, config.repeats, timer)
        load_before = host_load()
        (out_dir / PROGRESS_FILE).unlink(missing_ok=True)
        watcher = SweepProgress(out_dir / PROGRESS_FILE, len(cells), progress)
        watcher.start()
        result = p.run()
        try:
            result.wait_until_finish()
        finally:
            watcher.stop()
            (out_dir / PROGRESS_FILE).unlink(missing_ok=True)
            # The DaskRunner opens a client it never closes; left open, it spends 30 s trying
            # to reconnect to the cluster we are about to stop.
            client = getattr(result, "client", None)
            if client is not None:
                client.close()
    wall = time.perf_counter() - start

    failures = read_failures(out_dir)
    try:
        table = read_profiles(out_dir)
        # every timed call: a row's median latency times its repeats
        lat, reps = table.column("latency_s").to_pylist(), table.column("repeats").to_pylist()
        rows = table.num_rows
        model_s = float(sum(x * (r or 1) for x, r in zip(lat, reps, strict=True)))
        if table.schema.remove_metadata() != PROFILE_ARROW_SCHEMA.remove_metadata():
            raise SweepIncompleteError(f"{out_dir}: Parquet schema differs from the declared one")
    except FileNotFoundError:
        rows, model_s = 0, 0.0
    report = SweepReport(
        str(out_dir), choice.name, choice.workers, len(cells), rows, len(failures), wall, model_s
    )
    (out_dir / MANIFEST).write_text(
        json.dumps(
            {
                **asdict(report),
                "config": {**asdict(config), "prompt_set": str(config.prompt_set)},
                "accelerators": [a.name for a in accelerators],
                "clip_path": str(clip),
                "prompt_basis": basis.id if basis is not None else None,
                "host_load": {"before": load_before, "after": host_load()},
                # CPU cells ran at these torch threads, serving's engines' (`cpu_threads`)
                "torch_threads": threads or cpu_threads(),
                "sdaas_version": __version__,
                "created": time.time(),
            },
            indent=2,
        )
    )
    if rows + len(failures) != len(cells):
        raise SweepIncompleteError(
            f"sweep incomplete: grid {len(cells)} cells, but {rows} rows + {len(failures)} "
            f"failures were written under {out_dir} (runner {choice.name}); the output cannot "
            "be trusted"
        )
    progress(
        f"wrote {rows} rows ({len(failures)} failed cells) in {wall:.1f} s; "
        f"model time {model_s:.1f} s; overhead ratio {report.overhead_ratio:.2f}"
    )
    return report
