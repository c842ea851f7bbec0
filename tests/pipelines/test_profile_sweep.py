"""The sweep end to end on real tiny models: FnApiRunner and DaskRunner, failures, bad input,
and no prompt text anywhere in what it writes."""

from __future__ import annotations

import json
import logging

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from models.backend import cpu_threads
from models.registry import Registry
from pipelines import parquet_io
from pipelines.profile_grid import SweepConfig
from pipelines.profile_sweep import SweepIncompleteError, run_sweep
from pipelines.prompts import DEFAULT_PROMPT_SET, load_prompts, read_prompt_texts
from profiles.parquet_io import read_failures, read_profiles
from profiles.summary import fit_line, summary_report
from sdaas.errors import InvalidInputError
from sdaas.records import PROFILE_ARROW_SCHEMA

CFG = SweepConfig(steps=(1, 6), prompts=2)


def _all_text(folder) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def _prompt_texts(settings, n):
    from sdaas.privacy import load_salt

    return [p.text for p in load_prompts(DEFAULT_PROMPT_SET, n, load_salt(settings))]


@pytest.mark.slow
def test_fnapi_sweep_writes_the_grid_with_the_schema(
    sweep_settings, clip_path, tmp_path, caplog, capsys
):
    caplog.set_level(logging.INFO)
    out = tmp_path / "run"
    report = run_sweep(sweep_settings, CFG, out_dir=out, clip_path=clip_path)
    assert report.grid_cells == 3 * 2 * 2 == report.rows and report.failures == 0
    for f in out.glob("*.parquet"):
        assert pq.read_schema(f).remove_metadata() == PROFILE_ARROW_SCHEMA.remove_metadata()
    df = pl.from_arrow(read_profiles(out))
    assert df.height == 12
    assert set(df["source"]) == {"measured"}
    assert df["clip_score"].is_nan().sum() == 0
    assert (df["per_step_s"] > 0).all()
    for model, group in df.group_by("model"):
        slow, fast = group.filter(pl.col("steps") == 6), group.filter(pl.col("steps") == 1)
        # means, not min/max: one load spike on a shared machine must not fail this
        assert slow["latency_s"].mean() > fast["latency_s"].mean(), model
        _, slope, _ = fit_line(group["steps"].to_numpy(), group["latency_s"].to_numpy())
        assert slope > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 12 and manifest["runner"] == "FnApiRunner"
    assert manifest["torch_threads"] == cpu_threads()  # the threads serving's engines use
    # Privacy: no prompt text in files, logs or printed output.
    blob = _all_text(out)
    logs = caplog.text + capsys.readouterr().out
    for text in _prompt_texts(sweep_settings, 2):
        assert text.encode() not in blob
        assert text not in logs
    text, fits = summary_report(out, out / "profile.png")
    assert (out / "profile.png").stat().st_size > 1000
    assert {f.model for f in fits} == set(df["model"])
    assert "failed cells: 0" in text


@pytest.mark.slow
def test_dask_sweep_writes_the_same_rows_and_schema(sweep_settings, clip_path, tmp_path):
    fn = run_sweep(sweep_settings, CFG, out_dir=tmp_path / "fn", clip_path=clip_path)
    dk = run_sweep(
        sweep_settings,
        CFG,
        out_dir=tmp_path / "dask",
        clip_path=clip_path,
        runner="DaskRunner",
        dask_workers=2,
    )
    assert (dk.runner, dk.workers) == ("DaskRunner", 2)
    assert dk.rows == fn.rows == dk.grid_cells
    a, b = read_profiles(tmp_path / "fn"), read_profiles(tmp_path / "dask")
    assert a.schema == b.schema
    key = ["model", "accelerator", "steps", "prompt_id", "seed", "batch_size"]
    assert sorted(a.select(key).to_pylist(), key=str) == sorted(b.select(key).to_pylist(), key=str)
    # Same seeds, same images: the CLIP scores agree across runners.
    ca = pl.from_arrow(a).sort(key)["clip_score"].to_numpy()
    cb = pl.from_arrow(b).sort(key)["clip_score"].to_numpy()
    assert np.allclose(ca, cb, atol=0.05)  # thread counts differ: rounding, not new images


@pytest.mark.slow
def test_a_failing_model_sends_cells_to_the_failures_file(
    sweep_settings, clip_path, tiny_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("SDAAS_FLAKY_MODEL_PATH", str(tiny_dir / "tiny-sketch-s"))
    card = yaml.safe_load((tiny_dir / "cards" / "tiny-sketch-s.yaml").read_text())
    card.update(
        name="flaky", source={"kind": "python", "entrypoint": "tests.pipelines.flaky_model:factory"}
    )
    reg = Registry(sweep_settings.registry_path, model_roots=sweep_settings.model_roots)
    (tmp_path / "flaky.yaml").write_text(yaml.safe_dump(card))
    reg.register_file(tmp_path / "flaky.yaml")
    cfg = SweepConfig(models=("flaky", "tiny-sketch-s"), steps=(1, 3, 4), prompts=2)
    out = tmp_path / "run"
    report = run_sweep(sweep_settings, cfg, out_dir=out, clip_path=clip_path)
    assert (report.grid_cells, report.rows, report.failures) == (12, 10, 2)
    failures = read_failures(out)
    assert {(f["model"], f["steps"]) for f in failures} == {("flaky", 3)}
    assert all("simulated device fault" in f["error"] for f in failures)
    assert all(f"<prompt {f['prompt_id']}>" in f["error"] for f in failures)
    for text in _prompt_texts(sweep_settings, 2):
        assert text.encode() not in _all_text(out)
    summary, _ = summary_report(out)
    assert "flaky 2" in summary


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        (SweepConfig(models=("ghost",)), "ghost: not registered"),
        (SweepConfig(steps=()), "--steps: empty"),
        (SweepConfig(steps=(0, 2)), "serves 1..50, asked 0"),
    ],
)
def test_bad_input_fails_before_any_work(sweep_settings, clip_path, tmp_path, cfg, needle):
    out = tmp_path / "run"
    with pytest.raises(InvalidInputError, match=needle):
        run_sweep(sweep_settings, cfg, out_dir=out, clip_path=clip_path)
    assert not out.exists()


def test_unwritable_output_fails_before_any_work(sweep_settings, clip_path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InvalidInputError, match="--out: .*cannot write there"):
        run_sweep(sweep_settings, CFG, out_dir=blocker / "run", clip_path=clip_path)


def test_missing_clip_model_is_named(sweep_settings, tmp_path):
    with pytest.raises(InvalidInputError, match="--clip: .*make-tiny"):
        run_sweep(sweep_settings, CFG, out_dir=tmp_path / "r", clip_path=tmp_path / "no-clip")


@pytest.mark.slow
def test_lost_rows_fail_the_sweep_loudly(sweep_settings, clip_path, tmp_path, monkeypatch):
    """A writer that drops rows (as WriteToParquet does on Dask) must not pass as success."""
    real = parquet_io.WriteParquetShard.process

    def lossy(self, element):
        shard, records = element
        yield from real(self, (shard, list(records)[1:]))

    monkeypatch.setattr(parquet_io.WriteParquetShard, "process", lossy)
    cfg = SweepConfig(models=("tiny-sketch-s",), steps=(1, 2), prompts=1)
    with pytest.raises(SweepIncompleteError, match="grid 2 cells, but 1 rows"):
        run_sweep(sweep_settings, cfg, out_dir=tmp_path / "r", clip_path=clip_path)


@pytest.mark.slow
def test_sweep_records_prompt_features_and_nothing_of_the_text(
    sweep_settings, clip_path, tmp_path, caplog, capsys
):
    """Each row carries its prompt's features on the basis saved beside the rows; both
    predictors train on them (the prompt-aware one with the basis as an MLflow artifact);
    and no prompt text is anywhere in the home: profiles, basis, MLflow store, logs."""
    from models.clip_score import ClipScorer
    from predictor.dataset import load_training_data
    from predictor.prompt_features import BASIS_FILE, PC_COLUMNS, PromptBasis, PromptFeaturizer
    from predictor.store import load_predictor
    from predictor.tracking import PROMPT_CLIP_MODEL
    from predictor.train_cli import train_all

    caplog.set_level(logging.INFO)
    cfg = SweepConfig(steps=(1, 2), prompts=3, seeds=(0, 1), repeats=(1, 1))
    run_sweep(sweep_settings, cfg, out_dir=sweep_settings.profiles_dir / "run", clip_path=clip_path)
    out = sweep_settings.profiles_dir / "run"
    basis = PromptBasis.load(out / BASIS_FILE)
    assert json.loads((out / "manifest.json").read_text())["prompt_basis"] == basis.id
    df = pl.from_arrow(read_profiles(out)).to_pandas()
    assert set(df["prompt_basis"]) == {basis.id} and basis.prompts == 3
    assert df[list(PC_COLUMNS)].notna().all().all()
    # the stored numbers are what the featurizer computes from the text, per prompt
    texts = _prompt_texts(sweep_settings, 3)
    fresh = PromptFeaturizer(ClipScorer.from_path(clip_path), basis).features(texts)
    ids = [p.id for p in load_prompts(DEFAULT_PROMPT_SET, 3, _salt(sweep_settings))]
    for pid, f in zip(ids, fresh, strict=True):
        rows = df[df["prompt_id"] == pid]
        assert (rows["prompt_tokens"] == f.tokens).all()
        assert (rows["prompt_objects"] == f.objects).all()
        np.testing.assert_allclose(rows[list(PC_COLUMNS)].to_numpy()[0], f.components, atol=1e-5)
    td = load_training_data(sweep_settings, "measured")
    assert td.prompt_basis == basis and len(td.prompt_rows()) == len(df)
    report = train_all(sweep_settings, data="measured", accept_noisy=True)
    assert report.prompt_clip is not None and report.prompt_clip.promoted
    loaded = load_predictor(sweep_settings, PROMPT_CLIP_MODEL)
    assert loaded.prompt_basis == basis
    assert set(loaded.spec.lower_margin) == {f"{m}@1.0" for m in df["model"].unique()}
    blob = _all_text(sweep_settings.home)
    logs = caplog.text + capsys.readouterr().out
    for text in read_prompt_texts(DEFAULT_PROMPT_SET):
        assert text.encode() not in blob, text
        assert text not in logs


def _salt(settings):
    from sdaas.privacy import load_salt

    return load_salt(settings)
