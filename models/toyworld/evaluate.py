"""Evidence that the toy-world models are real: CLIP score vs steps on held-out captions,
attribute accuracy, CLIP retrieval, and sample grids.

Held-out captions use (shape, colour) pairs that no model saw in training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from models.backend import GenerationRequest
from models.toyworld.world import COLOURS, SHAPES, STYLES, Scene, make_dataset

EVAL_STEPS = (1, 2, 3, 5, 8, 12, 25, 50)
GRID_STEPS = (2, 5, 10, 25)


def retrieval_top1(scorer, n: int = 100, seed: int = 7) -> float:
    """Image -> caption top-1 among `n` candidates (held-out pairs, all styles)."""
    images, captions, _, _ = make_dataset(n, seed, held_out=True)
    pil = [Image.fromarray(im) for im in images]
    img, txt = scorer.embed(pil, captions)
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    sims = img @ txt.T
    # Identical captions count as correct (two images may share a caption).
    best = sims.argmax(dim=1).tolist()
    return float(np.mean([captions[b] == captions[i] for i, b in enumerate(best)]))


def attribute_accuracy(scorer, images: list[Image.Image], scenes: list[Scene]) -> dict:
    """Share of images whose shape (among 6) and colour (among 8) CLIP picks correctly, by
    scoring the true caption against the captions that differ only in that attribute."""
    shape_ok, colour_ok = [], []
    for im, sc in zip(images, scenes, strict=True):
        for attr, values, bucket in (
            ("shape", SHAPES, shape_ok),
            ("colour", list(COLOURS), colour_ok),
        ):
            caps = [Scene(**{**sc.__dict__, attr: v}).caption() for v in values]
            img, txt = scorer.embed([im] * len(caps), caps)
            sims = torch.nn.functional.cosine_similarity(img, txt)
            bucket.append(values[int(sims.argmax())] == getattr(sc, attr))
    both = [a and b for a, b in zip(shape_ok, colour_ok, strict=True)]
    return {
        "shape": float(np.mean(shape_ok)),
        "colour": float(np.mean(colour_ok)),
        "both": float(np.mean(both)),
    }


def evaluate_models(
    folder: Path,
    backends: dict,
    scorer,
    *,
    n_captions: int = 12,
    seed: int = 11,
    steps: tuple[int, ...] = EVAL_STEPS,
) -> dict:
    """CLIP score vs steps per model (mean and std over held-out captions, random styles),
    attribute accuracy at 25 steps, and a sample grid per model."""
    _, captions, scenes, styles = make_dataset(n_captions, seed, held_out=True)
    out: dict = {"retrieval_top1_of_100": retrieval_top1(scorer), "models": {}}
    for name, b in backends.items():
        w, h = b.card.resolution_pairs[0]
        curve = {}
        imgs_25: list[Image.Image] = []
        for s in steps:
            scores = []
            for i, (cap, st) in enumerate(zip(captions, styles, strict=True)):
                res = b.generate(
                    GenerationRequest((cap,), (seed + i,), s, w, h, b.card.guidance_scale, style=st)
                )
                scores.append(scorer.score(res.images, [cap])[0])
                if s == 25:
                    imgs_25.append(res.images[0])
            curve[s] = {"mean": float(np.mean(scores)), "std": float(np.std(scores))}
        out["models"][name] = {
            "clip_vs_steps": curve,
            "attributes_at_25": attribute_accuracy(scorer, imgs_25, scenes) if imgs_25 else {},
        }
        grid(b, folder / f"samples-{name}.png")
    (folder / "evidence.json").write_text(json.dumps(out, indent=2))
    return out


def grid(backend, path: Path, caption: str = "two large red circles on the left") -> Path:
    """Rows: styles; columns: steps in GRID_STEPS; one seed."""
    w, h = backend.card.resolution_pairs[0]
    scale, pad = 3, 4
    tile = w * scale
    sheet = Image.new(
        "RGB", (len(GRID_STEPS) * (tile + pad) + 70, len(STYLES) * (tile + pad) + 16), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for c, s in enumerate(GRID_STEPS):
        draw.text((70 + c * (tile + pad), 2), f"{s} steps", fill="black")
    for r, st in enumerate(STYLES):
        draw.text((2, 16 + r * (tile + pad) + tile // 2), st, fill="black")
        for c, s in enumerate(GRID_STEPS):
            res = backend.generate(
                GenerationRequest((caption,), (3,), s, w, h, backend.card.guidance_scale, style=st)
            )
            sheet.paste(
                res.images[0].resize((tile, tile), Image.NEAREST),
                (70 + c * (tile + pad), 16 + r * (tile + pad)),
            )
    sheet.save(path)
    return path
