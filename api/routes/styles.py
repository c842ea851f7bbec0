"""/v1/styles: what a job's style (and resolution) may be, as this API checks them at the
door: the styles serving plans for. Any tenant's key; the page fills its Style list
from it."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes.deps import FrontDep, Tenant

router = APIRouter(tags=["jobs"])


@router.get("/v1/styles", summary="the served styles, each with the resolutions it is served at")
async def styles(front: FrontDep, t: Tenant):
    """`styles`: in the order serving lists them (the first is the page's default);
    `resolutions`: style -> the "WxH" it is served at.
    `checked`: false when this API was started without the served styles (serving
    checks them instead, and the list is empty)."""
    cfg = front.cfg
    served = list(cfg.styles or ())
    res = cfg.resolutions or {}
    return {
        "styles": served,
        "resolutions": {s: [f"{w}x{h}" for w, h in res.get(s, ())] for s in served},
        "checked": cfg.styles is not None,
    }
