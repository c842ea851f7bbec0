"""What the routes are handed: the state `create_app` shares on `app.state`, and who is
asking (a tenant's key; whether it is an operator's). Every one is async: a sync
dependency would cost each request a hop to a thread."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from api.front import Front
from api.problem import Problem
from api.submission import Submission


def _shared(name: str) -> Any:
    async def get(request: Request):
        return getattr(request.app.state, name)

    return Depends(get)


FrontDep = Annotated[Front, _shared("front")]
SubmissionDep = Annotated[Submission, _shared("submission")]


def _key(authorization: str | None) -> str:
    """The key of `Authorization: Bearer <key>` ('' when there is none)."""
    scheme, _, key = (authorization or "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


async def tenant(front: FrontDep, authorization: str | None = Header(None)) -> str:
    key = _key(authorization)
    if not key:
        raise _unauthorized("missing API key: send `Authorization: Bearer <key>`")
    known, name = front.keys.cached(key)  # no thread hop for a key seen lately
    if not known:
        name = await run_in_threadpool(front.keys.tenant_of, key)
    if name is None:
        raise _unauthorized("unknown or revoked API key")
    return name


def _unauthorized(error: str) -> Problem:
    return Problem(401, error, headers={"WWW-Authenticate": "Bearer"})


Tenant = Annotated[str, Depends(tenant)]


async def operator(front: FrontDep, _t: Tenant, authorization: str | None = Header(None)) -> bool:
    """Whether the key is an operator's (one that spans every tenant); after `tenant`, so a
    bad key is a 401, never a 403."""
    return await run_in_threadpool(front.keys.is_operator, _key(authorization))


Operator = Annotated[bool, Depends(operator)]
