"""The idle reference probe: due only after serving has had no job for a while, at most
once per interval; it runs the fastest model of each kind at a few steps with the
system's own prompt, stores what it measured as a probe observation, and is skipped as
soon as work arrives. The device is a fake link (the one edge a test may fake)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from adapters.result_store import ResultStore
from engine.calibrator import (
    IDLE_PROBE_STEPS,
    PROBE_PROMPT,
    Calibrator,
    IdleProbes,
)
from engine.runtime import ServingRuntime
from engine.spec import ServingSpec
from models.accelerators import Accelerator
from tests.engine.test_calibrator import Card

FAST, SLOW, KIND, GPU = "toy-s@1", "toy-m@1", "cpu-x", "gpu-y"


class Link:
    """A device link's `probe`: 0.2 s per step, and what it was asked."""

    def __init__(self, fail: bool = False):
        self.asked: list[tuple[str, str, int]] = []
        self.fail = fail

    def probe(self, key, request, steps, batch=1):
        self.asked.append((key, request.prompt, steps))
        if self.fail:
            raise RuntimeError("device gone")
        return 0.2 * steps


@dataclass
class Planner:
    """What the calibrator reads of the planner: 0.1 s per step for the fast model, 0.3
    for the slow one."""

    predictor_version: str = "7"
    options: list = field(default_factory=lambda: ["s", "m"])

    def probe_steps(self, option):
        return (1, 25)

    def predicted_s(self, key, kind, steps, size, batch=1):
        return (0.1 if key == FAST else 0.3) * steps


def calibrator(store, links) -> Calibrator:
    cards = {FAST: Card(), SLOW: Card()}
    devices = (Accelerator("cpu", KIND), Accelerator("cpu", GPU))
    spec = ServingSpec(Planner(), cards, devices, "unused")
    runs_on = [(1, 0), (0, 0), (1, 1)]  # the fast model runs on the first kind only
    return Calibrator(spec, store, None, runs_on, [FAST, SLOW], [KIND, GPU], links)


def test_a_probe_is_due_only_when_idle_for_long_enough_and_at_most_once_per_interval():
    s = IdleProbes(started=100.0, idle_after_s=20.0, every_s=30.0)
    assert not s.due(110.0, idle=True)  # 10 s after the start: not yet
    assert s.due(120.0, idle=True)
    s.probed(120.0)
    assert not s.due(140.0, idle=True)  # idle, but probed 20 s ago
    assert s.due(150.0, idle=True)
    s.probed(150.0)
    assert not s.due(185.0, idle=False)  # work: never, and the idle time starts again
    assert not s.due(200.0, idle=True)  # idle 15 s only
    assert s.due(205.0, idle=True)
    s.busy(204.0)  # a job was handed over between two polls
    assert not s.due(205.0, idle=True) and not s.due(223.0, idle=True)
    assert s.due(224.0, idle=True)
    assert s.wait_s(224.0) <= 0.0


def test_the_reference_probe_runs_the_fastest_model_per_kind_and_stores_it(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    cpu, gpu = Link(), Link()
    cal = calibrator(store, {KIND: cpu, GPU: gpu})
    assert cal.reference_key(KIND) == FAST and cal.reference_key(GPU) == SLOW
    got = cal.reference_probe()
    assert cpu.asked == [(FAST, f"{PROBE_PROMPT}, flat style", IDLE_PROBE_STEPS)]
    assert gpu.asked == [(SLOW, f"{PROBE_PROMPT}, flat style", IDLE_PROBE_STEPS)]
    stored = store.observations("7")
    assert stored == got and [o.key for o in stored] == [(FAST, KIND, 1), (SLOW, GPU, 1)]
    assert stored[0].predicted_s == pytest.approx(0.1 * IDLE_PROBE_STEPS)
    assert stored[0].observed_s == pytest.approx(0.2 * IDLE_PROBE_STEPS)
    assert all(o.ts is not None for o in stored)  # timed: the drift's evidence


def test_the_reference_probe_is_skipped_when_work_arrives_and_survives_a_failing_device(
    tmp_path,
):
    store = ResultStore(tmp_path / "r.db")
    cpu, gpu = Link(), Link()
    answers = iter([True, False])  # work arrives after the first kind's probe
    got = calibrator(store, {KIND: cpu, GPU: gpu}).reference_probe(lambda: next(answers))
    assert len(cpu.asked) == 1 and gpu.asked == [] and len(got) == 1
    broken = Link(fail=True)
    cal = calibrator(store, {KIND: broken, GPU: gpu})
    assert [o.key[1] for o in cal.reference_probe()] == [GPU]  # the other kind goes on
    cal.failed.add((FAST, KIND))  # a model whose start-up probe failed is never the reference
    assert cal.reference_key(KIND) == SLOW


class _Runtime:
    """What `ServingRuntime._probe_when_idle` uses of the runtime."""

    def __init__(self, idle_after_s: float):
        self.idle_probes = IdleProbes(time.monotonic(), idle_after_s, every_s=0.01)
        self._stopping = threading.Event()
        self.busy = True
        self.probes = 0
        self.calibrator = self

    def idle(self) -> bool:
        return not self.busy

    def reference_probe(self, idle):
        self.probes += 1
        self.checks_idle = idle is not None and idle()  # handed the check itself


def test_the_runtime_probes_only_while_idle_and_stops_when_closed():
    rt = _Runtime(idle_after_s=0.6)
    loop = threading.Thread(target=ServingRuntime._probe_when_idle, args=(rt,), daemon=True)
    loop.start()
    time.sleep(1.2)
    assert rt.probes == 0  # busy all along
    rt.busy = False
    rt.idle_probes.busy(time.monotonic())  # its last job handed over now
    time.sleep(0.3)
    assert rt.probes == 0  # idle, but not for long enough yet
    time.sleep(1.7)
    assert rt.probes >= 1 and rt.checks_idle
    rt._stopping.set()
    loop.join(timeout=6.0)
    assert not loop.is_alive()
