"""Argument types and flags that several commands share: each is parsed, and its error
worded, one way."""

from __future__ import annotations

import argparse

# what a refused list should have looked like, by the type of its items
_EXAMPLES = {int: "integers, e.g. 1,2,4", float: "numbers, e.g. 0.5,1"}


def comma_list(kind, flag: str):
    """An argparse type: comma-separated `kind` values as a tuple (blank items skipped);
    a value that is not a `kind` is refused naming `flag`."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            what = _EXAMPLES.get(kind, f"{kind.__name__} values")
            raise argparse.ArgumentTypeError(
                f"{flag} {text!r}: give comma-separated {what}"
            ) from None

    return parse


def bounded_int(flag: str, lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: not an integer") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{flag} {v}: must be in {lo}..{hi}")
        return v

    return parse


def resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution {text!r} is not WIDTHxHEIGHT") from None
    return w, h


def kafka_args(sp: argparse.ArgumentParser) -> None:
    """The flags of every command that talks to Kafka."""
    sp.add_argument("--bootstrap-servers", help="HOST:PORT of a Kafka cluster "
                    "(default: the embedded broker)")  # fmt: skip
    sp.add_argument("--topic-prefix", default="sdaas", help="topic names PREFIX.jobs, ...")
