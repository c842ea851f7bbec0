"""The toy world: deterministic, captions that say what is drawn, disjoint held-out pairs."""

from __future__ import annotations

import numpy as np
import pytest

from models.toyworld.world import (
    BACKGROUND,
    COLOURS,
    STYLES,
    Scene,
    make_dataset,
    prompt_set,
    render,
    split_combos,
)


def test_same_seed_same_world_other_seed_differs():
    a, ca, _, sa = make_dataset(20, seed=1)
    b, cb, _, sb = make_dataset(20, seed=1)
    c, cc, _, _ = make_dataset(20, seed=2)
    assert np.array_equal(a, b) and ca == cb and sa == sb
    assert not np.array_equal(a, c) or ca != cc
    assert a.shape == (20, 32, 32, 3) and a.dtype == np.uint8


@pytest.mark.parametrize(
    ("scene", "caption"),
    [
        (Scene("circle", "red", "small", "left", "two"), "two small red circles on the left"),
        (Scene("cross", "blue", "large", "top", "three"), "three large blue crosses at the top"),
        (Scene("star", "white", "small", "center", "one"), "a small white star in the center"),
    ],
)
def test_captions(scene, caption):
    assert scene.caption() == caption


def _shape_mask(img: np.ndarray, colour: str) -> np.ndarray:
    return np.abs(img.astype(int) - np.array(COLOURS[colour])).sum(-1) < 60


@pytest.mark.parametrize("region", ["left", "right", "top", "bottom", "center"])
@pytest.mark.parametrize("colour", ["red", "blue", "white", "black"])
def test_flat_render_puts_the_colour_in_the_region(region, colour):
    img = np.asarray(render(Scene("square", colour, "large", region, "one"), "flat"))
    mask = _shape_mask(img, colour)
    assert mask.sum() > 20
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean(), ys.mean()
    expect = {
        "left": cx < 12,
        "right": cx > 20,
        "top": cy < 12,
        "bottom": cy > 20,
        "center": 12 <= cx <= 20 and 12 <= cy <= 20,
    }
    assert expect[region], (cx, cy)


@pytest.mark.parametrize("region", ["left", "top", "bottom"])
def test_count_is_the_number_of_separate_shapes(region):
    from scipy import ndimage

    for n, count in enumerate(("one", "two", "three"), start=1):
        img = np.asarray(render(Scene("circle", "red", "small", region, count), "flat"))
        _, found = ndimage.label(_shape_mask(img, "red"))
        assert found == n, (region, count)


def test_large_covers_more_than_small():
    small = np.asarray(render(Scene("circle", "red", "small", "top", "one"), "flat"))
    large = np.asarray(render(Scene("circle", "red", "large", "top", "one"), "flat"))
    assert _shape_mask(large, "red").sum() > 2 * _shape_mask(small, "red").sum()


def test_styles_render_the_same_scene_differently():
    scene = Scene("star", "yellow", "large", "center", "one")
    imgs = {s: np.asarray(render(scene, s)).astype(int) for s in STYLES}
    for a in STYLES:
        for b in STYLES:
            if a < b:
                assert np.abs(imgs[a] - imgs[b]).mean() > 1.0, (a, b)
    flat = np.asarray(render(Scene("square", "yellow", "large", "center", "one"), "flat"))
    outline = np.asarray(render(Scene("square", "yellow", "large", "center", "one"), "outline"))
    assert _shape_mask(flat, "yellow")[16, 16]  # filled
    assert np.abs(outline[16, 16].astype(int) - np.array(BACKGROUND)).sum() < 10  # hollow
    bg = np.abs(flat.astype(int) - np.array(BACKGROUND)).sum(-1) < 10
    assert bg.mean() > 0.5


def test_held_out_pairs_never_appear_in_training():
    train, held = split_combos()
    assert held and not set(held) & set(train)
    shapes_t, colours_t = {s for s, _ in train}, {c for _, c in train}
    assert {s for s, _ in held} <= shapes_t and {c for _, c in held} <= colours_t
    _, captions, scenes, _ = make_dataset(200, seed=5)
    assert not {(s.shape, s.colour) for s in scenes} & set(held)
    _, _, held_scenes, _ = make_dataset(50, seed=5, held_out=True)
    assert {(s.shape, s.colour) for s in held_scenes} <= set(held)


def test_unknown_style_is_named():
    with pytest.raises(ValueError, match="style 'cubist'"):
        render(Scene("star", "red", "small", "left", "one"), "cubist")


def test_shipped_toyworld_prompt_set_is_generated_by_the_world():
    """data/prompts/toyworld_prompts.tsv is `prompt_set()`: distinct captions, half of
    them of held-out (shape, colour) pairs."""
    import csv
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "data" / "prompts" / "toyworld_prompts.tsv"
    with path.open() as f:
        rows = [(r["category"], r["prompt"]) for r in csv.DictReader(f, delimiter="\t")]
    assert rows == prompt_set()
    assert len({t for _, t in rows}) == len(rows) == 48
    _, held = split_combos()
    held_captions = [t for c, t in rows if c == "held-out pair"]
    assert len(held_captions) == 24
    for text in held_captions:
        assert any(colour in text and shape in text for shape, colour in held), text
