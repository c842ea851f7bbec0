"""The user API: a job request as a JSON message on the jobs topic, and how a bad one
is refused. Every refusal names the field, the value (never the prompt text) and why,
and becomes a dead letter; nothing else in the window is affected."""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sdaas.errors import InvalidInputError
from sdaas.limits import (
    MAX_CLOCK_SKEW_S,
    id_problem,
    latency_slo_problem,
    prompt_problem,
    show,
)

MAX_MESSAGE_BYTES = 16 * 1024
REQUIRED = ("job_id", "tenant", "prompt", "style", "latency_slo_s", "min_clip")
OPTIONAL = ("seed", "resolution", "submitted_ts")
_RESOLUTION = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


@dataclass(frozen=True)
class JobRequest:
    """`job_id` is the client's idempotency key within its tenant: a job is identified by
    (tenant, job_id). `submitted_ts` (unix seconds) is informational only: the server
    times a job from the record's broker timestamp and its own receive time, and refuses
    a submitted_ts more than MAX_CLOCK_SKEW_S away from the broker's."""

    job_id: str
    tenant: str
    prompt: str
    style: str
    latency_slo_s: float
    min_clip: float
    seed: int | None = None  # None: the server derives one (`identity_seed`)
    resolution: tuple[int, int] | None = None
    submitted_ts: float | None = None

    def to_json(self) -> bytes:
        d = {k: getattr(self, k) for k in REQUIRED + OPTIONAL if getattr(self, k) is not None}
        if self.resolution is not None:
            d["resolution"] = f"{self.resolution[0]}x{self.resolution[1]}"
        return json.dumps(d).encode()


class JobRefused(InvalidInputError):
    """A request that cannot be served as sent; `reason` goes to the dead-letter topic.
    `job_id` / `tenant` are kept when they could be read, so the tenant can be told."""

    def __init__(self, reason: str, job_id: str = "", tenant: str = "", problems=()):
        super().__init__(reason)
        self.reason, self.job_id, self.tenant = reason, job_id, tenant
        self.problems = list(problems) or [reason]  # one each (a value may hold "; ")


def _number(d: dict, key: str, problems: list[str]) -> float | None:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        problems.append(f"{key}: {show(v)}: must be a number")
        return None
    try:
        f = float(v)
    except OverflowError:
        problems.append(f"{key}: {show(v)}: too large")
        return None
    if not math.isfinite(f):
        problems.append(f"{key}: {show(v)}: must be finite")
        return None
    return f


def decode_json(raw: bytes, what: str = "message"):
    """JSON from bytes that must be UTF-8, or JobRefused naming the real cause: bytes
    that are not UTF-8 (decoded strictly first: `json.loads` on bytes guesses UTF-16 or
    UTF-32 from the first bytes and then reports a JSON error), JSON that is not JSON,
    a number too long for Python to read, or nesting too deep."""
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise JobRefused(f"{what}: not UTF-8 (byte 0x{bad} at offset {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobRefused(f"{what}: not JSON ({exc.msg} at offset {exc.pos})") from None
    except RecursionError:
        raise JobRefused(f"{what}: JSON nested too deeply") from None
    except ValueError as exc:  # an integer over Python's 4,300-digit limit
        if "digits" in str(exc):
            raise JobRefused(
                f"{what}: JSON we cannot read (a number too long: over "
                f"{sys.get_int_max_str_digits()} digits)"
            ) from None
        raise JobRefused(f"{what}: JSON we cannot read ({str(exc)[:80]})") from None


def parse_job(
    raw: bytes,
    styles: list[str] | None = None,
    *,
    resolutions: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    broker_ts: float | None = None,
) -> JobRequest:
    """Validate one message; raise JobRefused listing every problem found.

    styles: the served styles (None: not checked, as in the client). resolutions: style
    -> the resolutions it is served at (None: not checked). broker_ts: the record's
    broker timestamp, to bound the client's submitted_ts."""
    if not isinstance(raw, bytes | bytearray):
        raise JobRefused(f"message: a {type(raw).__name__}: must be bytes")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise JobRefused(f"message: {len(raw)} bytes: over the {MAX_MESSAGE_BYTES}-byte limit")
    d = decode_json(bytes(raw))
    if not isinstance(d, dict):
        raise JobRefused(f"message: a JSON {type(d).__name__}: must be an object")
    problems = [f"{k}: missing: required" for k in REQUIRED if k not in d]
    unknown = sorted(set(d) - set(REQUIRED) - set(OPTIONAL))
    problems += [
        f"{k if k.isprintable() and len(k) <= 40 else show(k)}: unknown field" for k in unknown
    ]
    ids = {}
    for key in ("job_id", "tenant"):
        if key in d:
            why = id_problem(d[key])
            if why:
                problems.append(f"{key}: {show(d[key])}: {why}")
            else:
                ids[key] = d[key]
    if "prompt" in d and (why := prompt_problem(d["prompt"])):
        problems.append(f"prompt: {why}")
    style = d.get("style")
    if "style" in d:
        if not isinstance(style, str):
            problems.append(f"style: {show(style)}: must be text")
        elif styles is not None and style not in styles:
            problems.append(f"style: {show(style)}: unknown; served styles: {', '.join(styles)}")
    slo = _number(d, "latency_slo_s", problems) if "latency_slo_s" in d else None
    if slo is not None and (why := latency_slo_problem(slo)):
        problems.append(f"latency_slo_s: {slo!r}: {why}")
    clip = _number(d, "min_clip", problems) if "min_clip" in d else None
    if clip is not None and not 0 <= clip <= 100:
        problems.append(f"min_clip: {clip!r}: must be in [0, 100]")
    seed = d.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63
    ):
        problems.append(f"seed: {show(seed)}: must be an integer in [0, 2**63)")
    resolution = None
    if d.get("resolution") is not None:
        v = d["resolution"]
        m = _RESOLUTION.fullmatch(v) if isinstance(v, str) else None
        if not m:
            problems.append(f"resolution: {show(v)}: must be WxH, e.g. 64x64")
        else:
            resolution = (int(m.group(1)), int(m.group(2)))
            served = (resolutions or {}).get(style) if isinstance(style, str) else None
            if served is not None and resolution not in served:
                problems.append(
                    f"resolution: {v!r}: style {style!r} is served at "
                    + ", ".join(f"{w}x{h}" for w, h in served)
                )
    ts = None
    if d.get("submitted_ts") is not None:
        ts = _number(d, "submitted_ts", problems)
        known = broker_ts is not None and math.isfinite(broker_ts)  # NaN: never 'close'
        if ts is not None and known and abs(ts - broker_ts) > MAX_CLOCK_SKEW_S:
            problems.append(
                f"submitted_ts: {ts!r}: more than {MAX_CLOCK_SKEW_S:g} s from the broker's "
                f"time {broker_ts:.3f}; fix the client's clock or leave it out"
            )
    if problems:
        raise JobRefused("; ".join(problems), ids.get("job_id", ""), ids.get("tenant", ""),
                         problems)  # fmt: skip
    if seed is None:
        seed = identity_seed(d["tenant"], d["job_id"])
    return JobRequest(
        d["job_id"], d["tenant"], d["prompt"], d["style"], slo, clip, seed, resolution, ts
    )


def identity_seed(tenant: str, job_id: str) -> int:
    """The seed of a job sent without one, derived from its identity (tenant, job_id): each
    job gets a seed of its own (a CLIP promise holds over seeds; one shared seed would give
    every job of a caption the same draw) and a replay after a crash or a broker restart
    draws the same one, with no state to keep."""
    digest = hashlib.blake2b(json.dumps([tenant, job_id]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 2**31
