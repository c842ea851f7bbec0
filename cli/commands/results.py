"""`sdaas results`: a tenant's results from the durable store, shown only to that tenant."""

from __future__ import annotations

import json
import os

from sdaas.config import Settings
from sdaas.errors import InvalidInputError


def add_parser(subparsers):
    rs = subparsers.add_parser(
        "results",
        help="a tenant's results (from the durable result store)",
        description="Results are only ever shown to their tenant: pass the tenant's API key "
        "(--key or SDAAS_API_KEY), or, as the local operator, --admin --tenant T.",
    )
    rs.add_argument("--key", help="the tenant's API key (default: env SDAAS_API_KEY)")
    rs.add_argument("--tenant", help="with --admin: whose results")
    rs.add_argument("--admin", action="store_true", help="local operator: any --tenant")
    rs.add_argument("--job-id", help="one job (exit 3 if the tenant has no such result)")
    rs.add_argument("--wait", type=float, default=0.0, help="with --job-id: wait up to S seconds")
    rs.add_argument("--json", action="store_true")
    return rs


def run(args, settings: Settings) -> int:
    import time as _time
    from dataclasses import asdict

    from adapters.result_store import ResultStore
    from pipelines.serving_setup import result_store_path
    from sdaas.errors import NotFoundError
    from sdaas.table import format_table

    if args.wait and not args.job_id:
        raise InvalidInputError("--wait: only with --job-id (which job to wait for)")
    tenant = _results_tenant(args, settings)
    store = ResultStore(result_store_path(settings), create=False)
    if args.job_id:
        deadline = _time.monotonic() + args.wait
        while True:
            try:
                results = [store.get(tenant, args.job_id)]
                break
            except NotFoundError:
                refused = _dead_lettered(store, tenant, {args.job_id})
                if refused:
                    results = refused
                    break
                if _time.monotonic() >= deadline:
                    raise
                _time.sleep(0.2)
    else:
        results = store.for_tenant(tenant)
        results += _dead_lettered(store, tenant, exclude={r.job_id for r in results})
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    rows = [
        [
            r.job_id,
            r.status,
            f"{r.model} {r.steps} steps" if r.model else "-",
            f"{r.jct_s:.2f}",
            f"{r.run_s:.2f}",
            "-" if r.clip_score is None else f"{r.clip_score:.1f}",
            "yes" if r.latency_slo_met and r.clip_slo_met else "no",
            r.error or r.image_uri,
        ]
        for r in results
    ]
    print(
        format_table(
            ["job", "status", "plan", "JCT s", "run s", "CLIP", "SLOs met", "image / why"], rows
        )
    )
    return 0


def _dead_lettered(store, tenant: str, only: set[str] | None = None, exclude=frozenset()):
    """The tenant's jobs refused as dead letters (a record serving could not read as a
    job), as `rejected` results with the reason; one per job id, none that has a result."""
    from sdaas.records import JobResult

    out: dict[str, JobResult] = {}
    for d in store.dead_letters():
        job_id = d.get("job_id") or ""
        if d.get("tenant") != tenant or not job_id or job_id in exclude:
            continue
        if only is None or job_id in only:
            why = f"dead letter: {d.get('reason', '')}"
            out.setdefault(job_id, JobResult(job_id, tenant, "rejected", error=why))
    return list(out.values())


def _results_tenant(args, settings: Settings) -> str:
    """Whose results: the tenant of an API key, or, for a local operator who says
    --admin, the one named by --tenant."""
    key = args.key or os.environ.get("SDAAS_API_KEY")
    if key:
        from api.keys import TenantKeys

        tenant = TenantKeys(settings.tenants_path).tenant_of(key)
        if tenant is None:
            raise InvalidInputError("--key: unknown or revoked API key")
        if args.tenant and args.tenant != tenant:
            raise InvalidInputError(f"--tenant {args.tenant}: your key is {tenant}'s")
        return tenant
    if args.admin and args.tenant:
        return args.tenant
    raise InvalidInputError(
        "results are shown only to their tenant: pass --key KEY (or set SDAAS_API_KEY; "
        "`sdaas tenants create NAME` makes one), or --admin --tenant T as the local operator"
    )
