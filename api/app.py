"""The HTTP API (FastAPI; OpenAPI docs at /docs). Every /v1 route needs
`Authorization: Bearer <key>` and sees only the caller's own jobs: another tenant's job
id answers 404, exactly like one that does not exist.

The request body is read as bytes and validated by the same `parse_job` as a record
from Kafka, so the door and the pipeline accept the same jobs and a 422 names every
problem (field, value, why) without ever quoting the prompt.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from api.front import ApiConfig, Front
from api.job_book import OUTCOMES, STATUSES, public_result
from api.limits import retry_after
from sdaas.job_request import (
    MAX_MESSAGE_BYTES,
    OPTIONAL,
    REQUIRED,
    JobRefused,
    decode_json,
    parse_job,
)
from sdaas.limits import id_problem, show

STATIC = Path(__file__).parent / "static"
_EVENT_ID = re.compile(r"[0-9]{1,18}")
KEEPALIVE_S = 15.0


class Problem(Exception):
    """An HTTP error with a JSON body {"error": ..., "problems": [...]}."""

    def __init__(self, code: int, error: str, problems=(), headers=None):
        self.code, self.error, self.problems, self.headers = code, error, list(problems), headers


def create_app(cfg: ApiConfig) -> FastAPI:
    front = Front(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        front.start(asyncio.get_running_loop())
        # what is alive once started (~380k objects: the libraries) leaves the collector's
        # view: a full collection over it stalled every request for 0.2-0.3 s in the load
        # bench, every few seconds under load. Young collections, 30x rarer, cut the API's
        # CPU per job from 5.9 to 5.2 ms there. Both are the process's, left so at exit
        # (an API owns its process when deployed)
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        try:
            yield
        finally:
            front.stop()

    app = FastAPI(
        title="sdaas",
        summary="Stable Diffusion as a Service with per-request SLOs",
        description="Submit a prompt with a style, a latency SLO and a minimum CLIP score; "
        "sdaas picks the model, accelerator and steps. Authenticate with `Authorization: "
        "Bearer <key>` (`sdaas tenants create NAME` prints one).",
        lifespan=lifespan,
    )
    app.state.front = front

    @app.exception_handler(Problem)
    async def problem(_request: Request, exc: Problem):
        front.metrics.refused.labels(str(exc.code)).inc()
        body = {"error": exc.error}
        if exc.problems:
            body["problems"] = exc.problems
        return JSONResponse(body, exc.code, headers=exc.headers)

    async def tenant(authorization: str | None = Header(None)) -> str:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Problem(
                401,
                "missing API key: send `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        known, name = front.keys.cached(key.strip())  # no thread hop for a key seen lately
        if not known:
            name = await run_in_threadpool(front.keys.tenant_of, key.strip())
        if name is None:
            raise Problem(401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        return name

    def own(t: str, job_id: str):
        view = front.book.get(t, job_id)
        if view is None:
            raise Problem(404, f"job {show(job_id)}: not found")
        return view

    # -- jobs ---------------------------------------------------------------------------------
    async def _send(t: str, job_id: str) -> None:
        """The book's job onto the jobs topic. A job never acknowledged before leaves the
        book again when the broker does not take it (503: the producer dropped the
        record, it will not run; the client retries with the same key); one that was
        acknowledged before stays accepted (the broker watch sends it again)."""
        was_acked = front.book.acked(t, job_id)
        sent = front.sending[(t, job_id)] = asyncio.get_running_loop().create_future()
        try:
            await front.send_job(t, job_id)
            sent.set_result(True)
        except Exception as exc:  # noqa: BLE001 - the client may retry with the same key
            if was_acked:
                sent.set_result(True)
                return
            front.book.forget(t, job_id)
            sent.set_result(False)  # after `forget`: a retry then starts afresh
            raise Problem(
                503,
                f"the broker did not take the job within {cfg.send_timeout_s:g} s "
                f"({type(exc).__name__}): it was withdrawn and will not run; retry with the "
                "same Idempotency-Key",
                headers={"Retry-After": "1"},
            ) from None
        finally:
            if not sent.done():
                sent.set_result(False)
            del front.sending[(t, job_id)]

    @app.post(
        "/v1/jobs",
        status_code=202,
        tags=["jobs"],
        summary="submit a job; 202 with its id once it is in Kafka",
    )
    async def submit(
        request: Request, t: str = Depends(tenant), idempotency_key: str | None = Header(None)
    ):
        t0 = time.perf_counter()
        raw = await _body(request)
        body = _object(raw)
        job_id = _job_id(body, idempotency_key)
        if "tenant" in body and body["tenant"] != t:
            raise Problem(
                422,
                "invalid job",
                [f"tenant: {show(body['tenant'])}: set by your API key; leave it out"],
            )
        now = time.time()  # a client's submitted_ts is checked against it, then replaced
        msg = {**body, "tenant": t, "job_id": job_id}
        try:
            job = parse_job(json.dumps(msg).encode(), list(cfg.styles) if cfg.styles else None,
                            resolutions=cfg.resolutions, broker_ts=now)  # fmt: skip
        except JobRefused as exc:
            raise Problem(422, "invalid job", exc.reason.split("; ")) from None
        wait = front.buckets.take(t)  # a valid job only: a 422 costs no token
        if wait > 0:
            raise Problem(
                429,
                f"rate limit: {cfg.rate_per_s:g} jobs/s per tenant (bursts of {cfg.burst:g})",
                headers={"Retry-After": retry_after(wait)},
            )
        fingerprint = front.fingerprint({k: v for k, v in body.items() if k != "job_id"})
        stored = replace(job, submitted_ts=None).to_json().decode()
        if front.book.in_flight(t) >= cfg.max_in_flight and front.book.get(t, job_id) is None:
            raise Problem(
                429,
                f"in-flight quota: at most {cfg.max_in_flight} jobs per tenant without an outcome",
                headers={"Retry-After": "1"},
            )
        earlier = front.book.accept(t, job_id, fingerprint, stored)
        if earlier is not None:
            if earlier != fingerprint:
                raise Problem(
                    409,
                    f"job {job_id!r} exists with a different request: use a new "
                    "job id or Idempotency-Key",
                )
            first = front.sending.get((t, job_id))  # a retry while the first still sends
            if first is not None:
                if not await asyncio.shield(first):
                    raise Problem(503, "the first request with this key could not queue "
                                  "the job; retry", headers={"Retry-After": "1"})  # fmt: skip
            elif front.book.needs_send(t, job_id, front.jobs_topic):
                # never acknowledged (its process stopped first), or by a broker that lost
                # it since: sent now (serving answers a job id once, should it be there)
                await _send(t, job_id)
            return {"job_id": job_id, "status_url": f"/v1/jobs/{job_id}", "retry": True}
        await _send(t, job_id)
        front.metrics.jobs.labels(t, "accepted").inc()
        front.metrics.submit_s.observe(time.perf_counter() - t0)
        return {"job_id": job_id, "status_url": f"/v1/jobs/{job_id}"}

    @app.get("/v1/jobs", tags=["jobs"], summary="your jobs, newest first")
    async def list_jobs(
        t: str = Depends(tenant),
        status: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        before: float | None = Query(None, description="next page: the last submitted_ts you got"),
    ):
        if status is not None and status not in STATUSES:
            raise Problem(
                422, "invalid filter", [f"status: {show(status)}: one of {', '.join(STATUSES)}"]
            )
        views = front.book.list(t, status=status, limit=limit, before=before)
        nxt = views[-1].submitted_ts if len(views) == limit else None
        return {"jobs": [v.to_json() for v in views], "next_before": nxt}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], summary="status, plan and outcome")
    async def get_job(job_id: str, t: str = Depends(tenant)):
        return own(t, job_id).to_json()

    @app.delete(
        "/v1/jobs/{job_id}",
        status_code=202,
        tags=["jobs"],
        summary="cancel: queued at once, running at its next step",
    )
    async def cancel(job_id: str, t: str = Depends(tenant)):
        view = own(t, job_id)
        if view.status in OUTCOMES:
            raise Problem(409, f"job {job_id!r} already ended: {view.status}")
        front.book.request_cancel(t, job_id)
        msg = {"op": "cancel", "tenant": t, "job_id": job_id, "ts": time.time()}
        try:
            await front.send(cfg.topics.control, f"{t}/{job_id}", json.dumps(msg).encode())
        except Exception as exc:  # noqa: BLE001 - nothing was cancelled; the client retries
            raise Problem(503, f"the cancel could not be sent ({type(exc).__name__}); retry",
                          headers={"Retry-After": "1"}) from None  # fmt: skip
        return {"job_id": job_id, "cancel_requested": True}

    @app.get(
        "/v1/jobs/{job_id}/events",
        tags=["jobs"],
        summary="server-sent events: accepted, planned, started, step, outcome",
    )
    async def events(
        job_id: str,
        t: str = Depends(tenant),
        last_event_id: str | None = Header(None),
    ):
        own(t, job_id)
        start = int(last_event_id) if _EVENT_ID.fullmatch(last_event_id or "") else -1

        async def stream():
            seq = start
            with front.subscribe((t, job_id)) as woken:
                while True:
                    woken.clear()  # before reading: an event after the read wakes us
                    for s, event, data in front.book.events_after(t, job_id, seq):
                        seq = s
                        if "result" in data:
                            data = {**data, "result": public_result(job_id, data["result"])}
                        yield f"id: {s}\nevent: {event}\ndata: {json.dumps(data)}\n\n"
                        if event in OUTCOMES:
                            return
                    # a client that goes away: Starlette's StreamingResponse listens for
                    # the disconnect and cancels this generator (ASGI spec 2.3, uvicorn)
                    try:
                        await asyncio.wait_for(woken.wait(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keep-alive\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/v1/jobs/{job_id}/image", tags=["jobs"], summary="the image (PNG) of a done job")
    async def image(job_id: str, t: str = Depends(tenant)):
        view = own(t, job_id)
        uri = (view.result or {}).get("image_uri", "")
        path = Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else None
        root = Path(cfg.results_dir).resolve()
        if (
            view.status != "done"
            or path is None
            or not path.is_file()
            or path.resolve().parent != root / t
            or path.name != f"{job_id}.png"
        ):
            raise Problem(404, f"job {job_id!r}: no image ({view.status})")
        return FileResponse(path, media_type="image/png")

    # -- operations -------------------------------------------------------------------------
    @app.get(
        "/v1/ops",
        tags=["operations"],
        summary="the operator view: attainment per minute, queues, your recent jobs",
    )
    async def ops(t: str = Depends(tenant), authorization: str = Header("")):
        """A tenant's own numbers; an operator key's span every tenant (`scope`)."""
        key = authorization.partition(" ")[2].strip()
        operator = await run_in_threadpool(front.keys.is_operator, key)
        of = None if operator else t
        return {
            "scope": "all tenants" if operator else t,
            "attainment": [
                {"minute": m, "ended": n, "met": met}
                for m, n, met in front.book.attainment_by_minute(tenant=of)
            ],
            "queued": front.book.queued_by_accelerator(of),
            "running": front.book.running_by_device(of),
            "counts": front.book.counts(of),
            "recent": [v.to_json() for v in front.book.list(t, limit=20)],
        }

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (they name tenants: an operator key only)",
    )
    async def metrics(t: str = Depends(tenant), authorization: str = Header("")):
        key = authorization.partition(" ")[2].strip()
        if not await run_in_threadpool(front.keys.is_operator, key):
            raise Problem(
                403,
                f"metrics name every tenant: they need an operator key (`sdaas tenants "
                f"create NAME --operator`); {t}'s key is not one",
            )
        return Response(generate_latest(front.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["operations"], summary="the process answers")
    async def healthz():
        return {"ok": True}

    @app.get("/readyz", tags=["operations"], summary="broker answers and serving is ready")
    async def readyz():
        ok, why = await run_in_threadpool(front.ready)
        return JSONResponse({"ready": ok, "why": why}, 200 if ok else 503)

    # -- the page --------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.get("/app.js", include_in_schema=False)
    async def script():
        return Response((STATIC / "app.js").read_text(), media_type="text/javascript")

    return app


async def _body(request: Request) -> bytes:
    """The request body, refused with 413 past MAX_MESSAGE_BYTES: never read whole."""
    if int(request.headers.get("content-length") or 0) > MAX_MESSAGE_BYTES:
        raise Problem(413, f"body: over the {MAX_MESSAGE_BYTES}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_MESSAGE_BYTES:
            raise Problem(413, f"body: over the {MAX_MESSAGE_BYTES}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _object(raw: bytes) -> dict:
    try:
        body = decode_json(raw, "body")
    except JobRefused as exc:  # names the cause: invalid UTF-8, a number too long, ...
        raise Problem(422, "invalid job", [exc.reason]) from None
    if not isinstance(body, dict):
        raise Problem(
            422, "invalid job", [f"body: a JSON {type(body).__name__}: must be an object"]
        )
    unknown = sorted(set(body) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise Problem(422, "invalid job", [f"{show(k)}: unknown field" for k in unknown])
    return body


def _job_id(body: dict, idempotency_key: str | None) -> str:
    """The job's id: the body's job_id, else the Idempotency-Key, else a new one."""
    given = body.get("job_id")
    if idempotency_key is not None:
        if why := id_problem(idempotency_key):
            raise Problem(422, "invalid job", [f"Idempotency-Key: {show(idempotency_key)}: {why}"])
        if given is not None and given != idempotency_key:
            raise Problem(
                422, "invalid job", ["job_id: differs from the Idempotency-Key; send one of them"]
            )
        return idempotency_key
    if given is None:
        return uuid.uuid4().hex[:16]
    if why := id_problem(given):
        raise Problem(422, "invalid job", [f"job_id: {show(given)}: {why}"])
    return given
