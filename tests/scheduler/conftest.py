import numpy as np
import pytest

from scheduler.catalog import load_catalog
from scheduler.workload import make_workload, poisson_arrivals, slo_mix


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture(scope="session")
def mixed(catalog):
    return slo_mix("mixed", catalog.all_styles)


def workload(classes, rate, n, seed=0, arrivals=None, **kw):
    rng = np.random.default_rng(seed)
    arr = poisson_arrivals(rate, n, rng) if arrivals is None else np.asarray(arrivals, float)
    return make_workload("test", arr, classes, rng, **kw)


def toy_catalog(*, load_s=0.0, batch2=1.5, slow_kind=False):
    """Model `m` on kind X: `steps` seconds at batch 1 (1 s per step), CLIP 10 per step,
    batch of 2 costs `batch2` x one job. With slow_kind, kind Y runs it at 2 s per step
    at a sixth of the price."""
    from scheduler.catalog import Catalog

    steps = np.arange(1, 11)
    kinds = ["X", "Y"] if slow_kind else ["X"]
    latency = {(0, 0): steps * 1.0}
    factor = np.full(9, np.inf)
    factor[1], factor[2] = 1.0, batch2
    factors = {(0, 0): factor}
    if slow_kind:
        latency[(0, 1)] = steps * 2.0
        factors[(0, 1)] = factor
    return Catalog(
        models=["m"],
        kinds=kinds,
        styles={"m": ("any",)},
        steps=steps,
        latency=latency,
        batch_factor=factors,
        clip={0: steps * 10.0},
        load_s={0: load_s},
        price_per_hour={0: 3.0, 1: 0.5},
        max_resident={0: 1, 1: 1},
    )


def gb_catalog(budget_gb: float | None = 8.5, count: int = 3):
    """Models a, b, c, d (2 GB, SD 1.5-like) and X (6.5 GB, SDXL-like) on one kind G,
    1 s each; residency by memory (`budget_gb` GB) or, with budget_gb None, `count`."""
    from scheduler.catalog import Catalog

    names = ["a", "b", "c", "d", "X"]
    one = np.array([1.0])
    return Catalog(
        models=names,
        kinds=["G"],
        styles={m: (m,) for m in names},
        steps=np.array([1]),
        latency={(i, 0): one for i in range(len(names))},
        batch_factor={(i, 0): np.array([np.inf, 1.0]) for i in range(len(names))},
        clip={i: np.array([100.0]) for i in range(len(names))},
        load_s=dict.fromkeys(range(len(names)), 0.5),
        price_per_hour={0: 1.0},
        max_resident={0: count},
        size_gb={0: 2.0, 1: 2.0, 2: 2.0, 3: 2.0, 4: 6.5} if budget_gb else {},
        budget_gb={0: budget_gb} if budget_gb else {},
    )


def jobs(classes_and_times):
    """A workload from [(SloClass, arrival), ...], truth = prediction."""
    from scheduler.workload import Workload

    classes = tuple(dict.fromkeys(c for c, _ in classes_and_times))
    n = len(classes_and_times)
    return Workload(
        "hand",
        np.array([t for _, t in classes_and_times], float),
        np.array([classes.index(c) for c, _ in classes_and_times]),
        classes,
        np.ones(n),
        np.zeros(n),
    )


def assert_copies_are_the_resident_models(sim) -> None:
    """The per-kind model copies placement reads are `resident`, counted afresh."""
    fresh: list[dict[int, int]] = [{} for _ in sim.instances_of]
    for i, models in enumerate(sim.resident):
        for m in models:
            fresh[sim.inst_kind[i]][m] = fresh[sim.inst_kind[i]].get(m, 0) + 1
    assert [{m: n for m, n in c.items() if n} for c in sim.copies] == fresh
