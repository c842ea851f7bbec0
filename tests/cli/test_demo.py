"""The demo end to end on a throwaway home: models built, registered, images and table out."""

from __future__ import annotations

import pytest
from PIL import Image

from cli.demo import SAMPLE_PROMPT, run_demo
from models.registry import Registry
from pipelines.profile_grid import SweepConfig


@pytest.mark.slow
def test_demo_runs_every_model_and_never_prints_the_prompt(settings):
    lines: list[str] = []
    sweep = SweepConfig(steps=(1, 2), prompts=1)
    rows = run_demo(settings, steps=2, out=lines.append, sweep=sweep)
    reg = Registry(settings.registry_path, model_roots=settings.model_roots)
    cards = {r.card.name: r.card for r in reg.list()}
    names = sorted(cards)
    assert len(names) >= 3
    assert sorted(r.model for r in rows) == names
    assert all(r.latency_s > 0 and r.steps == 2 for r in rows)
    for r in rows:
        assert Image.open(r.image).size == cards[r.model].resolution_pairs[0]
    assert (settings.outputs_dir / "demo_contact_sheet.png").is_file()
    text = "\n".join(lines)
    assert "4/8 results" in text and "5/8 profiling sweep" in text
    assert "6/8 predictors" in text and "promoted: no champion yet" in text
    plans = text.split("6/8 predictors")[1].split("7/7")[0]
    assert "min CLIP 99 unreachable for style" in plans
    assert "fastest option meeting min CLIP 0 needs" in plans and "> 0.001 s" in plans
    assert "wrote 6 rows (0 failed cells)" in text
    assert "wrote 12 rows (0 failed cells)" in text  # batch sizes 2 and 4 at steps 1, 2
    assert "R²" in text
    assert SAMPLE_PROMPT not in text
    sim = text.split("7/8 scheduling policies")[1].split("8/8")[0]
    assert all(f" {p} " in sim for p in ("sjf", "fcfs", "orca", "srpt-oracle", "slack-sjf"))
    assert (settings.outputs_dir / "scheduler-demo" / "jct_vs_load.png").is_file()
    serving = text.split("8/8 serving")[1]
    table = {line.split()[0]: line.split() for line in serving.splitlines() if line.strip()}
    for policy in ("slack-sjf", "sjf", "fcfs"):  # records, done, rejected, dead, duplicates
        n, done, rejected, dead, dup = (int(x) for x in table[policy][1:6])
        assert (n, done + rejected, dead, dup) == (30, 24, 5, 1)
    # the profiled batch sizes make slack-sjf batch; sjf and fcfs run each job alone
    batched, largest = (int(x) for x in table["slack-sjf"][-2:])
    assert batched > 0 and 1 < largest <= 4, table["slack-sjf"]
    assert [table[p][-2:] for p in ("sjf", "fcfs")] == [["0", "1"], ["0", "1"]]
    assert "slack-sjf batches jobs of one model at step boundaries: toy-" in serving
    ours = [table[f"demo-{i:02d}"] for i in range(24) if table[f"demo-{i:02d}"][2] == "done"]
    assert any(int(row[-4]) > 1 for row in ours)  # batch, JCT, CLIP, met: a done job's last
    assert "goodput (both SLOs met, over all 24 jobs): slack-sjf " in serving
    assert "dead letter" in serving and "not JSON" in serving
    assert "demo-23" in serving  # every job has a row
    # the front door: the API's URL, one job over HTTP, its events as they came
    api = serving.split("the front door")[1]
    assert "API on http://127.0.0.1:" in api and "POST /v1/jobs -> 202 job" in api
    lines = [line.strip() for line in api.splitlines()]
    planned = next(line for line in lines if line.startswith("planned: "))
    n = int(planned.split(" steps,")[0].rsplit(" ", 1)[1])
    assert [line for line in lines if line.startswith("step ")] == [
        f"step {i}/{n}" for i in range(1, n + 1)]  # fmt: skip
    assert any(line.startswith("done: JCT") for line in lines) and "/image ->" in api
    # Running again reuses the models and the registrations (idempotent).
    rows2 = run_demo(settings, steps=2, out=lambda _: None, sweep=None)
    assert [r.model for r in rows2] == [r.model for r in rows]
    assert len(reg.versions(names[0])) == 1
