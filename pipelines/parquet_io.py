"""Parquet and failure-file writing from our own DoFns, and the read-back check.

Beam's `WriteToParquet` reports success and leaves empty files on the DaskRunner
(measured; DESIGN.md §5), so every sweep writes its shards itself, with the explicit
schema, atomically (temp file + rename), and the driver counts rows afterwards.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq

from sdaas.records import PROFILE_ARROW_SCHEMA, ProfileRecord, profile_table

FAILURES_FILE = "failures.jsonl"


@dataclass(frozen=True)
class CellFailure:
    """A cell that raised: where, and why (the prompt appears only as its id)."""

    model: str
    model_version: str
    accelerator: str
    steps: int
    batch_size: int
    prompt_id: str
    seed: int
    error: str


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", name)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


class WriteParquetShard(beam.DoFn):
    """(shard, records) -> one Parquet file per shard; emits (path, rows written)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def process(self, element: tuple[str, Iterable[ProfileRecord]]):
        shard, records = element
        rows = sorted(records, key=lambda r: (r.steps, r.prompt_id, r.seed, r.batch_size))
        path = Path(self.out_dir) / f"part-{_safe(shard)}.parquet"
        _atomic_write(path, lambda tmp: pq.write_table(profile_table(rows), tmp))
        yield str(path), len(rows)


class WriteFailures(beam.DoFn):
    """(_, failures) -> failures.jsonl; emits its row count."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def process(self, element: tuple[str, Iterable[CellFailure]]):
        _, failures = element
        rows = [asdict(f) for f in failures]
        path = Path(self.out_dir) / FAILURES_FILE

        def write(tmp: Path) -> None:
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

        _atomic_write(path, write)
        yield len(rows)


def read_profiles(path: Path):
    """All profile rows under `path` (a file or a folder, searched recursively) as one
    Arrow table with the declared schema."""
    import pyarrow as pa

    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no profile Parquet files under {path}")
    tables = [pq.read_table(f, schema=PROFILE_ARROW_SCHEMA) for f in files]
    return pa.concat_tables(tables)


def read_failures(out_dir: Path) -> list[dict]:
    path = Path(out_dir) / FAILURES_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
