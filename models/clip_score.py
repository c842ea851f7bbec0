"""CLIP score: how well an image matches its caption, the quality half of a job's SLO.

The standard definition (Hessel et al., CLIPScore; torchmetrics' `clip_score`):
`100 * max(cos(image_embedding, text_embedding), 0)`. Loaded with transformers
from a path (the tiny local CLIP here, `openai/clip-vit-*` in a deployment).
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from PIL import Image


def clip_score_from_embeddings(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Row-wise CLIP score for paired (N, D) embeddings: 100 * max(cosine, 0)."""
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise ValueError(
            f"embeddings must be paired (N, D) tensors; got {tuple(image_emb.shape)} "
            f"and {tuple(text_emb.shape)}"
        )
    img = image_emb / image_emb.norm(dim=-1, keepdim=True)
    txt = text_emb / text_emb.norm(dim=-1, keepdim=True)
    return 100.0 * (img * txt).sum(dim=-1).clamp(min=0.0)


class ClipScorer:
    """A CLIPModel + processor; scores image/caption pairs in batches. Thread-safe (a lock:
    the fast tokenizer inside the processor holds mutable padding state)."""

    def __init__(self, model, processor, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self._lock = threading.Lock()

    @classmethod
    def from_path(cls, path: str | Path, device: str = "cpu") -> ClipScorer:
        from transformers import CLIPModel, CLIPProcessor
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

        local = Path(path).exists()
        model = CLIPModel.from_pretrained(str(path), local_files_only=local)
        processor = CLIPProcessor.from_pretrained(str(path), local_files_only=local)
        return cls(model, processor, device)

    @torch.no_grad()
    def embed(
        self, images: list[Image.Image], texts: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and text embeddings (projected, not normalised), one row per pair."""
        max_len = self.processor.tokenizer.model_max_length
        with self._lock:
            inputs = self.processor(
                text=texts,
                images=images,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_len,
            )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        img = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        txt = self.model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
        # transformers 5 may return a model-output object instead of a tensor.
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
        return img.float().cpu(), txt.float().cpu()

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings alone (projected, not normalised), one row per text: what a
        prompt's CLIP-prediction features are derived from, before any image exists."""
        if not texts:
            raise ValueError("embed_text: no texts given")
        tok = self.processor.tokenizer
        with self._lock:
            inputs = tok(
                texts,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=tok.model_max_length,
            )
        txt = self.model.get_text_features(
            input_ids=inputs["input_ids"].to(self.device),
            attention_mask=inputs["attention_mask"].to(self.device),
        )
        return getattr(txt, "pooler_output", txt).float().cpu()

    def score(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        """CLIP score per (image, caption) pair."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images for {len(texts)} captions: give one each")
        if not images:
            return []
        img, txt = self.embed(images, texts)
        return clip_score_from_embeddings(img, txt).tolist()
