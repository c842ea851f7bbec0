"""Cards for the toy-world models and the one-command rebuild (`sdaas models
train-toyworld`): train, write cards, evaluate."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import yaml

from models.card import load_card
from models.clip_score import ClipScorer
from models.loader import load_backend
from models.toyworld.evaluate import evaluate_models
from models.toyworld.train import IMAGE, STYLE_PROMPT, ToyConfig, train_toyworld
from models.toyworld.world import STYLES

log = logging.getLogger(__name__)

GUIDANCE = 4.0


def toy_card(name: str, description: str, model_dir: Path, card_dir: Path) -> dict:
    return {
        "name": name,
        "version": "1.0",
        "owner": "sdaas-toyworld",
        "description": f"toy-world SD trained here on 2 CPU cores ({description})",
        "styles": list(STYLES),
        "source": {"kind": "diffusers", "path": os.path.relpath(model_dir, card_dir)},
        "scheduler": "dpm-solver++",
        "resolutions": [f"{IMAGE}x{IMAGE}"],
        "steps": {"min": 1, "max": 50},
        "guidance_scale": GUIDANCE,
        "accelerators": ["cpu", "cuda"],
        "style_prompt": STYLE_PROMPT,
    }


def write_cards(out_dir: Path, cfg: ToyConfig) -> list[Path]:
    card_dir = out_dir / "cards"
    card_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in cfg.unets:
        path = card_dir / f"{spec.name}.yaml"
        path.write_text(
            yaml.safe_dump(
                toy_card(spec.name, spec.description, out_dir / spec.name, card_dir),
                sort_keys=False,
            )
        )
        paths.append(path)
    return paths


def evaluate_folder(out_dir: Path, cards: list[Path], **kw) -> dict:
    scorer = ClipScorer.from_path(out_dir / "toy-clip")
    backends = {}
    for c in cards:
        card = load_card(c)
        backends[card.name] = load_backend(card, "cpu")
    return evaluate_models(out_dir, backends, scorer, **kw)


def rebuild(out_dir: Path, cfg: ToyConfig | None = None, *, evaluate: bool = True) -> dict:
    cfg = cfg or ToyConfig()
    t0 = time.perf_counter()
    report = train_toyworld(out_dir, cfg)
    cards = write_cards(out_dir, cfg)
    if evaluate:
        report["evidence"] = evaluate_folder(out_dir, cards)
    report["wall_s"] = time.perf_counter() - t0
    return report
