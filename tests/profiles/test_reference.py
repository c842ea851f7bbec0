"""Reference profiles: every row cited, the derivation rule applied as stated, assumed
curves marked as such, and the shipped Parquet in sync with its sources."""

from __future__ import annotations

import math

import polars as pl
import pyarrow.parquet as pq
import pytest

from profiles.reference import (
    REFERENCE_DIR,
    assumed_clip,
    assumed_curves,
    build_reference_records,
    fixed_step_units,
    load_anchors,
)
from profiles.summary import summarize
from sdaas.records import PROFILE_ARROW_SCHEMA, profile_table


@pytest.fixture(scope="module")
def df():
    return pl.from_arrow(profile_table(build_reference_records()))


def test_models_and_gpus_covered(df):
    models = set(df["model"])
    assert "sdxl-lightning" in models
    assert {"sd-1.5", "sdxl", "sd-turbo", "sdxs", "sd-1.4"} <= models
    gpus = " ".join(sorted(set(df["accelerator"])))
    for gpu in ("A100", "H100", "V100", "A10", "T4"):
        assert gpu in gpus


def test_every_row_is_cited_and_sourced(df):
    assert set(df["source"]) == {"published", "derived", "assumed"}
    assert (df["citation"].str.len_chars() > 10).all()
    assumed = df.filter(pl.col("source") == "assumed")
    assert assumed["citation"].str.starts_with("ASSUMED").all()
    assert assumed["latency_s"].is_nan().all()
    assert df.filter(pl.col("source") != "assumed")["clip_score"].is_nan().all()


def test_published_rows_equal_the_sources(df):
    t4 = df.filter((pl.col("accelerator") == "cuda-NVIDIA T4") & (pl.col("source") == "published"))
    assert t4["latency_s"].to_list() == [7.8]
    lam = df.filter(
        (pl.col("model") == "sd-1.4")
        & (pl.col("accelerator") == "cuda-NVIDIA A10")
        & (pl.col("batch_size") == 1)
        & (pl.col("source") == "published")
    )
    assert (lam["steps"].to_list(), lam["latency_s"].to_list()) == ([30], [2.01])


def test_derivation_rule_reproduces_the_anchor_and_is_linear(df):
    k = fixed_step_units(512, 1)
    assert k == pytest.approx((0.016566849 + 0.139717995) / 0.072862969, rel=1e-6)
    h100 = df.filter(
        (pl.col("accelerator") == "cuda-NVIDIA H100") & (pl.col("source") != "assumed")
    )
    per_step = 1.44 / (50 + k)
    for steps, lat in zip(h100["steps"], h100["latency_s"], strict=True):
        assert lat == pytest.approx(per_step * (steps + k), rel=1e-9)
    fits = {(f.model, f.accelerator, f.batch_size): f for f in summarize(h100)}
    fit = fits[("sd-1.5", "cuda-NVIDIA H100", 1)]
    assert fit.r2 == pytest.approx(1.0) and fit.per_step_s == pytest.approx(per_step)


def test_assumed_curves_pass_their_anchors():
    curves = assumed_curves()
    assert assumed_clip(curves["sdxl"], 20) == pytest.approx(31.75, abs=0.01)  # MLPerf SDXL
    assert assumed_clip(curves["sd-1.5"], 4) == pytest.approx(26.64, abs=0.1)
    assert assumed_clip(curves["sd-1.5"], 8) == pytest.approx(29.55, abs=0.1)
    s = [assumed_clip(curves["sd-1.5"], n) for n in (1, 2, 5, 10, 50)]
    assert s == sorted(s)


def test_latency_rises_with_steps_and_batch(df):
    sd15 = df.filter(
        (pl.col("model") == "sd-1.5")
        & (pl.col("accelerator") == "cuda-NVIDIA A100 (DiffServe)")
        & (pl.col("source") != "assumed")
    )
    at50 = sd15.filter(pl.col("steps") == 50).sort("batch_size")["latency_s"].to_list()
    assert at50 == sorted(at50) and len(at50) == 6
    one = sd15.filter(pl.col("batch_size") == 1).sort("steps")["latency_s"].to_list()
    assert one == sorted(one)


def test_shipped_parquet_matches_its_sources():
    shipped = pq.read_table(REFERENCE_DIR / "reference_profiles.parquet")
    assert shipped.schema.remove_metadata() == PROFILE_ARROW_SCHEMA.remove_metadata()
    fresh = profile_table(build_reference_records())
    cols = [c for c in PROFILE_ARROW_SCHEMA.names if c != "ts"]
    a = pl.from_arrow(shipped.select(cols)).fill_nan(None)
    b = pl.from_arrow(fresh.select(cols)).fill_nan(None)
    assert a.equals(b), "run `sdaas profile --reference` to rebuild the shipped Parquet"


def test_anchor_count_and_no_nan():
    anchors = load_anchors()
    assert len(anchors) > 60
    assert all(a.per_step_s > 0 and not math.isnan(a.latency_s) for a in anchors)


def test_a_rebuild_of_the_unchanged_figures_is_the_shipped_file(tmp_path):
    """`sdaas profile --reference` dirtied the checkout with a new `ts` on every run."""
    import shutil

    from profiles.reference import write_reference

    ref = tmp_path / "reference"
    shutil.copytree(REFERENCE_DIR, ref)
    out, _ = write_reference(ref_dir=ref)
    assert out.read_bytes() == (REFERENCE_DIR / "reference_profiles.parquet").read_bytes()
