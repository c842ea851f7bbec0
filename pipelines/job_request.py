"""The user API: a job request as a JSON message on the jobs topic, and how a bad one
is refused. Every refusal names the field, the value (never the prompt text) and why,
and becomes a dead letter; nothing else in the window is affected."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from sdaas.errors import InvalidInputError

MAX_MESSAGE_BYTES = 16 * 1024
MAX_PROMPT_CHARS = 1000
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
REQUIRED = ("job_id", "tenant", "prompt", "style", "latency_slo_s", "min_clip")
OPTIONAL = ("seed", "resolution", "submitted_ts")


@dataclass(frozen=True)
class JobRequest:
    """`job_id` is the client's idempotency key; `submitted_ts` (unix seconds) is set by
    the client library, else the record's broker timestamp is used."""

    job_id: str
    tenant: str
    prompt: str
    style: str
    latency_slo_s: float
    min_clip: float
    seed: int = 0
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

    def __init__(self, reason: str, job_id: str = "", tenant: str = ""):
        super().__init__(reason)
        self.reason, self.job_id, self.tenant = reason, job_id, tenant


def _number(d: dict, key: str, problems: list[str]) -> float | None:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        problems.append(f"{key}: {v!r}: must be a number")
        return None
    if not math.isfinite(v):
        problems.append(f"{key}: {v!r}: must be finite")
        return None
    return float(v)


def parse_job(raw: bytes, styles: list[str] | None = None) -> JobRequest:
    """Validate one message; raise JobRefused listing every problem found."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise JobRefused(f"message: {len(raw)} bytes: over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        d = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobRefused(f"message: not JSON ({exc.__class__.__name__} at {exc.pos})") from None
    if not isinstance(d, dict):
        raise JobRefused(f"message: a JSON {type(d).__name__}: must be an object")
    job_id = d.get("job_id") if isinstance(d.get("job_id"), str) else ""
    tenant = d.get("tenant") if isinstance(d.get("tenant"), str) else ""
    problems = [f"{k}: missing: required" for k in REQUIRED if k not in d]
    unknown = sorted(set(d) - set(REQUIRED) - set(OPTIONAL))
    problems += [f"{k}: unknown field" for k in unknown]
    for key in ("job_id", "tenant"):
        if key in d and not (isinstance(d[key], str) and ID_PATTERN.match(d[key])):
            problems.append(
                f"{key}: {d[key]!r}: must be 1-128 characters of letters, digits, _ . : -"
            )
    if "prompt" in d:
        p = d["prompt"]
        if not isinstance(p, str) or not p.strip():
            problems.append(f"prompt: a {type(p).__name__}: must be non-empty text")
        elif len(p) > MAX_PROMPT_CHARS:
            problems.append(f"prompt: {len(p)} characters: over the {MAX_PROMPT_CHARS} limit")
    if "style" in d:
        s = d["style"]
        if not isinstance(s, str):
            problems.append(f"style: {s!r}: must be text")
        elif styles is not None and s not in styles:
            problems.append(f"style: {s!r}: unknown; served styles: {', '.join(styles)}")
    slo = _number(d, "latency_slo_s", problems) if "latency_slo_s" in d else None
    if slo is not None and slo <= 0:
        problems.append(f"latency_slo_s: {slo!r}: must be > 0 seconds")
    clip = _number(d, "min_clip", problems) if "min_clip" in d else None
    if clip is not None and not 0 <= clip <= 100:
        problems.append(f"min_clip: {clip!r}: must be in [0, 100]")
    seed = d.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        problems.append(f"seed: {seed!r}: must be an integer in [0, 2**63)")
    resolution = None
    if d.get("resolution") is not None:
        m = re.fullmatch(r"(\d+)x(\d+)", str(d["resolution"]))
        if not m:
            problems.append(f"resolution: {d['resolution']!r}: must be WxH, e.g. 64x64")
        else:
            resolution = (int(m.group(1)), int(m.group(2)))
    ts = d.get("submitted_ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float)):
        problems.append(f"submitted_ts: {ts!r}: must be unix seconds")
    if problems:
        raise JobRefused("; ".join(problems), job_id, tenant)
    return JobRequest(
        d["job_id"], d["tenant"], d["prompt"], d["style"], slo, clip, seed, resolution, ts
    )
