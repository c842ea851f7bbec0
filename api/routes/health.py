"""What watches the API: liveness, readiness (the broker and a serving process) and the
Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from api.problem import Problem
from api.routes.deps import FrontDep, Operator, Tenant

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics (they name tenants: an operator key only)")
async def metrics(front: FrontDep, t: Tenant, operator: Operator):
    if not operator:
        raise Problem(
            403,
            f"metrics name every tenant: they need an operator key (`sdaas tenants "
            f"create NAME --operator`); {t}'s key is not one",
        )
    return Response(generate_latest(front.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", summary="the process answers")
async def healthz():
    return {"ok": True}


@router.get("/readyz", summary="broker answers and serving is ready")
async def readyz(front: FrontDep):
    ok, why = await run_in_threadpool(front.ready)
    return JSONResponse({"ready": ok, "why": why}, 200 if ok else 503)
