"""/v1/ops: the operator view, from the job book (a key, like every /v1 route)."""

from __future__ import annotations

from fastapi import APIRouter

from api.front import fleet_by_node
from api.routes.deps import FrontDep, Operator, Tenant

router = APIRouter(tags=["operations"])


@router.get("/v1/ops", summary="the operator view: attainment per minute, queues, your recent jobs")
async def ops(front: FrontDep, t: Tenant, operator: Operator):
    """A tenant's own numbers; an operator key's span every tenant (`scope`), and an
    operator's alone show the serving processes' engines (`engines`: a row per engine,
    with its `server`; `nodes`: node -> engines in service, engines, jobs running)."""
    of = None if operator else t
    view = {
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
    if operator:
        view["engines"] = front.fleet()
        view["nodes"] = fleet_by_node(view["engines"])
    return view
