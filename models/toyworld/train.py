"""Train the toy world's models on this CPU: a tiny CLIP, a tiny VAE and text-conditioned
UNets, assembled as diffusers StableDiffusionPipelines.

Stages (each seeded): render the world -> CLIP (contrastive, all styles) -> VAE
(reconstruction + a small KL) -> cache latents and text embeddings (the text encoder is
the trained CLIP's, frozen) -> one UNet per size (epsilon prediction, 10 % empty captions
for classifier-free guidance) -> save pipelines in fp16 with cards. One UNet serves every
style through its captions ("..., outline style"); cards declare that with `style_prompt`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.toyworld.world import COLOURS, SHAPES, STYLES, make_dataset

log = logging.getLogger(__name__)

# diffusers, transformers and models.tokenizer (which imports transformers) are imported in
# the functions that build models: seconds to import, and not needed to import this module.

IMAGE = 32
TEXT_LEN = 24
STYLE_PROMPT = "{prompt}, {style} style"


@dataclass(frozen=True)
class UNetSpec:
    name: str
    block_out_channels: tuple[int, int]
    layers_per_block: int
    steps: int  # training steps
    description: str


@dataclass(frozen=True)
class ToyConfig:
    seed: int = 0
    images: int = 20000
    batch: int = 64
    clip_steps: int = 1200
    vae_steps: int = 1500
    # Step budgets from measured CPU costs (batch 32, 16x16x4 latents, 2 cores): about
    # 0.5 s (s), 0.7 s (m) and 1.5 s (l) per training step.
    unets: tuple[UNetSpec, ...] = (
        UNetSpec("toy-s", (32, 64), 1, 600, "cheap: 1 layer per block"),
        UNetSpec("toy-m", (32, 64), 2, 700, "default: 2 layers per block"),
        UNetSpec("toy-l", (64, 128), 1, 400, "dear: 2x width"),
    )
    unet_batch: int = 32
    lr: float = 1e-3
    progress_every: int = 100
    extra: dict = field(default_factory=dict)


def style_caption(caption: str, style: str) -> str:
    return STYLE_PROMPT.format(prompt=caption, style=style)


def world_corpus() -> list[str]:
    words = [
        *SHAPES,
        *COLOURS,
        *STYLES,
        "a",
        "one",
        "two",
        "three",
        "small",
        "large",
        "on",
        "the",
        "left",
        "right",
        "at",
        "top",
        "bottom",
        "in",
        "center",
        "style",
        ",",
    ]
    words += [s + "s" for s in SHAPES] + ["crosses"]
    return [" ".join(words)] * 4


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _progress(stage: str, step: int, total: int, loss: float, t0: float) -> None:
    log.info("%s %d/%d loss %.4f (%.0f s)", stage, step, total, loss, time.perf_counter() - t0)


def build_tokenizer():
    from models.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(world_corpus(), n_merges=600, max_length=TEXT_LEN)


def train_clip(cfg: ToyConfig, images: np.ndarray, captions: list[str], tok):
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    torch.manual_seed(cfg.seed)
    text = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=TEXT_LEN,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=IMAGE,
        patch_size=4,
    )
    model = CLIPModel(
        CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=64)
    )
    ids = tok(
        captions, padding="max_length", max_length=TEXT_LEN, truncation=True, return_tensors="pt"
    )
    pix = to_tensor(images)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    model.train()
    for step in range(1, cfg.clip_steps + 1):
        idx = torch.from_numpy(rng.choice(len(captions), cfg.batch, replace=False))
        out = model(
            input_ids=ids.input_ids[idx],
            attention_mask=ids.attention_mask[idx],
            pixel_values=pix[idx],
            return_loss=True,
        )
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        if step % cfg.progress_every == 0:
            _progress("clip", step, cfg.clip_steps, out.loss.item(), t0)
    return model.eval()


def train_vae(cfg: ToyConfig, images: np.ndarray):
    from diffusers import AutoencoderKL

    torch.manual_seed(cfg.seed + 1)
    # (16, 32) without mid-block attention: 0.14 s per step at batch 32 here, against
    # 0.46 s for (32, 64) with attention; 32x32 flat-coloured scenes need no more.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=IMAGE,
        norm_num_groups=8,
        mid_block_add_attention=False,
    )
    pix = to_tensor(images)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed + 1)
    t0 = time.perf_counter()
    vae.train()
    for step in range(1, cfg.vae_steps + 1):
        x = pix[torch.from_numpy(rng.choice(len(pix), cfg.batch, replace=False))]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = torch.nn.functional.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % cfg.progress_every == 0:
            _progress("vae", step, cfg.vae_steps, float(loss), t0)
    vae.eval()
    with torch.no_grad():
        lat = torch.cat(
            [
                vae.encode(pix[i : i + 256]).latent_dist.mean
                for i in range(0, min(len(pix), 2048), 256)
            ]
        )
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    return vae


def psnr(vae, images: np.ndarray) -> float:
    with torch.no_grad():
        x = to_tensor(images)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    mse = float(((rec - x) / 2).pow(2).mean())
    return 10 * math.log10(1.0 / mse)


def text_encoder_from(clip, tok):
    from transformers import CLIPTextModel

    enc = CLIPTextModel(clip.config.text_config)
    # transformers 5 flattens CLIPTextModel: its modules are the CLIP text tower's own.
    target = getattr(enc, "text_model", enc)
    missing, unexpected = target.load_state_dict(clip.text_model.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"text tower mismatch: missing {missing}, unexpected {unexpected}")
    return enc.eval()


def train_unet(
    cfg: ToyConfig,
    spec: UNetSpec,
    latents: torch.Tensor,
    emb: torch.Tensor,
    empty: torch.Tensor,
    seed: int,
):
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=IMAGE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=spec.block_out_channels,
        layers_per_block=spec.layers_per_block,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=emb.shape[-1],
        attention_head_dim=8,
        norm_num_groups=32,
    )
    sched = DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, spec.steps)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    unet.train()
    for step in range(1, spec.steps + 1):
        idx = torch.from_numpy(rng.choice(len(latents), cfg.unet_batch, replace=False))
        x0, cond = latents[idx], emb[idx].clone()
        drop = torch.from_numpy(rng.random(cfg.unet_batch) < 0.1)
        cond[drop] = empty
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (cfg.unet_batch,))
        pred = unet(sched.add_noise(x0, noise, t), t, cond).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        opt.zero_grad()
        if step % cfg.progress_every == 0:
            _progress(spec.name, step, spec.steps, float(loss), t0)
    return unet.eval()


def train_toyworld(out_dir: Path, cfg: ToyConfig | None = None) -> dict:
    """Everything, from the seed. Returns a report (also written to out_dir/report.json)."""
    cfg = cfg or ToyConfig()
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    from transformers import CLIPImageProcessorPil, CLIPProcessor

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    images, captions, _, styles = make_dataset(cfg.images, cfg.seed)
    styled = [style_caption(c, s) for c, s in zip(captions, styles, strict=True)]
    timings["world_s"] = time.perf_counter() - t
    tok = build_tokenizer()

    t = time.perf_counter()
    # CLIP sees both plain and styled captions, so it scores content with or without style.
    mixed = [s if i % 2 else c for i, (c, s) in enumerate(zip(captions, styled, strict=True))]
    clip = train_clip(cfg, images, mixed, tok)
    timings["clip_s"] = time.perf_counter() - t
    proc = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}
        ),
        tokenizer=tok,
    )
    clip.save_pretrained(out_dir / "toy-clip")
    proc.save_pretrained(out_dir / "toy-clip")

    t = time.perf_counter()
    vae = train_vae(cfg, images)
    timings["vae_s"] = time.perf_counter() - t
    held_images, *_ = make_dataset(512, cfg.seed + 99, held_out=True)
    report: dict = {"config": asdict(cfg), "vae_psnr_db": psnr(vae, held_images)}

    enc = text_encoder_from(clip, tok)
    with torch.no_grad():
        pix = to_tensor(images)
        latents = (
            torch.cat(
                [vae.encode(pix[i : i + 512]).latent_dist.mean for i in range(0, len(pix), 512)]
            )
            * vae.config.scaling_factor
        )
        uniq = sorted(set(styled) | {""})
        ids = tok(
            uniq, padding="max_length", max_length=TEXT_LEN, truncation=True, return_tensors="pt"
        ).input_ids
        table = torch.cat([enc(ids[i : i + 512])[0] for i in range(0, len(ids), 512)])
    row = {c: i for i, c in enumerate(uniq)}
    emb = table[torch.tensor([row[c] for c in styled])]
    empty = table[row[""]]
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
    )
    for k, spec in enumerate(cfg.unets):
        t = time.perf_counter()
        unet = train_unet(cfg, spec, latents, emb, empty, cfg.seed + 10 + k)
        timings[f"{spec.name}_s"] = time.perf_counter() - t
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=enc,
            tokenizer=tok,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.to(torch.float16).save_pretrained(out_dir / spec.name, safe_serialization=True)
        pipe.to(torch.float32)
    timings["total_s"] = time.perf_counter() - t_start
    report["timings"] = timings
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report
