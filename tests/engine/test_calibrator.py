"""The calibrator measures batch costs on a device once per latency-predictor version and
device kind, stores them, and a later start under the same predictor reads them back
instead of measuring again; a new predictor (or kind) measures afresh. The device is the
fake here (the one edge a test may fake): it answers probes with a batch of b taking
1 + 0.5 (b - 1) times one job."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from adapters.result_store import ResultStore
from engine.calibrator import Calibrator
from engine.spec import ServingSpec
from models.accelerators import Accelerator
from scheduler.catalog import Catalog

KEY, KIND = "toy-m@1", "cpu-x"


class Device:
    """A device link's `probe`: one job 0.1 s, a batch of b 0.1 x (1 + 0.5 (b - 1))."""

    def __init__(self):
        self.probes: list[tuple[int, int]] = []  # (steps, batch)

    def probe(self, key, request, steps, batch=1):
        self.probes.append((steps, batch))
        return 0.1 * (1 + 0.5 * (batch - 1))


@dataclass
class Card:
    resolution_pairs: tuple = ((32, 32),)
    styles: tuple = ("flat",)
    guidance_scale: float = 4.0

    def styled_prompt(self, prompt, style):
        return f"{prompt}, {style} style"


@dataclass
class Planner:
    """What the calibrator reads of the planner: versions, options, profiled batches."""

    predictor_version: str
    options: list = field(default_factory=lambda: [object()])
    profiled_batches: dict = field(default_factory=lambda: {KEY: [1, 2, 4]})

    def probe_steps(self, option):
        return (2, 10)


def catalog() -> Catalog:
    return Catalog(models=[KEY], kinds=[KIND], styles={KEY: ("flat",)}, steps=np.arange(1, 11),
                   latency={(0, 0): np.ones(10)}, batch_factor={(0, 0): np.full(5, np.inf)},
                   clip={0: np.ones(10)})  # fmt: skip


def calibrate(store: ResultStore, version: str) -> tuple[Device, Catalog]:
    spec = ServingSpec(Planner(version), {KEY: Card()}, (Accelerator("cpu", KIND),), "unused")
    device, cat = Device(), catalog()
    Calibrator(spec, store, cat, [(0, 0)], [KEY], [KIND], {KIND: device}).batch_costs()
    return device, cat


def test_batch_costs_are_measured_once_per_predictor_version_and_reused(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    first, cat = calibrate(store, "3")
    assert {b for _, b in first.probes} == {1, 2, 4} and all(s == 8 for s, _ in first.probes)
    want = [1.0, 1.5, 2.0, 2.5]  # b = 3 interpolated between the measured 2 and 4
    assert np.allclose(cat.batch_factor[(0, 0)][1:], want)
    assert store.batch_costs("3") == {(KEY, KIND): {2: pytest.approx(1.5), 4: pytest.approx(2.5)}}
    again, cat = calibrate(store, "3")  # a restart under the same predictor
    assert again.probes == []
    assert np.allclose(cat.batch_factor[(0, 0)][1:], want)
    retrained, _ = calibrate(store, "4")  # a new predictor: its own evidence
    assert retrained.probes


class BurstyDevice(Device):
    """Answers probes from a script of seconds: a burst of background load in the middle."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = iter(seconds)

    def probe(self, key, request, steps, batch=1):
        self.probes.append((steps, batch))
        return next(self.seconds)


class PredictingPlanner(Planner):
    def predicted_s(self, key, kind, steps, size, batch=1):
        return 0.1 * steps


def test_a_probe_is_timed_as_the_sweep_times_a_cell(tmp_path):
    """A first probe is compared with a profile row, the median of 2-5 calls that agree:
    one call slowed by a burst would have read 3x the truth; the probe repeats until its
    calls agree and stores their median."""
    spec = ServingSpec(PredictingPlanner("3"), {KEY: Card()}, (Accelerator("cpu", KIND),), "x")
    # warm-up, then steps 2: one burst outvoted; steps 10: two calls that agree
    device = BurstyDevice([9.0, 0.2, 0.6, 0.202, 1.0, 1.01])
    cal = Calibrator(spec, ResultStore(tmp_path / "r.db"), catalog(), [(0, 0)], [KEY], [KIND],
                     {KIND: device})  # fmt: skip
    obs = cal.probe(KEY, KIND, (2, 10))
    assert [o.steps for o in obs] == [2, 10]
    assert [o.observed_s for o in obs] == [0.202, pytest.approx(1.005)]
    assert [o.predicted_s for o in obs] == [pytest.approx(0.2), pytest.approx(1.0)]
    assert len(device.probes) == 6  # warm-up + 3 + 2
