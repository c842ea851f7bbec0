"""A submitted job's body and id, or the HTTP error that names what is wrong with them.

The request body is read as bytes and validated by the same `decode_json` and
`parse_job` as a record from Kafka, so the door and the pipeline accept the same jobs
and a 422 names every problem (field, value, why) without ever quoting the prompt.
"""

from __future__ import annotations

import uuid

from fastapi import Request

from api.problem import Problem, invalid_job
from sdaas.job_request import MAX_MESSAGE_BYTES, OPTIONAL, REQUIRED, JobRefused, decode_json
from sdaas.limits import id_problem, show


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past MAX_MESSAGE_BYTES: never read whole."""
    too_big = Problem(413, f"body: over the {MAX_MESSAGE_BYTES}-byte limit")
    length = request.headers.get("content-length") or "0"
    if not (length.isascii() and length.isdigit()):  # uvicorn answers 400 first; not all do
        raise Problem(400, f"Content-Length: {show(length)}: must be a whole number of bytes")
    if int(length) > MAX_MESSAGE_BYTES:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_MESSAGE_BYTES:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def object_of(raw: bytes) -> dict:
    try:
        body = decode_json(raw, "body")
    except JobRefused as exc:  # names the cause: invalid UTF-8, a number too long, ...
        raise invalid_job(exc.reason) from None
    if not isinstance(body, dict):
        raise invalid_job(f"body: a JSON {type(body).__name__}: must be an object")
    unknown = sorted(set(body) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise invalid_job(*(f"{show(k)}: unknown field" for k in unknown))
    return body


def job_id_of(body: dict, idempotency_key: str | None) -> str:
    """The job's id: the body's job_id, else the Idempotency-Key, else a new one."""
    given = body.get("job_id")
    if idempotency_key is not None:
        if why := id_problem(idempotency_key):
            raise invalid_job(f"Idempotency-Key: {show(idempotency_key)}: {why}")
        if given is not None and given != idempotency_key:
            raise invalid_job("job_id: differs from the Idempotency-Key; send one of them")
        return idempotency_key
    if given is None:
        return uuid.uuid4().hex[:16]
    if why := id_problem(given):
        raise invalid_job(f"job_id: {show(given)}: {why}")
    return given
