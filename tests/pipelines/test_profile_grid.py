"""Grid expansion and the checks that must fail before any model loads."""

from __future__ import annotations

import pytest

from models.accelerators import Accelerator
from models.registry import Registry
from pipelines.profile_grid import SEED_STRIDE, SweepConfig, expand_grid, select_cards
from pipelines.prompts import Prompt, load_prompts
from sdaas.errors import InvalidInputError

CPU = [Accelerator("cpu", "cpu-Test CPU")]
PROMPTS = [Prompt("id1", "a red cat"), Prompt("id2", "a blue dog")]


@pytest.fixture
def cards(sweep_settings):
    reg = Registry(sweep_settings.registry_path, model_roots=sweep_settings.model_roots)
    return select_cards(reg, ())


def test_grid_is_the_full_product(cards):
    cfg = SweepConfig(steps=(1, 2, 5), seeds=(0, 1), batch_sizes=(1, 2))
    cells = expand_grid(cards, CPU, cfg, PROMPTS)
    assert len(cells) == len(cards) * 3 * 2 * 2 * 2
    assert len(set(cells)) == len(cells)
    assert {c.accelerator for c in cells} == {"cpu-Test CPU"}
    assert {(c.width, c.height) for c in cells} == {(64, 64)}


def test_every_prompt_runs_at_seeds_of_its_own(cards):
    """The same seeds under every caption would move every caption's CLIP alike, and the
    margins learnt from them would be too small: no seed is shared by two prompts, and a
    prompt's seeds (and a batch's, one per image) keep their order."""
    cfg = SweepConfig(steps=(1,), seeds=(0, 1), batch_sizes=(1,))
    cells = expand_grid(cards[:1], CPU, cfg, PROMPTS)
    by_prompt = {}
    for c in cells:
        by_prompt.setdefault(c.prompt.id, set()).add(c.seed)
    assert len(by_prompt) == len(PROMPTS) > 1
    seeds = [s for v in by_prompt.values() for s in v]
    assert len(seeds) == len(set(seeds)) == 2 * len(PROMPTS)
    assert by_prompt[PROMPTS[0].id] == {0, 1}  # the first prompt keeps the seeds asked
    assert by_prompt[PROMPTS[1].id] == {SEED_STRIDE, SEED_STRIDE + 1}


def test_unknown_model_is_named_with_the_registered_ones(sweep_settings):
    reg = Registry(sweep_settings.registry_path, model_roots=sweep_settings.model_roots)
    with pytest.raises(InvalidInputError, match="--models: nope: not registered; registered: "):
        select_cards(reg, ("nope",))


def test_empty_registry_says_what_to_do(settings):
    with pytest.raises(InvalidInputError, match="make-tiny"):
        select_cards(Registry(settings.registry_path), ())


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        (SweepConfig(steps=()), "--steps: empty"),
        (SweepConfig(seeds=()), "--seeds: empty"),
        (SweepConfig(seeds=(-1,)), "--seeds"),
        (SweepConfig(seeds=(999,), batch_sizes=(1, 2)), "each must be in 0..998"),
        (SweepConfig(batch_sizes=(0,)), "--batch-sizes"),
        (SweepConfig(steps=(1, 60)), "serves 1..50, asked 60"),
    ],
)
def test_bad_grids_are_refused(cards, cfg, needle):
    with pytest.raises(InvalidInputError, match=needle):
        expand_grid(cards, CPU, cfg, PROMPTS)


def test_no_model_runs_on_the_accelerators(cards):
    tpu = [Accelerator("tpu", "tpu-v5")]
    with pytest.raises(InvalidInputError, match="no selected model runs on"):
        expand_grid(cards, tpu, SweepConfig(), PROMPTS)


def test_prompts_are_held_by_id(sweep_settings):
    from pipelines.prompts import DEFAULT_PROMPT_SET

    prompts = load_prompts(DEFAULT_PROMPT_SET, 5, b"salt")
    assert len(prompts) == 5 and len({p.id for p in prompts}) == 5
    assert prompts[0].text not in repr(prompts[0])
    with pytest.raises(InvalidInputError, match="has only 47"):
        load_prompts(DEFAULT_PROMPT_SET, 1000, b"salt")
