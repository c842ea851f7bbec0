"""Running the API on uvicorn: in the foreground (`sdaas api`) or in a thread (the demo
and the tests), on 127.0.0.1 by default; port 0 picks a free one."""

from __future__ import annotations

import threading
import time

import uvicorn

from api.app import create_app
from api.front import ApiConfig


def config(cfg: ApiConfig, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    # access logs carry method, path and status: job ids, never a prompt (bodies are not
    # logged); the tests grep them for a canary
    return uvicorn.Config(
        create_app(cfg),
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )


class ApiServer:
    """`with ApiServer(cfg) as s: s.url` serves in a background thread until the block
    ends."""

    def __init__(
        self, cfg: ApiConfig, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ):
        self.server = uvicorn.Server(config(cfg, host, port, log_level))
        self.thread = threading.Thread(target=self.server.run, name="sdaas-api", daemon=True)
        self.host = host

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def front(self):
        return self.server.config.app.state.front

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
