"""The emulated accelerator: it asks for exactly the time its timing says (a step of b
jobs once per batch, a finish once per call, a load once per load), steps jobs to their
end like the real step batcher, and makes one solid image per job."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from models.backend import GenerationRequest
from models.emulated import EmulatedBackend, EmulatedLoader, StepTiming, solid_image
from sdaas.errors import InvalidInputError

TIMING = StepTiming(fixed_s=0.5, step_s=0.1, batch_factor=(1.0, 1.5, 1.8, 2.25), load_s=3.0)


class FakeTime:
    """`sleep` and `clock` for an emulated device: sleeping records the seconds asked
    for and moves the clock on by them, without waiting. Picklable."""

    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []
        self.lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept.append(seconds)
            self.now += seconds

    def clock(self) -> float:
        return self.now

    def __getstate__(self):
        return {"now": self.now, "slept": self.slept}

    def __setstate__(self, state):
        self.__dict__.update(state, lock=threading.Lock())


def backend(timing=TIMING, **kw):
    t = FakeTime()
    return EmulatedBackend(timing, "toy", "1", sleep=t.sleep, clock=t.clock, **kw), t


def test_factor_reads_the_tuple_then_extrapolates_linearly():
    assert [TIMING.factor(b) for b in (1, 2, 3, 4)] == [1.0, 1.5, 1.8, 2.25]
    assert TIMING.factor(5) == pytest.approx(2.7)  # 2.25 + (2.25 - 1.8)
    assert TIMING.factor(7) == pytest.approx(3.6)
    flat = StepTiming(0.0, 1.0, (1.0, 1.4, 1.3))  # a falling tail: slope 0, never below
    assert flat.factor(6) == 1.3
    only_one = StepTiming(0.0, 1.0, (1.0,))  # batch 1 profiled only: no batching gain
    assert only_one.factor(3) == 3.0
    with pytest.raises(ValueError):
        TIMING.factor(0)


@pytest.mark.parametrize(
    "kw, word",
    [
        ({"fixed_s": -1.0}, "fixed_s"),
        ({"step_s": float("inf")}, "step_s"),
        ({"load_s": float("nan")}, "load_s"),
        ({"batch_factor": (1.2, 1.5)}, "start with 1.0"),
        ({"batch_factor": ()}, "start with 1.0"),
        ({"batch_factor": (1.0, 0.0)}, "finite and > 0"),
    ],
)
def test_a_timing_refuses_what_no_device_takes(kw, word):
    good = {"fixed_s": 0.1, "step_s": 0.1, "batch_factor": (1.0, 1.5), "load_s": 0.0}
    with pytest.raises(InvalidInputError, match=word):
        StepTiming(**(good | kw))


def test_a_timing_pickles_and_keeps_a_tuple():
    t = StepTiming(0.1, 0.2, [1.0, 1.5])
    assert t.batch_factor == (1.0, 1.5)
    assert pickle.loads(pickle.dumps(t)) == t


def test_a_step_of_four_jobs_asks_for_one_step_at_factor_four():
    b, t = backend()
    s = b.stepper()
    jobs = [s.start("p", seed, 5, 32, 32, 4.0) for seed in range(4)]
    assert t.slept == []  # starting costs nothing: the fixed part is paid in finish
    s.step(jobs)
    assert t.slept == [pytest.approx(0.1 * 2.25)]
    assert [j.done_calls for j in jobs] == [1, 1, 1, 1]
    s.step(jobs[:2])
    assert t.slept[1] == pytest.approx(0.1 * 1.5)


def test_the_default_sleep_really_waits():
    s = EmulatedBackend(StepTiming(0.0, 0.02, (1.0, 1.5, 1.8, 2.5))).stepper()
    jobs = [s.start("p", seed, 3, 32, 32, 4.0) for seed in range(4)]
    t0 = time.perf_counter()
    s.step(jobs)
    assert time.perf_counter() - t0 >= 0.02 * 2.5 * 0.99  # time.sleep waits at least that


def test_a_job_of_n_steps_is_finished_after_exactly_n_steps():
    b, _ = backend()
    s = b.stepper()
    long, short = s.start("p", 1, 5, 32, 32, 4.0), s.start("q", 2, 2, 32, 32, 4.0)
    assert (long.calls, short.calls) == (5, 2)
    for n in range(1, 6):
        s.step([long, short] if not short.finished else [long])
        assert long.done_calls == n and long.finished == (n == 5)
        assert short.finished == (n >= 2)
    with pytest.raises(ValueError, match="finished"):
        s.step([long])


def test_jobs_of_two_resolutions_do_not_step_together():
    b, _ = backend()
    s = b.stepper()
    with pytest.raises(ValueError, match="one shape"):
        s.step([s.start("p", 1, 3, 32, 32, 4.0), s.start("p", 1, 3, 64, 32, 4.0)])


def test_start_refuses_what_a_generation_request_refuses():
    s = backend()[0].stepper()
    with pytest.raises(InvalidInputError, match="steps"):
        s.start("p", 1, 0, 32, 32, 4.0)
    with pytest.raises(InvalidInputError, match="width"):
        s.start("p", 1, 3, 30, 32, 4.0)


def test_finish_makes_one_image_per_job_at_its_size_in_one_call():
    b, t = backend()
    s = b.stepper()
    jobs = [s.start("p", seed, 1, 48, 32, 4.0) for seed in (7, 8, 7)]
    s.step(jobs)
    images = s.finish(jobs)
    assert t.slept[-1] == pytest.approx(0.5 * 1.8)  # one decode of 3: fixed_s x factor(3)
    assert len(t.slept) == 2
    assert [im.size for im in images] == [(48, 32)] * 3 and images[0].mode == "RGB"
    assert images[0].tobytes() == images[2].tobytes()  # same seed, same image
    assert images[0].getpixel((0, 0)) != images[1].getpixel((0, 0))
    assert len(images[0].getcolors()) == 1  # one colour
    assert s.finish([]) == [] and len(t.slept) == 2


def test_a_size_makes_every_image_that_size():
    b, _ = backend(size=(8, 8))
    s = b.stepper()
    job = s.start("p", 1, 1, 512, 512, 4.0)
    s.step([job])
    (image,) = s.finish([job])
    assert image.size == (8, 8)
    assert image.tobytes() == solid_image(1, 8, 8).tobytes()


def test_generate_calls_on_step_each_step_and_sleeps_the_batch():
    b, t = backend()
    seen = []
    req = GenerationRequest(("a", "b"), (3, 4), 4, 64, 32, 4.0)
    res = b.generate(req, on_step=lambda i, dt: seen.append((i, dt)))
    step = 0.1 * 1.5
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert [dt for _, dt in seen] == pytest.approx([step] * 4)
    assert res.step_times_s == pytest.approx([step] * 4)
    assert t.slept == pytest.approx([step] * 4 + [0.5 * 1.5])
    assert res.latency_s == pytest.approx(4 * step + 0.75)
    assert [im.size for im in res.images] == [(64, 32)] * 2
    assert (res.model, res.model_version, res.device) == ("toy", "1", "emulated")
    again = b.generate(req)
    assert [im.tobytes() for im in again.images] == [im.tobytes() for im in res.images]


def test_the_loader_sleeps_a_load_and_pickles():
    t = FakeTime()
    loader = EmulatedLoader({"toy@1": TIMING}, device="emulated:A100", sleep=t.sleep,
                            clock=t.clock)  # fmt: skip
    b = loader("toy@1")
    assert t.slept == [3.0]
    assert (b.name, b.version, b.device, b.timing) == ("toy", "1", "emulated:A100", TIMING)
    assert b.stepper() is not None and b.card is None
    with pytest.raises(InvalidInputError, match="no emulated timing"):
        loader("other@1")
    copy = pickle.loads(pickle.dumps(loader))
    assert copy.timings == loader.timings
    plain = pickle.loads(pickle.dumps(EmulatedLoader({"toy@1": TIMING})))
    assert plain.sleep is time.sleep and plain.clock is time.perf_counter
