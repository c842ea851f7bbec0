"""No ranked table rewards dropping: a policy that lost jobs is not compared with the
oracle on mean JCT, and the summary says what it lost."""

import polars as pl

from scheduler.comparison import ComparisonConfig, run_comparison
from scheduler.ranking import ORACLE, jct_vs_oracle, ranked


def test_a_dropping_policy_cannot_beat_the_oracle(tmp_path):
    cfg = ComparisonConfig(jobs=1500, seeds=1, loads=(0.8, 1.3), cluster="2xA100+2xT4",
                           workloads=("bursty",), plan_load=0.0)  # fmt: skip
    res = run_comparison(cfg, tmp_path)
    s = jct_vs_oracle(res["summary"])
    oracle = s.filter(pl.col("policy") == ORACLE)
    assert (oracle["lost_share"] == 0).all()
    # the case the old tables got wrong: policies that drop look faster than the bound
    droppers = s.filter(pl.col("lost_share") > 0.05)
    assert droppers.height >= 2
    assert (droppers["mean_jct_s"] < droppers.join(oracle.select("load", o="mean_jct_s"),
                                                   on="load")["o"]).any()  # fmt: skip
    # ... and are not compared with it; whoever is compared is no faster than the bound
    assert droppers["jct_vs_oracle"].is_null().all()
    compared = s.filter(pl.col("jct_vs_oracle").is_not_null())
    assert compared.height >= 5 and (compared["jct_vs_oracle"] >= 1 - 1e-9).all()
    md = (tmp_path / "summary.md").read_text()
    table = md.split("mean JCT over the oracle's, at equal completion")[1].split("##")[0]
    for row in droppers.iter_rows(named=True):
        line = next(x for x in table.splitlines() if x.startswith(f"| {row['policy']} |"))
        assert f"lost {row['lost_share']:.0%}" in line
    # ranked by goodput, then JCT at equal completion: a dropper never outranks the
    # oracle on JCT at equal goodput, and the order is by goodput
    for load in cfg.loads:
        order = ranked(res["summary"], "bursty", load)
        goodput = order["both_slo_met"].to_list()
        assert goodput == sorted(goodput, reverse=True)
