"""The toy-world training path end to end on a tiny budget: it trains, saves fp16 diffusers
pipelines with valid cards, and the result loads offline and generates in every style."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors import safe_open

from models.backend import GenerationRequest
from models.card import load_card
from models.loader import load_backend
from models.toyworld.cards import write_cards
from models.toyworld.train import ToyConfig, UNetSpec, train_toyworld
from models.toyworld.world import STYLES

TINY = ToyConfig(
    images=256,
    batch=16,
    clip_steps=4,
    vae_steps=4,
    unet_batch=8,
    unets=(UNetSpec("toy-s", (32, 64), 1, 3, "smoke"),),
)


@pytest.mark.slow
def test_train_save_load_generate(tmp_path):
    report = train_toyworld(tmp_path, TINY)
    assert set(report["timings"]) >= {"clip_s", "vae_s", "toy-s_s", "total_s"}
    assert np.isfinite(report["vae_psnr_db"])
    (card_path,) = write_cards(tmp_path, TINY)
    card = load_card(card_path, model_roots=(tmp_path.resolve(),))
    assert card.styles == list(STYLES) and card.resolution_pairs == [(32, 32)]
    weights = next((tmp_path / "toy-s" / "unet").glob("*.safetensors"))
    with safe_open(str(weights), "pt") as f:
        assert str(f.get_tensor(next(iter(f.keys()))).dtype) == "torch.float16"
    backend = load_backend(card, "cpu")
    images = {}
    for style in STYLES:
        res = backend.generate(
            GenerationRequest(
                ("two small red circles on the left",),
                (1,),
                2,
                32,
                32,
                card.guidance_scale,
                style=style,
            )
        )
        images[style] = np.asarray(res.images[0])
        assert images[style].shape == (32, 32, 3)
    # The style reaches the text encoder: same seed, different styles, different images.
    assert not np.array_equal(images["flat"], images["outline"])
    clip_dir = tmp_path / "toy-clip"
    assert (clip_dir / "config.json").is_file()
