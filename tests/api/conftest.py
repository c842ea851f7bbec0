"""The API's test stack, shared by the API and browser tests: the real broker, a serving
loop on the toy models (in a thread), and the API on uvicorn, once per package."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace

import httpx
import pytest

from adapters.kafka_io import Topics
from api.front import ApiConfig
from api.server import ApiServer
from pipelines.serving_driver import ServingDriver, serving_in_background
from pipelines.serving_setup import build_spec

CANARY = "zanzibarcanary"  # a word of every prompt here: it must never be logged
PROMPT = f"three small red circles in the top left corner {CANARY}"


@dataclass
class Stack:
    api: ApiServer
    keys: dict[str, str]
    styles: list[str]
    long: dict  # a job the planner gives the most steps
    cfg: ApiConfig
    driver: ServingDriver

    def client(self, tenant: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.api.url, headers=headers, timeout=60)

    def job(self, **kw) -> dict:
        return {"prompt": PROMPT, "style": self.styles[0], "latency_slo_s": 300.0,
                "min_clip": 0.0, **kw}  # fmt: skip


def longest_job(planner) -> dict:
    """The (style, min CLIP) the planner serves with the most steps."""
    best = (0, None)
    for style in planner.styles:
        for c in range(0, 101, 2):
            p = planner.plan(style, 300.0, float(c))
            if p.feasible and p.steps > best[0]:
                best = (p.steps, {"style": style, "min_clip": float(c)})
    return {**best[1], "steps": best[0]}


STEP_S = 0.4  # the device's time per denoising step (a toy step takes ~30 ms here)


class SlowSteps:
    """A backend whose every denoising step takes STEP_S longer: the edge we fake is
    the device's speed, so that a cancel has a running job to stop (the toy models
    plan at most 5 steps of ~30 ms, shorter than a cancel's trip through Kafka)."""

    def __init__(self, real):
        self.real = real

    def stepper(self):
        s = self.real.stepper()
        inner = s.step

        def step(jobs):
            time.sleep(STEP_S)
            return inner(jobs)

        s.step = step
        return s

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture(scope="package")
def stack(serving_settings, tmp_path_factory):
    from adapters.kafka_broker import EmbeddedBroker
    from engine.models import ServingModels

    tmp = tmp_path_factory.mktemp("api")
    real = ServingModels.backend
    with pytest.MonkeyPatch.context() as mp, EmbeddedBroker() as broker:
        mp.setattr(ServingModels, "backend", lambda self, *a: SlowSteps(real(self, *a)))
        topics = Topics(f"api{uuid.uuid4().hex[:6]}")
        spec = build_spec(serving_settings, window_s=0.3, max_backlog_s=1e9)
        spec = replace(spec, store_path=str(tmp / "results" / "results.db"))
        cfg = ApiConfig(bootstrap=broker.bootstrap, data_dir=tmp, results_dir=tmp / "results",
                        topics=topics, styles=tuple(spec.planner.styles), salt=b"t",
                        resolutions=spec.planner.resolutions)  # fmt: skip
        with serving_in_background(spec, broker.bootstrap, topics) as driver:
            with ApiServer(cfg, log_level="info") as api:
                keys = {t: api.front.keys.create(t) for t in ("ann", "bob")}
                keys["ops"] = api.front.keys.create("ops", operator=True)
                yield Stack(api, keys, list(spec.planner.styles), longest_job(spec.planner),
                            cfg, driver)  # fmt: skip
