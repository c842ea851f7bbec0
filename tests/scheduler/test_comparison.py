import json

import numpy as np
import polars as pl
import pytest

from scheduler.catalog import single_model_catalog
from scheduler.cluster import Cluster
from scheduler.comparison import ComparisonConfig, estimate_capacity, run_comparison
from scheduler.policies import known_policies
from scheduler.workload import slo_mix
from sdaas.errors import InvalidInputError
from tests.conftest import run_cli


def test_capacity_of_a_known_server():
    cat = single_model_catalog(0.25)
    cap = estimate_capacity(cat, Cluster.parse("3xX"), slo_mix("uniform", ["any"]), jobs=600)
    assert cap == pytest.approx(3 / 0.25)


def test_comparison_writes_every_policy_and_workload(tmp_path):
    cfg = ComparisonConfig(jobs=400, seeds=2, loads=(0.5, 1.1), cluster="2xA100+2xT4")
    res = run_comparison(cfg, tmp_path)
    runs = pl.read_parquet(tmp_path / "runs.parquet")
    assert runs.height == 5 * 2 * 2 * len(known_policies())  # 5 workloads, mmpp included
    summary = pl.read_parquet(tmp_path / "summary.parquet")
    assert set(summary["policy"]) == set(known_policies())
    assert (summary["seeds"] == 2).all() and "mean_jct_s_ci" in summary.columns
    # the mean over seeds is the mean of the runs
    one = runs.filter((pl.col("policy") == "sjf") & (pl.col("workload") == "bursty"))
    one = one.filter(pl.col("load") == 0.5)
    row = summary.filter(
        (pl.col("policy") == "sjf") & (pl.col("workload") == "bursty") & (pl.col("load") == 0.5)
    )
    assert row["mean_jct_s"][0] == pytest.approx(one["mean_jct_s"].mean())
    md = (tmp_path / "summary.md").read_text()
    assert all(p in md for p in known_policies()) and "## trace: mean JCT" in md
    assert "## mmpp: goodput" in md and "## Ours against the best baseline and the fair" in md
    assert (tmp_path / "jct_vs_load.png").stat().st_size > 10_000
    assert (tmp_path / "slo_vs_load.png").exists()
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["capacity_jobs_per_s"] == pytest.approx(res["meta"]["capacity_jobs_per_s"])
    bursty = runs.filter(pl.col("workload") == "bursty")["interarrival_cv"]
    assert (bursty > 3).all()  # 400 gaps: a noisy estimate of 5
    assert np.isfinite(runs["utilization"].to_numpy()).all()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"loads": (0.5, 0.0)}, "load: 0.0: must be a finite number > 0"),
        ({"loads": (-1,)}, "load: -1"),
        ({"workloads": ("poisson", "weird")}, "workload: 'weird'"),
        ({"workloads": ("trace:a/x.txt", "trace:b/x.txt")}, "'trace:x' named twice"),
        ({"workloads": ("mmpp",), "mmpp_rates": (1.0, 2.0, 3.0)}, "mmpp dwell: 2 values"),
        ({"cluster": "2xB200"}, "'B200'"),
        ({"policies": ["sjf", "lottery"]}, "policy: 'lottery': unknown"),
    ],
)
def test_bad_configs_fail_before_any_work(kw, match):
    with pytest.raises(InvalidInputError, match=match):
        run_comparison(ComparisonConfig(jobs=50, seeds=1, **kw))


def test_cli_bench(tmp_path):
    out = tmp_path / "b"
    r = run_cli(
        "bench", "--jobs", "300", "--seeds", "1", "--loads", "0.6", "--workloads", "poisson",
        "--policies", "sjf,fcfs,srpt-oracle", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "## poisson: mean JCT" in r.stdout and "| sjf |" in r.stdout
    assert (out / "runs.parquet").exists()
    r = run_cli("bench", "--loads", "0", "--out", str(out))
    assert r.returncode == 2 and "load: 0.0" in r.stderr
    r = run_cli("bench", "--trace", str(tmp_path / "none.txt"), "--workloads", "trace")
    assert r.returncode == 2 and "no such file" in r.stderr
