"""/v1/jobs: submit, list, status, cancel, the event stream and the image. A tenant sees
only its own jobs: another tenant's job id answers 404, exactly like one that does not
exist."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, StreamingResponse

from api.front import Front
from api.job_book import STATUSES, JobView, public_result
from api.problem import Problem, invalid_job
from api.routes.body import job_id_of, object_of, read_body
from api.routes.deps import FrontDep, SubmissionDep, Tenant
from sdaas.job_request import JobRefused, parse_job
from sdaas.job_status import OUTCOMES, JobStatus
from sdaas.limits import show

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_EVENT_ID = re.compile(r"[0-9]{1,18}")
KEEPALIVE_S = 15.0


def own(front: Front, t: str, job_id: str) -> JobView:
    view = front.book.get(t, job_id)
    if view is None:
        raise Problem(404, f"job {show(job_id)}: not found")
    return view


@router.post("", status_code=202, summary="submit a job; 202 with its id once it is in Kafka")
async def submit(
    request: Request,
    front: FrontDep,
    submission: SubmissionDep,
    t: Tenant,
    idempotency_key: str | None = Header(None),
):
    t0 = time.perf_counter()
    cfg = front.cfg
    body = object_of(await read_body(request))
    job_id = job_id_of(body, idempotency_key)
    if "tenant" in body and body["tenant"] != t:
        raise invalid_job(f"tenant: {show(body['tenant'])}: set by your API key; leave it out")
    now = time.time()  # a client's submitted_ts is checked against it, then replaced
    msg = {**body, "tenant": t, "job_id": job_id}
    try:
        job = parse_job(json.dumps(msg).encode(), list(cfg.styles) if cfg.styles else None,
                        resolutions=cfg.resolutions, broker_ts=now)  # fmt: skip
    except JobRefused as exc:
        raise invalid_job(*exc.problems) from None
    wait = front.buckets.take(t)  # a valid job only: a 422 costs no token
    if wait > 0:
        raise Problem(
            429,
            f"rate limit: {cfg.rate_per_s:g} jobs/s per tenant (bursts of {cfg.burst:g})",
            retry_s=wait,
        )
    stored = replace(job, submitted_ts=None).to_json().decode()  # what the book keeps
    fingerprint = front.fingerprint(stored)
    answer = {"job_id": job_id, "status_url": f"/v1/jobs/{job_id}"}
    if await submission.submit(t, job_id, fingerprint, stored):
        return {**answer, "retry": True}
    front.metrics.submit_s.observe(time.perf_counter() - t0)
    return answer


@router.get("", summary="your jobs, newest first")
async def list_jobs(
    front: FrontDep,
    t: Tenant,
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


@router.get("/{job_id}", summary="status, plan and outcome")
async def get_job(job_id: str, front: FrontDep, t: Tenant):
    return own(front, t, job_id).to_json()


@router.delete(
    "/{job_id}", status_code=202, summary="cancel: queued at once, running at its next step"
)
async def cancel(job_id: str, front: FrontDep, t: Tenant):
    view = own(front, t, job_id)
    if view.status in OUTCOMES:
        raise Problem(409, f"job {job_id!r} already ended: {view.status}")
    front.book.request_cancel(t, job_id)
    msg = {"op": "cancel", "tenant": t, "job_id": job_id, "ts": time.time()}
    try:
        await front.send(front.cfg.topics.control, f"{t}/{job_id}", json.dumps(msg).encode())
    except Exception as exc:  # noqa: BLE001 - nothing was cancelled; the client retries
        raise Problem(503, f"the cancel could not be sent ({type(exc).__name__}); retry",
                      retry_s=1) from None  # fmt: skip
    return {"job_id": job_id, "cancel_requested": True}


@router.get(
    "/{job_id}/events", summary="server-sent events: accepted, planned, started, step, outcome"
)
async def events(job_id: str, front: FrontDep, t: Tenant, last_event_id: str | None = Header(None)):
    own(front, t, job_id)
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


@router.get("/{job_id}/image", summary="the image (PNG) of a done job")
async def image(job_id: str, front: FrontDep, t: Tenant):
    view = own(front, t, job_id)
    uri = (view.result or {}).get("image_uri", "")
    path = Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else None
    root = Path(front.cfg.results_dir).resolve()
    if (
        view.status != JobStatus.DONE.word
        or path is None
        or not path.is_file()
        or path.resolve().parent != root / t
        or path.name != f"{job_id}.png"
    ):
        raise Problem(404, f"job {job_id!r}: no image ({view.status})")
    return FileResponse(path, media_type="image/png")
