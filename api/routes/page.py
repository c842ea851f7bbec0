"""The web page (the playground) and its script, served as they are: no key needed."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

STATIC = Path(__file__).parent.parent / "static"
router = APIRouter(include_in_schema=False)


@router.get("/")
async def page():
    return HTMLResponse((STATIC / "index.html").read_text())


@router.get("/app.js")
async def script():
    return Response((STATIC / "app.js").read_text(), media_type="text/javascript")
