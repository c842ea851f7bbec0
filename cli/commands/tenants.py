"""`sdaas tenants`: create, list and revoke the tenants' API keys."""

from __future__ import annotations

from sdaas.config import Settings
from sdaas.errors import InvalidInputError, NotFoundError


def add_parser(subparsers):
    tn = subparsers.add_parser(
        "tenants",
        help="tenants and their API keys",
        description="`create NAME` prints a new API key once (only a salted scrypt hash is "
        "stored); `list`; `revoke NAME` revokes its keys. A tenant's key sees only its own "
        "jobs; an --operator key also reads /metrics, which names every tenant.",
    )
    tn.add_argument("action", choices=["create", "list", "revoke"])
    tn.add_argument("name", nargs="?", help="the tenant (create, revoke)")
    tn.add_argument("--operator", action="store_true",
                    help="create: a key that also reads /metrics (Prometheus: "
                    "`authorization: {credentials: KEY}`)")  # fmt: skip
    return tn


def run(args, settings: Settings) -> int:
    import time as _time

    from api.keys import TenantKeys
    from sdaas.table import format_table

    keys = TenantKeys(settings.tenants_path)
    if args.action in ("create", "revoke") and not args.name:
        raise InvalidInputError(f"tenants {args.action}: name the tenant")
    if args.action == "create":
        key = keys.create(args.name, operator=args.operator)
        what = "operator API key (also reads /metrics)" if args.operator else "API key"
        print(f"tenant {args.name}: {what} (shown once; only a salted hash is kept):")
        print(key)
    elif args.action == "revoke":
        n = keys.revoke(args.name)
        if n == 0:
            raise NotFoundError(f"tenant {args.name!r} has no keys (see `sdaas tenants list`)")
        print(f"tenant {args.name}: {n} key(s) revoked")
    else:
        when = "%Y-%m-%d %H:%M"
        rows = [[t, str(n), str(op or 0), _time.strftime(when, _time.localtime(ts))]
                for t, n, ts, op in keys.tenants()]  # fmt: skip
        head = ["tenant", "keys", "operator keys", "since"]
        print(format_table(head, rows) if rows else "no tenants yet")
    return 0
