"""Limits on what a request may ask for, shared by the user API (`sdaas/job_request`),
the planner and the CLI, so a value one of them accepts the others accept too.

Identifiers end up in Kafka topic names (`PREFIX.results.<tenant>`) and file names
(`data/results/<tenant>/<job_id>.png`), so their alphabet is the intersection of what
both allow: letters, digits, `_ . -`, starting with a letter or digit."""

from __future__ import annotations

import re

MAX_LATENCY_SLO_S = 3600.0  # an hour: beyond that it is a batch job, not a latency SLO
MAX_CLOCK_SKEW_S = 300.0  # a client's submitted_ts may differ this much from the broker's
MAX_PROMPT_CHARS = 1000
MAX_PROMPT_TOKENS = 77  # CLIP's context length
MAX_ID_CHARS = 128
_ID_CHARS = re.compile(r"[A-Za-z0-9_.-]*")
_ID_FIRST = re.compile(r"[A-Za-z0-9]")


def id_problem(value: object) -> str | None:
    """Why `value` is not a legal tenant or job id, or None. Says which rule broke."""
    if not isinstance(value, str):
        return f"must be text, not a {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_CHARS:
        return f"{len(value)} characters: at most {MAX_ID_CHARS}"
    if not _ID_FIRST.fullmatch(value[0]):
        return "must start with a letter or digit"
    if not _ID_CHARS.fullmatch(value):
        bad = next(c for c in value if not _ID_CHARS.fullmatch(c))
        return f"{bad!r} is not allowed: only letters, digits, _ . - (Kafka topic and file names)"
    return None


def prompt_problem(prompt: object) -> str | None:
    """Why `prompt` cannot be served, or None. Never quotes the prompt."""
    if not isinstance(prompt, str) or not prompt.strip():
        return f"a {type(prompt).__name__}: must be non-empty text"
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"{len(prompt)} characters: over the {MAX_PROMPT_CHARS} limit"
    try:
        prompt.encode("utf-8")  # the tokenizer needs text that has an encoding
    except UnicodeEncodeError as exc:
        return (
            f"U+{ord(prompt[exc.start]):04X} at character {exc.start}: an unpaired surrogate "
            "is not text (not encodable as UTF-8)"
        )
    return None


def latency_slo_problem(slo: float) -> str | None:
    """Why a (finite, numeric) latency SLO is out of range, or None."""
    if slo <= 0:
        return "must be > 0 seconds"
    if slo > MAX_LATENCY_SLO_S:
        return f"at most {MAX_LATENCY_SLO_S:g} seconds"
    return None


def show(value: object, limit: int = 60) -> str:
    """A value for an error message: its repr, cut short. Never raises: a 5,000-digit
    integer has no repr under Python's int-to-string digit limit."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a value we cannot even print is still refused
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
