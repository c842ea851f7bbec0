"""The HTTP API (FastAPI; OpenAPI docs at /docs). Every /v1 route needs
`Authorization: Bearer <key>` and sees only the caller's own jobs: another tenant's job
id answers 404, exactly like one that does not exist.

The routes are in `api.routes`, a router per area; they share the `Front` (keys, job
book, Kafka) and the `Submission` through `app.state`.
"""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.front import ApiConfig, Front
from api.problem import Problem, answer
from api.routes import health, jobs, ops, page, styles
from api.submission import Submission


@asynccontextmanager
async def _lifespan(app: FastAPI):
    front: Front = app.state.front
    front.start(asyncio.get_running_loop())
    # what is alive once started (~380k objects: the libraries) leaves the collector's
    # view: a full collection over it stalled every request for 0.2-0.3 s in the load
    # bench, every few seconds under load. Young collections, 30x rarer, cut the API's
    # CPU per job from 5.9 to 5.2 ms there. Both are the process's, left so at exit
    # (an API owns its process when deployed)
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    # last: the start-up above blocks the loop (topics, the broker's first answer, the
    # collection) before it serves anything, which is no stall worth a warning
    front.watch.start(asyncio.get_running_loop())
    try:
        yield
    finally:
        front.stop()


def create_app(cfg: ApiConfig) -> FastAPI:
    app = FastAPI(
        title="sdaas",
        summary="Stable Diffusion as a Service with per-request SLOs",
        description="Submit a prompt with a style, a latency SLO and a minimum CLIP score; "
        "sdaas picks the model, accelerator and steps. Authenticate with `Authorization: "
        "Bearer <key>` (`sdaas tenants create NAME` prints one).",
        lifespan=_lifespan,
    )
    app.state.front = Front(cfg)
    app.state.submission = Submission(app.state.front)
    app.add_exception_handler(Problem, answer)
    for area in (jobs, styles, ops, health, page):  # in this order: the routes' order in /docs
        app.include_router(area.router)
    return app
