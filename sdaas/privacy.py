"""Prompt ids: a salted hash stands in for the prompt everywhere it could leak.

Prompts never appear in logs, profiles, metrics or MLflow. Everything that
needs to refer to a prompt uses `prompt_id(prompt)`: HMAC-SHA256 under a
per-installation secret salt, so ids are stable within an installation (joins
and dedup work) but a dictionary of likely prompts cannot be hashed to match.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from sdaas.config import Settings

_SALT_ENV = "SDAAS_PROMPT_SALT"


def load_salt(settings: Settings | None = None) -> bytes:
    """The installation's salt: env `SDAAS_PROMPT_SALT`, else a 0600 file made on first use."""
    env = os.environ.get(_SALT_ENV)
    if env:
        return env.encode()
    path: Path = (settings or Settings()).salt_path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def prompt_id(prompt: str, salt: bytes) -> str:
    """A 16-hex-digit id for `prompt` under `salt`; the prompt cannot be read back from it."""
    return hmac.new(salt, prompt.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


_WORD = re.compile(r"\w+|[^\w\s]")


def prompt_tokens(prompt: str) -> int:
    """A prompt feature that is safe to store: its length in word/punctuation tokens, capped
    at CLIP's 77-token window. Used by the CLIP-score predictor; reveals nothing else."""
    return min(len(_WORD.findall(prompt)), 77)
