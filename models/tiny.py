"""Offline tiny Stable Diffusion models: real diffusers pipelines with random weights.

No machine here reaches a model hub, so the demo and tests run on pipelines
built from config (diffusers' own test recipe), saved with `save_pretrained`
and loaded back through the same `from_pretrained` path real SD weights use.
Three models of clearly different cost cover four styles with overlaps, so
"which model, how many steps" is a real choice. Weights are seeded: the same
command writes the same tensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

log = logging.getLogger(__name__)

# diffusers, transformers and models.tokenizer (which imports transformers) are imported in
# the functions that build models: seconds to import, and not needed to import this module.

TINY_SEED = 1234
TINY_RESOLUTION = 64  # pixels; the tiny VAE downsamples by 2, so latents are 32x32


@dataclass(frozen=True)
class TinySpec:
    """One tiny model: UNet size (its cost), the styles its card serves, its scheduler."""

    name: str
    styles: tuple[str, ...]
    block_out_channels: tuple[int, int]
    layers_per_block: int
    scheduler: str
    description: str


TINY_SPECS: tuple[TinySpec, ...] = (
    TinySpec("tiny-sketch-s", ("sketch", "flat"), (32, 64), 1, "euler", "cheapest: 1 layer/block"),
    TinySpec("tiny-flat-m", ("flat", "photo"), (64, 128), 1, "dpm-solver++", "~2x the s UNet"),
    TinySpec("tiny-photo-l", ("photo", "anime"), (96, 192), 2, "ddim", "~6x the s UNet"),
)
CLIP_NAME = "tiny-clip"


def _text_config(vocab_size: int, bos: int, eos: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=vocab_size,
        max_position_embeddings=77,
    )


def build_tiny_pipeline(spec: TinySpec, seed: int = TINY_SEED):
    """Build one tiny StableDiffusionPipeline from config, weights drawn from `seed`."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    from models.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=spec.block_out_channels,
        layers_per_block=spec.layers_per_block,
        sample_size=TINY_RESOLUTION // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=TINY_RESOLUTION,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        _text_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    )
    # SD 1.x's noise schedule; the card's scheduler replaces the sampler at load time.
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_clip(seed: int = TINY_SEED):
    """A tiny CLIPModel + CLIPProcessor: real CLIP-score computation, meaningless values."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPProcessor,
        CLIPVisionConfig,
    )

    from models.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    text = _text_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=TINY_RESOLUTION,
        patch_size=8,
    )
    config = CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32
    )
    torch.manual_seed(seed + 3)
    model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": TINY_RESOLUTION},
        crop_size={"height": TINY_RESOLUTION, "width": TINY_RESOLUTION},
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_card(spec: TinySpec, model_dir: Path, card_dir: Path) -> dict:
    """The card a model developer would write for `spec` (source path relative to the card)."""
    return {
        "name": spec.name,
        "version": "1.0",
        "owner": "sdaas-tiny",
        "description": f"random-weight tiny SD ({spec.description}); outputs are noise",
        "styles": list(spec.styles),
        "source": {"kind": "diffusers", "path": os.path.relpath(model_dir, card_dir)},
        "scheduler": spec.scheduler,
        "resolutions": [f"{TINY_RESOLUTION}x{TINY_RESOLUTION}"],
        "steps": {"min": 1, "max": 50},
        "guidance_scale": 7.5,
        "accelerators": ["cpu", "cuda"],
    }


def _build_id(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def make_tiny(out_dir: Path, *, seed: int = TINY_SEED, force: bool = False) -> list[Path]:
    """Build and save every tiny model, the tiny CLIP and their cards under `out_dir`.

    Skips a model whose folder already holds the same build (spec + seed), unless `force`.
    Returns the card paths, ready for `Registry.register_file`.
    """
    out_dir = Path(out_dir)
    card_dir = out_dir / "cards"
    card_dir.mkdir(parents=True, exist_ok=True)
    cards: list[Path] = []
    for spec in TINY_SPECS:
        model_dir = out_dir / spec.name
        build_id = _build_id({"spec": asdict(spec), "seed": seed})
        stamp = model_dir / "sdaas-build.json"
        if force or not (stamp.is_file() and json.loads(stamp.read_text())["id"] == build_id):
            log.info(
                "building %s (UNet %s x%d)",
                spec.name,
                spec.block_out_channels,
                spec.layers_per_block,
            )
            build_tiny_pipeline(spec, seed).save_pretrained(model_dir, safe_serialization=True)
            stamp.write_text(json.dumps({"id": build_id, "seed": seed}))
        else:
            log.info("%s is up to date", spec.name)
        card_path = card_dir / f"{spec.name}.yaml"
        card_path.write_text(yaml.safe_dump(tiny_card(spec, model_dir, card_dir), sort_keys=False))
        cards.append(card_path)
    clip_dir = out_dir / CLIP_NAME
    clip_id = _build_id({"clip": 1, "seed": seed})
    stamp = clip_dir / "sdaas-build.json"
    if force or not (stamp.is_file() and json.loads(stamp.read_text())["id"] == clip_id):
        log.info("building %s", CLIP_NAME)
        model, processor = build_tiny_clip(seed)
        model.save_pretrained(clip_dir, safe_serialization=True)
        processor.save_pretrained(clip_dir)
        stamp.write_text(json.dumps({"id": clip_id, "seed": seed}))
    return cards
