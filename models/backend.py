"""The one interface the rest of sdaas uses to run a model.

Models are black boxes: callers hand over prompts, steps, seeds, resolution and
guidance and get images plus timings back. Only backend implementations touch
model internals; everything else (profiling, serving, the demo) loads one with
`models.loader.load_backend(card, device)`.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from models.card import ModelCard
from sdaas.errors import InvalidInputError

# Called after every denoising step: (step_index, seconds that step took).
StepHook = Callable[[int, float], None]


@dataclass(frozen=True)
class GenerationRequest:
    """One batch of images from one model: a prompt and a seed per image."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    width: int
    height: int
    guidance_scale: float
    style: str | None = None  # applied through the card's style_prompt

    def __post_init__(self) -> None:
        problems = []
        if not self.prompts:
            problems.append("prompts: () : at least one prompt is needed")
        if len(self.seeds) != len(self.prompts):
            problems.append(
                f"seeds: {len(self.seeds)} seed(s) for {len(self.prompts)} prompt(s): "
                "give one seed per prompt"
            )
        if not (isinstance(self.steps, int) and self.steps >= 1):
            problems.append(f"steps: {self.steps!r}: must be an integer >= 1")
        for name in ("width", "height"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v > 0 and v % 8 == 0):
                problems.append(f"{name}: {v!r}: must be a positive multiple of 8")
        if not self.guidance_scale >= 0:
            problems.append(f"guidance_scale: {self.guidance_scale!r}: must be >= 0")
        if any(not (0 <= s < 2**63) for s in self.seeds):
            problems.append(f"seeds: {self.seeds!r}: each must be in [0, 2**63)")
        if problems:
            raise InvalidInputError("invalid generation request: " + "; ".join(problems))

    def check_against(self, card: ModelCard) -> None:
        """Refuse what the card does not declare (steps range, resolutions)."""
        problems = []
        if not (card.steps.min <= self.steps <= card.steps.max):
            problems.append(
                f"steps: {self.steps}: {card.name} serves {card.steps.min}..{card.steps.max}"
            )
        if self.style is not None and self.style not in card.styles:
            problems.append(f"style: {self.style!r}: {card.name} serves {', '.join(card.styles)}")
        if (self.width, self.height) not in card.resolution_pairs:
            problems.append(
                f"resolution: {self.width}x{self.height}: {card.name} serves "
                f"{', '.join(card.resolutions)}"
            )
        if problems:
            raise InvalidInputError("request does not fit the model card: " + "; ".join(problems))


@dataclass(frozen=True)
class GenerationResult:
    """Images and how long they took. `latency_s` is wall time of the whole call."""

    images: list[Image.Image]
    latency_s: float
    step_times_s: list[float] = field(default_factory=list)
    model: str = ""
    model_version: str = ""
    device: str = ""

    @property
    def per_step_s(self) -> float:
        """Mean seconds per denoising step (0 when no step ran)."""
        return sum(self.step_times_s) / len(self.step_times_s) if self.step_times_s else 0.0


class ModelBackend(ABC):
    """A registered model loaded on one device. Implementations must be thread-safe."""

    card: ModelCard
    device: str

    @abstractmethod
    def generate(
        self, request: GenerationRequest, *, on_step: StepHook | None = None
    ) -> GenerationResult:
        """Generate one image per prompt. The same request gives bit-identical images."""

    def stepper(self):
        """A `models.step_batch.StepBatcher` when this model can be run one denoising
        step at a time together with other jobs (step-level batching), else None: the
        device engine then runs its jobs whole, one per call."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Release device memory. Optional."""


_DEVICE = re.compile(r"cpu|cuda(:[0-9]{1,3})?|mps")


def check_device(device: str) -> str:
    """Refuse a device name torch cannot use here, before any model is loaded."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise InvalidInputError(f"device: {device!r}: not a device; use cpu, cuda, cuda:N or mps")
    import torch  # here, not at the top: the interface loads without torch

    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= n:
            raise InvalidInputError(
                f"device: {device!r}: this host has {n} CUDA device(s); use cpu"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError("device: 'mps': not available on this host; use cpu")
    return device


# Cores a CPU host keeps for the serving front (Beam, the broker, HTTP) beside its engines.
FRONT_CORES = 1


def cpu_threads(devices: int = 1) -> int:
    """torch's intra-op threads for a model on the CPU, one rule wherever it runs (the
    sweep that profiles it, the device engine that serves it), so a profile holds as
    served: SDAAS_TORCH_THREADS if set, else the host's cores less `FRONT_CORES`, split
    over `devices` CPU engines (at least 1). Measured here (2 cores, `make demo`): at
    torch's default (2 threads) serving's first probes took 1.2-2.0x the sweep's times,
    since a thread of the front or the broker on either core stalls both of torch's; at 1
    thread each probe was within 10 % of the sweep, and a process busy half of one core
    beside left it unchanged (2 threads: 1.37x slower)."""
    raw = os.environ.get("SDAAS_TORCH_THREADS", "")
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise InvalidInputError(
                f"SDAAS_TORCH_THREADS={raw!r}: give a positive integer, e.g. 1"
            ) from None
    cores = os.cpu_count() or 1
    spare = cores - FRONT_CORES if cores > FRONT_CORES else cores
    return max(1, spare // max(1, devices))


def quiet_model_libraries() -> None:
    """diffusers and transformers warn with the truncated part of a long prompt: that
    is prompt text in a log. Serving (and each device process) keeps them at error level."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
