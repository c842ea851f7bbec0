"""A Beam `ModelHandler` that profiles one registered model on one device.

Used through `RunInference`, the ecosystem's way to run models in Beam: the model
is loaded once per worker (`load_model`), warmed up with one untimed call so that no
row carries the cold start, and each cell (fed as a singleton batch, so every cell is
timed alone) becomes a `ProfileRecord` with its warm latency, mean per-step
time and CLIP score.

Noise: a cell is timed `REPEATS[0]` times or more (`profiles.timing`), until the calls agree within
`SPREAD_TARGET` or `REPEATS[1]` calls are spent; the row holds their median, how many
there were and their spread, with the host's load per core. A busy host so either
yields settled cells or says it did not.

A cell that raises becomes a `CellFailure` result instead of failing the bundle.
That is done here, not with `RunInference(...).with_exception_handling()`, because
the DaskRunner does not route tagged outputs (measured: every element reached the
dead-letter output), and the sweep must behave the same on every runner.
"""

from __future__ import annotations

import logging
import math
import socket
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from models.backend import GenerationRequest, ModelBackend
from models.card import ModelCard
from models.loader import load_backend
from pipelines.host_load import load_per_core
from pipelines.profile_grid import ProfileCell
from pipelines.sweep_progress import note_progress
from profiles.parquet_io import CellFailure
from profiles.timing import REPEATS, relative_spread, timed_repeats
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
        repeats: tuple[int, int] = REPEATS,
        timer=None,
        progress_path: str | None = None,
    ):
        super().__init__(min_batch_size=1, max_batch_size=1)
        self.card = card
        self.device = device
        self.clip_path = clip_path
        self.torch_threads = torch_threads
        self.repeats = repeats
        # seconds of one generate() call, from (cell, result); tests inject a noisy one
        self.timer = timer or (lambda cell, result: result.latency_s)
        self.progress_path = progress_path  # one line per finished cell, for the driver

    def batch_elements_kwargs(self) -> dict[str, Any]:
        # One cell per call: a batch of cells would time them together.
        return {"min_batch_size": 1, "max_batch_size": 1}

    def load_model(self) -> LoadedModel:
        start = time.perf_counter()
        backend = load_backend(self.card, self.device)
        if self.torch_threads:
            # Several worker processes on one host: split the cores instead of oversubscribing.
            import torch

            torch.set_num_threads(self.torch_threads)
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
                outcome = profile_cell(cell, model, self.repeats, self.timer)
            except Exception as exc:  # noqa: BLE001 - recorded per cell, sweep goes on
                log.warning(
                    "cell failed: %s steps=%d prompt %s: %s",
                    cell.model,
                    cell.steps,
                    cell.prompt.id,
                    type(exc).__name__,
                )
                outcome = cell_failure(cell, exc)
            if self.progress_path:
                note_progress(self.progress_path, cell)
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


def profile_cell(
    cell: ProfileCell,
    model: LoadedModel,
    repeats: tuple[int, int] = REPEATS,
    timer=lambda cell, result: result.latency_s,
) -> ProfileRecord:
    """Run one cell until its timings settle (`timed_repeats`) and measure it."""
    prompts = (cell.prompt.text,) * cell.batch_size
    seeds = tuple(cell.seed + i for i in range(cell.batch_size))
    request = GenerationRequest(
        prompts, seeds, cell.steps, cell.width, cell.height, cell.guidance_scale, cell.style
    )
    load = load_per_core()

    def run():
        result = model.backend.generate(request)
        return timer(cell, result), result

    times, result = timed_repeats(run, repeats=repeats)
    latency = statistics.median(times)
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
        latency_s=latency,
        per_step_s=result.per_step_s * latency / result.latency_s,
        clip_score=clip,
        source="measured",
        host=socket.gethostname(),
        ts=time.time(),
        sdaas_version=__version__,
        repeats=len(times),
        spread=relative_spread(times),
        load_avg=(load + load_per_core()) / 2,
        **prompt_columns(cell.prompt.features),
    )


def prompt_columns(features) -> dict:
    """A row's prompt-feature fields from the cell's `PromptFeatures` (none: unknown)."""
    if features is None:
        return {}
    out = {"prompt_objects": int(features.objects), "prompt_basis": features.basis}
    out.update({f"prompt_pc{i}": float(c) for i, c in enumerate(features.components)})
    return out
