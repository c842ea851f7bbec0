"""Residency in the catalog (scheduler/catalog.py): checkpoint sizes against each kind's
memory less its working memory, a count of models as the special case, one rule for what
a load evicts."""

import pytest

from scheduler.catalog import MAX_RESIDENT, SIZE_GB, load_catalog, lru_evictions
from scheduler.production_workload import production_catalog
from sdaas.errors import InvalidInputError
from tests.scheduler.conftest import gb_catalog

SD15, SDXL = SIZE_GB["sd-1.5"], SIZE_GB["sdxl"]


def test_checkpoint_sizes_are_the_published_parameter_counts_in_fp16():
    # SD 1.5: 860M + 123M + 84M parameters; SDXL: 2,567M + 818M + 84M; 2 bytes each
    assert SD15 == pytest.approx(1067e6 * 2 / 2**30) and 1.9 < SD15 < 2.1
    assert SDXL == pytest.approx(3469e6 * 2 / 2**30) and 6.4 < SDXL < 7.0
    assert SIZE_GB["sd-turbo"] == pytest.approx(SIZE_GB["sd-1.5"], rel=0.25)
    assert SIZE_GB["sdxl-lightning"] == SDXL and SIZE_GB["sdxs"] < SD15


def test_a_kinds_budget_is_its_memory_less_its_largest_batchs_working_memory():
    """A100 runs SDXL at batch 8: 8 x 3.81 GB of working memory (Hugging Face's 21.7 GB
    for 4 SDXL images less the weights), plus 1 GB of context; a T4 runs SD 1.5 at
    batch 1 only (1.14 GB)."""
    a80 = load_catalog(["A100", "T4"])
    a40 = load_catalog(["A100", "T4"], memory_gb={"A100": 40})
    work = 8 * (21.7 - SDXL) / 4
    assert a80.budget[0] == pytest.approx(80 - work - 1)
    assert a40.budget[0] == pytest.approx(40 - work - 1)
    assert a80.budget[1] == pytest.approx(16 - (11.12 - SD15) / 8 - 1)
    assert a80.by_memory and a80.weight[a80.models.index("sdxl")] == SDXL
    # a 40 GB A100 holds 4 SD 1.5 checkpoints or one SDXL beside one SD 1.5, not two SDXL
    assert 4 * SD15 <= a40.budget[0] < 5 * SD15
    assert SDXL + SD15 <= a40.budget[0] < 2 * SDXL


def test_the_count_rule_is_every_model_weighing_one_against_the_count():
    cat = load_catalog(["A100", "T4"], residency="count")
    assert not cat.by_memory
    assert cat.weight == [1.0] * len(cat.models)
    assert cat.budget == {0: MAX_RESIDENT["A100"], 1: MAX_RESIDENT["T4"]}
    # a full A100 (4 models) evicts one, its least recently used, for any newcomer
    assert cat.evictions([0, 1, 2, 3], 4.0, 4, 0) == 1
    assert cat.evictions([0, 1, 2], 3.0, 4, 0) == 0
    assert cat.evictions([0], 1.0, 4, 1) == 1  # T4: one at a time
    with pytest.raises(InvalidInputError, match="residency"):
        load_catalog(["A100"], residency="slots")


def test_a_load_evicts_the_least_recently_used_until_the_newcomer_fits():
    """Three 2 GB models in an 8.5 GB budget: a 6.5 GB one evicts the two least recently
    used (6 + 6.5 - 8.5 = 4 GB over), not the third; a 2 GB one fits beside them."""
    w = [2.0, 2.0, 2.0, 2.0, 6.5]
    assert lru_evictions([0, 1, 2], 6.0, 4, w, 8.5) == 2
    assert lru_evictions([0, 1, 2], 6.0, 3, w, 8.5) == 0
    assert lru_evictions([0, 1, 2, 3], 8.0, 4, w, 8.5) == 3
    # a model that fits only alone evicts everything
    assert lru_evictions([0, 1], 4.0, 4, w, 6.5) == 2
    cat = gb_catalog()
    assert cat.evictions([0, 1, 2], 6.0, 4, 0) == 2


def test_a_catalog_refuses_a_model_that_does_not_fit_its_kind_alone():
    with pytest.raises(InvalidInputError, match="'X'.*does not fit on G"):
        gb_catalog(budget_gb=6.0)


def test_hold_is_the_models_gb_over_the_budget():
    """X, a and b: 6.5 + 2 + 2 = 10.5 GB over 8.5 GB: 2 instances; as a count (3 a
    device), 3 models: 1 instance (ceil(models / count))."""
    mem, count = gb_catalog(), gb_catalog(budget_gb=None, count=3)
    assert mem.hold([4, 0, 1], 0) == 2
    assert count.hold([4, 0, 1], 0) == 1
    assert count.hold([0, 1, 2, 3], 0) == 2
    assert mem.hold([0, 0, 1], 0) == 1 and mem.hold([], 0) == 0  # distinct models


def test_production_checkpoints_weigh_their_base():
    cat, bases = production_catalog(["A100", "T4"], 6)
    assert [cat.weight[r] for r in range(6)] == [SDXL if b == "sdxl" else SD15 for b in bases]
    assert "sdxl" in bases and "sd-1.5" in bases
    count, _ = production_catalog(["A100", "T4"], 6, residency="count")
    assert count.weight == [1.0] * 6 and count.budget == {0: 4.0, 1: 1.0}
