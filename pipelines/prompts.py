"""Prompt sets for profiling: read from `data/prompts/`, referred to only by salted id."""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
    # `predictor.prompt_features.PromptFeatures` of the text, when the sweep computed them:
    # the only things about the prompt a profile row stores besides the id
    features: Any = None

    def with_features(self, features) -> Prompt:
        return replace(self, features=features)

    def __repr__(self) -> str:  # never show the text in logs or tracebacks
        return f"Prompt(id={self.id!r})"


def read_prompt_texts(path: Path) -> list[str]:
    """Every prompt of a TSV with a `prompt` column (or a plain text file), in order."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"--prompt-set: {str(path)!r}: no such file")
    if path.suffix == ".tsv":
        with path.open(newline="") as f:
            texts = [row["prompt"] for row in csv.DictReader(f, delimiter="\t")]
    else:
        texts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [t for t in texts if t.strip()]


def load_prompts(path: Path, count: int, salt: bytes) -> list[Prompt]:
    """The first `count` prompts of a TSV with a `prompt` column (or a plain text file)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"--prompt-set: {str(path)!r}: no such file")
    if count < 1:
        raise InvalidInputError(f"--prompts: {count}: need at least one prompt")
    texts = read_prompt_texts(path)
    if len(texts) < count:
        raise InvalidInputError(
            f"--prompts: {count}: the prompt set {path.name} has only {len(texts)}"
        )
    return [Prompt(prompt_id(t, salt), t) for t in texts[:count]]


def featurize_prompts(prompts: list[Prompt], clip_path: Path) -> tuple[list[Prompt], Any]:
    """The prompts with their `PromptFeatures`, on a PCA basis fitted on these prompts'
    CLIP text embeddings (the captions this sweep uses), and that basis. Runs in the
    driver, once per sweep: cells then carry numbers, and rows store only those."""
    from models.clip_score import ClipScorer
    from predictor.prompt_features import PromptFeaturizer, clip_fingerprint

    scorer = ClipScorer.from_path(clip_path, "cpu")
    texts = [p.text for p in prompts]
    if len(set(texts)) < 2:  # one caption: no directions to fit; counts only
        from predictor.prompt_features import PROMPT_COMPONENTS, PromptFeatures, count_objects
        from sdaas.privacy import prompt_tokens

        zero = (float("nan"),) * PROMPT_COMPONENTS
        return [
            p.with_features(PromptFeatures(prompt_tokens(p.text), count_objects(p.text), zero))
            for p in prompts
        ], None
    featurizer = PromptFeaturizer.fit(scorer, texts, clip_fingerprint(clip_path))
    feats = featurizer.features(texts)
    return [p.with_features(f) for p, f in zip(prompts, feats, strict=True)], featurizer.basis
