"""The `sdaas` command line: the entry point. Each command is a module of `cli/commands/`;
this file assembles them, sets up logging and turns errors into exit codes.

Exit codes: 0 success; 1 a failure to act on (message says what to do); 2 invalid input
(a refused model card, a bad flag); 3 a named thing does not exist; 4 `plan` found the
request infeasible.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from cli.commands import (
    api,
    bench,
    broker,
    demo,
    generate,
    models,
    plan,
    profile,
    results,
    serve,
    submit,
    tenants,
    train,
)
from sdaas.config import Settings
from sdaas.errors import SdaasError

# Quiet the model libraries before they are imported; never download at run time by default.
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

# in the order `sdaas --help` lists them
COMMANDS = (
    models, generate, profile, train, plan, bench, broker, serve, submit, results, tenants, api,
    demo,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdaas",
        description="Stable Diffusion as a Service with per-request latency and CLIP-score SLOs. "
        "Model developers register models with declarative cards; users submit prompts with "
        "a style and SLOs; sdaas picks model, accelerator and steps.",
        epilog="Exit codes: 0 ok, 1 failure, 2 invalid input, 3 not found, 4 infeasible plan. "
        "Files live under $SDAAS_HOME (default: the checkout): data/ and mlruns/.",
    )
    p.add_argument(
        "--home", help="root holding data/ and mlruns/ (default $SDAAS_HOME or checkout)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(func=command.run)
    return p


_NOISE = (
    "apitools not found",
    "partition size is 128",
    "Converting string literal type hint",
    "No module named google.cloud",
    "contains a local version label",
    "Creating state cache",
)


def _drop_noise(record: logging.LogRecord) -> bool:
    """Beam logs a few import-time warnings that mean nothing here."""
    return not any(n in record.getMessage() for n in _NOISE)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Like `parse_args`, but an unknown argument is named even where a COMMAND is
    missing (argparse reports only the missing COMMAND)."""
    p = build_parser()
    args, extra = p.parse_known_args(argv)
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        p.error("missing COMMAND (see sdaas --help)")
    if args.command == "models" and args.models_command is None:
        args.models_parser.error("missing ACTION (see sdaas models --help)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_noise)
    if args.home and not Path(args.home).exists():  # a typo would start an empty home
        print(f"note: --home {args.home} does not exist: it is made, empty", file=sys.stderr)
    settings = Settings(home=Path(args.home).resolve()) if args.home else Settings()
    try:
        return args.func(args, settings)
    except SdaasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError) as exc:
        # a path the user gave (--home, --out) that is not what it must be: said, not a
        # traceback; a bug's other errors keep theirs
        print(f"error: {exc.filename or ''}: {exc.strerror}: choose a path this user can "
              "write (see --help)", file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
