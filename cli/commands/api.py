"""`sdaas api`: the HTTP API, the web page and /metrics, beside `sdaas serve`."""

from __future__ import annotations

import sys

from cli.arguments import bounded_int, kafka_args
from cli.common import bootstrap, served_resolutions, served_styles
from sdaas.config import Settings


def add_parser(subparsers):
    ap = subparsers.add_parser(
        "api",
        help="the HTTP API, the web page and /metrics (FastAPI on uvicorn)",
        description="POST /v1/jobs (202 + job id), GET /v1/jobs[/ID], GET /v1/jobs/ID/events "
        "(server-sent events: planned, started, step i/N, outcome), DELETE /v1/jobs/ID "
        "(cancel), GET /v1/jobs/ID/image; Authorization: Bearer <key> from `sdaas tenants "
        "create`. A producer onto the jobs topic and a reader of serving's events: run "
        "`sdaas serve` beside it. The broker is internal: only serving and the API talk to it. "
        "Every job it accepted stays in its job book (data/api/jobs.db) until its outcome: a "
        "broker that restarts empty is sent them again.",
    )
    kafka_args(ap)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                    "127.0.0.1: this machine only)")  # fmt: skip
    ap.add_argument("--port", type=bounded_int("--port", 1, 65535), default=8000,
                    help="1-65535 (default 8000)")  # fmt: skip
    ap.add_argument("--rate", type=float, default=20.0, help="submissions per second per "
                    "tenant (default 20; 429 beyond)")  # fmt: skip
    ap.add_argument("--burst", type=float, default=40.0, help="burst size (default 40)")
    ap.add_argument("--max-in-flight", type=int, default=100, help="jobs per tenant without "
                    "an outcome (default 100; 429 beyond)")  # fmt: skip
    return ap


def run(args, settings: Settings) -> int:
    import uvicorn

    from adapters import kafka_io
    from adapters.kafka_io import Topics
    from api.front import ApiConfig
    from api.server import config
    from pipelines.serving_setup import result_store_path
    from sdaas.privacy import load_salt

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: the API listens on {args.host}: put TLS in front of it (keys are bearer "
              "tokens)", file=sys.stderr)  # fmt: skip
    cfg = ApiConfig(
        bootstrap=bootstrap(args, settings),
        data_dir=settings.data_dir,
        results_dir=result_store_path(settings).parent,
        topics=Topics(args.topic_prefix),
        styles=tuple(served_styles(settings)) or None,
        resolutions=served_resolutions(settings) or None,
        rate_per_s=args.rate,
        burst=args.burst,
        max_in_flight=args.max_in_flight,
        salt=load_salt(settings),
    )
    kafka_io.ensure_topics(cfg.bootstrap, [])  # a broker that does not answer: said here
    print(f"sdaas API on http://{args.host}:{args.port} (page /, docs /docs, metrics "
          f"/metrics); Kafka at {cfg.bootstrap}; Ctrl-C stops", flush=True)  # fmt: skip
    server = uvicorn.Server(config(cfg, args.host, args.port, "info"))
    server.run()
    return 0 if server.started else 1  # a start that failed (the port taken) is not a 0
