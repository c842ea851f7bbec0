"""`sdaas submit`: put one job on the jobs topic, as a client would; prints its job id."""

from __future__ import annotations

from cli.arguments import kafka_args, resolution
from cli.common import bootstrap, served_resolutions, served_styles
from sdaas.config import Settings


def add_parser(subparsers):
    sb = subparsers.add_parser(
        "submit",
        help="submit one job; prints its job id",
        description="Validates the job here (field, value and why; the style and resolution "
        "against this home's registered models), then puts it on the jobs topic as a client "
        "would and prints its job id: `sdaas results --admin --tenant T --job-id ID --wait "
        "S` waits for its outcome. The model is never named: serving picks model, "
        "accelerator and steps for the SLOs.",
    )
    kafka_args(sb)
    sb.add_argument("--prompt", required=True, help="what to draw (never logged)")
    sb.add_argument("--style", required=True, help="one the models serve (`sdaas models list`)")
    sb.add_argument("--latency-slo", type=float, required=True, help="seconds")
    sb.add_argument("--min-clip", type=float, required=True, help="0..100")
    sb.add_argument("--tenant", default="default", help="whose job it is (default 'default')")
    sb.add_argument("--job-id", help="idempotency key (default: random)")
    sb.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the image's seed (default: one derived from the tenant and job id, "
        "the same on every replay)",
    )
    sb.add_argument("--resolution", type=resolution, help="WxH")
    return sb


def run(args, settings: Settings) -> int:
    from adapters.job_client import JobClient
    from adapters.kafka_io import Topics
    from sdaas.job_request import JobRequest, parse_job

    # refuse a bad job before looking for a broker: the styles and resolutions too where
    # this home has models registered (serving would dead-letter them)
    parse_job(
        JobRequest(
            args.job_id or "check", args.tenant, args.prompt, args.style, args.latency_slo,
            args.min_clip, args.seed, args.resolution, 0.0,
        ).to_json(),
        served_styles(settings) or None,
        resolutions=served_resolutions(settings) or None,
    )  # fmt: skip
    client = JobClient(bootstrap(args, settings), Topics(args.topic_prefix))
    job = client.submit(
        tenant=args.tenant,
        prompt=args.prompt,
        style=args.style,
        latency_slo_s=args.latency_slo,
        min_clip=args.min_clip,
        job_id=args.job_id,
        seed=args.seed,
        resolution=args.resolution,
    )
    client.flush()
    print(job.job_id)
    return 0
