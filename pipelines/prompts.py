"""Prompt sets for profiling: read from `data/prompts/`, referred to only by salted id."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from sdaas.errors import InvalidInputError
from sdaas.privacy import prompt_id

PROMPT_DIR = Path(__file__).resolve().parents[1] / "data" / "prompts"
DEFAULT_PROMPT_SET = PROMPT_DIR / "profile_prompts.tsv"
# Captions of the toy world (`models.toyworld.world.prompt_set`): what users of the
# toy-world models send, so their CLIP is measured on prompts they can draw.
TOYWORLD_PROMPT_SET = PROMPT_DIR / "toyworld_prompts.tsv"


@dataclass(frozen=True)
class Prompt:
    """A prompt held in memory only; `id` is what may be written anywhere."""

    id: str
    text: str

    def __repr__(self) -> str:  # never show the text in logs or tracebacks
        return f"Prompt(id={self.id!r})"


def load_prompts(path: Path, count: int, salt: bytes) -> list[Prompt]:
    """The first `count` prompts of a TSV with a `prompt` column (or a plain text file)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"--prompt-set: {str(path)!r}: no such file")
    if count < 1:
        raise InvalidInputError(f"--prompts: {count}: need at least one prompt")
    if path.suffix == ".tsv":
        with path.open(newline="") as f:
            texts = [row["prompt"] for row in csv.DictReader(f, delimiter="\t")]
    else:
        texts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    texts = [t for t in texts if t.strip()]
    if len(texts) < count:
        raise InvalidInputError(
            f"--prompts: {count}: the prompt set {path.name} has only {len(texts)}"
        )
    return [Prompt(prompt_id(t, salt), t) for t in texts[:count]]
