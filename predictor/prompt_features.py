"""What the CLIP predictor may know of a prompt: a few numbers, never the text.

A job's CLIP depends mostly on its prompt (toy world: between-caption sd 17-19 CLIP
points against 12-21 for the seed), so a prompt-blind prediction must promise far below
its mean. The strongest pre-generation signal is the CLIP scorer's own text embedding;
here it is reduced to `PROMPT_COMPONENTS` numbers by a PCA basis fitted on the captions a
profiling sweep used (the unit-normalised embeddings, as the CLIP score's cosine sees
them), plus the prompt's token count and the number of objects it names.

The basis holds numbers only (a mean and a few directions in embedding space; the CLIP
model it belongs to is named by a fingerprint of its weights' file, not by a path). It is
written beside the sweep's profiles and logged with the prompt-aware CLIP predictor in
MLflow. Features are deterministic: the same prompt, CLIP model and basis give the same
numbers. They are a fingerprint, though: someone holding the CLIP model and the basis can
test a guessed prompt against stored features (as with an unsalted hash). That is why
profiles keep them beside a salted id and nothing else of the prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdaas.privacy import prompt_tokens

PROMPT_COMPONENTS = 8
PC_COLUMNS = tuple(f"prompt_pc{i}" for i in range(PROMPT_COMPONENTS))
# the columns a profile row and the prompt-aware CLIP predictor carry
PROMPT_FEATURES = ("prompt_tokens", "prompt_objects", *PC_COLUMNS)
BASIS_FILE = "prompt_basis.json"
MAX_OBJECTS = 20

_NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "single": 1,
    "two": 2,
    "pair": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_WORDS = re.compile(r"[a-z]+|\d+")


def count_objects(prompt: str) -> int:
    """How many objects a prompt names, counted simply: the sum of the quantities its
    number words give ("a"/"an"/"one" 1, "two" 2, ..., digits as written), capped at
    MAX_OBJECTS. Exact for toy-world captions ("three small red circles on the left": 3);
    for free text a rough count ("a photo of a cat" says 2, "cats" says 0)."""
    total = 0
    for w in _WORDS.findall(prompt.lower()):
        total += int(w) if w.isdigit() else _NUMBERS.get(w, 0)
        if total >= MAX_OBJECTS:
            return MAX_OBJECTS
    return total


@dataclass(frozen=True)
class PromptFeatures:
    """The numbers derived from one prompt (no text: safe to store, log and print)."""

    tokens: int
    objects: int
    components: tuple[float, ...]  # the text embedding's coordinates on the basis
    basis: str = ""  # the id of the basis `components` are on

    def columns(self) -> dict[str, float]:
        """As profile/predictor columns (`PROMPT_FEATURES`)."""
        out = {"prompt_tokens": float(self.tokens), "prompt_objects": float(self.objects)}
        out.update(zip(PC_COLUMNS, map(float, self.components), strict=True))
        return out

    def key(self) -> tuple[float, ...]:
        """A hashable summary, for caching per-prompt work (rounded: noise-proof)."""
        return (self.tokens, self.objects, *(round(c, 6) for c in self.components))


def _unit(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be (N, D); got shape {emb.shape}")
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norm > 0, norm, 1.0)


@dataclass(frozen=True)
class PromptBasis:
    """A PCA basis of unit text embeddings. `scale`: each component's standard deviation
    over the captions it was fitted on, so features come in units of that spread."""

    mean: tuple[float, ...]  # (D,)
    components: tuple[tuple[float, ...], ...]  # (K, D), orthonormal rows
    scale: tuple[float, ...]  # (K,)
    clip_model: str  # fingerprint of the CLIP model whose embeddings these are
    prompts: int  # how many captions it was fitted on

    @property
    def id(self) -> str:
        blob = json.dumps([self.mean, self.components, self.scale, self.clip_model])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) text embeddings -> (N, K) features."""
        x = _unit(embeddings) - np.asarray(self.mean)
        return (x @ np.asarray(self.components).T) / np.asarray(self.scale)

    def to_json(self) -> str:
        d = {
            "mean": list(self.mean),
            "components": [list(c) for c in self.components],
            "scale": list(self.scale),
            "clip_model": self.clip_model,
            "prompts": self.prompts,
            "id": self.id,
        }
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> PromptBasis:
        d = json.loads(text)
        basis = cls(
            tuple(float(x) for x in d["mean"]),
            tuple(tuple(float(x) for x in c) for c in d["components"]),
            tuple(float(x) for x in d["scale"]),
            str(d["clip_model"]),
            int(d["prompts"]),
        )
        if "id" in d and d["id"] != basis.id:
            raise ValueError(f"prompt basis: stored id {d['id']} != content id {basis.id}")
        return basis

    def save(self, folder: Path) -> Path:
        path = Path(folder) / BASIS_FILE
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: Path) -> PromptBasis:
        return cls.from_json(Path(path).read_text())


def fit_basis(embeddings: np.ndarray, clip_model: str, k: int = PROMPT_COMPONENTS) -> PromptBasis:
    """PCA of the unit embeddings, each direction's sign fixed (its largest loading
    positive) so the same captions always give the same basis. Fewer captions than k + 1
    leave the missing directions zero (their features are then 0)."""
    x = _unit(embeddings)
    if len(x) < 2:
        raise ValueError(f"a prompt basis needs at least 2 captions; got {len(x)}")
    mean = x.mean(axis=0)
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = np.zeros((k, x.shape[1]))
    scale = np.ones(k)
    for i in range(min(k, len(sv))):
        if sv[i] <= 1e-9 * max(sv[0], 1e-300):
            break
        v = vt[i] * (1.0 if vt[i][np.argmax(np.abs(vt[i]))] >= 0 else -1.0)
        comps[i] = v
        scale[i] = sv[i] / np.sqrt(len(x) - 1)
    return PromptBasis(
        tuple(float(v) for v in mean),
        tuple(tuple(float(v) for v in c) for c in comps),
        tuple(float(s) for s in scale),
        clip_model,
        len(x),
    )


def clip_fingerprint(clip_path: str | Path) -> str:
    """A name for a CLIP model that is not a path: a hash of its config and the first MB
    of its weights (enough to tell two checkpoints apart)."""
    root = Path(clip_path)
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        p = root / name
        if p.is_file():
            with p.open("rb") as f:
                h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


class PromptFeaturizer:
    """A CLIP scorer's text tower + a basis: prompt -> `PromptFeatures`, the text going no
    further than this call. ~1-2 ms per prompt for the toy CLIP on CPU."""

    def __init__(self, scorer, basis: PromptBasis):
        self.scorer = scorer
        self.basis = basis

    def features(self, prompts: list[str]) -> list[PromptFeatures]:
        comps = self.basis.project(self.scorer.embed_text(list(prompts)).numpy())
        bid = self.basis.id
        return [
            PromptFeatures(prompt_tokens(p), count_objects(p), tuple(float(v) for v in row), bid)
            for p, row in zip(prompts, comps, strict=True)
        ]

    def one(self, prompt: str) -> PromptFeatures:
        return self.features([prompt])[0]

    @classmethod
    def fit(cls, scorer, prompts: list[str], clip_model: str) -> PromptFeaturizer:
        """A featurizer whose basis is fitted on `prompts` (the captions a sweep used)."""
        emb = scorer.embed_text(list(prompts)).numpy()
        return cls(scorer, fit_basis(emb, clip_model))
