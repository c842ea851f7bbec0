"""CLIP score: the real formula, checked by hand, and the scorer wired to a real CLIPModel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from models.clip_score import ClipScorer, clip_score_from_embeddings


def test_formula_matches_hand_computation():
    img = torch.tensor([[1.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    txt = torch.tensor([[1.0, 1.0], [3.0, 4.0], [-1.0, 0.2]])
    got = clip_score_from_embeddings(img, txt).tolist()
    # cos 45° = 0.7071 -> 70.71; identical direction -> 100; negative cosine clamps to 0.
    assert got[0] == pytest.approx(100 / math.sqrt(2), rel=1e-6)
    assert got[1] == pytest.approx(100.0, rel=1e-6)
    assert got[2] == 0.0


def test_formula_is_scale_invariant_and_checks_shapes():
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.allclose(clip_score_from_embeddings(a, b), clip_score_from_embeddings(3 * a, b))
    with pytest.raises(ValueError, match="paired"):
        clip_score_from_embeddings(torch.randn(2, 8), torch.randn(3, 8))


@pytest.fixture(scope="module")
def scorer(tiny_dir):
    return ClipScorer.from_path(tiny_dir / "tiny-clip")


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


def test_scorer_uses_the_models_embeddings(scorer):
    images, texts = _images(3), ["a red cat", "two blue squares on the left", "x"]
    img, txt = scorer.embed(images, texts)
    expected = [
        100 * max(float(np.dot(i, t) / (np.linalg.norm(i) * np.linalg.norm(t))), 0.0)
        for i, t in zip(img.numpy(), txt.numpy(), strict=True)
    ]
    assert scorer.score(images, texts) == pytest.approx(expected, rel=1e-5)


def test_batched_scores_equal_one_at_a_time(scorer):
    images, texts = _images(3, seed=1), ["a red cat", "a long caption about a house", "dog"]
    batched = scorer.score(images, texts)
    single = [scorer.score([im], [t])[0] for im, t in zip(images, texts, strict=True)]
    assert batched == pytest.approx(single, abs=1e-3)
    assert all(0.0 <= s <= 100.0 for s in batched)


def test_scorer_refuses_unpaired_input(scorer):
    with pytest.raises(ValueError, match="2 images for 1 captions"):
        scorer.score(_images(2), ["one"])
    assert scorer.score([], []) == []
