"""A seeded, captioned synthetic world of simple scenes in several rendering styles.

A scene is a count of identical shapes (shape, colour, size) placed in one region of the
canvas; its caption says exactly that ("two small red circles on the left"). The same
scene renders differently per style (flat, outline, pixelated, textured): the styles the
toy-world model cards expose. Everything is drawn with PIL from a numpy Generator, so the
same seed gives the same images, and held-out captions are whole (shape, colour)
combinations never seen in training, so held-out metrics test composition, not recall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 190),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}
SIZES = ("small", "large")
REGIONS = ("left", "right", "top", "bottom", "center")
COUNTS = ("one", "two", "three")
STYLES = ("flat", "outline", "pixelated", "textured")
BACKGROUND = (128, 128, 128)  # mid grey: both white and black shapes stay visible

_PLURAL = {"cross": "crosses"}
_REGION_TEXT = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    size: str
    region: str
    count: str

    @property
    def n(self) -> int:
        return COUNTS.index(self.count) + 1

    def caption(self) -> str:
        noun = self.shape if self.n == 1 else _PLURAL.get(self.shape, self.shape + "s")
        article = "a" if self.n == 1 else self.count
        return f"{article} {self.size} {self.colour} {noun} {_REGION_TEXT[self.region]}"


def sample_scene(rng: np.random.Generator, combos: list[tuple[str, str]] | None = None) -> Scene:
    """A random scene; `combos` restricts the (shape, colour) pairs (train/held-out split)."""
    if combos is None:
        shape, colour = SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(8)]
    else:
        shape, colour = combos[rng.integers(len(combos))]
    return Scene(
        shape, colour, SIZES[rng.integers(2)], REGIONS[rng.integers(5)], COUNTS[rng.integers(3)]
    )


def split_combos(seed: int = 0, held_out: int = 6) -> tuple[list, list]:
    """(train, held-out) (shape, colour) pairs: every shape and colour appears in training,
    but `held_out` of their 48 pairings never do."""
    rng = np.random.default_rng(seed)
    pairs = [(s, c) for s in SHAPES for c in COLOURS]
    order = rng.permutation(len(pairs))
    held: list[tuple[str, str]] = []
    for i in order:
        s, c = pairs[i]
        if len(held) < held_out and all(s != h[0] and c != h[1] for h in held):
            held.append((s, c))
    return [p for p in pairs if p not in held], held


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if shape == "cross":
        w = r / 3
        return [
            (cx - w, cy - r),
            (cx + w, cy - r),
            (cx + w, cy - w),
            (cx + r, cy - w),
            (cx + r, cy + w),
            (cx + w, cy + w),
            (cx + w, cy + r),
            (cx - w, cy + r),
            (cx - w, cy + w),
            (cx - r, cy + w),
            (cx - r, cy - w),
            (cx - w, cy - w),
        ]
    raise ValueError(f"shape {shape!r} has no polygon")


def _centres(scene: Scene, size: int, r: float, rng: np.random.Generator) -> list[tuple]:
    """Shape centres inside the scene's region, spread along its long side, jittered."""
    lo, hi = r + 1, size - r - 1
    mid = size / 2
    third = size / 3
    box = {
        "left": (lo, lo, third, hi),
        "right": (size - third, lo, hi, hi),
        "top": (lo, lo, hi, third),
        "bottom": (lo, size - third, hi, hi),
        "center": (mid - third / 2, mid - third / 2, mid + third / 2, mid + third / 2),
    }[scene.region]
    x0, y0, x1, y1 = box
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    vertical = (y1 - y0) > (x1 - x0)
    out = []
    for k in range(scene.n):
        t = (k + 0.5) / scene.n
        jit = rng.uniform(-1.0, 1.0, size=2)
        if vertical:
            out.append(((x0 + x1) / 2 + jit[0], y0 + t * (y1 - y0) + jit[1]))
        else:
            out.append((x0 + t * (x1 - x0) + jit[0], (y0 + y1) / 2 + jit[1]))
    return out


def render(scene: Scene, style: str, size: int = 32, rng: np.random.Generator | None = None):
    """The scene as an RGB PIL image in `style`."""
    if style not in STYLES:
        raise ValueError(f"style {style!r}: known styles {', '.join(STYLES)}")
    rng = rng or np.random.default_rng(0)
    scale = 4  # draw large, downsample: anti-aliased edges
    big = size * scale
    img = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(img)
    base = size / 9 if scene.size == "small" else size / 5.5
    if scene.n == 3 and scene.region != "center":
        base *= 0.85
    if scene.region == "center" and scene.n > 1:
        base *= 0.7
    colour = COLOURS[scene.colour]
    for cx, cy in _centres(scene, size, base, rng):
        cx, cy, r = cx * scale, cy * scale, base * scale
        if scene.shape == "circle":
            box = [cx - r, cy - r, cx + r, cy + r]
            if style == "outline":
                draw.ellipse(box, outline=colour, width=scale * 2)
            else:
                draw.ellipse(box, fill=colour)
        else:
            pts = _polygon(scene.shape, cx, cy, r)
            if style == "outline":
                draw.line([*pts, pts[0]], fill=colour, width=scale * 2, joint="curve")
            else:
                draw.polygon(pts, fill=colour)
    img = img.resize((size, size), Image.LANCZOS)
    if style == "pixelated":
        img = img.resize((size // 4, size // 4), Image.BOX).resize((size, size), Image.NEAREST)
    elif style == "textured":
        arr = np.asarray(img).astype(np.int16)
        yy, xx = np.mgrid[0:size, 0:size]
        stripes = ((xx + yy) // 2 % 2) * 2 - 1  # diagonal stripes, +-1
        mask = np.any(np.abs(arr - np.array(BACKGROUND)) > 30, axis=-1)
        arr[mask] += (stripes[mask] * 35)[:, None]
        arr += rng.integers(-8, 9, size=arr.shape)  # paper grain everywhere
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img


def make_dataset(
    n: int,
    seed: int,
    styles: tuple[str, ...] = STYLES,
    *,
    held_out: bool = False,
    size: int = 32,
) -> tuple[np.ndarray, list[str], list[Scene], list[str]]:
    """n images (uint8, n x size x size x 3), their captions, scenes and styles.

    `held_out=True` draws only the held-out (shape, colour) pairs of `split_combos`."""
    train, held = split_combos()
    rng = np.random.default_rng(seed)
    images, captions, scenes, style_of = [], [], [], []
    for _ in range(n):
        scene = sample_scene(rng, held if held_out else train)
        style = styles[rng.integers(len(styles))]
        images.append(np.asarray(render(scene, style, size, rng)))
        captions.append(scene.caption())
        scenes.append(scene)
        style_of.append(style)
    return np.stack(images), captions, scenes, style_of


def prompt_set(n: int = 48, seed: int = 11) -> list[tuple[str, str]]:
    """(category, caption) of `n` distinct captions of the world, alternately from
    held-out and training (shape, colour) pairs: what users of the toy-world models
    send, so profiling measures CLIP on prompts those models can draw
    (`data/prompts/toyworld_prompts.tsv` is this list)."""
    rng = np.random.default_rng(seed)
    train, held = split_combos()
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(out) < n:
        category, combos = ("held-out pair", held) if len(out) % 2 else ("training pair", train)
        text = sample_scene(rng, combos).caption()
        if text not in seen:
            seen.add(text)
            out.append((category, text))
    return out
