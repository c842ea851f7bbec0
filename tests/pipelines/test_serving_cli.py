"""The user's commands against a real broker: submit, serve, results (tenant-scoped)."""

import json
import uuid

import pytest

from tests.conftest import run_cli
from tests.pipelines.serving_home import PROMPT

pytestmark = pytest.mark.slow


def test_submit_serve_results(serving_settings, broker):
    home = ["--home", str(serving_settings.home)]
    kafka = ["--bootstrap-servers", broker.bootstrap, "--topic-prefix", f"c{uuid.uuid4().hex[:6]}"]
    job = ["--prompt", PROMPT, "--style", "flat", "--latency-slo", "60", "--min-clip", "0"]
    r = run_cli(*home, "submit", *kafka, *job, "--tenant", "ann", "--job-id", "cli-1")
    assert r.returncode == 0 and r.stdout.strip() == "cli-1", r.stderr
    r = run_cli(*home, "serve", *kafka, "--idle-exit", "1.5", "--window-s", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 in -> 1 done" in r.stdout
    r = run_cli(*home, "results", "--admin", "--tenant", "ann", "--job-id", "cli-1", "--json")
    assert r.returncode == 0
    (res,) = json.loads(r.stdout)
    assert res["status"] == "done" and res["tenant"] == "ann" and res["image_uri"]
    r = run_cli(*home, "results", "--admin", "--tenant", "bob", "--job-id", "cli-1")
    assert r.returncode == 3 and "no result for tenant 'bob'" in r.stderr  # not another's
    for text in (r.stdout, r.stderr):
        assert PROMPT not in text


def test_submit_refuses_bad_jobs_before_any_broker(tmp_path):
    r = run_cli("--home", str(tmp_path), "submit", "--prompt", "x", "--style", "flat",
                "--latency-slo", "-1", "--min-clip", "500")  # fmt: skip
    assert r.returncode == 2
    assert "latency_slo_s: -1.0: must be > 0" in r.stderr and "min_clip: 500.0" in r.stderr
    r = run_cli("--home", str(tmp_path), "submit", "--prompt", "x", "--style", "flat",
                "--latency-slo", "1", "--min-clip", "5")  # fmt: skip
    assert r.returncode == 1 and "no Kafka broker" in r.stderr


def test_submit_refuses_a_style_or_resolution_this_homes_models_do_not_serve(serving_settings):
    home = ["--home", str(serving_settings.home)]
    job = ["--prompt", "x", "--latency-slo", "5", "--min-clip", "0"]
    r = run_cli(*home, "submit", *job, "--style", "watercolor")
    assert r.returncode == 2 and "style: 'watercolor'" in r.stderr, r.stderr
    r = run_cli(*home, "submit", *job, "--style", "flat", "--resolution", "640x640")
    assert r.returncode == 2 and "resolution" in r.stderr and "served at" in r.stderr, r.stderr
