"""A Beam `ModelHandler` that profiles one registered model on one device.

Used through `RunInference`, the ecosystem's way to run models in Beam: the model
is loaded once per worker (`load_model`), warmed up with one untimed call so that no
row carries the cold start, and each cell (fed as a singleton batch, so every cell is
timed alone) becomes a `ProfileRecord` with its warm latency, mean per-step
time and CLIP score.

A cell that raises becomes a `CellFailure` result instead of failing the bundle.
That is done here, not with `RunInference(...).with_exception_handling()`, because
the DaskRunner does not route tagged outputs (measured: every element reached the
dead-letter output), and the sweep must behave the same on every runner.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from models.backend import GenerationRequest, ModelBackend, load_backend
from models.card import ModelCard
from pipelines.profile_grid import ProfileCell
from profiles.parquet_io import CellFailure
from sdaas import __version__
from sdaas.privacy import prompt_tokens
from sdaas.records import ProfileRecord

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    backend: ModelBackend
    scorer: Any  # models.clip_score.ClipScorer | None
    load_s: float


class ProfilingModelHandler(ModelHandler[ProfileCell, ProfileRecord | CellFailure, LoadedModel]):
    """Loads `card` on `device` (+ the CLIP scorer) and turns cells into profile rows."""

    def __init__(
        self,
        card: ModelCard,
        device: str,
        clip_path: str | None,
        *,
        torch_threads: int | None = None,
    ):
        super().__init__(min_batch_size=1, max_batch_size=1)
        self.card = card
        self.device = device
        self.clip_path = clip_path
        self.torch_threads = torch_threads

    def batch_elements_kwargs(self) -> dict[str, Any]:
        # One cell per call: a batch of cells would time them together.
        return {"min_batch_size": 1, "max_batch_size": 1}

    def load_model(self) -> LoadedModel:
        start = time.perf_counter()
        if self.torch_threads:
            # Several worker processes on one host: split the cores instead of oversubscribing.
            import torch

            torch.set_num_threads(self.torch_threads)
        backend = load_backend(self.card, self.device)
        scorer = None
        if self.clip_path:
            from models.clip_score import ClipScorer

            scorer = ClipScorer.from_path(self.clip_path, self.device)
        # Cold call, not recorded: first-call allocation and kernel selection.
        w, h = self.card.resolution_pairs[0]
        backend.generate(GenerationRequest(("warm up",), (0,), self.card.steps.min, w, h, 1.0))
        load_s = time.perf_counter() - start
        log.info("loaded %s on %s in %.2f s (incl. warm-up)", self.card.key, self.device, load_s)
        return LoadedModel(backend, scorer, load_s)

    def run_inference(
        self,
        batch: Sequence[ProfileCell],
        model: LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        for cell in batch:
            try:
                outcome = profile_cell(cell, model)
            except Exception as exc:  # noqa: BLE001 - recorded per cell, sweep goes on
                log.warning(
                    "cell failed: %s steps=%d prompt %s: %s",
                    cell.model,
                    cell.steps,
                    cell.prompt.id,
                    type(exc).__name__,
                )
                outcome = cell_failure(cell, exc)
            yield PredictionResult(cell, outcome)

    def get_metrics_namespace(self) -> str:
        return "sdaas_profile"


def cell_failure(cell: ProfileCell, exc: BaseException) -> CellFailure:
    """Why a cell failed, with the prompt text (should a model echo it) replaced by its id."""
    msg = f"{type(exc).__name__}: {exc}"
    if cell.prompt.text:
        msg = msg.replace(cell.prompt.text, f"<prompt {cell.prompt.id}>")
    return CellFailure(
        cell.model,
        cell.model_version,
        cell.accelerator,
        cell.steps,
        cell.batch_size,
        cell.prompt.id,
        cell.seed,
        msg[:2000],
    )


def profile_cell(cell: ProfileCell, model: LoadedModel) -> ProfileRecord:
    """Run one cell and measure it."""
    prompts = (cell.prompt.text,) * cell.batch_size
    seeds = tuple(cell.seed + i for i in range(cell.batch_size))
    request = GenerationRequest(
        prompts, seeds, cell.steps, cell.width, cell.height, cell.guidance_scale, cell.style
    )
    result = model.backend.generate(request)
    clip = math.nan
    if model.scorer is not None:
        scores = model.scorer.score(result.images, list(prompts))
        clip = sum(scores) / len(scores)
    return ProfileRecord(
        model=cell.model,
        model_version=cell.model_version,
        accelerator=cell.accelerator,
        steps=cell.steps,
        height=cell.height,
        width=cell.width,
        batch_size=cell.batch_size,
        guidance_scale=cell.guidance_scale,
        prompt_id=cell.prompt.id,
        prompt_tokens=prompt_tokens(cell.prompt.text),
        seed=cell.seed,
        latency_s=result.latency_s,
        per_step_s=result.per_step_s,
        clip_score=clip,
        source="measured",
        host=socket.gethostname(),
        ts=time.time(),
        sdaas_version=__version__,
    )
