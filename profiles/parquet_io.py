"""Profile rows and cell failures on disk: reading them back with the declared schema,
and the atomic write the sweep's DoFns use (`pipelines/parquet_io.py`)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from sdaas.records import PROFILE_ARROW_SCHEMA

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


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", name)


def atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


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
