"""The profiling grid: models x accelerators x steps x prompts x seeds x batch sizes.

Expanded and checked up front, so that a bad sweep (unknown model, empty grid, a step
count a card does not serve) fails before any model is loaded.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from models.accelerators import Accelerator
from models.card import ModelCard
from models.registry import Registry
from pipelines.prompts import DEFAULT_PROMPT_SET, Prompt
from profiles.steps import QUICK_STEPS
from profiles.timing import REPEATS
from sdaas.errors import InvalidInputError
from sdaas.records import model_key

log = logging.getLogger(__name__)

# Every prompt is profiled at seeds of its own: prompt k's seed s is k * SEED_STRIDE + s.
# The seed moves a CLIP score about as much as the caption does (toy-m at 4 steps: sd 23
# within a caption at seeds of its own), and the same few seeds under every caption (the
# same initial noise) move every caption alike: margins learnt from them were too small,
# the prompt-blind promise holding for 0.79 of unseen captions at seeds of their own.
SEED_STRIDE = 1000


def noise_seed(prompt_index: int, seed: int) -> int:
    """The seed prompt number `prompt_index` of the sweep is generated at for `seed`."""
    return prompt_index * SEED_STRIDE + seed


@dataclass(frozen=True)
class SweepConfig:
    """What to profile. Empty `models` means every registered model; empty `devices` means
    every local accelerator (all CUDA devices, else the CPU)."""

    models: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    steps: tuple[int, ...] = QUICK_STEPS
    prompts: int = 3
    seeds: tuple[int, ...] = (0,)  # per prompt, offset by `noise_seed`
    batch_sizes: tuple[int, ...] = (1,)
    prompt_set: Path = field(default=DEFAULT_PROMPT_SET)
    repeats: tuple[int, int] = REPEATS


@dataclass(frozen=True)
class ProfileCell:
    """One unit of profiling work. Carries the prompt text in memory only."""

    model: str
    model_version: str
    device: str
    accelerator: str
    steps: int
    width: int
    height: int
    guidance_scale: float
    batch_size: int
    prompt: Prompt
    seed: int
    style: str | None = None  # reaches the model through the card's style_prompt

    @property
    def shard(self) -> str:
        """Which output file the cell's row lands in: one per (model, accelerator)."""
        return f"{model_key(self.model, self.model_version)}|{self.accelerator}"


def select_cards(registry: Registry, names: tuple[str, ...]) -> list[ModelCard]:
    registered = {r.card.name: r.card for r in registry.list()}
    if not registered:
        raise InvalidInputError(
            "the registry is empty: register models first (sdaas models make-tiny)"
        )
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise InvalidInputError(
            f"--models: {', '.join(unknown)}: not registered; registered: "
            f"{', '.join(sorted(registered))}"
        )
    return [registered[n] for n in (names or sorted(registered))]


def expand_grid(
    cards: list[ModelCard],
    accelerators: list[Accelerator],
    config: SweepConfig,
    prompts: list[Prompt],
) -> list[ProfileCell]:
    """Every cell of the sweep; raises InvalidInputError naming what makes it invalid/empty."""
    for name, values in (
        ("steps", config.steps),
        ("seeds", config.seeds),
        ("batch_sizes", config.batch_sizes),
    ):
        if not values:
            raise InvalidInputError(f"--{name.replace('_', '-')}: empty: the grid has no cells")
    if len(config.repeats) != 2 or not 1 <= config.repeats[0] <= config.repeats[1]:
        raise InvalidInputError(
            f"--repeats: {config.repeats}: give MIN,MAX with 1 <= MIN <= MAX, e.g. 2,5"
        )
    if any(b < 1 for b in config.batch_sizes):
        raise InvalidInputError(f"--batch-sizes: {config.batch_sizes}: each must be >= 1")
    top = SEED_STRIDE - max(config.batch_sizes)  # a batch's images take seeds s, s + 1, ...
    if any(not 0 <= s <= top for s in config.seeds):
        raise InvalidInputError(
            f"--seeds: {config.seeds}: each must be in 0..{top} (a prompt's seeds are offset "
            f"by {SEED_STRIDE} per prompt, and a batch takes one seed per image)"
        )
    if not prompts:
        raise InvalidInputError("--prompts: no prompts: the grid has no cells")
    bad_steps = [
        f"{c.name} serves {c.steps.min}..{c.steps.max}, asked {s}"
        for c in cards
        for s in config.steps
        if not c.steps.min <= s <= c.steps.max
    ]
    if bad_steps:
        raise InvalidInputError("--steps: outside a card's range: " + "; ".join(bad_steps))
    cells: list[ProfileCell] = []
    for card in cards:
        usable = [a for a in accelerators if card.runs_on(a.name) or card.runs_on(a.device)]
        if not usable:
            log.warning(
                "%s runs on none of %s (card accelerators: %s): skipped",
                card.name,
                [a.name for a in accelerators],
                card.accelerators,
            )
        width, height = card.resolution_pairs[0]
        for acc, steps, (k, prompt), seed, batch in itertools.product(
            usable, config.steps, enumerate(prompts), config.seeds, config.batch_sizes
        ):
            cells.append(
                ProfileCell(
                    model=card.name,
                    model_version=card.version,
                    device=acc.device,
                    accelerator=acc.name,
                    steps=steps,
                    width=width,
                    height=height,
                    guidance_scale=card.guidance_scale,
                    batch_size=batch,
                    prompt=prompt,
                    seed=noise_seed(k, seed),
                    style=card.styles[0],
                )
            )
    if not cells:
        raise InvalidInputError(
            "the grid has no cells: no selected model runs on the selected accelerators "
            f"({', '.join(a.name for a in accelerators)})"
        )
    return cells
