"""A refusal as this API answers it: a status code and a JSON body naming the problems."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from api.limits import retry_after


class Problem(Exception):
    """An HTTP error with a JSON body {"error": ..., "problems": [...]}; `retry_s`: when
    the client may try again (a Retry-After header)."""

    def __init__(self, code: int, error: str, problems=(), headers=None, retry_s=None):
        if retry_s is not None:
            headers = {**(headers or {}), "Retry-After": retry_after(retry_s)}
        self.code, self.error, self.problems, self.headers = code, error, list(problems), headers


def invalid_job(*problems: str) -> Problem:
    """A 422 naming every problem of a submitted job."""
    return Problem(422, "invalid job", problems)


async def answer(request: Request, exc: Problem) -> JSONResponse:
    """The exception handler: every refusal is counted by its code."""
    request.app.state.front.metrics.refused.labels(str(exc.code)).inc()
    body = {"error": exc.error}
    if exc.problems:
        body["problems"] = exc.problems
    return JSONResponse(body, exc.code, headers=exc.headers)
