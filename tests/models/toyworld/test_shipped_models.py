"""The shipped toy-world models, loaded offline: CLIP score rises with denoising steps on
held-out captions ((shape, colour) pairs no model saw in training).

Margin: per image, CLIP scores here are nearly bimodal (about 0 when the trained CLIP
rejects the image, 50-80 when it accepts it), with a spread of ~25-30 points, so the test
compares the *paired* mean gain from 1 to 25 steps over a fixed sample of 24 held-out
captions against 2.5 standard errors of that mean (one-sided p < 0.01) and at least 5
points. Measured at training time (evidence.json, 12 captions per model), 1 -> 25 steps:
toy-s 35 -> 57, toy-m 40 -> 73, toy-l 35 -> 54.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.backend import GenerationRequest
from models.card import load_card
from models.clip_score import ClipScorer
from models.loader import load_backend
from models.toyworld.world import make_dataset
from sdaas.config import SHIPPED_TOYWORLD

CARDS = sorted((SHIPPED_TOYWORLD / "cards").glob("*.yaml"))
pytestmark = pytest.mark.skipif(not CARDS, reason="toy-world models not shipped in this tree")


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer.from_path(SHIPPED_TOYWORLD / "toy-clip")


@pytest.mark.slow
@pytest.mark.parametrize("card_path", CARDS, ids=lambda p: p.stem)
def test_clip_rises_from_1_to_25_steps_on_held_out_captions(card_path, scorer):
    card = load_card(card_path, model_roots=(SHIPPED_TOYWORLD.resolve(),))
    backend = load_backend(card, "cpu")
    _, captions, _, styles = make_dataset(24, seed=2024, held_out=True)
    gains = []
    for i, (caption, style) in enumerate(zip(captions, styles, strict=True)):
        score = {}
        for steps in (1, 25):
            res = backend.generate(
                GenerationRequest((caption,), (i,), steps, 32, 32, card.guidance_scale, style=style)
            )
            score[steps] = scorer.score(res.images, [caption])[0]
        gains.append(score[25] - score[1])
    gains = np.array(gains)
    se = gains.std(ddof=1) / math.sqrt(len(gains))
    assert gains.mean() > 2.5 * se and gains.mean() > 5.0, (card.name, gains.mean(), se)
