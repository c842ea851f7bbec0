"""Training data: which profile rows, how they are split, and a hash that names them.

Held-out data is chosen by step count (per model: every third interior step count) and
by seed (each prompt's highest seed, when it has several), so the metrics say how well the
predictor interpolates to step counts and prompts-with-seeds it never saw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from predictor.features import add_derived_columns
from predictor.prompt_features import BASIS_FILE, PC_COLUMNS, PromptBasis
from profiles.parquet_io import read_profiles
from profiles.reference import REFERENCE_DIR
from sdaas.config import Settings
from sdaas.errors import InvalidInputError

DataChoice = Literal["measured", "reference", "both"]
DATA_CHOICES = ("measured", "reference", "both")


@dataclass(frozen=True)
class TrainingData:
    frame: pd.DataFrame
    choice: str
    sources: dict[str, int]  # rows per `source`
    data_hash: str
    # the PCA basis most CLIP rows' prompt features are on (None: no prompt features)
    prompt_basis: PromptBasis | None = None

    def prompt_rows(self) -> pd.DataFrame:
        """The rows the prompt-aware CLIP predictor learns from: a measured CLIP and
        prompt features on `prompt_basis` (rows on another basis cannot be compared)."""
        if self.prompt_basis is None:
            return self.frame.iloc[:0]
        df = self.frame
        ok = (df["prompt_basis"] == self.prompt_basis.id) & df["clip_score"].notna()
        ok &= df[list(PC_COLUMNS)].notna().all(axis=1)
        return df[ok].reset_index(drop=True)


def load_training_data(
    settings: Settings, choice: str = "both", profiles_dir: Path | None = None
) -> TrainingData:
    if choice not in DATA_CHOICES:
        raise InvalidInputError(f"--data: {choice!r}: use one of {', '.join(DATA_CHOICES)}")
    frames = []
    basis = None
    if choice in ("measured", "both"):
        where = Path(profiles_dir) if profiles_dir else settings.profiles_dir
        try:
            frames.append(newest_measurements(where))
            basis = main_prompt_basis(frames[-1], where)
        except FileNotFoundError:
            if choice == "measured":
                raise InvalidInputError(
                    f"--data measured: no profiles under {where}; run `sdaas profile` first"
                ) from None
    if choice in ("reference", "both"):
        frames.append(read_profiles(REFERENCE_DIR / "reference_profiles.parquet").to_pandas())
    df = pd.concat(frames, ignore_index=True)
    df = add_derived_columns(df)
    return TrainingData(df, choice, df["source"].value_counts().to_dict(), frame_hash(df), basis)


def main_prompt_basis(df: pd.DataFrame, where: Path) -> PromptBasis | None:
    """The basis (saved by the sweep beside its rows, `BASIS_FILE`) that the most rows
    with a measured CLIP have prompt features on; None when no such rows or file."""
    if "prompt_basis" not in df.columns:
        return None
    ids = df.loc[df["clip_score"].notna(), "prompt_basis"].dropna()
    ids = ids[ids != ""]
    if ids.empty:
        return None
    wanted = ids.value_counts().index[0]
    root = where if where.is_dir() else where.parent
    for path in sorted(root.rglob(BASIS_FILE)):
        basis = PromptBasis.load(path)
        if basis.id == wanted:
            return basis
    return None


def newest_measurements(where: Path) -> pd.DataFrame:
    """Measured rows under `where`, each (model, accelerator, batch size) from the newest
    run folder that measured it: a re-measured profile (`sdaas profile --stale`, or a
    sweep on a quieter host) replaces the old one instead of averaging with it."""
    files = [where] if where.is_file() else sorted(where.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no profile Parquet files under {where}")
    frames = []
    for f in files:
        part = read_profiles(f).to_pandas()
        frames.append(part.assign(_run=str(f.parent)))
    df = pd.concat(frames, ignore_index=True)
    group = ["model", "model_version", "accelerator", "batch_size"]
    run_ts = df.groupby(group + ["_run"])["ts"].transform("max")
    newest = run_ts == run_ts.groupby([df[c] for c in group]).transform("max")
    return df[newest].drop(columns="_run").reset_index(drop=True)


def frame_hash(df: pd.DataFrame) -> str:
    """A content hash of the rows (order-independent; run metadata like ts/host excluded)."""
    cols = [c for c in df.columns if c not in ("ts", "host", "sdaas_version")]
    row_hashes = np.sort(pd.util.hash_pandas_object(df[cols], index=False).to_numpy())
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()[:16]


def holdout_mask(df: pd.DataFrame) -> np.ndarray:
    """True for held-out rows: some interior step counts per model, and each prompt's top
    seed."""
    mask = np.zeros(len(df), dtype=bool)
    for _, idx in df.groupby("model").groups.items():
        steps = sorted(df.loc[idx, "steps"].unique())
        interior = steps[1:-1]
        held = interior[1::3] if len(interior) >= 4 else interior[len(interior) // 2 :][:1]
        mask[df.index.get_indexer(idx)] |= df.loc[idx, "steps"].isin(held).to_numpy()
    # each prompt's top seed (prompts run at seeds of their own: `noise_seed`)
    by_prompt = df.groupby("prompt_id")["seed"]
    several = (by_prompt.transform("nunique") > 1).to_numpy()
    mask |= several & (df["seed"] == by_prompt.transform("max")).to_numpy()
    return mask
