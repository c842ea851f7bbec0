import pytest

from scheduler.catalog import load_catalog
from scheduler.cluster import Cluster
from sdaas.errors import InvalidInputError


def test_parse_and_print():
    c = Cluster.parse("8xA100 + 8xT4+2xA100")
    assert c.counts == (("A100", 10), ("T4", 8)) and c.size == 18
    assert str(c) == "10xA100+8xT4"


@pytest.mark.parametrize("spec", ["", "A100", "8A100", "0xA100", "8xA100+"])
def test_bad_specs_say_the_format(spec):
    with pytest.raises(InvalidInputError, match="cluster"):
        Cluster.parse(spec)


def test_an_accelerator_without_a_profile_is_refused_by_name(catalog):
    with pytest.raises(InvalidInputError, match="'B200': no profile for it; profiled kinds: A100"):
        Cluster.parse("2xB200").check(catalog)
    with pytest.raises(InvalidInputError, match="'B200': no reference profile"):
        load_catalog(["B200"])


def test_catalog_matches_the_published_figures(catalog):
    a100, t4 = catalog.kind_index("A100"), catalog.kind_index("T4")
    sd15 = catalog.models.index("sd-1.5")
    assert catalog.latency[(sd15, a100)][49] == pytest.approx(1.78)  # DiffServe, 50 steps
    assert catalog.latency[(sd15, t4)][49] == pytest.approx(7.8)  # T4, 50 steps
    assert catalog.batch_factor[(sd15, a100)][4] == pytest.approx(3.68 / 1.78)
    assert catalog.batch_limit(sd15, t4) == 1  # no batch profile: no batching
    turbo = catalog.models.index("sd-turbo")
    assert not catalog.can_run(turbo, t4)
    assert catalog.latency[(turbo, a100)][0] == pytest.approx(0.10)
    assert catalog.latency[(turbo, a100)][4] == float("inf")  # served at 1-4 steps
