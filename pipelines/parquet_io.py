"""Parquet and failure-file writing from our own DoFns.

Beam's `WriteToParquet` reports success and leaves empty files on the DaskRunner
(measured; DESIGN.md §5), so every sweep writes its shards itself, with the explicit
schema, atomically (temp file + rename), and the driver counts rows afterwards
(`profiles.parquet_io.read_profiles`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq

from profiles.parquet_io import FAILURES_FILE, CellFailure, atomic_write, safe_name
from sdaas.records import ProfileRecord, profile_table


class WriteParquetShard(beam.DoFn):
    """(shard, records) -> one Parquet file per shard; emits (path, rows written)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def process(self, element: tuple[str, Iterable[ProfileRecord]]):
        shard, records = element
        rows = sorted(records, key=lambda r: (r.steps, r.prompt_id, r.seed, r.batch_size))
        path = Path(self.out_dir) / f"part-{safe_name(shard)}.parquet"
        atomic_write(path, lambda tmp: pq.write_table(profile_table(rows), tmp))
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

        atomic_write(path, write)
        yield len(rows)
