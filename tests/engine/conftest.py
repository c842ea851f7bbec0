"""A live core over the shipped toy-world models on this host's CPU, with device engines."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.device_engine import DeviceEngine, ImageRequest
from models.backend import load_backend
from models.card import load_card
from scheduler.catalog import Catalog
from scheduler.cluster import Cluster
from scheduler.live import LIVE_CONFIG, LiveCore, LiveJob
from scheduler.policy import make_policy
from sdaas.config import SHIPPED_TOYWORLD

MODELS = ["toy-s", "toy-m"]


@pytest.fixture(autouse=True)
def _torch_threads():
    """A device engine with a thread budget sets torch's threads for the whole process:
    give later tests back the count they expect (images and timings depend on it)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_backends():
    return {m: load_backend(load_card(SHIPPED_TOYWORLD / "cards" / f"{m}.yaml"), "cpu")
            for m in MODELS}  # fmt: skip


def catalog(batch_limit: int = 4) -> Catalog:
    steps = np.arange(1, 51)
    factor = np.full(batch_limit + 1, np.inf)
    factor[1:] = [1.0 + 0.3 * (b - 1) for b in range(1, batch_limit + 1)]
    return Catalog(
        models=MODELS, kinds=["cpu"], styles={m: ("flat",) for m in MODELS}, steps=steps,
        latency={(m, 0): 0.02 * steps * (m + 1) for m in range(len(MODELS))},
        batch_factor={(m, 0): factor for m in range(len(MODELS))},
        clip={m: steps * 1.0 for m in range(len(MODELS))}, load_s={0: 0.0, 1: 0.0},
        price_per_hour={0: 1.0}, max_resident={0: 2},
    )  # fmt: skip


class Events:
    """Every engine event, in order, with the device that sent it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen: list[tuple] = []
        self.images: dict[int, object] = {}
        self.finished = threading.Event()
        self.expect = 0

    def wait(self, core, timeout: float = 60.0) -> bool:
        """Until the expected jobs ended and the core has settled them."""
        import time

        end = time.monotonic() + timeout
        ok = self.finished.wait(timeout)
        while ok and core.in_flight() and time.monotonic() < end:
            time.sleep(0.005)
        return ok and not core.in_flight()

    def __call__(self, kind, sj, **data):
        with self.lock:
            self.seen.append((kind, sj.index, threading.current_thread().name, data))
            if kind == "done":
                self.images[sj.index] = data["image"]
            if sum(1 for e in self.seen if e[0] in ("done", "failed")) >= self.expect:
                self.finished.set()


def make_engine(toy_backends, policy="orca", devices=1, threads=None, batch_limit=4):
    core = LiveCore(catalog(batch_limit), Cluster.parse(f"{devices}xcpu"), make_policy(policy),
                    LIVE_CONFIG)  # fmt: skip
    events = Events()
    engines = [
        DeviceEngine(
            i,
            core,
            MODELS,
            toy_backends.__getitem__,
            lambda sj: sj.payload,
            events,
            threads=threads,
        )  # fmt: skip
        for i in range(devices)
    ]
    core.attach(engines)
    for e in engines:
        e.start()
    return core, engines, events


def job(model: int, steps: int, seed: int, prompt="two red circles, flat style",
        guidance=4.0) -> LiveJob:  # fmt: skip
    opt = [(model, steps, 0.02 * steps * (model + 1))]
    req = ImageRequest(prompt, seed, 32, 32, guidance)
    return LiveJob("flat", 1e12, 0.0, opt, opt, payload=req)
