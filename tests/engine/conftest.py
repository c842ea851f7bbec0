"""A live core over the shipped toy-world models on this host's CPU, with device engines."""

from __future__ import annotations

import threading
from dataclasses import fields

import numpy as np
import pytest

from engine.device_engine import DeviceEngine
from engine.link import DeviceLink
from models.card import load_card
from models.loader import load_backend
from scheduler.catalog import Catalog
from scheduler.cluster import Cluster
from scheduler.live import LIVE_CONFIG, LiveCore, LiveJob
from scheduler.options import Option
from scheduler.policies import make_policy
from scheduler.seam import Done, Failed, ImageRequest, Started, Stepped
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


WORDS = {Started: "started", Stepped: "step", Done: "done", Failed: "failed"}


class Events:
    """Every job event, in order, as (kind, job, thread, fields): the fields of the
    seam's record (a `Done`'s stats as `run`)."""

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

    def __call__(self, event):
        kind = WORDS[type(event)]
        data = {f.name: getattr(event, f.name) for f in fields(event)}
        data["run"] = data.pop("stats", None)
        with self.lock:
            self.seen.append((kind, event.job, threading.current_thread().name, data))
            if kind == "done":
                self.images[event.job] = event.image
            if sum(1 for e in self.seen if e[0] in ("done", "failed")) >= self.expect:
                self.finished.set()


def link_of(core: LiveCore, i: int, events, name: str = "", on_fault=None) -> DeviceLink:
    """Device i's link; each job's image request is its payload here."""
    return DeviceLink(i, core, lambda sj: core.payload[sj.index], events, name=name,
                      on_fault=on_fault)  # fmt: skip


def engine_of(core: LiveCore, i: int, backend_for, events, *, name: str = "", on_fault=None,
              **kw) -> DeviceEngine:  # fmt: skip
    """A thread engine for device i, linked to the core (not attached, not started)."""
    link = link_of(core, i, events, name, on_fault)
    engine = DeviceEngine(i, MODELS, backend_for, link.handle, name=name, on_crash=link.reset,
                          **kw)  # fmt: skip
    link.connect(engine)
    engine.link = link
    return engine


def make_engine(toy_backends, policy="orca", devices=1, threads=None, batch_limit=4):
    core = LiveCore(catalog(batch_limit), Cluster.parse(f"{devices}xcpu"), make_policy(policy),
                    LIVE_CONFIG)  # fmt: skip
    events = Events()
    engines = [engine_of(core, i, toy_backends.__getitem__, events, threads=threads)
               for i in range(devices)]  # fmt: skip
    core.attach([e.link for e in engines])
    for e in engines:
        e.start()
    return core, engines, events


def job(model: int, steps: int, seed: int, prompt="two red circles, flat style",
        guidance=4.0) -> LiveJob:  # fmt: skip
    opt = [Option(model, steps, 0.02 * steps * (model + 1))]
    req = ImageRequest(prompt, seed, 32, 32, guidance)
    return LiveJob("flat", 1e12, 0.0, opt, opt, payload=req)
