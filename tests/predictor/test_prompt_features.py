"""Prompt features: deterministic numbers from the CLIP text tower, never the text."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from models.clip_score import ClipScorer
from predictor.prompt_features import (
    PC_COLUMNS,
    PROMPT_COMPONENTS,
    PROMPT_FEATURES,
    PromptBasis,
    PromptFeaturizer,
    count_objects,
    fit_basis,
)
from sdaas.records import PROFILE_ARROW_SCHEMA, ProfileRecord

CAPTIONS = [
    "two small white circles at the bottom",
    "a large white star at the bottom",
    "three small black triangles at the top",
    "a small white star at the top",
    "two large yellow diamonds in the center",
    "two small purple diamonds on the left",
    "a large purple triangle in the center",
    "three small purple diamonds on the right",
    "two large orange squares at the top",
    "a large black cross on the left",
]
UNSEEN = "three large green crosses on the right"


@pytest.fixture(scope="module")
def scorer(tiny_dir):
    return ClipScorer.from_path(tiny_dir / "tiny-clip")


@pytest.fixture(scope="module")
def featurizer(scorer):
    return PromptFeaturizer.fit(scorer, CAPTIONS, "tiny-clip-test")


@pytest.mark.parametrize(
    "text, n",
    [
        ("three small red circles on the left", 3),
        ("a large white star at the bottom", 1),
        ("two small black crosses in the center", 2),
        ("An apple and 4 pears", 5),
        ("grey fog", 0),
        ("ten ten ten", 20),  # capped at MAX_OBJECTS
    ],
)
def test_object_count(text, n):
    assert count_objects(text) == n


def test_record_columns_match_the_features():
    names = PROFILE_ARROW_SCHEMA.names
    assert all(c in names for c in PROMPT_FEATURES)
    assert len(PC_COLUMNS) == PROMPT_COMPONENTS
    assert {f.name for f in dataclasses.fields(ProfileRecord)} >= set(PROMPT_FEATURES)


def test_text_embedding_matches_the_scorers_own(scorer):
    """embed_text is the same text tower the CLIP score uses (batch and padding aside)."""
    from PIL import Image

    img = Image.new("RGB", (32, 32), (128, 128, 128))
    _, txt = scorer.embed([img, img], CAPTIONS[:2])
    np.testing.assert_allclose(scorer.embed_text(CAPTIONS[:2]).numpy(), txt.numpy(), atol=1e-5)


def test_features_are_deterministic(scorer, featurizer):
    again = PromptFeaturizer.fit(scorer, CAPTIONS, "tiny-clip-test")
    assert again.basis == featurizer.basis and again.basis.id == featurizer.basis.id
    alone = featurizer.one(UNSEEN)
    batched = featurizer.features([*CAPTIONS[:3], UNSEEN])[-1]
    np.testing.assert_allclose(alone.components, batched.components, atol=1e-5)
    assert (alone.tokens, alone.objects, alone.basis) == (7, 3, featurizer.basis.id)
    assert len(alone.components) == PROMPT_COMPONENTS
    # different captions, different numbers
    other = featurizer.one(CAPTIONS[0])
    assert not np.allclose(alone.components, other.components)


def test_basis_is_pca_in_units_of_the_fitted_spread(featurizer, scorer):
    """On the captions it was fitted on, the features are centred, uncorrelated and of
    unit variance (where a direction exists)."""
    f = np.array([x.components for x in featurizer.features(CAPTIONS)])
    live = min(PROMPT_COMPONENTS, len(CAPTIONS) - 1)
    np.testing.assert_allclose(f[:, :live].mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.cov(f[:, :live].T), np.eye(live), atol=1e-4)
    comps = np.array(featurizer.basis.components)
    np.testing.assert_allclose(comps @ comps.T, np.eye(PROMPT_COMPONENTS), atol=1e-8)


def test_basis_round_trips_and_refuses_tampering(featurizer, tmp_path):
    path = featurizer.basis.save(tmp_path)
    assert PromptBasis.load(path) == featurizer.basis
    d = json.loads(path.read_text())
    d["scale"][0] *= 2
    with pytest.raises(ValueError, match="content id"):
        PromptBasis.from_json(json.dumps(d))


def test_nothing_stored_holds_text(featurizer, tmp_path):
    """The basis file and the feature columns are numbers: no word of any caption."""
    blob = featurizer.basis.save(tmp_path).read_text()
    blob += json.dumps([featurizer.one(c).columns() for c in CAPTIONS])
    blob += repr(featurizer.one(UNSEEN))
    for caption in [*CAPTIONS, UNSEEN]:
        for word in caption.split():
            if len(word) > 3:
                assert word not in blob, word


def test_too_few_captions_for_a_basis():
    with pytest.raises(ValueError, match="at least 2"):
        fit_basis(np.ones((1, 8)), "x")
    # 3 captions: 2 directions, the rest are zero
    b = fit_basis(np.random.default_rng(0).normal(size=(3, 8)), "x")
    assert np.allclose(np.array(b.components)[2:], 0.0)
    assert np.isfinite(b.project(np.ones((1, 8)))).all()
