import json

import pytest

from pipelines.job_request import MAX_MESSAGE_BYTES, JobRefused, JobRequest, parse_job

STYLES = ["flat", "outline"]
SECRET = "a secret prompt about my cat"


def good(**kw):
    d = {
        "job_id": "j-1",
        "tenant": "acme",
        "prompt": SECRET,
        "style": "flat",
        "latency_slo_s": 2.0,
        "min_clip": 30,
    }
    d.update(kw)
    return json.dumps(d).encode()


def test_a_good_request_round_trips():
    j = parse_job(good(seed=7, resolution="32x32"), STYLES)
    assert (j.job_id, j.tenant, j.style, j.latency_slo_s, j.min_clip) == (
        "j-1",
        "acme",
        "flat",
        2.0,
        30.0,
    )
    assert (j.seed, j.resolution) == (7, (32, 32))
    assert parse_job(j.to_json(), STYLES) == j


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"{not json", "message: not JSON"),
        (b"[1, 2]", "message: a JSON list: must be an object"),
        (json.dumps({"job_id": "a", "tenant": "t"}).encode(), "prompt: missing: required"),
        (good(latency_slo_s="fast"), "latency_slo_s: 'fast': must be a number"),
        (good(min_clip=True), "min_clip: True: must be a number"),
        (good(latency_slo_s=-1), "latency_slo_s: -1.0: must be > 0 seconds"),
        (good(latency_slo_s=0), "latency_slo_s: 0.0: must be > 0"),
        (good(min_clip=101), "min_clip: 101.0: must be in \\[0, 100\\]"),
        (good(min_clip=-0.5), "min_clip: -0.5"),
        (good(style="baroque"), "style: 'baroque': unknown; served styles: flat, outline"),
        (good(prompt="x" * 1001), "prompt: 1001 characters: over the 1000 limit"),
        (good(prompt=""), "prompt: a str: must be non-empty"),
        (good(job_id="has space"), "job_id: 'has space': must be 1-128 characters"),
        (good(tenant="../etc"), "tenant: '../etc'"),
        (good(colour="red"), "colour: unknown field"),
        (good(seed=-1), "seed: -1"),
        (good(resolution="big"), "resolution: 'big': must be WxH"),
        (b" " * (MAX_MESSAGE_BYTES + 1), "over the 16384-byte limit"),
    ],
)
def test_each_bad_request_is_refused_naming_field_value_and_why(raw, match):
    with pytest.raises(JobRefused, match=match) as e:
        parse_job(raw, STYLES)
    assert SECRET not in e.value.reason


def test_nan_and_infinity_are_refused():
    raw = good().replace(b"2.0", b"NaN")
    with pytest.raises(JobRefused, match="latency_slo_s: nan: must be finite"):
        parse_job(raw, STYLES)
    raw = good().replace(b"2.0", b"Infinity")
    with pytest.raises(JobRefused, match="must be finite"):
        parse_job(raw, STYLES)


def test_refusal_keeps_the_ids_it_could_read_and_reports_every_problem():
    with pytest.raises(JobRefused) as e:
        parse_job(good(min_clip=500, style="nope"), STYLES)
    assert (e.value.job_id, e.value.tenant) == ("j-1", "acme")
    assert "min_clip" in e.value.reason and "style" in e.value.reason


def test_client_side_request_serialises_its_submission_time():
    j = JobRequest("a", "t", "p", "flat", 1.0, 0.0, submitted_ts=123.5)
    assert parse_job(j.to_json()).submitted_ts == 123.5
