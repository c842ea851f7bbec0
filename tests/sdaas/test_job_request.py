import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdaas.job_request import (
    MAX_MESSAGE_BYTES,
    JobRefused,
    JobRequest,
    identity_seed,
    parse_job,
)

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


def test_a_job_sent_without_a_seed_gets_one_of_its_own_and_keeps_it():
    """No seed (or null): one derived from (tenant, job_id), so jobs do not all share
    seed 0, and the same job parsed again (a replay) draws the same image."""
    seeds = {(t, i): parse_job(good(tenant=t, job_id=i), STYLES).seed
             for t in ("acme", "beta") for i in ("j-1", "j-2", "j-3")}  # fmt: skip
    assert len(set(seeds.values())) == 6 and 0 not in seeds.values()
    assert parse_job(good(job_id="j-2"), STYLES).seed == seeds[("acme", "j-2")]
    assert parse_job(good(job_id="j-2", seed=None), STYLES).seed == seeds[("acme", "j-2")]
    assert seeds[("acme", "j-1")] == identity_seed("acme", "j-1")
    # a client that leaves it out sends none; the record carries no seed to replay wrong
    sent = JobRequest("j-9", "acme", SECRET, "flat", 2.0, 30.0)
    assert "seed" not in json.loads(sent.to_json())
    assert parse_job(sent.to_json(), STYLES).seed == identity_seed("acme", "j-9")
    # a seed given is kept, 0 included
    assert parse_job(good(seed=0), STYLES).seed == 0


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
        (good(job_id="has space"), "job_id: 'has space': ' ' is not allowed"),
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


# -- hostile input (issue 11): each of these crashed the parser or was accepted --------


@pytest.mark.parametrize(
    "raw, match",
    [
        # the except clause itself raised AttributeError (UnicodeDecodeError has no .pos)
        (b'{"job_id": "\xff\xfe"}', r"message: not UTF-8 \(byte 0xff at offset 12\)"),
        # Python's int-string limit raised ValueError inside json.loads
        (good().replace(b'"min_clip": 30', b'"min_clip": ' + b"9" * 5000),
         r"JSON we cannot read \(a number too long: over 4300 digits\)"),
        (b"[" * 100_00 + b"]" * 100_00, "message: "),
        (b"[" * 5000 + b"]" * 5000, "message: JSON nested too deeply"),
        # json.loads guessed UTF-16 from the first bytes: "not JSON (Expecting value...)"
        (b"\x00\xff{}", r"message: not UTF-8 \(byte 0xff at offset 1\)"),
        (b'{"a": "\xed\xa0\x80"}', r"not UTF-8 \(byte 0xed at offset 7\)"),  # a surrogate
        # valid JSON, invalid text: the tokenizer raised TypeError on it at run time
        (good().replace(b'"prompt": "', b'"prompt": "\\ud800'),
         r"prompt: U\+D800 at character 0: an unpaired surrogate"),
    ],
)  # fmt: skip
def test_unreadable_messages_are_refused_not_raised(raw, match):
    with pytest.raises(JobRefused, match=match):
        parse_job(raw, STYLES)


@pytest.mark.parametrize("field", ["seed", "latency_slo_s", "min_clip", "submitted_ts"])
def test_a_4000_digit_integer_is_refused_with_a_printable_reason(field):
    # under the 4,300-digit parse limit, but float() overflows and repr() raises
    with pytest.raises(JobRefused, match=f"{field}: an integer of about 4000 digits"):
        parse_job(good(**{field: 10**3999}), STYLES)


@pytest.mark.parametrize("ts", [b"NaN", b"Infinity", b"-Infinity", b"1e300"])
def test_a_non_finite_or_far_submitted_ts_is_refused(ts):
    raw = good().replace(b"{", b'{"submitted_ts": ' + ts + b", ", 1)
    with pytest.raises(JobRefused, match="submitted_ts: "):
        parse_job(raw, STYLES, broker_ts=1_700_000_000.0)


def test_submitted_ts_must_be_within_the_stated_skew_of_the_broker_time():
    now = 1_700_000_000.0
    ok = JobRequest("a", "t", "p", "flat", 1.0, 0.0, submitted_ts=now - 299).to_json()
    assert parse_job(ok, STYLES, broker_ts=now).submitted_ts == now - 299
    ahead = JobRequest("a", "t", "p", "flat", 1.0, 0.0, submitted_ts=now + 365 * 86400)
    with pytest.raises(JobRefused, match="more than 300 s from the broker's time"):
        parse_job(ahead.to_json(), STYLES, broker_ts=now)


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("tenant", "alpha\n", "'\\n' is not allowed"),  # `$` matched before a final newline
        ("job_id", "invoice-0001\n", "'\\n' is not allowed"),
        ("tenant", "acme:prod", "':' is not allowed: only letters, digits, _ . -"),
        ("tenant", ".hidden", "must start with a letter or digit"),
        ("job_id", "x" * 129, "129 characters: at most 128"),
        ("job_id", "", "must not be empty"),
        ("tenant", 7, "must be text, not a int"),
    ],
)
def test_identifiers_are_matched_whole_and_the_refusal_names_the_rule(field, value, rule):
    with pytest.raises(JobRefused, match=re.escape(rule)) as e:
        parse_job(good(**{field: value}), STYLES)
    assert e.value.reason.startswith(f"{field}: ")
    assert (e.value.job_id if field == "job_id" else e.value.tenant) == ""  # never kept


def test_latency_slo_has_an_upper_bound():
    assert parse_job(good(latency_slo_s=3600), STYLES).latency_slo_s == 3600
    with pytest.raises(JobRefused, match="latency_slo_s: 1e\\+308: at most 3600 seconds"):
        parse_job(good(latency_slo_s=1e308), STYLES)


def test_a_resolution_the_style_is_not_served_at_is_refused_before_planning():
    served = {"flat": [(32, 32)], "outline": [(32, 32), (64, 64)]}
    assert parse_job(good(resolution="32x32"), STYLES, resolutions=served).resolution == (32, 32)
    with pytest.raises(JobRefused, match="resolution: '64x64': style 'flat' is served at 32x32"):
        parse_job(good(resolution="64x64"), STYLES, resolutions=served)
    with pytest.raises(JobRefused, match="must be WxH"):
        parse_job(good(resolution="9" * 5000 + "x1"), STYLES, resolutions=served)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["job_id", "tenant", "prompt", "style", "latency_slo_s",
                             "min_clip", "seed", "resolution", "submitted_ts", "x"]),
            _JSON,
        ).map(lambda d: json.dumps(d).encode()),
    )
)  # fmt: skip
def test_any_bytes_give_a_request_or_a_refusal_and_nothing_else(raw):
    try:
        job = parse_job(raw, STYLES, resolutions={"flat": [(32, 32)]}, broker_ts=1.7e9)
    except JobRefused as exc:
        assert exc.reason
    else:
        assert isinstance(job, JobRequest) and job.style in STYLES


def test_each_problem_is_one_item_even_when_a_value_holds_a_semicolon():
    """The API lists a refusal's problems one by one: a style spelled with "; " in it
    is one problem, not two."""
    with pytest.raises(JobRefused) as e:
        parse_job(good(style="flat; outline", latency_slo_s=-1), STYLES)
    assert len(e.value.problems) == 2
    assert any(p.startswith("style:") and "flat; outline" in p for p in e.value.problems)
    assert e.value.reason == "; ".join(e.value.problems)  # the dead letter's one line
