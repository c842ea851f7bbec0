"""Errors the command line maps to exit codes.

Every user-facing error carries what to do about it; the CLI prints the message
and exits with the class's code instead of a traceback.
"""

from __future__ import annotations


class SdaasError(Exception):
    """Base class: a failure the user can act on. Exit code 1."""

    exit_code = 1


class InvalidInputError(SdaasError):
    """The input (a card, a flag, a request) is wrong. Exit code 2, like argparse."""

    exit_code = 2


class NotFoundError(SdaasError):
    """A named thing (model, version, file) does not exist. Exit code 3."""

    exit_code = 3


def brief(exc: BaseException, prompts=()) -> str:
    """An exception in one line, short enough for a fault record or a job's error; each
    of `prompts` in its text becomes "<prompt>" first (a model may echo its input)."""
    msg = str(exc)
    for p in prompts:
        if p:
            msg = msg.replace(p, "<prompt>")
    return f"{type(exc).__name__}: {msg[:200]}"
