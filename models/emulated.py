"""An emulated accelerator: a `ModelBackend` that takes each step's time from a profile
and sleeps it. The one fake sdaas allows (issue 27): a GPU we do not have, so that a
cluster of them can be served for scale. It uses no CPU while it "computes" (it sleeps),
so 16 emulated devices fit on a 2-core host; it needs no torch and no weights.

Costs, from a `StepTiming` (`engine/emulated_devices.py` derives one from the profiles):

* a denoising step of b jobs together takes `step_s * factor(b)`, once for the batch;
* a job's fixed part (text encode + VAE decode) is paid when it is finished: `finish`
  of b jobs takes `fixed_s * factor(b)`, once for the call (a batched decode), so b jobs
  that start and finish together take `factor(b) * (fixed_s + steps * step_s)`: exactly
  the profile's batch-b latency `L(b) = factor(b) * L(1)`;
* `generate` of n prompts is such a batch run whole: each step `step_s * factor(n)`,
  then `fixed_s * factor(n)`;
* a load takes `load_s` (`EmulatedLoader`).

Images are solid colours (a colour per seed, from a hash of it), at the requested size
unless the backend is given a `size` to make them all (a small one keeps the images a
device sends back small at scale). Same request, same images.

Time goes through `sleep` and `clock` (default `time.sleep`, `time.perf_counter`), which
tests replace to check the requested durations exactly. Everything here pickles (a
remote engine is handed an `EmulatedLoader`), as long as `sleep` and `clock` do.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from models.backend import GenerationRequest, GenerationResult, ModelBackend, StepHook
from sdaas.errors import InvalidInputError

Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class StepTiming:
    """What one model costs on one emulated accelerator kind, in seconds.

    fixed_s: a job's cost besides its steps (text encode + VAE decode), paid when it is
    finished; step_s: one denoising step at batch 1; batch_factor: the time of a batch of
    b over batch 1, at index b-1 (so it starts with 1.0); load_s: loading the model."""

    fixed_s: float
    step_s: float
    batch_factor: tuple[float, ...]
    load_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_factor", tuple(float(f) for f in self.batch_factor))
        problems = [
            f"{name}: {v!r}: must be a finite number >= 0"
            for name in ("fixed_s", "step_s", "load_s")
            if not (isinstance(v := getattr(self, name), int | float) and 0 <= v < math.inf)
        ]
        f = self.batch_factor
        if not f or f[0] != 1.0:
            problems.append(f"batch_factor: {f!r}: must start with 1.0 (batch 1 over batch 1)")
        elif not all(0 < x < math.inf for x in f):
            problems.append(f"batch_factor: {f!r}: each must be finite and > 0")
        if problems:
            raise InvalidInputError("invalid step timing: " + "; ".join(problems))

    def factor(self, batch: int) -> float:
        """Time of a batch of `batch` over batch 1. Beyond the tuple: extrapolated linearly
        from its last two entries (slope at least 0); a tuple of one entry (batch 1 only
        profiled) means no batching gain: `batch` times batch 1."""
        if batch < 1:
            raise ValueError(f"batch: {batch!r}: must be >= 1")
        f = self.batch_factor
        if batch <= len(f):
            return f[batch - 1]
        if len(f) == 1:
            return f[0] * batch
        return f[-1] + (batch - len(f)) * max(0.0, f[-1] - f[-2])


def solid_image(seed: int, width: int, height: int) -> Image.Image:
    """The emulated image of a seed: one colour, the first 3 bytes of its blake2b hash."""
    rgb = tuple(hashlib.blake2b(seed.to_bytes(8, "little"), digest_size=3).digest())
    return Image.new("RGB", (width, height), rgb)


@dataclass(eq=False)
class EmulatedJob:
    """One image in flight on an emulated device: what `StepJob` shows the engine
    (`done_calls`, `calls`, `finished`, `shape`), without latents."""

    prompt: str
    seed: int
    steps: int
    width: int
    height: int
    guidance: float
    done_calls: int = 0

    @property
    def calls(self) -> int:
        return self.steps  # one call per step (a first-order sampler)

    @property
    def finished(self) -> bool:
        return self.done_calls >= self.calls

    @property
    def shape(self) -> tuple[int, int]:
        """Jobs batch together only at one resolution (as `StepJob`'s latents)."""
        return (self.height, self.width)


class EmulatedStepper:
    """`models.step_batch.StepBatcher`'s interface over an `EmulatedBackend`'s timing."""

    def __init__(self, backend: EmulatedBackend):
        self.backend = backend

    def start(self, prompt: str, seed: int, steps: int, width: int, height: int,
              guidance: float) -> EmulatedJob:  # fmt: skip
        """A job at step 0 (no time: its fixed cost is paid in `finish`). Refuses what a
        `GenerationRequest` refuses."""
        GenerationRequest((prompt,), (seed,), steps, width, height, guidance)
        return EmulatedJob(prompt, seed, steps, width, height, guidance)

    def step(self, jobs: list[EmulatedJob]) -> None:
        """One step of every job: `step_s * factor(len(jobs))`, once for the batch."""
        if not jobs:
            return
        if len({j.shape for j in jobs}) > 1:
            raise ValueError("jobs of one step must have latents of one shape (resolution)")
        if any(j.finished for j in jobs):
            raise ValueError("a finished job cannot be stepped")
        t = self.backend.timing
        self.backend.sleep(t.step_s * t.factor(len(jobs)))
        for j in jobs:
            j.done_calls += 1

    def finish(self, jobs: list[EmulatedJob]) -> list[Image.Image]:
        """One image per job: `fixed_s * factor(len(jobs))`, once for the call."""
        if not jobs:
            return []
        t = self.backend.timing
        self.backend.sleep(t.fixed_s * t.factor(len(jobs)))
        return [self.backend.image(j.seed, j.width, j.height) for j in jobs]


@dataclass(eq=False)
class EmulatedBackend(ModelBackend):
    """A model on an emulated accelerator: `generate` and `stepper()` as a real backend's,
    taking the time `timing` says. `size` (width, height): the size of every image (None:
    the requested size). It has no card (`card` is None); results name `name`/`version`."""

    timing: StepTiming
    name: str = "emulated"
    version: str = ""
    device: str = "emulated"
    size: tuple[int, int] | None = None
    sleep: Sleep = time.sleep
    clock: Clock = time.perf_counter
    card: None = field(default=None, init=False)

    def image(self, seed: int, width: int, height: int) -> Image.Image:
        w, h = self.size or (width, height)
        return solid_image(seed, w, h)

    def generate(
        self, request: GenerationRequest, *, on_step: StepHook | None = None
    ) -> GenerationResult:
        """The request's prompts as one batch run whole: its steps, then its fixed part;
        `on_step(step_index, seconds)` after each step, as the diffusers backend calls it."""
        f = self.timing.factor(len(request.prompts))
        start = self.clock()
        step_times = []
        for i in range(request.steps):
            t0 = self.clock()
            self.sleep(self.timing.step_s * f)
            dt = self.clock() - t0
            step_times.append(dt)
            if on_step is not None:
                on_step(i, dt)
        self.sleep(self.timing.fixed_s * f)
        images = [self.image(s, request.width, request.height) for s in request.seeds]
        return GenerationResult(
            images=images,
            latency_s=self.clock() - start,
            step_times_s=step_times,
            model=self.name,
            model_version=self.version,
            device=self.device,
        )

    def stepper(self) -> EmulatedStepper:
        return EmulatedStepper(self)


@dataclass
class EmulatedLoader:
    """`backend_for(model_key)` for a device engine of emulated accelerators: a fresh
    `EmulatedBackend` per call (a load), after sleeping the model's `load_s`. Picklable:
    a device process or a remote engine can be handed it instead of the real loader."""

    timings: dict[str, StepTiming]
    device: str = "emulated"
    size: tuple[int, int] | None = None
    sleep: Sleep = time.sleep
    clock: Clock = time.perf_counter

    def __call__(self, model_key: str) -> EmulatedBackend:
        if model_key not in self.timings:
            raise InvalidInputError(
                f"model {model_key!r}: no emulated timing; emulated: {', '.join(self.timings)}"
            )
        timing = self.timings[model_key]
        self.sleep(timing.load_s)
        name, _, version = model_key.partition("@")
        return EmulatedBackend(timing, name, version, self.device, self.size, self.sleep,
                               self.clock)  # fmt: skip
