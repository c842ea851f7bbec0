"""Backend for diffusers pipelines: SD 1.x/2.x/XL or anything `from_pretrained` loads.

Thread safety: a diffusers pipeline keeps per-call state on itself (its
scheduler's timesteps and step index, `_guidance_scale`, ...), and the fast
(Rust) tokenizer keeps its padding/truncation settings in shared mutable state,
so concurrent calls on one pipeline object corrupt each other (measured: other
images under concurrency). Each call therefore runs on a shallow copy of the
pipeline that shares the (read-only, no-grad) networks, owns a fresh scheduler,
and uses a tokenizer private to its thread (copied once per thread). That keeps
one copy of the weights in memory.
"""

from __future__ import annotations

import copy
import importlib
import logging
import threading
import time

import torch

from models.backend import GenerationRequest, GenerationResult, ModelBackend, StepHook
from models.card import SCHEDULERS, DiffusersSource, ModelCard, PythonSource
from models.step_batch import StepBatcher, supports
from sdaas.errors import SdaasError

log = logging.getLogger(__name__)


def _load_pipeline(card: ModelCard, dtype: torch.dtype):
    # diffusers (seconds to import) only once a model is loaded, not with this module
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()

    src = card.source
    if isinstance(src, DiffusersSource):
        where = src.path or src.hub_id
        try:
            return DiffusionPipeline.from_pretrained(
                where, dtype=dtype, local_files_only=src.path is not None
            )
        except OSError as exc:
            raise SdaasError(
                f"cannot load model {card.key} from {where!r}: {exc}. Local paths must hold a "
                "save_pretrained folder; hub ids need network access to the hub or a local cache"
            ) from exc
    assert isinstance(src, PythonSource)
    module_name, func_name = src.entrypoint.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise SdaasError(f"cannot import {src.entrypoint!r} for {card.key}: {exc}") from exc
    return factory(card=card, dtype=dtype)


class DiffusersBackend(ModelBackend):
    """A diffusers text-to-image pipeline behind the ModelBackend interface."""

    def __init__(self, card: ModelCard, pipeline, device: str):
        import diffusers

        self.card = card
        self.device = device
        scheduler_cls = getattr(diffusers, SCHEDULERS[card.scheduler])
        self._scheduler_config = pipeline.scheduler.config
        self._scheduler_cls = scheduler_cls
        pipeline.scheduler = scheduler_cls.from_config(self._scheduler_config)
        pipeline.set_progress_bar_config(disable=True)
        self._pipe = pipeline.to(device)
        self._local = threading.local()

    @classmethod
    def from_card(cls, card: ModelCard, device: str = "cpu") -> DiffusersBackend:
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        return cls(card, _load_pipeline(card, dtype), device)

    def _pipe_for_call(self):
        """A per-call view: shared networks, private scheduler and call state."""
        pipe = copy.copy(self._pipe)
        object.__setattr__(
            pipe, "scheduler", self._scheduler_cls.from_config(self._scheduler_config)
        )
        for name in ("tokenizer", "tokenizer_2"):
            shared = getattr(self._pipe, name, None)
            if shared is not None:
                object.__setattr__(pipe, name, self._thread_copy(name, shared))
        return pipe

    def _thread_copy(self, name: str, shared):
        """This thread's own copy of a component with mutable call state (made once)."""
        mine = getattr(self._local, name, None)
        if mine is None:
            mine = copy.deepcopy(shared)
            setattr(self._local, name, mine)
        return mine

    def generate(
        self, request: GenerationRequest, *, on_step: StepHook | None = None
    ) -> GenerationResult:
        request.check_against(self.card)
        pipe = self._pipe_for_call()
        step_times: list[float] = []
        last = [0.0]

        def _on_step_end(_pipe, step: int, _timestep, callback_kwargs):
            now = time.perf_counter()
            dt = now - last[0]
            last[0] = now
            step_times.append(dt)
            if on_step is not None:
                on_step(step, dt)
            return callback_kwargs

        # CPU generators: the same seed gives the same initial noise on every device.
        generators = [torch.Generator("cpu").manual_seed(s) for s in request.seeds]
        start = time.perf_counter()
        last[0] = start
        out = pipe(
            [self.card.styled_prompt(p, request.style) for p in request.prompts],
            num_inference_steps=request.steps,
            height=request.height,
            width=request.width,
            guidance_scale=request.guidance_scale,
            generator=generators,
            output_type="pil",
            callback_on_step_end=_on_step_end,
        )
        latency = time.perf_counter() - start
        return GenerationResult(
            images=list(out.images),
            latency_s=latency,
            step_times_s=step_times,
            model=self.card.name,
            model_version=self.card.version,
            device=self.device,
        )

    def stepper(self):
        if not supports(self._pipe):
            return None
        return StepBatcher(self._pipe_for_call, self.device)

    def close(self) -> None:
        self._pipe = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
